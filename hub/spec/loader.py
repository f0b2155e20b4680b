"""Load and validate pipeline specs, reporting every problem with file, line and field path.

Validation runs in two passes and collects everything before raising one :class:`SpecError`:
1. the document against :class:`PipelineSpec` (pydantic collects all field errors);
2. cross-references pydantic cannot see: each source's protocol keys against its system's adapter
   model, unknown systems, templates, JSONPaths, primary keys vs. declared columns, model SQL and the
   tables it reads.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from hub import protocols
from hub.errors import SpecError
from hub.runtime.window import Window, check_template, is_template, sample_window
from hub.spec.models import (
    NAME,
    ModelSpec,
    PartitionsConfig,
    PipelineSpec,
    ResolvedSource,
    SourceSpec,
    SystemConfig,
    valid_name,
)
from hub.spec.stream import StreamKeys, split_keys
from hub.spec.suite import Suite, SuiteError, load_suite

Loc = tuple[str | int, ...]
#: What export paths are rendered against by validation (``{{ run.date }}``, ``{{ run.timestamp }}``).
SAMPLE_RUN = {"run": {"date": "2024-01-01", "timestamp": "20240101T000000Z"}}
DEFAULT_WAREHOUSE = "warehouse/hub.duckdb"


@dataclass
class Pipeline:
    """A validated spec plus where it came from."""

    spec: PipelineSpec
    path: Path
    root: Path
    sources: dict[str, ResolvedSource]
    model_deps: dict[str, list[str]] = field(default_factory=dict)
    export_deps: dict[str, list[str]] = field(default_factory=dict)
    flow_deps: dict[str, list[str]] = field(default_factory=dict)  # `flows:`: flow -> the tables it reads
    suites: dict[str, Suite] = field(default_factory=dict)  # `checks:`: asset -> its expectation suite

    @property
    def name(self) -> str:
        return self.spec.pipeline

    @property
    def warehouse_url(self) -> str:
        """The warehouse URL with a relative DuckDB path made absolute against the project root. A DuckDB file
        the spec names must be in the project (see :func:`confined_warehouse`); ``$HUB_WAREHOUSE`` is the
        operator's and is taken as given."""
        return warehouse_url(self.spec.warehouse, self.root, self.path)

    @property
    def warehouse_kind(self) -> str:
        """The warehouse's kind (a tag in the UI): duckdb or postgres."""
        return "duckdb" if self.warehouse_url.startswith("duckdb") else "postgres"

    def spool_dir(self) -> Path:
        """Where downloads wait to be read: next to a DuckDB warehouse file (same disk), else .hub/spool."""
        url = self.warehouse_url
        if url.startswith("duckdb:///") and not url.endswith(":memory:"):
            return Path(url[len("duckdb:///"):].split("?", 1)[0]).parent / ".spool"
        return self.root / ".hub" / "spool"

    def time_partitioned(self) -> set[str]:
        """The tables loaded per time partition (partitioned sources and their child tables)."""
        return {t for name, s in self.sources.items() if s.partitioned and not s.per_file and s.stream is None
                for t in (name, *s.spec.children)}

    def flow_partitioned(self, flow: str) -> bool:
        """A flow triggered after a time-partitioned table runs per partition, like it (docs/flows.md)."""
        after = self.spec.flows[flow].trigger.after
        return after is not None and after in self.time_partitioned()

    def file_partitioned(self) -> dict[str, str]:
        """The tables loaded per file (sources partitioned per file and their child tables) -> their source."""
        return {t: name for name, s in self.sources.items() if s.per_file for t in (name, *s.spec.children)}

    def flow_files(self, flow: str) -> str | None:
        """The source partitioned per file that a flow follows when it is triggered after one of its tables and
        reads that file's rows (its input one of the source's tables, or a query with partition templates):
        the flow then runs per file, like it (its partitions are the source's files). None for any other flow
        (one after a file drop that reads a whole table or query runs over all of it after each file)."""
        spec = self.spec.flows[flow]
        after = spec.trigger.after
        source = self.file_partitioned().get(after) if after is not None else None
        if source is None:
            return None
        tables = {source, *self.sources[source].spec.children}
        if spec.input.table in tables or (spec.input.sql is not None and is_template(spec.input.sql)):
            return source
        return None

    def asset_names(self) -> list[str]:
        """Sources, their child tables, models, then exports."""
        return [*self.tables(), *self.spec.models, *self.spec.exports]

    def tables(self) -> list[str]:
        """The tables sources load: each source, followed by its child tables."""
        return [t for name, s in self.sources.items() for t in (name, *s.spec.children)]

    def parent_of(self, child: str) -> str | None:
        return next((name for name, s in self.sources.items() if child in s.spec.children), None)


class _Marks:
    """Line numbers of every node in a YAML document, by path; also reports duplicate keys."""

    #: More nodes than this (YAML aliases can expand a small text exponentially) and the spec is refused.
    MAX_NODES = 200_000

    def __init__(self, root: yaml.Node | None, refused: str | None = None) -> None:
        self.lines: dict[Loc, int] = {}
        self.duplicates: list[tuple[Loc, int]] = []
        self.refused: str | None = refused  # a recursive or exploding document, which is never validated
        self._nodes = 0
        self._path: set[int] = set()
        if root is not None and not refused:
            try:
                self._walk(root, ())
            except RecursionError:
                self.refused = "the document is nested too deeply"

    def _walk(self, node: yaml.Node, loc: Loc) -> None:
        if self.refused:
            return
        line = node.start_mark.line + 1
        self._nodes += 1
        if id(node) in self._path:
            self.refused = f"line {line}: a YAML alias refers to a node that contains it (a recursive structure)"
            return
        if self._nodes > self.MAX_NODES:
            self.refused = f"more than {self.MAX_NODES} values once YAML aliases are expanded"
            return
        self.lines[loc] = line
        self._path.add(id(node))
        try:
            self._walk_children(node, loc)
        finally:
            self._path.discard(id(node))

    def _walk_children(self, node: yaml.Node, loc: Loc) -> None:
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key_node, value_node in node.value:
                key = str(key_node.value)
                if key in seen:
                    self.duplicates.append(((*loc, key), key_node.start_mark.line + 1))
                seen.add(key)
                self.lines[(*loc, key)] = key_node.start_mark.line + 1
                self._walk(value_node, (*loc, key))
                self.lines[(*loc, key)] = key_node.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._walk(item, (*loc, i))

    def line(self, loc: Loc) -> int | None:
        for n in range(len(loc), -1, -1):
            if loc[:n] in self.lines:
                return self.lines[loc[:n]]
        return None


class _SpecLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """YAML's safe loader (libyaml's parser where PyYAML has it: the pure-Python one is most of the time
    ``hub validate`` spends reading a spec), with dates that do not exist (``2024-13-01``) reported at their
    line like any other problem; the stock constructor raises a bare ValueError without a position."""

    def construct_yaml_timestamp(self, node: yaml.Node) -> Any:
        try:
            return super().construct_yaml_timestamp(node)
        except ValueError as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"'{node.value}' is not a valid date or time ({exc})", node.start_mark) from None


_SpecLoader.add_constructor("tag:yaml.org,2002:timestamp", _SpecLoader.construct_yaml_timestamp)


def _parse(text: str) -> tuple[_Marks, Any]:
    """Parse *text* once: the line marks of its nodes and its data (None when the marks refuse it).
    :class:`yaml.YAMLError` for text that is not YAML."""
    loader = _SpecLoader(text)
    try:
        try:
            root = loader.get_single_node()
        except RecursionError:
            return _Marks(None, "the document is nested too deeply"), None
        marks = _Marks(root)
        if marks.refused or root is None:
            return marks, None
        return marks, loader.construct_document(root)
    finally:
        loader.dispose()


def _marks_of(text: str) -> _Marks:
    try:
        return _parse(text)[0]
    except yaml.YAMLError:
        return _Marks(None)


class _Problems:
    def __init__(self, path: Path, marks: _Marks) -> None:
        self.path, self.marks, self.items = path, marks, []  # type: ignore[var-annotated]

    def add(self, loc: Loc, message: str) -> None:
        line = self.marks.line(loc)
        where = ".".join(str(p) for p in loc) or "(document)"
        self.items.append((line or 0, f"line {line}: {where}: {message}" if line else f"{where}: {message}"))

    def add_pydantic(self, exc: ValidationError, prefix: Loc = ()) -> None:
        errors = [(tuple(p for p in e["loc"] if not _is_union_tag(p)), e) for e in exc.errors()]
        locs = [loc for loc, _ in errors]
        for bare, err in errors:
            # `x: str | Model` unions report one error per member; when the mapping member has errors
            # deeper down, the "should be a valid string" of the other member is noise.
            if err["type"] == "string_type" and any(o[: len(bare)] == bare and len(o) > len(bare) for o in locs):
                continue
            loc = (*prefix, *bare)
            msg = err["msg"].removeprefix("Value error, ")
            got = err.get("input")
            if err["type"] == "missing":
                msg = "required field is missing"
            elif err["type"] == "string_pattern_mismatch" and err.get("ctx", {}).get("pattern") == NAME:
                msg = f"expected an identifier (letters, digits and _, not starting with a digit), got {got!r}"
            elif err["type"] == "extra_forbidden":
                msg = "unknown field (not part of the spec; check the spelling)"
            elif isinstance(got, str | int | float | bool) and repr(got) not in msg:
                msg = f"{msg} (got {got!r})"
            self.add(loc, msg)

    def raise_if_any(self) -> None:
        if self.items:
            self.items.sort(key=lambda t: t[0])
            raise SpecError(str(self.path), list(dict.fromkeys(m for _, m in self.items)))  # each once


def _is_union_tag(part: Any) -> bool:
    # pydantic puts the member type name in loc for `str | Model` unions, e.g. 'ColumnSpec' or 'str'
    return isinstance(part, str) and (part[:1].isupper() or part in {"str", "int", "float", "bool"})


def absolute_warehouse(url: str, root: Path) -> str:
    """*url* with a bare path made a DuckDB URL and a relative DuckDB path made absolute against *root*."""
    if "://" not in url:  # a bare path
        url = f"duckdb:///{url}"
    if url.startswith("duckdb:///"):
        raw, sep, query = url[len("duckdb:///"):].partition("?")
        path = Path(raw)
        if not path.is_absolute() and raw != ":memory:":
            url = f"duckdb:///{(root / path).resolve()}{sep}{query}"
    return url


def warehouse_dirs(root: Path) -> list[Path]:
    """Where a spec may put a DuckDB warehouse file: the project, the system's temporary directory (scratch
    warehouses of tests and trials), and the directories an operator lists in ``$HUB_WAREHOUSE_DIRS``
    (separated like PATH)."""
    extra = [Path(p) for p in os.environ.get("HUB_WAREHOUSE_DIRS", "").split(os.pathsep) if p.strip()]
    return [d.resolve() for d in (root, Path(tempfile.gettempdir()), *extra)]


def confined_warehouse(url: str, root: Path) -> tuple[str, str | None]:
    """The absolute URL of a spec's ``warehouse:``, and why it is refused (None: it is not).

    A spec is a file that anyone who may propose a pipeline (or an agent) writes; the hub creates and
    writes the DuckDB file it names with the hub's own rights. So the file must resolve, symbolic links
    followed, inside one of :func:`warehouse_dirs`: ``duckdb:////etc/x.duckdb`` or
    ``duckdb:///../../var/lib/x.duckdb`` are refused unless an operator allowed the directory."""
    url = absolute_warehouse(url, root)
    if not url.startswith("duckdb:///") or url.endswith(":memory:"):
        return url, None
    path = Path(url[len("duckdb:///"):].partition("?")[0]).resolve()
    allowed = warehouse_dirs(root)
    if any(path.is_relative_to(d) for d in allowed):
        return url, None
    return url, (f"the DuckDB file {path} is outside the project ({root}); a spec may only put its warehouse "
                 f"in the project or {allowed[1]} (a relative path such as duckdb:///warehouse/hub.duckdb is "
                 "the project's). To allow another directory, an operator lists it in $HUB_WAREHOUSE_DIRS, "
                 "or sets $HUB_WAREHOUSE instead of the spec's warehouse:")


def warehouse_url(declared: str | None, root: Path, spec: Path | None = None) -> str:
    """The warehouse a spec declaring *declared* uses (else ``$HUB_WAREHOUSE``, else the project's
    warehouse/hub.duckdb), a relative DuckDB path made absolute against the project *root*; a declared DuckDB
    file outside the places :func:`confined_warehouse` allows is a :class:`SpecError` of *spec*."""
    if declared:
        url, problem = confined_warehouse(declared, root)
        if problem:
            raise SpecError(str(spec or root), [f"warehouse: {problem}"])
        return url
    return absolute_warehouse(os.environ.get("HUB_WAREHOUSE") or f"duckdb:///{DEFAULT_WAREHOUSE}", root)


def project_root(path: Path) -> Path:
    """The nearest ancestor holding workspace.yaml or pyproject.toml; relative warehouse paths start here."""
    for parent in [path.parent, *path.parent.parents]:
        if (parent / "workspace.yaml").exists() or (parent / "pyproject.toml").exists():
            return parent
    return path.parent


def load(path: str | Path) -> Pipeline:
    """Load, validate and resolve the spec at *path*. Raises :class:`SpecError` with every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(str(path), [f"cannot read file: {exc.strerror}"]) from None
    return loads(text, path)


def loads(text: str, path: Path) -> Pipeline:
    try:
        marks, data = _parse(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise SpecError(str(path), [f"{where}not valid YAML: {getattr(exc, 'problem', exc)}"]) from None
    if marks.refused:
        raise SpecError(str(path), [f"not a usable YAML document: {marks.refused}"])
    problems = _Problems(path, marks)
    if not isinstance(data, dict):
        raise SpecError(str(path), ["expected a mapping with at least `pipeline:` and `sources:`"])
    for loc, line in marks.duplicates:
        problems.items.append((line, f"line {line}: {'.'.join(map(str, loc))}: key given twice"))
    try:
        spec = PipelineSpec.model_validate(data)
    except ValidationError as exc:
        problems.add_pydantic(exc)
        _check_raw(data, problems)  # so one run also shows the cross-reference problems
        problems.raise_if_any()
        raise  # unreachable: add_pydantic always adds
    sources = _resolve_sources(spec, data, problems)
    tables = set(spec.sources) | {c for s in spec.sources.values() for c in s.children}
    model_deps = _check_models(spec.models, tables, problems)
    export_deps = _check_exports(spec, tables | set(spec.models), problems)
    root = project_root(path.resolve())
    suites = _check_suites(spec.checks, tables | set(spec.models), root, problems)
    _check_publish(spec, problems)
    if spec.warehouse:
        problem = confined_warehouse(spec.warehouse, root)[1]
        if problem:
            problems.add(("warehouse",), problem)
    flow_deps = _check_flows(spec, sources, tables | set(spec.models), problems)
    problems.raise_if_any()
    return Pipeline(spec=spec, path=path, root=root, sources=sources,
                    model_deps=model_deps, export_deps=export_deps, suites=suites, flow_deps=flow_deps)


def _resolve_sources(spec: PipelineSpec, data: dict[str, Any], problems: _Problems) -> dict[str, ResolvedSource]:
    out: dict[str, ResolvedSource] = {}
    for name, src in spec.sources.items():
        loc: Loc = ("sources", name)
        if not valid_name(name):
            problems.add(loc, "source names must be identifiers (letters, digits, _), they become tables")
        system = spec.systems.get(src.system)
        if system is None:
            known = ", ".join(spec.systems) or "none defined"
            problems.add((*loc, "system"), f"unknown system '{src.system}' (systems: {known})")
            continue
        extra = dict(src.model_extra or {})
        protocol = system.protocol
        stream: StreamKeys | None = None
        if protocol.unit == "stream":  # the hub's keys of a stream source (format, id, records, keep ...)
            ours, extra = split_keys(extra)
            stream = _stream_keys(loc, ours, src, problems)
        try:
            config = protocol.source_model.model_validate(extra)
        except ValidationError as exc:
            problems.add_pydantic(exc, loc)
            for tloc, text in _located_strings(loc, extra):  # the templates are checked all the same
                _check_template(tloc, text, spec, problems)
            continue
        if protocol.unit == "stream" and stream is None:
            continue
        check = protocols.SourceCheck(loc=loc, config=config, source=src, system=system.config, spec=spec,
                                      report=problems.add)
        protocol.check_source(check)
        if protocol.renders_templates:  # every string of the block is rendered per run (render_config)
            for tloc, text in _located_strings(loc, extra):
                _check_template(tloc, text, spec, problems)
        _check_children(loc, name, src, spec, problems)
        outputs = src.output_columns()
        if outputs is not None:
            for key in src.primary_key:
                if key not in outputs:
                    problems.add((*loc, "primary_key"),
                                 f"'{key}' is not one of the declared columns ({', '.join(outputs)})")
            for column in src.rules:
                if column not in outputs:
                    problems.add((*loc, "rules", column),
                                 f"'{column}' is not one of the declared columns ({', '.join(outputs)})")
        templated = any(is_template(v) and "partition" in v for v in _strings(extra))
        partitioned = src.partitioned if src.partitioned is not None else templated
        if not protocol.time_partitioned(check):  # file drops, incremental reads: never by time
            partitioned = False
        if partitioned and spec.partitions is None:
            problems.add((*loc, "partitioned"), "the pipeline has no partitions (set `partitions:` first)")
            partitioned = False
        out[name] = ResolvedSource(name=name, spec=src, system_name=src.system, system=system, config=config,
                                   partitioned=partitioned, stream=stream)
    return out


def _stream_keys(loc: Loc, ours: dict[str, Any], src: SourceSpec, problems: _Problems) -> StreamKeys | None:
    """The stream keys of a stream source (reported at their own line), and what such a source cannot have."""
    if src.partitioned:
        problems.add((*loc, "partitioned"), "a stream source is not partitioned: its events are absorbed in "
                                            "store order (replay rebuilds any range)")
    if src.children:
        problems.add((*loc, "children"), "child tables are not supported for stream sources yet")
    try:
        return StreamKeys.model_validate(ours)
    except ValidationError as exc:  # every error is a field's (hub.spec.stream validates per field)
        problems.add_pydantic(exc, loc)
        return None


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _check_raw(data: dict[str, Any], problems: _Problems) -> None:
    """Cross-reference checks on the raw document, used when the document as a whole did not validate."""
    systems = data.get("systems") if isinstance(data.get("systems"), dict) else {}
    sources = data.get("sources") if isinstance(data.get("sources"), dict) else {}
    models = data.get("models") if isinstance(data.get("models"), dict) else {}
    assert isinstance(systems, dict) and isinstance(sources, dict) and isinstance(models, dict)
    valid_models = {}
    for name, raw_model in models.items():
        with contextlib.suppress(ValidationError):  # already reported by the first pass
            valid_models[str(name)] = ModelSpec.model_validate(raw_model)
    tables = {str(n) for n in sources} | {str(c) for raw in sources.values() if isinstance(raw, dict)
                                          and isinstance(raw.get("children"), dict) for c in raw["children"]}
    _check_models(valid_models, tables, problems)
    checks = data.get("checks")
    if isinstance(checks, dict) and all(isinstance(v, str) for v in checks.values()):
        _check_suites({str(k): v for k, v in checks.items()}, tables | {str(m) for m in models},
                      project_root(problems.path.resolve()), problems)
    partial = _partial_spec(data)
    _resolve_sources(partial, data, problems)  # every per-source check, for the sources that are valid alone
    common = set(SourceSpec.model_fields)
    for name, raw in sources.items():
        if name in partial.sources:
            continue
        for tloc, text in _located_strings(("sources", name), raw):  # templates of a source invalid alone
            _check_template(tloc, text, partial, problems)
        if not isinstance(raw, dict) or not isinstance(raw.get("system", ""), str):
            continue  # already reported by the first pass
        if "system" in raw and raw["system"] not in systems:
            known = ", ".join(map(str, systems)) or "none defined"
            problems.add(("sources", name, "system"), f"unknown system '{raw['system']}' (systems: {known})")
            continue
        system = systems.get(raw.get("system"))
        kind = next((k for k in protocols.names() if isinstance(system, dict) and k in system), None)
        if kind is not None:
            block = {k: v for k, v in raw.items() if k not in common}
            if protocols.get(kind).unit == "stream":
                ours, block = split_keys(block)
                bare = SourceSpec.model_construct(system="", partitioned=None, children={})
                _stream_keys(("sources", name), ours, bare, problems)
            try:
                protocols.get(kind).source_model.model_validate(block)
            except ValidationError as exc:
                problems.add_pydantic(exc, ("sources", name))


def _partial_spec(data: dict[str, Any]) -> PipelineSpec:
    """The parts of a document that failed validation which are valid alone: the systems, the sources whose
    own fields and system are valid, the partitions (a placeholder when they are invalid, so templates are
    still checked). A second pass over these finds what the first could not reach."""
    raw_systems = data.get("systems")
    raw_sources = data.get("sources")
    systems: dict[str, SystemConfig] = {}
    for name, raw in (raw_systems.items() if isinstance(raw_systems, dict) else ()):
        with contextlib.suppress(ValidationError):
            systems[str(name)] = SystemConfig.model_validate(raw)
    sources: dict[str, SourceSpec] = {}
    for name, raw in (raw_sources.items() if isinstance(raw_sources, dict) else ()):
        with contextlib.suppress(ValidationError):
            src = SourceSpec.model_validate(raw)
            if src.system in systems:
                sources[str(name)] = src
    raw_parts = data.get("partitions")
    partitions = None
    if raw_parts not in (None, "none", "None", False):
        try:
            partitions = PartitionsConfig.model_validate(raw_parts)
        except ValidationError:
            partitions = PartitionsConfig.model_validate({"daily": {"start": "2000-01-01"}})
    return PipelineSpec.model_construct(pipeline=str(data.get("pipeline") or "pipeline"), systems=systems,
                                        sources=sources, partitions=partitions)


def _located_strings(loc: Loc, value: Any) -> list[tuple[Loc, str]]:
    """Every string in a nested dict/list, with its path."""
    if isinstance(value, str):
        return [(loc, value)]
    if isinstance(value, dict):
        return [found for k, v in value.items() for found in _located_strings((*loc, k), v)]
    if isinstance(value, list):
        return [found for i, v in enumerate(value) for found in _located_strings((*loc, i), v)]
    return []


def _sample_window(spec: PipelineSpec) -> Window:
    """The pipeline's first partition (a fixed day when it has none): templates are rendered against it."""
    parts = spec.partitions
    if parts is None:
        return sample_window()
    return sample_window(parts.kind, parts.window.start, parts.window.timezone)


def _check_template(tloc: Loc, value: str, spec: PipelineSpec, problems: _Problems) -> None:
    """A template must parse and render against the sample window within the sandbox's limits
    (hub.runtime.sandbox): unknown names, ``9**(9**9)`` or ``'a'*2000000000`` are reported here, not in a run."""
    bad = check_template(value, field=".".join(map(str, tloc)), context=_sample_window(spec).context())
    if bad:
        problems.add(tloc, bad.split(": ", 1)[1])
    elif is_template(value) and spec.partitions is None and "partition" in value:
        problems.add(tloc, f"'{value}' uses partition templating, but the pipeline has `partitions: none`")


def _check_exports(spec: PipelineSpec, tables: set[str], problems: _Problems) -> dict[str, list[str]]:
    """Checks exports; returns the tables each one reads."""
    deps: dict[str, list[str]] = {}
    for name, export in spec.exports.items():
        loc: Loc = ("exports", name)
        if not valid_name(name) or name in tables:
            problems.add(loc, "export names must be identifiers, distinct from sources and models (they are assets)")
        system = spec.systems.get(export.system)
        if system is None or not system.protocol.exports:
            kinds = "/".join(p.name for p in protocols.all() if p.exports)
            problems.add((*loc, "system"), f"'{export.system}' is not an {kinds} system of this pipeline")
        bad = check_template(export.path, field=f"exports.{name}.path", context=SAMPLE_RUN)
        if bad:
            problems.add((*loc, "path"), bad.split(": ", 1)[1])
        if export.table and export.table not in tables:
            problems.add((*loc, "table"), f"'{export.table}' is not a source, child table or model of this pipeline")
        read = {export.table} if export.table else _referenced_tables(ModelSpec(sql=export.sql or ""), loc, problems)
        unknown = sorted(t for t in read or () if t not in tables)
        if export.sql and unknown:
            problems.add((*loc, "sql"), f"reads unknown table(s) {', '.join(unknown)}")
        deps[name] = sorted(t for t in read or () if t in tables)
    return deps


def _check_flows(spec: PipelineSpec, sources: dict[str, ResolvedSource], tables: set[str],
                 problems: _Problems) -> dict[str, list[str]]:
    """``flows:`` against the spec alone (:func:`hub.spec.flows.check_flows`); the checks against the
    systems' actions run in ``hub validate`` (:mod:`hub.flows.check`)."""
    from hub.spec.flows import check_flows

    if not spec.flows:
        return {}

    def sql_tables(sql: str, loc: Loc) -> set[str] | None:
        return _referenced_tables(ModelSpec(sql=sql), loc, problems)

    def columns(table: str) -> list[str] | None:
        src = sources.get(table)
        return src.spec.output_columns() if src is not None else None

    streams = {n for n, s in sources.items() if s.stream is not None}
    callers = {n for n, block in spec.systems.items() if block.protocol.pushed}  # systems that call the hub
    by_time = {t for n, s in sources.items() if s.partitioned and not s.per_file and s.stream is None
               for t in (n, *s.spec.children)}
    by_file = {t for n, s in sources.items() if s.per_file for t in (n, *s.spec.children)}
    return check_flows(spec.flows, tables | set(spec.exports), set(spec.systems), sql_tables, columns, problems.add,
                       streams, callers, by_time, _sample_window(spec).context(), by_file)


def locate(path: Path, items: list[tuple[Loc, str]]) -> SpecError:
    """A :class:`SpecError` of the spec at *path* with each (location, message) given its line, as the
    loader reports (for checks that run after loading: ``hub validate``'s checks of flows against the
    systems' actions)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        text = ""
    problems = _Problems(path, _marks_of(text))
    for loc, message in items:
        problems.add(loc, message)
    problems.items.sort(key=lambda t: t[0])
    return SpecError(str(path), list(dict.fromkeys(m for _, m in problems.items)))


def _check_suites(checks: dict[str, str], assets: set[str], root: Path, problems: _Problems) -> dict[str, Suite]:
    """``checks:``: each names a source, child table or model and a suite file (relative to the project
    root) that parses and holds real Great Expectations expectations."""
    out: dict[str, Suite] = {}
    for asset, file in checks.items():
        loc: Loc = ("checks", asset)
        if asset not in assets:
            problems.add(loc, f"'{asset}' is not a source, child table or model of this pipeline "
                              f"({', '.join(sorted(assets)) or 'none'})")
            continue
        path = Path(file) if Path(file).is_absolute() else root / file
        if not path.is_file():
            problems.add(loc, f"suite file {file} not found (looked for {path})")
            continue
        try:
            out[asset] = load_suite(path, asset=asset, display=file)
        except SuiteError as exc:
            for problem in exc.problems:
                problems.add(loc, f"{file}: {problem}")
    return out


def _check_publish(spec: PipelineSpec, problems: _Problems) -> None:
    """``publish:`` names a system of the spec whose protocol can publish, with the target keys it takes."""
    if spec.publish is None:
        return
    system = spec.systems.get(spec.publish.system)
    if system is None:
        problems.add(("publish", "system"), f"unknown system '{spec.publish.system}' (systems: "
                                            f"{', '.join(spec.systems) or 'none defined'})")
        return
    model = system.protocol.publish_model
    if model is None:
        able = [p.name for p in protocols.all() if p.publish_model is not None]
        problems.add(("publish", "system"), f"system '{spec.publish.system}' is {system.kind}, which cannot "
                                            f"publish events (protocols that can: {', '.join(able)})")
        return
    try:
        model.model_validate(spec.publish.target)
    except ValidationError as exc:
        problems.add_pydantic(exc, ("publish",))


def _check_children(loc: Loc, name: str, src: SourceSpec, spec: PipelineSpec, problems: _Problems) -> None:
    if src.children and not src.primary_key:
        problems.add((*loc, "children"), "child tables need the source's primary_key: every child row carries "
                                         "its parent's key")
    for child, cspec in src.children.items():
        cloc: Loc = (*loc, "children", child)
        if not valid_name(child):
            problems.add(cloc, "child table names must be identifiers (letters, digits, _), they become tables")
        if child in spec.sources or child in spec.models or child == name:
            problems.add(cloc, f"'{child}' is already a source or model; table names must be unique")
        others = [n for n, s in spec.sources.items() if n != name and child in s.children]
        if others:
            problems.add(cloc, f"'{child}' is also a child table of {others[0]}")
        taken = [c.name for _, c in cspec.column_specs()]
        clash = [k for k in src.primary_key if k in taken]
        if clash:
            problems.add((*cloc, "columns"), f"{', '.join(clash)} would clash with the parent key column(s) "
                                             "every child row carries")


def _check_models(models: dict[str, ModelSpec], sources: set[str], problems: _Problems) -> dict[str, list[str]]:
    deps: dict[str, list[str]] = {}
    local = sources | set(models)
    for name, model in models.items():
        loc: Loc = ("models", name)
        if not valid_name(name):
            problems.add(loc, "model names must be identifiers (letters, digits, _), they become tables")
        if name in sources:
            problems.add(loc, f"'{name}' is both a source and a model; asset names must be unique")
        tables = _referenced_tables(model, loc, problems)
        if tables is None:
            continue
        unknown = sorted(t for t in tables if t not in local and t not in model.depends_on)
        if unknown:
            problems.add((*loc, "sql"), f"reads unknown table(s) {', '.join(unknown)}: not a source or model of "
                                        "this pipeline (list tables from other pipelines in depends_on)")
        if name in tables:
            problems.add((*loc, "sql"), "a model cannot read its own table")
        deps[name] = sorted((tables & local) - {name}) + [d for d in model.depends_on if d not in local]
    return deps


def _referenced_tables(model: ModelSpec, loc: Loc, problems: _Problems) -> set[str] | None:
    import sqlglot  # imported here: ~15 MB that pipelines without models never need
    from sqlglot import exp

    try:
        statements = sqlglot.parse(model.sql, read="duckdb")
    except sqlglot.errors.ParseError as exc:
        first = exc.errors[0] if exc.errors else {}
        detail = first.get("description") or str(exc).splitlines()[0]
        at = f" (SQL line {first.get('line')}, column {first.get('col')})" if first.get("line") else ""
        problems.add((*loc, "sql"), f"SQL does not parse: {detail}{at}")
        return None
    if len(statements) != 1 or not isinstance(statements[0], exp.Query):
        problems.add((*loc, "sql"), "expected exactly one SELECT (or WITH ... SELECT) statement")
        return None
    stmt = statements[0]
    ctes = {cte.alias_or_name for cte in stmt.find_all(exp.CTE)}
    return {t.name for t in stmt.find_all(exp.Table) if t.name and t.name not in ctes}


def discover(folder: str | Path) -> list[Path]:
    """Every pipeline spec (``*.yaml`` / ``*.yml``) directly in *folder*, sorted."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
