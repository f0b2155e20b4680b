"""The planner: a natural-language request -> a pipeline spec (YAML in the hub's format), validated and
dry-run before anything is written.

Two backends share :func:`plan`:

* ``offline`` (default, no model): retrieval of the catalog's actions matching the request
  (:meth:`Catalog.search`) and schema-directed composition — join keys from matching field names and
  types across the chosen actions' output schemas (``orders.customer_id`` <-> ``customers.id``),
  aggregations and filters from simple request parsing, time words mapped to partitions and a schedule.
* ``llm``: any OpenAI-compatible chat-completions endpoint with tool calling (:mod:`hub.agent.llm`).

Every plan goes through :func:`validate_plan`: the spec loads (:func:`hub.spec.loads`), each source is a
read action of the catalog, its parameters type-check against the action's input schema, the model SQL
parses (DuckDB dialect) and reads only the planned tables and their columns, and one partition is
materialized into a temporary DuckDB warehouse on an ephemeral Dagster instance. Write requests are refused.
"""

from __future__ import annotations

import contextlib
import copy
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Protocol

import yaml

from hub import protocols
from hub.agent import understand as u
from hub.errors import HubError, SpecError
from hub.spec import Pipeline, loads

Backend = Literal["offline", "llm"]

_STOP = {"get", "list", "api", "the", "all", "read", "fetch", "search", "by", "of", "a", "an", "and", "or",
         "to", "for", "from", "in", "on", "with", "me", "give", "load", "show", "every", "each", "per", "csv",
         "outbox", "public", "id", "data", "record", "records", "table", "file", "files"}


class ActionLike(Protocol):
    name: str
    system: str
    protocol: str
    description: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    side_effect: str
    binding: dict[str, Any]


class CatalogLike(Protocol):
    @property
    def actions(self) -> Sequence[Any]: ...

    def get(self, name: str) -> Any: ...

    def search(self, query: str, limit: int = 10) -> list[Any]: ...


@dataclass
class PlanResult:
    """What :func:`plan` produced: the spec text (None when refused/rejected), notes and the validation."""

    request: str
    backend: str
    spec_text: str | None = None
    ok: bool = False
    refused: bool = False
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    result_table: str | None = None  # the table that answers the request (the model, else the source)
    dry_run: dict[str, int] = field(default_factory=dict)  # asset -> rows materialized in the dry run
    partition: str | None = None  # the partition of the dry run
    attempts: int = 1
    flow: str | None = None  # a plan that acts: the flow's name (approved: false until a person approves it)
    #: a flow's writes in its dry run: step, action, target, effect, item, request (validated), ledger, sample
    writes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def reason(self) -> str:
        return "; ".join(self.errors)


class ModelBackend(Protocol):
    """A planner backend that asks a model (:class:`hub.agent.llm.LLMConfig`); given to :func:`plan`, so this
    module never imports the one that builds on it."""

    def plan(self, request: str, pipelines: list[Pipeline], catalog: CatalogLike, *, name: str | None = None,
             path: Path | None = None, dry_run: bool = True, partition: str | None = None,
             warehouse: Path | None = None) -> PlanResult: ...


# ---------------------------------------------------------------------------------------------- helpers

def _stem(word: str) -> str:
    w = word.lower()
    if len(w) > 4 and w.endswith("ies"):
        return w[:-3] + "y"
    if len(w) > 3 and w.endswith("s") and not w.endswith("ss"):
        return w[:-1]
    return w


def tokens(text: str) -> list[str]:
    """Lower-case word stems, camelCase and snake_case split."""
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", text)
    return [_stem(t) for t in re.split(r"[^A-Za-z0-9]+", text) if t]


def write_intent(request: str, catalog: CatalogLike | None = None) -> str | None:
    """What in *request* asks to change something in a system, if anything (:func:`hub.agent.understand.
    write_intent`: any change verb given as an order, "X is now Y", "should be ..."); with *catalog*, the verbs
    of its write actions count too (``setProductPrice`` -> "set")."""
    extra: set[str] = set()
    if catalog is not None:
        for a in catalog.actions:
            if not _is_read(a):
                op = a.name.split(".", 1)[-1]
                first = u.split_words(op)[:1]
                extra |= {w for w in first if len(w) > 2}
    return u.write_intent(request, frozenset(extra))


def _is_read(action: Any) -> bool:
    return getattr(action, "side_effect", "read") == "read"


def _unwrap(schema: Any) -> dict[str, Any] | None:
    """The non-null branch of ``anyOf``/``oneOf`` (nullable fields), else the schema itself."""
    if not isinstance(schema, dict):
        return None
    for key in ("anyOf", "oneOf"):
        branches = schema.get(key)
        if isinstance(branches, list):
            for b in branches:
                if isinstance(b, dict) and b.get("type") != "null":
                    return _unwrap(b)
    return schema


def _schema_at(schema: dict[str, Any], path: str) -> dict[str, Any] | None:
    node = _unwrap(schema)
    for part in path.split("."):
        if node is None:
            return None
        if node.get("type") == "array" and isinstance(node.get("items"), dict):
            node = _unwrap(node["items"])
            if node is None:
                return None
        props = node.get("properties") or {}
        node = _unwrap(props.get(part))
    return node


def _kind(schema: dict[str, Any] | None, declared: str | None = None) -> str:
    """A coarse type for join matching and measures: int, num, str, time, bool, other."""
    t = (declared or "").lower()
    if t:
        if t.startswith(("int", "bigint")):
            return "int"
        if t.startswith(("float", "double", "decimal")):
            return "num"
        if t.startswith(("timestamp", "date", "time")):
            return "time"
        if t == "bool":
            return "bool"
        return "str"
    schema = _unwrap(schema)
    if not schema:
        return "other"
    st = schema.get("type")
    if isinstance(st, list):
        st = next((x for x in st if x != "null"), None)
    if st == "integer":
        return "int"
    if st == "number":
        return "num"
    if st == "boolean":
        return "bool"
    if st == "string":
        fmt = schema.get("format", "")
        if fmt in ("date", "date-time", "time"):
            return "time"
        if fmt in ("decimal",):
            return "num"
        return "str"
    return "other"


def _compatible(a: str, b: str) -> bool:
    numeric = {"int", "num"}
    return a == b or (a in numeric and b in numeric) or "other" in (a, b)


@dataclass
class Column:
    name: str
    kind: str
    enum: list[Any] = field(default_factory=list)


@dataclass
class Table:
    """A planned table (a source or one of its child tables) with the columns it will have."""

    name: str
    action: str
    system: str
    entity: set[str]
    columns: list[Column]
    partitioned: bool = False
    raw: dict[str, Any] = field(default_factory=dict)  # the source's YAML
    template: tuple[Pipeline, str] | None = None
    parent: str | None = None
    pk: list[str] = field(default_factory=list)

    def col(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name.lower() == name.lower()), None)


# --------------------------------------------------------------------------------------- templates

def _raw_spec(pipeline: Pipeline) -> dict[str, Any]:
    try:
        data = yaml.safe_load(pipeline.path.read_text(encoding="utf-8"))
        if isinstance(data, dict):
            return data
    except OSError:
        pass
    return pipeline.spec.model_dump(mode="json", exclude_unset=True, by_alias=True)


def _binding_matches(action: Any, pipeline: Pipeline, name: str) -> bool:
    src = pipeline.sources[name]
    b = action.binding or {}
    if src.system_name != action.system:
        return False
    return src.protocol.reads_action(src, b)


def find_template(action: Any, pipelines: Sequence[Pipeline]) -> tuple[Pipeline, str] | None:
    """The source of a given pipeline that reads *action* (a known-good configuration to start from)."""
    for p in pipelines:
        for name in p.sources:
            if _binding_matches(action, p, name):
                return p, name
    return None


def system_raw(system: str, pipelines: Sequence[Pipeline]) -> dict[str, Any] | None:
    for p in pipelines:
        if system in p.spec.systems:
            raw = _raw_spec(p).get("systems", {}).get(system)
            if isinstance(raw, dict):
                return raw
    return None


def source_for(action: Any, pipelines: Sequence[Pipeline]) -> tuple[str, dict[str, Any], tuple[Pipeline, str] | None]:
    """(table name, source YAML, template) for reading *action*: the template's source when a given pipeline
    already reads it, else one built from the action's binding with time parameters mapped to the partition."""
    tmpl = find_template(action, pipelines)
    if tmpl is not None:
        p, name = tmpl
        raw = dict(_raw_spec(p).get("sources", {}).get(name) or {})
        raw.pop("sensor", None)
        return name, raw, tmpl
    b = dict(action.binding or {})
    name = re.sub(r"[^A-Za-z0-9_]", "_", action.name).strip("_").lower() or "source"
    if not name.startswith(action.system):
        name = f"{action.system}_{name}"
    params = {k: v for k, v in time_params(action.input_schema).items()}
    src: dict[str, Any] = {"system": action.system, "description": action.description or None}
    planned = protocols.get(action.protocol).plan_source(b, params) if action.protocol in protocols.registry() \
        else None
    src.update(planned or {})
    return name, {k: v for k, v in src.items() if v is not None}, None


_START = re.compile(r"(^|_)(from|since|start|begin|after)", re.IGNORECASE)
_END = re.compile(r"(^|_)(to|until|end|before)", re.IGNORECASE)


def time_params(input_schema: dict[str, Any]) -> dict[str, str]:
    """Input parameters that bound a time window, mapped to the partition's start and end."""
    out: dict[str, str] = {}
    for pname, ps in (input_schema.get("properties") or {}).items():
        kind = _kind(ps if isinstance(ps, dict) else None)
        snake = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", pname)
        if kind not in ("time", "str", "other"):
            continue
        if _START.search(snake) and (kind == "time" or re.search(r"date|time|since", snake, re.I)):
            out[pname] = "{{ partition.start }}"
        elif _END.search(snake) and (kind == "time" or re.search(r"date|time|until", snake, re.I)):
            out[pname] = "{{ partition.end }}"
    return out


def _is_templated(value: Any) -> bool:
    return isinstance(value, str) and "{{" in value and "partition" in value


def _params_of(raw: dict[str, Any]) -> dict[str, Any]:
    if isinstance(raw.get("request"), dict):
        return dict(raw["request"].get("params") or {})
    return dict(raw.get("params") or {})


def table_for(action: Any, pipelines: Sequence[Pipeline], with_children: Iterable[str] | None = ()) -> list[Table]:
    """The planned table(s) of reading *action*: the source, plus the child tables asked for (None: all)."""
    name, raw, tmpl = source_for(action, pipelines)
    schema = action.output_schema or {}
    entity = {t for t in tokens(" ".join([action.name, name, *(str(v) for v in (action.binding or {}).values())]))
              if t not in _STOP and t != action.system}
    enums: dict[str, list[Any]] = {}
    for col, rule in (raw.get("rules") or {}).items():
        if isinstance(rule, dict) and isinstance(rule.get("in"), list):
            enums[col] = rule["in"]
    columns: list[Column] = []
    if raw.get("columns"):
        for path, spec in raw["columns"].items():
            cname = spec if isinstance(spec, str) else (spec or {}).get("name") or path.split(".")[-1]
            declared = None if isinstance(spec, str) else (spec or {}).get("type")
            ps = _schema_at(schema, path) or _schema_at(schema, cname)
            enum = enums.get(cname) or (ps or {}).get("enum") or []
            columns.append(Column(cname, _kind(ps, declared), list(enum)))
    else:
        props = schema.get("properties") or {}
        select = raw.get("select")
        for pname, ps in props.items():
            if select and pname not in select:
                continue
            ps = _unwrap(ps) or {}
            columns.append(Column(pname, _kind(ps), list(enums.get(pname) or ps.get("enum") or [])))
    partitioned = raw.get("partitioned", any(_is_templated(v) for v in _params_of(raw).values()))
    pk = raw.get("primary_key") or []
    pk = [pk] if isinstance(pk, str) else list(pk)
    out = [Table(name, action.name, action.system, entity, columns, bool(partitioned), raw, tmpl, pk=pk)]
    children = raw.pop("children", None) or {}
    wanted = set(with_children) if with_children is not None else None
    kept: dict[str, Any] = {}
    for cname, child in children.items():
        ctoks = {t for t in tokens(cname) if t not in _STOP and t != action.system} - entity
        if wanted is not None and not (ctoks & wanted):
            continue
        kept[cname] = child
        ccols = [Column(k, next((c.kind for c in columns if c.name == k), "other")) for k in pk]
        for path, spec in (child.get("columns") or {}).items():
            ccname = spec if isinstance(spec, str) else (spec or {}).get("name") or path.split(".")[-1]
            ps = _schema_at(schema, f"{child.get('path', '')}.{path}")
            ccols.append(Column(ccname, _kind(ps, None if isinstance(spec, str) else (spec or {}).get("type"))))
        out.append(Table(cname, action.name, action.system, ctoks | entity, ccols, bool(partitioned), {}, tmpl,
                         parent=name, pk=pk))
    if kept:
        raw["children"] = kept
    return out


# ------------------------------------------------------------------------------------ offline planner
#
# The offline planner reads a request in three steps. (1) The estate: every read action that needs no input a
# person must give becomes a table (with its child tables); one partition of them is sampled once per catalog
# (:func:`samples`), so the planner knows the values of each column. (2) The vocabulary (:class:`Vocabulary`):
# each table and column is named by its own words (name, description), by the words the thesaurus relates to
# them (:data:`hub.agent.understand.THESAURUS`) and, for a column, by its sample values ("gold", "Memphis",
# "won"). (3) The request (:mod:`hub.agent.understand`): its words are matched to tables, columns and values;
# numbers, comparisons, top-N, negations, arithmetic and time words shape the SQL. Joins come from key names
# and types and from the sample values (``ORD-100001`` against ``order_id`` 100001: a prefix stripped, the
# overlap counted). A word that names nothing of the estate makes the plan a "no system offers ...".


@dataclass
class Sample:
    """What one partition of a table held: row count, distinct values per column (at most 300)."""

    rows: int
    values: dict[str, list[Any]]
    distinct: dict[str, int]


_SAMPLES: dict[int, tuple[Any, dict[str, Sample]]] = {}


def universe(catalog: CatalogLike, pipelines: Sequence[Pipeline]) -> list[Table]:
    """Every table the catalog's read actions can fill without an input a person must give (an id), child
    tables included; actions reading the same records (GetOrders, ListOrders...) count once, the one a given
    spec already reads first."""
    best: dict[tuple[str, str], Any] = {}
    for a in catalog.actions:
        if not _is_read(a):
            continue
        required = set((a.input_schema or {}).get("required") or []) - set(time_params(a.input_schema or {}))
        tmpl = find_template(a, pipelines)
        if required and not tmpl:
            continue
        key = (a.system, yaml.safe_dump(a.output_schema or {}, sort_keys=True))
        if key not in best or (tmpl and not find_template(best[key], pipelines)):
            best[key] = a
    tables: list[Table] = []
    for a in best.values():
        for t in table_for(a, pipelines, None):
            if all(t.name != u.name for u in tables):
                tables.append(t)
    return tables


def samples(catalog: CatalogLike, pipelines: Sequence[Pipeline], tables: list[Table]) -> dict[str, Sample]:
    """One partition of every table, read once per catalog (a dry run of their sources into a temporary
    warehouse): the sample values the vocabulary and the join discovery use. Tables that cannot be read have
    no sample."""
    cached = _SAMPLES.get(id(catalog))
    if cached is not None and cached[0] is catalog:
        return cached[1]
    out: dict[str, Sample] = {}
    roots = [t for t in tables if t.parent is None]
    systems = {t.system: system_raw(t.system, pipelines) for t in roots}
    tmpl_p = next((t.template[0] for t in roots if t.template and t.template[0].spec.partitions), None)
    parts: Any = "none"
    if tmpl_p is not None and tmpl_p.spec.partitions is not None:
        w = tmpl_p.spec.partitions.window
        parts = {tmpl_p.spec.partitions.kind: {"start": w.start.isoformat(), "timezone": w.timezone}}

    def attempt(group: list[Table]) -> None:
        spec = {"pipeline": "_samples", "partitions": parts if any(t.partitioned for t in group) else "none",
                "systems": {t.system: systems[t.system] for t in group if systems.get(t.system)},
                "sources": {t.name: {k: v for k, v in t.raw.items() if k not in ("checks",)} for t in group}}
        with tempfile.TemporaryDirectory(prefix="hub-samples-") as tmp:
            wh = Path(tmp) / "samples.duckdb"
            dry_run(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True),
                    _root(pipelines) / "pipelines" / "_samples.yaml", warehouse=wh)
            if wh.exists():
                import duckdb

                with duckdb.connect(str(wh), read_only=True) as con:
                    names = {r[0] for r in con.execute("select table_name from information_schema.tables").fetchall()}
                    for t in tables:
                        root = t.parent or t.name
                        if t.name not in names or t.name in out or all(g.name != root for g in group):
                            continue
                        cols = [c for c in con.execute(f'select * from "{t.name}" limit 0').fetchdf().columns
                                if not c.startswith("_hub_")]
                        rows = int(con.execute(f'select count(*) from "{t.name}"').fetchall()[0][0])
                        values: dict[str, list[Any]] = {}
                        distinct: dict[str, int] = {}
                        for c in cols:
                            distinct[c] = int(con.execute(f'select count(distinct "{c}") from "{t.name}"')
                                              .fetchall()[0][0])
                            values[c] = [r[0] for r in con.execute(
                                f'select distinct "{c}" from "{t.name}" where "{c}" is not null limit 300').fetchall()]
                        out[t.name] = Sample(rows, values, distinct)
        missing = [t for t in group if t.name not in out]
        if len(group) > 1 and missing:
            for t in missing:
                attempt([t])

    with contextlib.suppress(ImportError):  # sampling is a help, never a reason to fail a plan
        attempt(roots)
    _SAMPLES.clear()
    _SAMPLES[id(catalog)] = (catalog, out)
    return out


@dataclass
class Sense:
    """One meaning of a word of the request: a table, a column, a value of a column, or a system."""

    kind: str  # table | column | value | system
    table: Table | None
    column: Column | None = None
    value: Any = None
    weight: float = 1.0
    system: str | None = None
    via: str = ""  # how the word names it: name, synonym, description, sample value


_GENERIC_COL = {"id", "at", "on", "no", "ts", "nr", "num", "is", "has", "by", "date", "time", "code", "name"}
_ID_LIKE = re.compile(r"^[A-Za-z]*[-_/#.]?\d+$|@|^[0-9a-f-]{16,}$")


def _col_words(name: str) -> list[str]:
    return [u.stem(w) for w in u.split_words(name)]


class Vocabulary:
    """The words that name each table, column and value of the estate: names and descriptions, their synonyms,
    and the sample values of text columns with few distinct values (or short, wordy values: a city, a depot)."""

    def __init__(self, tables: list[Table], sample: dict[str, Sample], systems: set[str]) -> None:
        self.tables = tables
        self.sample = sample
        self.systems = systems
        self.senses: dict[tuple[str, ...], list[Sense]] = {}
        for t in tables:
            self._table(t)
            for c in t.columns:
                self._column(t, c)
        for s in systems:
            self._add((u.stem(s),), Sense("system", None, weight=1.0, system=s, via="system"))

    def _add(self, key: tuple[str, ...], sense: Sense) -> None:
        bucket = self.senses.setdefault(key, [])
        for i, old in enumerate(bucket):
            if (old.kind, old.table and old.table.name, old.column and old.column.name, old.value) == \
                    (sense.kind, sense.table and sense.table.name, sense.column and sense.column.name, sense.value):
                if sense.weight > old.weight:
                    bucket[i] = sense
                return
        bucket.append(sense)

    def _table(self, t: Table) -> None:
        words = [w for w in _col_words(t.name) if w not in self.systems and w not in {u.stem(s) for s in self.systems}]
        if t.parent is None:  # the action's own name ("stock_levels" for inventory_levels)
            op = t.action.split(".", 1)[-1]
            extra = [w for w in _col_words(op) if w not in ("get", "list", "read", "fetch", "search", "queri", "find")]
        else:
            extra = []
        if not words:
            words = extra
        head = words[-1] if words else ""
        mods = [w for w in [*words[:-1], *extra] if w != head]
        if head:
            self._add((head,), Sense("table", t, weight=1.0, via="name"))
            for r in u.related(head):
                self._add((r,), Sense("table", t, weight=0.75, via=f"synonym of {head}"))
        if len(words) >= 2:
            self._add(tuple(words[-2:]), Sense("table", t, weight=1.0, via="name"))
        for m in mods:
            self._add((m,), Sense("table", t, weight=0.45 if m not in extra else 0.6, via="name"))
            if m in extra:
                self._add((m, head), Sense("table", t, weight=1.0, via="name"))
        desc = str(t.raw.get("description") or "")
        first = re.split(r"[,;:(.]| of | per | with | in | placed | one ", desc, maxsplit=1)[0]
        for w in u.split_words(first)[:4]:
            s = u.stem(w)
            if w in u.FILLER or s in {u.stem(x) for x in self.systems} or s == head:
                continue
            self._add((s,), Sense("table", t, weight=0.55, via="description"))

    def _column(self, t: Table, c: Column) -> None:
        words = _col_words(c.name)
        if not words:
            return
        content = [w for w in words if w not in _GENERIC_COL] or words
        head = content[-1]
        self._add(tuple(words), Sense("column", t, c, weight=1.0, via="name"))
        if c.kind == "bool":  # "inactive", "unpaid", "non-active": the flag, false
            for w in u.split_words(c.name):
                if w in ("is", "has", "can"):
                    continue
                for neg in ("in", "un", "non", "not", "de", "dis"):
                    self._add((u.stem(neg + w),), Sense("column", t, c, value=False, weight=0.95,
                                                        via=f"negation of {c.name}"))
        for w in words:  # "the name of the customer": customer_name, less surely than a column named "name"
            if w not in content and w not in ("id", "at", "on", "is", "has", "by", "no", "nr", "num"):
                self._add((w,), Sense("column", t, c, weight=0.5, via="name"))
        if len(content) >= 2:
            self._add(tuple(content), Sense("column", t, c, weight=1.0, via="name"))
        for w in content:
            ref = c.name.lower().endswith("_id") and w != "id"
            # a word naming part of a compound name ("revenue" of annual_revenue) names it less surely
            weight = 0.35 if ref else (0.6 if w != head else 0.9 if len(content) == 1 else 0.7)
            self._add((w,), Sense("column", t, c, weight=weight, via="name"))
            if not ref:
                for r in u.related(w):
                    self._add((r,), Sense("column", t, c, weight=weight * 0.75, via=f"synonym of {w}"))
        smp = self.sample.get(t.name)
        vals: list[Any] = list(c.enum)
        if smp and c.name in smp.values and c.kind in ("str", "other"):
            few = smp.distinct.get(c.name, 0) <= 40 or smp.distinct.get(c.name, 0) < 0.5 * max(smp.rows, 1)
            wordy = [v for v in smp.values[c.name] if isinstance(v, str) and not _ID_LIKE.search(v)
                     and len(v.split()) <= 3 and len(v) <= 30]
            if few or len(wordy) >= 0.8 * len(smp.values[c.name]):
                vals += wordy
        if not vals:
            return
        counts: dict[str, int] = {}
        for v in vals:
            for w in set(_col_words(str(v))):
                counts[w] = counts.get(w, 0) + 1
        for v in dict.fromkeys(vals):
            ws = _col_words(str(v))
            if not ws:
                continue
            if len(ws) == 1:
                self._add((ws[0],), Sense("value", t, c, v, weight=1.0, via="sample value"))
            else:
                self._add(tuple(ws[:2]), Sense("value", t, c, v, weight=1.0, via="sample value"))
                for w in ws:  # the distinctive word of a value ("memphis" of "Memphis DC")
                    if counts.get(w, 0) == 1 and not w.isdigit() and w not in u.FILLER:
                        self._add((w,), Sense("value", t, c, v, weight=0.9, via="sample value"))

    def at(self, st: list[str], i: int) -> tuple[int, list[Sense]]:
        """The senses of the words at *i*: a two-word phrase when one matches, else the word."""
        if i + 1 < len(st) and (st[i], st[i + 1]) in self.senses:
            return 2, self.senses[(st[i], st[i + 1])]
        found = self.senses.get((st[i],), [])
        if not found and len(st[i]) > 3 and st[i].endswith("s"):  # the plural of an abbreviation ("SKUs")
            found = self.senses.get((st[i][:-1],), [])
        return 1, found

    def closest(self, word: str, n: int = 4) -> list[str]:
        """Columns whose names are closest to *word* (for "no system offers X; closest: ...")."""
        import difflib

        names = {f"{t.name}.{c.name}": c.name for t in self.tables for c in t.columns}
        by_name = difflib.get_close_matches(word, list(names.values()), n=n, cutoff=0.5)
        return [k for k, v in names.items() if v in by_name][:n]


# ---------------------------------------------------------------------------------------------- joins

@dataclass
class JoinKey:
    """How two tables relate: ``a.<cond> b``; strength 3 parent/child or id, 2 a key verified by the sample
    values, 1 a shared attribute (region = region), used only to reach a table otherwise out of reach."""

    a: Table
    b: Table
    cond: str  # with {a} and {b} for the aliases
    strength: int
    note: str


def _norm(v: Any) -> str:
    return str(v).strip().lower()


def _affix(values: list[Any]) -> tuple[str, int, str] | None:
    """The common (prefix, digits width or 0, suffix) of identifier values like ``ORD-100001``."""
    forms = set()
    for v in values[:200]:
        m = re.fullmatch(r"([A-Za-z][A-Za-z_#/ -]*?[-_#/ ]?)(\d+)([-_/ ]?[A-Za-z]*)", str(v).strip())
        if not m:
            return None
        width = len(m.group(2)) if m.group(2).startswith("0") else 0
        forms.add((m.group(1), width, m.group(3)))
    return next(iter(forms)) if len(forms) == 1 and values else None


def _unique(t: Table, c: Column, sample: dict[str, Sample]) -> bool:
    if t.parent is None and [k.lower() for k in t.pk] == [c.name.lower()]:
        return True
    s = sample.get(t.name)
    return bool(s and s.rows > 1 and s.distinct.get(c.name) == s.rows)


def join_keys(a: Table, b: Table, sample: dict[str, Sample]) -> list[JoinKey]:
    """Every way *a* and *b* relate, strongest first: parent/child keys, ``<entity>_id`` = ``id``, a shared key
    name (verified by the sample values when both sides have some), identifiers that differ in form (a prefix
    or suffix on one side: ``ORD-100001`` = 100001) with overlapping sample values, shared attributes."""
    out: list[JoinKey] = []
    sa, sb = sample.get(a.name), sample.get(b.name)

    def overlap(ca: Column, cb: Column) -> float | None:
        if not sa or not sb or ca.name not in sa.values or cb.name not in sb.values:
            return None
        va, vb = {_norm(v) for v in sa.values[ca.name]}, {_norm(v) for v in sb.values[cb.name]}
        if not va or not vb:
            return None
        return len(va & vb) / min(len(va), len(vb))

    if b.parent == a.name or a.parent == b.name:
        parent, child = (a, b) if b.parent == a.name else (b, a)
        key = next((c.name for c in child.columns if parent.col(c.name)), None)
        if key:
            out.append(JoinKey(a, b, f"{{a}}.{key} = {{b}}.{key}", 3, f"{child.name} are the children of "
                                                                       f"{parent.name} ({key})"))
    for x, y, flip in ((a, b, False), (b, a, True)):
        yid = y.col("id")
        if yid is None:
            continue
        for ent in sorted(y.entity):
            xc = x.col(f"{ent}_id")
            if xc is not None and _compatible(xc.kind, yid.kind):
                cond = f"{{b}}.{yid.name} = {{a}}.{xc.name}" if not flip else f"{{a}}.{yid.name} = {{b}}.{xc.name}"
                cond = f"{{a}}.{xc.name} = {{b}}.{yid.name}" if not flip else f"{{b}}.{xc.name} = {{a}}.{yid.name}"
                out.append(JoinKey(a, b, cond, 3, f"{x.name}.{xc.name} = {y.name}.id (a key named after {ent})"))
    keys = {k.lower() for k in (*a.pk, *b.pk)}
    for ca in a.columns:
        cb = b.col(ca.name)
        if cb is None or not _compatible(ca.kind, cb.kind) or ca.kind not in ("int", "str", "other") or \
                ca.name.lower() == "id":
            continue  # two tables' own "id"s name different things
        if any(ca.name in k.cond.split(".")[-1] for k in out):
            continue
        ov = overlap(ca, cb)
        keyish = ca.name.lower() in keys or _unique(a, ca, sample) or _unique(b, cb, sample)
        if ov == 0.0:
            continue  # the same name, never the same value (SKU-100 against SKU-00001)
        if ca.name.lower().endswith("_id") or ca.name.lower() in keys:
            out.append(JoinKey(a, b, f"{{a}}.{ca.name} = {{b}}.{cb.name}", 2 if keyish else 1,
                               f"{a.name}.{ca.name} = {b.name}.{cb.name} (the same key name"
                               + (", values overlap in the samples)" if ov else ")")))
        elif ca.kind == "str" and ca.name.lower() not in ("name", "currency", "status", "email", "description"):
            out.append(JoinKey(a, b, f"{{a}}.{ca.name} = {{b}}.{cb.name}", 1,
                               f"{a.name}.{ca.name} = {b.name}.{cb.name} (a shared attribute)"))
    # identifiers in different forms: a prefix/suffix on one side, plain numbers on the other
    if sa and sb:
        for x, y, sx, sy, flip in ((a, b, sa, sb, False), (b, a, sb, sa, True)):
            for cx in x.columns:
                vx = sx.values.get(cx.name) or []
                form = _affix(vx) if cx.kind in ("str", "other") else None
                if form is None:
                    continue
                prefix, width, suffix = form
                letters = re.sub(r"[^a-z]", "", prefix.lower())
                digits = {int(re.sub(r"\D", "", str(v))) for v in vx if re.search(r"\d", str(v))}
                for cy in y.columns:
                    if cy.kind not in ("int", "num", "other"):
                        continue
                    names = {w for w in u.split_words(cy.name) if w != "id"} | set(y.entity) | {
                        w for w in u.split_words(y.name)}
                    if letters and not any(len(letters) >= 2 and (w.startswith(letters) or letters.startswith(w[:3]))
                                           for w in names if len(w) >= 3):
                        continue  # the prefix abbreviates nothing of that side ('SKU-' is no customer id)
                    vy = {int(v) for v in sy.values.get(cy.name) or [] if isinstance(v, int)}
                    if not vy or not _unique(y, cy, sample):
                        continue
                    common = len(digits & vy)
                    if common == 0 or common / min(len(digits), len(vy)) < 0.3:
                        continue
                    num = f"cast({{{'a' if flip else 'b'}}}.{cy.name} as varchar)"
                    if width:
                        num = f"lpad({num}, {width}, '0')"
                    expr = " || ".join(p for p in (f"'{prefix}'" if prefix else "", num,
                                                   f"'{suffix}'" if suffix else "") if p)
                    xa = "b" if flip else "a"
                    out.append(JoinKey(a, b, f"{{{xa}}}.{cx.name} = {expr}", 2,
                                       f"{x.name}.{cx.name} = '{prefix}' || {y.name}.{cy.name} (identifiers in another "
                                       f"form: {vx[0]!r} against {cy.name} {sorted(vy)[0]}; {common} sample values "
                                       "match)"))
    out.sort(key=lambda k: (-k.strength, " " in k.note.split("(")[0]))
    # of the identifier forms, the one whose prefix has no spaces first (a reference, not a free text)
    return out


# -------------------------------------------------------------------------------------- the request

@dataclass
class Mention:
    at: int
    span: int
    sense: Sense


@dataclass
class Reading:
    """The request matched against the vocabulary: per word position its senses, and what is left unexplained."""

    words: list[str]
    st: list[str]
    senses: dict[int, tuple[int, list[Sense]]] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)
    unknown_at: list[int] = field(default_factory=list)
    destination: bool = False


_GRAMMAR = {"per", "by", "each", "every", "for", "of", "with", "and", "or", "without", "never", "no", "not", "the"}


_TOKEN = re.compile(r"\d+(?:\.\d+)?|[A-Za-z][A-Za-z0-9'-]*[A-Za-z0-9]|[A-Za-z]")


#: Multi-word expressions that mean one word of the vocabulary: phrasal verbs and compounds whose parts
#: alone mean something else ("gone out" is shipped; "out" and "go" alone are nothing).
_IDIOMS = [
    (re.compile(r"\bon hand\b", re.IGNORECASE), "onhand"),  # one word: stock held
    (re.compile(r"\b(?:gone|went|sent|shipped) out\b(?! of)", re.IGNORECASE), "shipped"),
    (re.compile(r"\be-?mail address(?:es)?\b", re.IGNORECASE), "email"),
    (re.compile(r"\b(?:tele)?phone (?=calls?\b)", re.IGNORECASE), ""),
    (re.compile(r"\b([a-z]+) (?:by|after) \1\b", re.IGNORECASE), r"each \1"),  # "booking by booking": one row each
]


#: Hyphenated words the vocabulary knows as one ("to-do", "follow-up", "top-up"); any other compound of two
#: words is read as its words ("bronze-tier customers": the bronze tier).
_HYPHENATED = {w for group in u.THESAURUS for w in group if "-" in w} | {w for w in u.CHANGE_VERBS if "-" in w}


_DAYS = {"mon", "tue", "tues", "wed", "thu", "thur", "thurs", "fri", "sat", "sun", "monday", "tuesday", "wednesday",
         "thursday", "friday", "saturday", "sunday"}


def _split_compound(m: re.Match[str]) -> str:
    keep = m.group(0).lower() in _HYPHENATED or m.group(1).lower() in _DAYS  # "Mon-Fri": a range, read whole
    return m.group(0) if keep else f"{m.group(1)} {m.group(2)}"


def _normalize(request: str) -> str:
    """A typographic apostrophe as a plain one, thousands separators dropped ("150,000" is one number), idioms as
    the one word they mean (:data:`_IDIOMS`)."""
    text = u.plain_numbers(request.replace("\u2019", "'"))
    text = re.sub(r"(?<![\w-])([A-Za-z]{2,})-([A-Za-z]{2,})(?![\w-])", _split_compound, text)
    for pattern, word in _IDIOMS:
        text = pattern.sub(word, text)
    return text


def phrase_breaks(request: str) -> set[int]:
    """Token positions followed by punctuation (a comma, a colon, a bracket): a phrase ends there ("per depot,
    quantity times unit cost" groups by the depot, not by the quantity)."""
    text = _normalize(request)
    spans = [m.span() for m in _TOKEN.finditer(text)]
    return {k for k in range(len(spans) - 1) if re.search(r"[,;:!?()\[\]]|\.\s", text[spans[k][1]:spans[k + 1][0]])}


def _tokenize(request: str, keep_case: bool = False) -> list[str]:
    text = _normalize(request)
    found = re.findall(r"\d+(?:\.\d+)?|[A-Za-z][A-Za-z0-9'-]*[A-Za-z0-9]|[A-Za-z]", text)
    return [w.removesuffix("'s").removesuffix("'S").strip("'") if keep_case else
            w.lower().removesuffix("'s").strip("'") for w in found]


_DESTINATION = re.compile(r"\b(?:into|to|onto) (?:the |our |my )?(?:data ?)?"
                          r"(?:warehouse|dwh|database|db|lake|lakehouse)\b"
                          r"|\b(?:data|our|my) ?warehouse\b|\b(?:dwh|duckdb|lakehouse|datalake)\b")


def _contraction(word: str) -> bool:
    """A pronoun or auxiliary contracted with its verb ("I'd", "we've", "they're", "you'll"): no field."""
    base, _, tail = word.partition("'")
    return tail in ("d", "ll", "ve", "re", "m") and (base in u.FILLER or base in ("i", "we", "you", "they"))


def read_request(request: str, vocab: Vocabulary, skip: set[int], ignore: set[int] | frozenset[int] = frozenset()
                 ) -> Reading:
    """The request's words against the vocabulary; *ignore*: positions that say nothing of the data (a
    schedule), neither matched nor reported as unknown."""
    words = _tokenize(request)
    raw = _tokenize(request, keep_case=True)
    st = [u.stem(w) for w in words]
    r = Reading(words, st)
    # where the data goes ("into the warehouse", "our data warehouse") names no table of a system
    joined = " ".join(words)
    for m in _DESTINATION.finditer(joined):
        first = len(joined[: m.start()].split())
        skip = skip | set(range(first, first + len(m.group(0).split())))
        r.destination = True
    i = 0
    while i < len(words):
        if (i in skip and r.destination and not re.fullmatch(r"\d+(\.\d+)?", words[i])) or i in ignore:
            i += 1
            continue
        span, senses = vocab.at(st, i)
        # a value that is also an English word ("IN", "US", "NO") counts only written as the value is
        senses = [s for s in senses if not (s.kind == "value" and span == 1 and (words[i] in u.FILLER or
                  len(words[i]) <= 2) and raw[i] != str(s.value))]
        # a modal before a verb asks whether something can be done: a flag ("products customers can still buy")
        if (i > 0 and words[i - 1] in ("can", "could", "still")) or (i > 1 and words[i - 2] in ("can", "could")):
            flags = [s for s in senses if s.kind == "column" and s.column is not None and s.column.kind == "bool"]
            senses = flags or senses
        # the main verb of a question after its auxiliary and pronoun subject ("did we book", "do we have")
        # names no field: the field is what the question asks of it
        if i >= 2 and words[i - 1] in _PRONOUNS and words[i - 2] in _AUX:
            i += 1
            continue
        # a system's name names the system, not a table by a synonym ("inventory" is no stock level)
        if any(s.kind == "system" for s in senses):
            senses = [s for s in senses if s.kind == "system" or s.weight >= 1.0]
        # "last week", "number of": time and counting words, no names
        if words[i] in ("last", "past", "next", "this", "previous") and i + 1 < len(words) and \
                words[i + 1] in ("day", "days", "week", "weeks", "month", "months", "year", "years", "night", "hour"):
            senses = []
        if words[i] == "number" and i + 1 < len(words) and words[i + 1] == "of":
            senses = []
        # a ratio or counting word is no column by a synonym ("the cancellation rate" is no score)
        if words[i] in _RATIO or words[i] in _AGG_WORDS or words[i] in ("times", "multiplied", "divided", "minus",
                                                                         "plus"):
            senses = [s for s in senses if not s.via.startswith("synonym")]
        if senses:
            r.senses[i] = (span, senses)
            i += span
            continue
        w = words[i]
        if i not in skip and w not in u.FILLER and st[i] not in {u.stem(f) for f in ("total",)} and \
                not re.fullmatch(r"\d+(\.\d+)?", w) and len(w) > 2 and w not in u.NEGATIONS and \
                not w.endswith(("ed", "ing", "ly", "est", "ible", "able", "ful", "ous", "ive", "ish")) and \
                not w.endswith("n't") and w not in _VERBS and not _contraction(w):
            r.unknown.append(w)
            r.unknown_at.append(i)
        i += 1
    return r


#: Words that follow a verb, not a noun: an object's determiner or pronoun, a verb's particle ("build a
#: breakdown", "leave the cancelled ones out", "broken down by").
_AFTER_VERB = {"the", "a", "an", "our", "my", "your", "their", "its", "this", "these", "those", "it", "them", "me",
               "us", "him", "down", "up", "out", "off", "away", "back"}
#: Auxiliaries that put the subject before the main verb in a question ("how much did the bank collect").
_AUX = {"did", "does", "do", "will", "would", "can", "could", "should", "has", "have", "had"}
#: Identifier words: an unknown word before one says which identifier ("phone number", "VAT code"), it is no
#: modifier of a field the estate has.
_ID_WORDS = {"number", "numbers", "no", "nr", "code", "codes", "id", "ids", "key", "keys", "name", "names"}
_PRONOUNS = {"we", "you", "they", "i", "he", "she", "it", "us"}
_TIME_UNITS = {"day", "days", "week", "weeks", "month", "months", "quarter", "quarters", "year", "years", "hour"}
#: Prepositions of place: "on the shelves", "in the back office" say where, not what is asked.
_LOCATIVE = {"on", "in", "at", "inside"}


def _not_a_field(r: Reading, i: int) -> bool:
    """Whether the unknown word at *i* is used as something other than a noun the request asks for: English
    syntax, not a word list. A verb (followed by its object's determiner or a particle, or the main verb of a
    question after its auxiliary and subject), a modifier of a noun the estate knows ("storage sites", "calendar
    week"), or the noun of a place phrase ("on the shelves")."""
    words = r.words
    nxt = words[i + 1] if i + 1 < len(words) else ""
    if nxt in _AFTER_VERB and not (i > 0 and words[i - 1] in ("the", "a", "an", "our", "their", "each", "every")):
        return True
    if nxt in _TIME_UNITS or ((i + 1) in r.senses and not nxt.endswith("ed") and nxt not in _ID_WORDS and
                              any(s.kind in ("table", "column") for s in r.senses[i + 1][1])):
        return True
    before = [w for w in words[max(0, i - 2):i] if w not in ("the", "a", "an", "our", "their")]
    if before and before[-1] in _LOCATIVE:
        return True
    for a in range(max(1, i - 4), i - 1):  # "did the bank collect": aux, subject (known or a determiner), verb
        if words[a] in _AUX and all(k in r.senses or words[k] in _AFTER_VERB or
                                    any(k in range(j, j + r.senses[j][0]) for j in r.senses)
                                    for k in range(a + 1, i)):
            return True
    return False


#: Common verbs and adjectives of requests that name nothing (their forms in -ed/-ing are skipped anyway).
_VERBS = set(u._words("""
buy sell see want need like know say think use take make give keep hold let put bring serve serves
cover covers end ends start starts last lasts stay stays spend spends talk talked talk speak meet
log logs pay pays book books settle settles arrive arrives receive receives came come went go goes
show shows list lists tell tells happen happens contain contains own owns carry carries rate rated
worth ones things stuff someone something anyone everyone nobody left right around again over
our their your its his her new old big small high low long short early late recent cheap dear
far near full empty whole single respective individual per apiece each both
refresh reload match link pair connect relate map track monitor combine settle settles serve serving
receive received arrive arrived belong belongs hold holds have has had get gets got
"""))


def compose(request: str, catalog: CatalogLike, pipelines: Sequence[Pipeline], *, name: str | None = None
            ) -> PlanResult:
    """The offline planner's composition (no validation): read the request against the estate's vocabulary,
    choose the tables and how they join, write the model SQL, and note every assumption."""
    res = PlanResult(request=request, backend="offline")
    verb = write_intent(request, catalog)
    if verb:
        from hub.agent import flowplan  # builds on this module

        try:
            return flowplan.compose_flow(request, catalog, pipelines, verb, name=name)
        except flowplan.Forbidden as exc:
            res.refused = True
            res.errors.append(f"{exc}; nothing was planned")
            return res
        except flowplan.NotAFlow as exc:
            res.refused = True
            res.errors.append(refusal(request, verb) + f" ({exc})")
            return res
    tables = universe(catalog, pipelines)
    if not tables:
        res.errors.append("the catalog has no read action to plan from")
        return res
    sample = samples(catalog, pipelines, tables)
    if sample:  # a table whose one partition could not be read is no table to plan from (an id it needs, ...)
        tables = [t for t in tables if t.name in sample]
    systems = {a.system for a in catalog.actions}
    vocab = Vocabulary(tables, sample, systems)
    try:
        return _Composer(request, vocab, sample, pipelines, catalog, res, name).run()
    except _Reject as exc:
        res.errors.append(str(exc))
        return res


class _Reject(Exception):
    pass


def refusal(request: str, verb: str) -> str:
    """Why a write request is refused; a triggered one ("when ..., mark ...") is a write workflow (a flow)."""
    kind = "a write workflow (a flow: a trigger, then approval-gated writes)" if u.is_flow(request) \
        else "a write workflow (an approval-gated flow), not a read plan"
    return (f"the request asks to change data ('{verb}'): it would need {kind}; plans only read (sources never "
            "write), so nothing was planned")


_AGG_WORDS = {"average": "avg", "avg": "avg", "mean": "avg", "total": "sum", "sum": "sum", "overall": "sum",
              "combined": "sum", "aggregate": "sum", "cumulative": "sum", "summed": "sum", "typical": "avg",
              "maximum": "max", "max": "max", "minimum": "min", "min": "min", "count": "count", "median": "median"}
_RATIO = {"rate", "share", "fraction", "percentage", "percent", "proportion", "ratio", "often", "likelihood",
          "probability", "chance", "odds"}
_SUPER_MEASURE = {"cheap": "price", "expens": "price", "pricey": "price", "prici": "price", "costl": "price",
                  "dear": "price", "long": "duration",
                  "short": "duration", "old": "time", "new": "time", "recent": "time", "late": "time",
                  "early": "time", "rich": "revenue", "big": "", "larg": "", "high": "", "low": "", "small": "",
                  "most": "", "least": "", "top": "", "best": "", "worst": "", "great": "", "few": ""}


class _Composer:
    def __init__(self, request: str, vocab: Vocabulary, sample: dict[str, Sample], pipelines: Sequence[Pipeline],
                 catalog: CatalogLike, res: PlanResult, name: str | None) -> None:
        self.request, self.vocab, self.sample, self.pipelines = request, vocab, sample, pipelines
        self.catalog, self.res, self.name = catalog, res, name
        self.notes = res.notes
        self._joins: dict[tuple[str, str], list[JoinKey]] = {}
        #: tables a first reading took as the main one by a synonym and could not join: read again without them
        self.avoid: set[str] = set()

    def joins(self, a: Table, b: Table) -> list[JoinKey]:
        key = (a.name, b.name)
        if key not in self._joins:
            self._joins[key] = join_keys(a, b, self.sample)
        return self._joins[key]

    # ------------------------------------------------------------------------------------------------
    def run(self) -> PlanResult:
        words = _tokenize(self.request)
        nums = u.numbers(words)
        comps = u.comparisons(words, nums)
        used_nums = {n.start for n in nums if any(c.start <= n.start < c.end for c in comps)}
        top = u.top_n(words, nums, used_nums)
        when = u.when(self.request)
        skip: set[int] = set()
        for c in comps:
            skip |= set(range(c.start, c.end))
        for n in nums:
            skip |= set(range(n.start, n.end))
        reading = read_request(self.request, self.vocab, skip, u.schedule_positions(words))
        st = reading.st
        central = self._central_unknown(reading)
        if central:
            raise _Reject(self._not_found(central))
        for w in reading.unknown:
            self.notes.append(f"ignored '{w}': no table, column or value is named so, and it is not what the "
                              "request asks for")
        self._state_change(reading)
        mentions = [Mention(i, span, s) for i, (span, ss) in reading.senses.items() for s in ss]
        if not mentions:
            raise _Reject(self._not_found([w for w in words if w not in u.FILLER] or words))
        # systems named: their tables are preferred
        named_sys = {m.sense.system for m in mentions if m.sense.kind == "system"}
        # ---- the main table: the first word naming a table (or the table most of the columns named belong to)
        table_m = [m for m in mentions if m.sense.kind == "table"]
        col_m = [m for m in mentions if m.sense.kind in ("column", "value")]

        sys_pos = {m.at: m.sense.system for m in mentions if m.sense.kind == "system"}

        def sysf(t: Table, at: int | None = None) -> float:
            """A system word right before a word ("ERP revenue", "CRM region") narrows it to that system."""
            if at is not None:
                near = next((sys_pos[k] for k in (at - 1, at - 2) if k in sys_pos), None)
                if near is not None:
                    return 1.0 if t.system == near else 0.4
            return 1.0 if not named_sys or t.system in named_sys else 0.55

        others_pos = {m.at for m in table_m}
        mentioned_tables = {m.sense.table.name for m in table_m if m.sense.table is not None}

        def joinable(t: Table) -> float:
            bonus = 0.0
            for n in mentioned_tables - {t.name}:
                other = next(x for x in self.vocab.tables if x.name == n)
                if any(k.strength >= 2 for k in self.joins(t, other)):
                    bonus += 0.1
            return bonus

        def tscore(m: Mention) -> float:
            t = m.sense.table
            assert t is not None
            cols = sum(x.sense.weight for x in col_m if x.sense.table is t)
            return m.sense.weight * sysf(t) + joinable(t) + 0.05 * min(cols, 3) + (0.05 if t.template else 0)

        # a time window ("yesterday", "last week") or a time grain ("per week") asks about what happened then: the
        # rows of a partitioned table (events), not a figure of reference data (customers ranked by what they spent)
        self.windowed = windowed = bool(re.search(
            r"\b(yesterday|today|last (?:week|month|night)|past (?:week|month)|this (?:week|month))\b", self.request,
            re.IGNORECASE)) or when.grain in ("day", "week", "month", "quarter", "hour")

        def timely(t: Table, s: Sense) -> float:
            if not windowed or s.kind != "column" or s.column is None or s.column.kind not in ("int", "num"):
                return 1.0
            return 1.3 if t.partitioned else 0.7

        main: Table | None = None
        strong = [m for m in table_m if m.sense.weight * sysf(m.sense.table) >= 0.5  # type: ignore[arg-type]
                  and (m.sense.table is None or m.sense.table.name not in self.avoid)]
        # "for each order", "for every order line": the rows asked for are that table's
        each = [m for m in strong if m.at >= 2 and words[m.at - 2] == "for" and words[m.at - 1] in ("each", "every")]
        if each:
            k = each[0].at
            while k + 1 in reading.senses and any(m.at == k + 1 for m in strong):
                k += 1
            strong = [m for m in strong if m.at == k] or strong
        if strong:
            first = min(m.at for m in strong)
            # a compound names its head last ("customer interactions", "sales orders"): the last table word of
            # the run of words naming something that starts at the first one
            k = first
            while True:
                span = reading.senses[k][0] if k in reading.senses else 1
                nxt_raw = words[k + span] if k + span < len(words) else ""
                verb = nxt_raw in u.IRREGULAR or nxt_raw.endswith(("ed", "ing"))  # "items sold": no compound
                if k + span in reading.senses and any(m.at == k + span for m in strong) and not verb:
                    k += span
                    continue
                break
            first = k
            cands = [m for m in strong if m.at == first]
            main = max(cands, key=tscore).sense.table
        else:
            by_t: dict[str, float] = {}
            for m in col_m:
                t = m.sense.table
                assert t is not None
                if any(words[k] in ("per", "by", "each") for k in (m.at - 1, m.at - 2, m.at - 3) if k >= 0):
                    continue  # a grouping names no main table
                by_t[t.name] = by_t.get(t.name, 0) + m.sense.weight * sysf(t, m.at) * timely(t, m.sense)
            for m in table_m:  # a weak name of a table still counts for it, more than a column's synonym would
                t = m.sense.table  # ("on hand quantities": the stock's quantities, not the order lines')
                if t is not None and t.name in by_t and t.name not in self.avoid:
                    by_t[t.name] += 1.5 * m.sense.weight * sysf(t, m.at)
            if named_sys and not by_t:
                sys_tables = [t for t in self.vocab.tables if t.system in named_sys and t.parent is None]
                if len(sys_tables) == 1:
                    main = sys_tables[0]
            if by_t:
                best = max(by_t.values())
                main = next(t for t in self.vocab.tables if by_t.get(t.name) == best)
        if main is None:
            raise _Reject(self._not_found([w for i, w in enumerate(words) if i not in reading.senses
                                           and w not in u.FILLER] or words))
        self.main = main
        chosen: list[Table] = [main]
        self.notes.append(f"reads {main.name} ({main.action}): named by "
                          + ", ".join(sorted({f"'{words[m.at]}' ({m.sense.via})" for m in table_m
                                              if m.sense.table is main})[:3] or ["the columns asked for"]))
        # system words that name a system with a single table
        for m in mentions:
            if m.sense.kind == "system":
                ts = [t for t in self.vocab.tables if t.system == m.sense.system and t.parent is None]
                if len(ts) == 1 and ts[0] not in chosen:
                    table_m.append(Mention(m.at, 1, Sense("table", ts[0], weight=0.7, via="system name")))
        # ---- negations: anti-joins
        neg_at = u.negation_positions(words)
        anti: list[tuple[Table, int]] = []
        #: the value an anti-join is scoped to ("never got a call": no contact whose channel is call)
        self.anti_values: dict[str, tuple[int, Sense]] = {}
        best_at = {x.at: max(y.sense.weight for y in table_m if y.at == x.at) for x in table_m}
        for p in neg_at:
            near = [m for m in table_m if m.sense.table is not main and m.sense.table is not None and
                    (0 < m.at - p <= 5 or 0 < p - m.at <= 3) and m.sense.weight >= 0.5
                    and not any(x.sense.table is m.sense.table and x.at < p and x.sense.kind == "table"
                                and x.sense.weight >= best_at[x.at] and x.at not in range(p - 3, p)
                                for x in table_m)]
            subject = any(0 < p - m.at <= 2 for m in near)  # "the bank never paid"
            # the object of the negation comes first: "ordered, which ones never got a call" negates the call
            if any(m.at > p for m in near) and not subject:
                near = [m for m in near if m.at > p]
            scoped = next((m for m in col_m if 0 < m.at - p <= 4 and m.sense.kind == "value" and
                           m.sense.table is not None and m.sense.table is not main and
                           m.sense.weight >= 1.0 and not any(x.at < m.at for x in near if x.at > p)), None)
            if scoped is not None and scoped.sense.table is not None and words[p] not in (
                    "excluding", "except", "minus") and not any(k.strength >= 2 for k in
                                                                self.joins(main, scoped.sense.table)):
                scoped = None
            if scoped is not None and scoped.sense.table is not None:
                near = [Mention(scoped.at, 1, Sense("table", scoped.sense.table, weight=1.0, via="value"))]
                self.anti_values[scoped.sense.table.name] = (scoped.at, scoped.sense)
            if not near or words[p] in ("excluding", "except", "minus"):
                continue
            # a value or flag right after the negation is a filter, not an anti-join ("not cancelled")
            nxt = next((m for m in col_m if 0 < m.at - p <= 2 and (m.sense.kind == "value" or m.sense.weight > max(
                (x.sense.weight for x in table_m if x.at == m.at and x.sense.table is not main), default=0))), None)
            if nxt is not None and nxt.sense.table is main and not subject and \
                    not any(m.at < nxt.at for m in near if m.at > p):
                continue
            best_m = max(near, key=lambda m: (m.sense.weight * sysf(m.sense.table) - 0.05 * abs(m.at - p))  # type: ignore[arg-type]
                         )
            t = best_m.sense.table
            assert t is not None
            if all(t is not a for a, _ in anti):
                anti.append((t, p))
        anti_tables = {t.name for t, _ in anti}
        # ---- the columns and values named; a column of another table brings that table (joined)
        picked: dict[int, Sense] = {}
        for i in sorted({m.at for m in col_m}):
            here = [m.sense for m in col_m
                    if m.at == i and (m.sense.table is None or m.sense.table.name not in self.avoid)]
            if i in others_pos:  # a word that names a table names no column there, unless strongly
                tw = max(m.sense.weight for m in table_m if m.at == i)
                here = [s for s in here if s.weight > tw or (s.kind == "value" and s.weight >= tw)]
            if not here:
                continue

            def cscore(s: Sense, at: int = i) -> float:
                t = s.table
                assert t is not None
                w = s.weight * sysf(t, at)
                if t is main:
                    w *= 1.45
                elif t in chosen:
                    w *= 1.25
                elif t.name in anti_tables or t.name in mentioned_tables:
                    w *= 1.1
                if any(x.at == at - 1 and x.sense.table is t for x in table_m):
                    w *= 1.3  # "order value": the value of the table named right before
                of = at + 1 + (1 if at + 1 < len(words) and words[at + 1] == "of" else 99)
                while of < len(words) and words[of] in ("the", "a", "an", "each", "every", "its", "their"):
                    of += 1
                if of < len(words) and any(x.at == of and x.sense.table is t for x in table_m):
                    w *= 2.2  # "the name of the customer": the customer's name
                if s.kind == "column" and t is main and s.column is not None and s.column.name.lower() == "id":
                    w *= 0.5
                if t not in chosen and any(k.strength >= 2 for k in self.joins(main, t)):
                    w *= 1.2  # of two tables with a column so named, the one the main table has a key to
                if windowed and t.partitioned and not main.partitioned and s.kind == "column":
                    w *= 1.6  # "spent the most yesterday": a window applies to what happened, not to reference data
                else:
                    w *= timely(t, s)
                return w

            best_s = max(here, key=cscore)
            if best_s.table not in chosen and best_s.table is not None and best_s.table.name not in anti_tables \
                    and best_s.table.name not in mentioned_tables and best_s.via.startswith("synonym") \
                    and best_s.weight < 0.85 and not (windowed and best_s.table.partitioned
                                                      and not main.partitioned):
                continue  # a synonym alone brings no table of its own ("stock value" is no order amount)
            picked[i] = best_s
        self.picked = picked
        # "yearly turnover" names a column (annual_revenue), not a grain
        for i, s in picked.items():
            if words[i] in ("daily", "weekly", "monthly", "yearly", "annual", "quarterly") and s.kind == "column":
                when.grain = None
                if when.partitions == "monthly":
                    when.partitions = None
        self._reading_senses = reading.senses
        self._mentions = table_m
        # ---- other tables named: kept when they join by a key or something of theirs is used
        used_tables = {s.table.name for s in picked.values() if s.table is not None}
        # "customers who bought", "clients that ordered": a relative clause whose verb names another table asks
        # for the main table's rows that have one (a semi-join), not for the other table's rows
        self.semi: list[tuple[Table, int]] = []
        for m in sorted(table_m, key=lambda m: m.at):
            t = m.sense.table
            if t is None or t is main or t.name in anti_tables or m.sense.weight < best_at.get(m.at, 0) or \
                    m.at < 1 or words[m.at - 1] not in ("who", "that", "which") or \
                    not (words[m.at].endswith("ed") or words[m.at] in u.IRREGULAR) or \
                    not any(k.strength >= 2 for k in self.joins(main, t)) or \
                    any(s.table is t for i, s in picked.items() if i != m.at) or any(x.at < m.at and x.sense.table is t
                                                                                    for x in table_m):
                continue
            if all(t is not x for x, _ in self.semi):
                self.semi.append((t, m.at))
                picked.pop(m.at, None)
        semi_tables = {t.name for t, _ in self.semi}
        anti_tables = anti_tables | semi_tables
        for m in sorted(table_m, key=lambda m: m.at):
            t = m.sense.table
            if t is None or t in chosen or t.name in anti_tables or m.sense.weight * sysf(t) < 0.5 or \
                    t.name in self.avoid:
                continue
            if any(x.at == m.at and x.sense.weight > m.sense.weight for x in table_m if x.sense.table in chosen):
                continue
            if any(m.at == i for i in picked) and picked[m.at].table in chosen:
                continue
            head_at = [x.at for x in table_m if x.sense.table is main]
            if any(m.at + 1 == h for h in head_at) and t.name not in used_tables:
                continue  # the modifier of a compound ("customer interactions") is no table of its own
            asked = any(words[k] in ("with", "and", "join", "joined", "plus", "including", "alongside", "to")
                        for k in (m.at - 1, m.at - 2) if k >= 0)
            if t.name in used_tables or asked or any(k.strength >= 2 for c in chosen for k in self.joins(c, t)):
                chosen.append(t)
            else:
                self.notes.append(f"assumed '{words[m.at]}' does not ask for {t.name}: no key relates it to "
                                  f"{', '.join(c.name for c in chosen)} and none of its columns is asked for")
        for s in picked.values():
            t = s.table
            if t is not None and t not in chosen and t.name not in anti_tables:
                chosen.append(t)
        # ---- joins: connect every chosen table to the main one
        try:
            kept = len(self.notes)
            try:
                tree, join_sql = self._connect(chosen)
            except _Reject:
                del self.notes[kept:]
                # a table named only by a synonym that relates to nothing else named ("every depot and article"
                # beside the stock: 'article' names the catalogue, whose SKUs are not the stock's) is left out
                weak = [t for t in chosen[1:] if all(m.sense.weight < 1.0 for m in table_m if m.sense.table is t)
                        and not any(s.table is t for s in picked.values()) and not any(
                    k.strength >= 2 for c in chosen if c is not t for k in self.joins(c, t))]
                if not weak:
                    raise
                tree, join_sql = self._connect([t for t in chosen if t not in weak])
                self.notes += [f"assumed '{words[m.at]}' does not ask for {m.sense.table.name}: no key relates it to "
                               f"{main.name}" for m in table_m if m.sense.table in weak]
        except _Reject:
            named = [m for m in table_m if m.sense.table is main]
            if named and max(m.sense.weight for m in named) < 1.0 and len(chosen) > 1 and main.name not in self.avoid:
                # "which SKUs does the Memphis depot stock": 'SKUs' names the catalogue by a synonym, which joins
                # nothing else named; the request is about the other tables
                self.avoid.add(main.name)
                kept = len(self.notes)
                del self.notes[:kept]
                self.notes.append(f"not {main.name}: it was named only by a synonym and joins none of the other "
                                  "tables named")
                return self.run()
            raise
        self.tree = tree
        used: set[str] = set()
        alias = {t.name: _alias(t.name, used) for t in tree}
        self.alias = alias
        # ---- the measure, filters, grouping, ordering
        where: list[str] = []
        consumed: set[int] = set()
        # comparisons
        for c in comps:
            col = self._comparison_column(c, words)
            if col is None:
                self.notes.append(f"'{' '.join(words[c.start:c.end])}': no column to compare; ignored")
                continue
            t, ccol, at = col
            consumed.add(at)
            if t not in tree:
                raise _Reject(f"'{' '.join(words[c.start:c.end])}' compares {t.name}.{ccol.name}, which does not join")
            value = c.value
            if c.is_date or ccol.kind == "time":
                lit = f"timestamptz '{value} 00:00:00+00'" if "-" in value else value
                if not c.is_date:
                    continue
            else:
                if "hour" in ccol.name.lower() and c.unit == "minute":
                    value = str(float(value) / 60)
                lit = value
            where.append(f"{alias[t.name]}.{ccol.name} {c.op} {lit}")
            self.notes.append(f"'{' '.join(words[c.start:c.end])}' read as {t.name}.{ccol.name} {c.op} {value}")
        # values (= / <>) and flags
        neg_set = set(neg_at)
        ratio_at = [i for i, w in enumerate(words) if w in _RATIO]
        ratio_cond: str | None = None
        by_col: dict[tuple[str, str], list[tuple[Any, bool]]] = {}
        # of the values near a ratio word, the last is the outcome counted ("how often do chats end in a win"),
        # the ones before it choose the rows ("chats")
        in_ratio = [i for i, s in picked.items() if s.kind == "value" and i not in consumed and s.table in tree
                    and any(r - 3 <= i <= r + 10 for r in ratio_at)]
        ratio_pick = max(in_ratio) if in_ratio else None
        scoped_at = {at for at, _ in self.anti_values.values()}
        for i, s in sorted(picked.items()):
            if s.kind != "value" or i in consumed or s.table not in tree or i in scoped_at:
                continue
            t, vcol = s.table, s.column
            assert t is not None and vcol is not None
            before3, after3 = " ".join(words[max(0, i - 3):i]), " ".join(words[i + 1:i + 4])
            negated = any(0 < i - p <= 2 for p in neg_set) or bool(re.match(
                r"\s*(?:\w+\s+){0,2}(left out|excluded|ignored|aside|not included)", " ".join(words[i + 1:]))) or \
                bool(re.search(r"\b(exclud\w*|except|omit\w*|skip\w*|ignor\w*|drop\w*|other than|apart from|"
                               r"besides|outside)\b", before3)) or (bool(re.search(
                                   r"\b(leav\w*|left|keep\w*|kept|tak\w*|took|filter\w*|cut\w*)\b", before3)) and
                                   bool(re.search(r"\b(out|away|aside)\b", after3)))
            if i == ratio_pick and ratio_cond is None:
                ratio_cond = f"{alias[t.name]}.{vcol.name} = {_lit(str(s.value), vcol.kind)}"
                continue
            by_col.setdefault((t.name, vcol.name), []).append((s.value, negated))
        for (tname, cname), vals in by_col.items():
            t = next(x for x in tree if x.name == tname)
            fcol = t.col(cname)
            assert fcol is not None
            pos = [_lit(str(v), fcol.kind) for v, n in vals if not n]
            neg = [_lit(str(v), fcol.kind) for v, n in vals if n]
            if len(pos) == 1:
                where.append(f"{alias[tname]}.{cname} = {pos[0]}")
            elif pos:
                where.append(f"{alias[tname]}.{cname} in ({', '.join(pos)})")
            for v in neg:
                where.append(f"{alias[tname]}.{cname} <> {v}")
        for i, s in picked.items():  # boolean columns named: "active", "paid"
            if s.kind == "column" and s.column is not None and s.column.kind == "bool" and s.table is not None \
                    and s.table in tree and i not in consumed:
                if i > 1 and words[i - 1] in ("who", "that", "which") and any(
                        m.at == i - 2 and m.sense.table is not s.table for m in table_m) and not any(
                        m.at == i - 2 and m.sense.table is s.table for m in table_m):
                    continue  # "the customer who paid": says who is meant, the flag is another table's
                off = any(0 < i - p <= 3 for p in neg_set) != (s.value is False)
                where.append(f"{'not ' if off else ''}{alias[s.table.name]}.{s.column.name}")
                self.notes.append(f"'{words[i]}' read as the flag {s.table.name}.{s.column.name}"
                                  + (" (false)" if off else ""))
        # an empty field: "without a duration", "no score recorded", "nobody recorded how long they took"
        self.emptied: set[str] = set()  # table.column asked to be empty: no measure of the rows
        negated_tables = {q for _t, q in anti}
        for p in neg_at:
            if words[p] not in ("without", "no", "nobody", "never", "missing", "lacking", "none") or \
                    p in negated_tables:
                continue
            ahead = range(p + 1, min(len(words), p + 4))
            field_at = next((j for j in ahead if j not in consumed and (fs := picked.get(j)) is not None
                             and fs.kind == "column" and fs.column is not None and fs.column.kind != "bool"
                             and fs.table is main and not any(m.at == j for m in table_m)), None)
            empty: tuple[Table, Column] | None = None
            if field_at is not None:
                fs = picked[field_at]
                assert fs.table is not None and fs.column is not None
                empty = (fs.table, fs.column)
                consumed.add(field_at)
            elif re.match(r"(?:\w+\s+){0,2}how long\b", " ".join(words[p + 1:])):
                empty = self._duration_measure(words, -1)
            if empty is not None:
                self.emptied.add(f"{empty[0].name}.{empty[1].name}")
                where.append(f"{alias[empty[0].name]}.{empty[1].name} is null")
                self.notes.append(f"'{' '.join(words[p:p + 4])}' read as {empty[0].name}.{empty[1].name} is empty")
        # anti-joins
        def correlated(t: Table) -> tuple[str, str, JoinKey, Table] | None:
            """The alias and the condition that relate a row of *t* to the planned rows (for `[not] exists`)."""
            keys = [(k, c) for c in tree for k in self.joins(c, t) if k.strength >= 2]
            if not keys:
                return None
            akey, owner = keys[0]
            sub = "x_" + _alias(t.name, set(alias.values()))
            cond = akey.cond.format(a=alias[owner.name], b=sub) if akey.a is owner else \
                akey.cond.format(a=sub, b=alias[owner.name])
            return sub, cond, akey, owner

        for t, p in anti:
            found = correlated(t)
            if found is None:
                raise _Reject(f"'{words[p]} ... {t.name}': no key relates {t.name} to "
                              f"{', '.join(x.name for x in tree)}, so rows without one cannot be found")
            sub, cond, akey, owner = found
            scope = self.anti_values.get(t.name)
            if scope is not None and scope[1].column is not None:
                cond += f" and {sub}.{scope[1].column.name} = {_lit(str(scope[1].value), scope[1].column.kind)}"
            where.append(f"not exists (select 1 from {t.name} {sub} where {cond})")
            self.notes.append(f"'{words[p]}' read as: {owner.name} rows with no matching {t.name} ({akey.note})"
                              + (f" whose {scope[1].column.name} is {scope[1].value}"
                                 if scope is not None and scope[1].column is not None else ""))
        for t, at in self.semi:
            found = correlated(t)
            if found is None:
                continue
            sub, cond, akey, owner = found
            where.append(f"exists (select 1 from {t.name} {sub} where {cond})")
            self.notes.append(f"'{words[at - 1]} {words[at]}' read as: {owner.name} rows with a matching {t.name} "
                              f"({akey.note})")
        self.anti = [t for t, _ in anti] + [t for t, _ in self.semi]  # read by a subquery: loaded, not joined
        # ---- aggregation
        return self._finish(words, st, nums, top, when, where, join_sql, ratio_cond, consumed)

    # ------------------------------------------------------------------------------------------------
    def _connect(self, chosen: list[Table]) -> tuple[list[Table], list[tuple[Table, Table, str]]]:
        """A join tree from the main table through every chosen table (intermediate tables where none joins
        directly: a payment reaches a customer through its order)."""
        tree = [chosen[0]]
        join_sql: list[tuple[Table, Table, str]] = []  # (new table, condition template a=tree side... rendered)
        for target in chosen[1:]:
            if target in tree:
                continue
            path = self._path(tree, target)
            if path is None:
                raise _Reject("no join key relates " + target.name + " to " + ", ".join(t.name for t in tree)
                              + " (no matching field names and types in their output schemas, and no sample "
                              "values in common, even with a prefix or suffix stripped)")
            for prev, nxt, k in path:
                if nxt in tree:
                    continue
                cond = k.cond.format(a="{" + k.a.name + "}", b="{" + k.b.name + "}")
                m = re.fullmatch(r"(\{\w+\}\.\w+) = (\{\w+\}\.\w+)", cond)
                if m and not m.group(1).startswith("{" + nxt.name + "}"):
                    cond = f"{m.group(2)} = {m.group(1)}"  # the joined table's column first: "c.id = o.customer_id"
                extra = [x for c in tree if c is not prev for x in self.joins(c, nxt) if (x.strength >= 2
                         and not (x.a.parent or x.b.parent)) or (c is not prev and x.strength >= 2 and
                                                               x.cond.count("=") == 1 and nxt.pk and len(nxt.pk) > 1)]
                conds = [cond, *[x.cond.format(a="{" + x.a.name + "}", b="{" + x.b.name + "}") for x in extra
                                 if x is not k][:2]]
                tree.append(nxt)
                join_sql.append((nxt, prev, " and ".join(dict.fromkeys(conds))))
                self.notes.append(f"join {prev.name} to {nxt.name}: {k.note}")
                if nxt is not target:
                    self.notes.append(f"assumed {target.name} is reached through {nxt.name} (no direct key)")
        return tree, join_sql

    def _path(self, tree: list[Table], target: Table) -> list[tuple[Table, Table, JoinKey]] | None:
        import heapq

        heap: list[Any] = [(0.0, i, t, []) for i, t in enumerate(tree)]
        heapq.heapify(heap)
        seen: set[str] = set()
        counter = len(heap)
        while heap:
            cost, _, t, path = heapq.heappop(heap)
            if t.name in seen:
                continue
            seen.add(t.name)
            if t is target:
                return list(path)
            if len(path) >= 4:
                continue
            for nxt in self.vocab.tables:
                if nxt.name in seen:
                    continue
                # through an intermediate table only by keys: a shared attribute or a many-to-many key joins two
                # tables the request names, never a chain ("bank statements with stock levels")
                ks = [k for k in self.joins(t, nxt) if not ((path or nxt is not target) and (
                    k.strength < 2 or self._many_many(k)))]
                if not ks:
                    continue
                k = ks[0]
                step = {3: 1.0, 2: 1.2, 1: 3.0}[k.strength]
                counter += 1
                heapq.heappush(heap, (cost + step, counter, nxt, [*path, (t, nxt, k)]))
        return None

    def _central_unknown(self, r: Reading) -> list[str]:
        """The unknown words the request asks for (so a plan without them would answer another question): the
        head of the request (before anything known is named: "discount granted on each order"), the head of a
        compound whose modifier is known ("sales rep"), or a word that is measured or grouped by ("average
        margin", "per department")."""
        first_known = min(r.senses, default=len(r.words))
        ops = [a.at for a in u.arithmetic(r.words)]
        breaks = phrase_breaks(self.request)
        out = []
        for w, i in zip(r.unknown, r.unknown_at, strict=True):
            prev = r.words[i - 1] if i > 0 else ""
            nxt = r.words[i + 1] if i + 1 < len(r.words) else ""
            if _not_a_field(r, i):
                continue
            if any(op > i and any(i <= b < op for b in breaks) for op in ops):
                continue  # a measure the request defines: "margin per article, selling price minus unit cost"
            head = i < first_known
            # the last word of a run of unknown words after a known one ("sales rep", "loyalty points balance")
            k = i - 1
            while k >= 0 and k in r.unknown_at:
                k -= 1
            compound = k >= 0 and k in r.senses and r.senses[k][0] == 1 and (i + 1) not in r.senses and \
                nxt not in r.unknown
            measured = prev in ("per", "by", "each", "every", "average", "mean", "total", "sum", "median", "maximum",
                                "minimum", "highest", "lowest", "of") and (prev != "of" or (i - 2 >= 0 and r.words[
                                    i - 2] in ("average", "total", "sum", "number", "count", "share", "rate")))
            if head or compound or measured:
                out.append(w)
        return out

    def _state_change(self, r: Reading) -> None:
        """Two values of one column, the second after "to"/"into"/"as" ("the bronze customers to silver",
        "from open to shipped"): a change of state, refused like any write."""
        if any(w in _RATIO or w in ("between", "compared", "versus", "vs", "against") for w in r.words):
            return  # "the ratio of won to lost", "from 10 to 20": a comparison of two values, no change
        vals = [(i, s) for i, (_span, ss) in r.senses.items() for s in ss if s.kind == "value"]
        for i, a in vals:
            for j, b in vals:
                if j > i and a.column is b.column and a.value != b.value and r.words[j - 1] in ("to", "into", "as") \
                        and not (i > 0 and r.words[i - 1] == "from" and any(w in ("changed", "moved", "went")
                                                                           for w in r.words)):
                    self.res.refused = True
                    raise _Reject(refusal(self.request, f"{a.value} -> {b.value}"))

    def _many_many(self, k: JoinKey) -> bool:
        """A join where neither side's column is unique (order lines and stock levels on sku)."""
        if k.strength >= 3:
            return False
        cols = re.findall(r"\{([ab])\}\.(\w+)", k.cond)
        for side, col in cols:
            t = k.a if side == "a" else k.b
            c = t.col(col)
            if c is not None and _unique(t, c, self.sample):
                return False
        return True

    def _not_found(self, unknown: list[str]) -> str:
        closest: list[str] = []
        for w in unknown[:3]:
            closest += self.vocab.closest(w)
        with contextlib.suppress(Exception):  # a search without its model still ranks by keywords; never fatal
            closest += [a.name for a in self.catalog.search(" ".join(unknown), limit=3)]
        words = ", ".join(f"'{w}'" for w in dict.fromkeys(unknown))
        return (f"not found: no system offers {words} (no table, column or value of the catalog is named so, "
                "nor by a synonym)" + (f"; closest: {', '.join(dict.fromkeys(closest))}" if closest else ""))

    def _comparison_column(self, c: u.Comparison, words: list[str]) -> tuple[Table, Column, int] | None:
        want = ("time",) if c.is_date else ("int", "num", "other")
        cands: list[tuple[float, Table, Column, int]] = []
        for i, s in self.picked.items():
            if s.kind != "column" or s.column is None or s.table is None or s.column.kind not in want:
                continue
            d: float
            if i < c.start:
                d = c.start - i
            elif i >= c.end:
                d = i - c.end + 0.5
            else:
                continue
            if d > 7:
                continue
            cands.append((d - s.weight, s.table, s.column, i))
        if cands:
            _, t, col, i = min(cands, key=lambda x: x[0])
            return t, col, i
        said = " ".join(words[max(0, c.start - 1):c.end])
        hint = next((v for k, v in _SUPER_MEASURE.items() if v and re.search(rf"\b{k}", said)), "")
        if hint:  # "cheaper than 50": a price; "longer than": a duration
            for t in getattr(self, "tree", [self.main]):
                for col in t.columns:
                    if col.kind in want and hint in col.name.lower():
                        return t, col, -1
        pool = list(getattr(self, "tree", [self.main]))
        for t in pool:
            for col in t.columns:
                if col.kind not in want:
                    continue
                n = col.name.lower()
                if c.unit == "minute" and ("minute" in n or "duration" in n or "hour" in n):
                    return t, col, -1
                if c.unit == "currency" and any(x in n for x in ("amount", "price", "revenue", "cost", "value")):
                    return t, col, -1
        if c.is_date:
            times = [col for col in self.main.columns if col.kind == "time"]
            if len(times) == 1:
                self.notes.append(f"assumed the date compares {self.main.name}.{times[0].name}")
                return self.main, times[0], -1
            return None
        return self._plausible_column(c, pool)

    def _plausible_column(self, c: u.Comparison, pool: list[Table]) -> tuple[Table, Column, int] | None:
        """No column named near a number ("accounts worth at least 4 million"): the measure column of the
        planned tables whose sample values the number falls among (a key or an identifier never), the main
        table's first; only when one column fits, and stated as an assumption."""
        try:
            value = float(c.value)
        except ValueError:
            return None
        fits: list[tuple[Table, Column]] = []
        for t in sorted(pool, key=lambda t: t is not self.main):
            smp = self.sample.get(t.name)
            for col in t.columns:
                n = col.name.lower()
                if col.kind not in ("int", "num") or n == "id" or n.endswith(("_id", "_no", "id")) or smp is None:
                    continue
                vals = [float(v) for v in smp.values.get(col.name) or [] if isinstance(v, int | float) or
                        type(v).__name__ == "Decimal"]
                if vals and min(vals) <= value <= max(vals) * 1.5:
                    fits.append((t, col))
            if fits:
                break
        if len(fits) != 1:
            return None
        t, col = fits[0]
        self.notes.append(f"assumed '{c.value}' compares {t.name}.{col.name}: no column is named next to it, and "
                          "it is the one numeric column whose sample values it falls among")
        return t, col, -1

    # ------------------------------------------------------------------------------------------------
    def _numeric_near(self, at: int, after_only: bool = False, maxd: int = 6, before_only: bool = False
                      ) -> tuple[Table, Column] | None:
        best = None
        for i, s in self.picked.items():
            if s.kind != "column" or s.column is None or s.table not in self.tree or \
                    s.column.kind not in ("int", "num", "other") or s.column.name.lower().endswith("id"):
                continue
            d: float
            if i > at or (i == at and after_only):
                d = i - at if not before_only else 99
            else:
                d = at - i + 0.5 if not after_only else 99
            if d > maxd:
                continue
            score = d - s.weight - (0.3 if s.table is self.main else 0)
            if best is None or score < best[0]:
                best = (score, s.table, s.column)
        return (best[1], best[2]) if best else None

    def _finish(self, words: list[str], st: list[str], nums: list[u.Number], top: u.TopN | None, when: u.When,
                where: list[str], join_sql: list[tuple[Table, Table, str]], ratio_cond: str | None,
                consumed: set[int]) -> PlanResult:
        alias, tree, main = self.alias, self.tree, self.main
        text = " ".join(words)
        agg = None
        agg_at = -1
        if re.search(r"\b(how many|number of|count of|count)\b", text):
            agg, agg_at = "count", next(i for i, w in enumerate(words) if w in ("many", "number", "count"))
        for i, w in enumerate(words):
            if w in _AGG_WORDS and not (w in ("max", "min", "maximum", "minimum") and top and top.at == i):
                if w == "total" and i + 1 < len(words) and words[i + 1] in ("of",) and agg == "count":
                    continue
                agg, agg_at = _AGG_WORDS[w], i
                break
        if agg is None and re.search(r"\bhow much\b", text):
            agg, agg_at = "sum", words.index("much")
        per_row = False
        if agg == "count" and words[agg_at] == "many" and agg_at + 1 < len(words):
            s = self.picked.get(agg_at + 1)
            if s is not None and s.kind == "column" and s.column is not None and s.table in tree and \
                    s.column.kind in ("int", "num"):  # "how many units": a quantity, not a count of rows
                agg = "sum"
        weighted = re.search(r"\bweighted (?:by|with) (\w+(?: \w+)?)", text)
        # grouping: per/by/for each X
        breaks = phrase_breaks(self.request)
        group: list[tuple[str, str]] = []  # (sql expr, output name)
        grain = when.grain
        def is_col(k: int) -> bool:
            return k < len(words) and self.picked.get(k) is not None and self.picked[k].kind == "column"

        systems_at = self._system_positions()
        for i, w in enumerate(words):
            nxt = i + 1
            if w in ("each", "every"):  # "each incoming bank payment": modifiers before the table's noun
                head = nxt
                while head < min(len(words), nxt + 3) and (head in systems_at or (
                        is_col(head) and self.picked[head].via.startswith("synonym"))):
                    head += 1
                if head != nxt and any(m.at == head and m.sense.kind == "table" for m in self._mentions):
                    nxt = head
            if w in ("each", "every") and not (i > 0 and words[i - 1] in ("for", "of", "at", "in", "across", "from",
                                                                          "within")) and not is_col(nxt):
                if is_col(nxt + 1) and any(m.at == nxt and m.sense.kind == "table" for m in self._mentions):
                    nxt += 1  # "each product family": the table's column
                    for g in self._group_targets(nxt, words):
                        if g not in group:
                            group.append(g)
                            consumed.add(nxt)
                elif any(m.at == nxt and m.sense.table is self.main and m.sense.kind == "table"
                         for m in self._mentions) and not (nxt + 1 < len(words) and words[nxt + 1] == "in"):
                    per_row = True  # "what is each order line worth": the value of every row
                continue
            if w == "for" and nxt < len(words) and words[nxt] in ("each", "every"):
                nxt += 1
            elif (w in ("each", "every") and i > 0 and words[i - 1] == "for") or (
                    w in ("each", "every") and not (nxt < len(words) and self.picked.get(nxt) is not None
                                                    and self.picked[nxt].kind == "column")
                    and not (i > 0 and words[i - 1] in ("of", "at", "in", "across", "from", "within"))) or \
                    w not in ("per", "by", "each", "every") or (top and top.by_at == i) or (
                    w == "by" and i > 0 and words[i - 1] in ("multiplied", "divided", "weighted")):
                continue
            while nxt < len(words) and words[nxt] in ("the", "a", "an", "their", "its", "each", "every", "our"):
                nxt += 1
            if nxt >= len(words) or words[nxt] in ("day", "week", "month", "year", "quarter", "hour"):
                # "per day and channel": the time grain, then a column
                a = nxt + 2 if nxt + 2 < len(words) and words[nxt + 1] in ("and", "&") else None
                if a is not None and a in self.picked and self.picked[a].kind == "column":
                    for g in self._group_targets(a, words):
                        if g not in group:
                            group.append(g)
                            consumed.add(a)
                continue
            # the phrase "per X Y": the last word naming something within 3 words
            span = self._reading_senses[nxt][0] if nxt in self._reading_senses else 1
            if any(m.at == nxt and m.sense.table is self.main for m in self._mentions) and (
                    (nxt not in self.picked and nxt + span not in self.picked) or w in ("each", "every")):
                per_row = True
                continue  # "for each order line": the main table's own rows ("per product family" is a column)
            if w in ("each", "every"):
                for g in self._group_targets(nxt, words):
                    if g not in group:
                        group.append(g)
                continue
            stop = min(nxt + 3, len(words))
            stop = next((k + 1 for k in range(nxt, stop) if k in breaks), stop)
            cand = [j for j in range(nxt, stop) if j in self.picked or any(j == m for m in self._table_positions())]
            if not cand:
                continue
            naming = self.picked.keys() | self._table_positions() | self._system_positions()
            j = cand[0]
            for k in range(nxt, stop):
                if k not in naming:
                    break
                if k in cand:
                    j = k
                if k in self.picked and self.picked[k].kind == "column":
                    break  # the head of the phrase: "per customer tier" ends at tier
            for g in self._group_targets(j, words):
                if g not in group:
                    group.append(g)
                    consumed.add(j)
            # "per day and channel", "by region and tier": the coordinated phrase groups too
            k = j + 1
            while k + 1 < len(words) and words[k] in ("and", "&") and (k - 1) not in breaks:
                nxt_k = k + 1
                while nxt_k < len(words) and words[nxt_k] in ("the", "a", "an", "their", "its", "by", "per"):
                    nxt_k += 1
                more = self._group_targets(nxt_k, words) if nxt_k < len(words) and (
                    nxt_k in self.picked and self.picked[nxt_k].kind == "column") else []
                if not more:
                    break
                for g in more:
                    if g not in group:
                        group.append(g)
                        consumed.add(nxt_k)
                k = nxt_k + 1
        if (top is not None and top.n is None) or (top is not None and top.n == 1 and not group):
            # "in which region did we get the fewest orders", "which tier has the most customers": the region
            # or tier is what is ranked, a group of rows, and the question asks for the first one
            for i, w in enumerate(words[: top.at]):
                k = i + 1
                while k < top.at and words[k] in ("the", "of", "our"):
                    k += 1
                s = self.picked.get(k)
                if w in ("which", "what") and s is not None and s.kind == "column" and s.column is not None and \
                        s.column.kind == "str" and s.table in tree and (s.table is not self.main or group):
                    targets = self._group_targets(k, words)
                    if not group:
                        group += targets
                        consumed.add(k)
                    if targets and all(g in group for g in targets):
                        top.n = 1
                    break
        if grain in ("day", "week", "month", "year", "quarter", "hour"):
            tcol = self._time_column()
            if tcol is not None:
                t, c = tcol
                expr = f"cast({alias[t.name]}.{c.name} as date)" if grain == "day" else \
                    f"extract(hour from {alias[t.name]}.{c.name})" if grain == "hour" else \
                    f"date_trunc('{grain}', {alias[t.name]}.{c.name})"
                group.insert(0, (expr, grain))
                self.notes.append(f"per {grain}: grouped by {grain} of {t.name}.{c.name}")
        # the measure
        measure: tuple[Table, Column] | None = None
        derived: str | None = None
        for ar in u.arithmetic(words):
            left = self._numeric_near(ar.at, maxd=3, before_only=True)
            right = self._numeric_near(ar.at + (2 if ar.op in ("*", "/") and ar.at + 1 < len(words) and
                                                words[ar.at + 1] == "by" else 0), after_only=True, maxd=4)
            if left and right and left != right:
                derived = f"{alias[left[0].name]}.{left[1].name} {ar.op} {alias[right[0].name]}.{right[1].name}"
                self.notes.append(f"'{' '.join(words[max(0, ar.at - 2):ar.at + 3])}' read as {derived}")
                break
        if agg and agg != "count" and derived is None:
            measure = self._numeric_near(agg_at, after_only=True) or self._numeric_near(agg_at)
        if measure is None and derived is None and (agg in (None, "avg", "sum", "max", "min") or top):
            measure = self._duration_measure(words, agg_at if agg else (top.at if top else -1))
            if measure is not None and f"{measure[0].name}.{measure[1].name}" in self.emptied:
                measure = None  # "nobody recorded how long they took": the rows whose duration is empty
            if measure is not None and agg is None and not top:
                agg, agg_at = "avg", words.index("long") if "long" in words else 0
        if measure is None and derived is None and (group or top or agg):
            measure = self._numeric_near(top.at if top else (agg_at if agg_at >= 0 else 0), after_only=True, maxd=12)
            if measure is None and top:  # the verb before the superlative: "who spent the most", "paid the least"
                measure = self._numeric_near(top.at, maxd=3)
            if measure is None and group:
                measure = self._numeric_near(len(words), maxd=99)
        if top and top.by_at is not None and derived is None:
            m2 = self._numeric_near(top.by_at, after_only=True, maxd=4)
            measure = m2 or measure
        if top and measure is None and derived is None:
            said = [top.word] + ([words[top.at + 1]] if top.word in ("most", "least") and top.at + 1 < len(words)
                                 else [])  # "the most expensive"
            hint = next((v for w in reversed(said) for k, v in _SUPER_MEASURE.items() if w.startswith(k) and v), "")
            if hint == "time":  # "the most recent", "the oldest": the time the rows happened (or the one named)
                named_t = [(s.table, s.column) for i, s in self.picked.items() if s.kind == "column" and s.column
                           is not None and s.column.kind == "time" and s.table in tree and abs(i - top.at) <= 3]
                found = named_t[0] if named_t else self._time_column()
                if found is not None:
                    measure = found
                    self.notes.append(f"'{top.word}' read as: by {found[0].name}.{found[1].name}")
            elif hint:
                for t in tree:
                    for c in t.columns:
                        if c.kind in ("int", "num", "other") and hint and hint in c.name.lower():
                            measure = (t, c)
                            break
                    if measure:
                        break
        if measure is None and derived is None and (agg == "sum" or re.search(r"\b(value|worth)\b", text)):
            measure, derived = self._default_measure(text)
        if top and measure is None and derived is None:
            named = [m.sense.table for m in self._mentions if top.at < m.at <= top.at + 2 and m.sense.table in tree]
            for t in named:  # "holding the most stock": the stock's quantity
                qty = next((c for c in t.columns if c.kind in ("int", "num") and any(
                    w in c.name.lower() for w in ("quantit", "amount", "qty", "units"))), None)
                if qty is not None and t is not None:
                    measure = (t, qty)
                    self.notes.append(f"'{top.word} {words[top.at + 1]}' read as {t.name}.{qty.name}")
                    break
            if measure is None:
                measure, derived = self._default_measure(text)
        # "worth at cost", "valued at the list price": a unit price or cost named as what rows are worth is
        # multiplied by the rows' quantity
        if measure is not None and derived is None and re.search(r"\b(worth|valued?|valuation)\b", text) and \
                any(w in measure[1].name.lower() for w in ("price", "cost")):
            qty = next((c for c in measure[0].columns if "quantit" in c.name.lower() or c.name.lower() in (
                "qty", "units")), None)
            if qty is not None:
                qa = alias[measure[0].name]
                derived = f"{qa}.{qty.name} * {qa}.{measure[1].name}"
                self.notes.append(f"'{measure[1].name}' as what the rows are worth: {measure[0].name}.{qty.name} x "
                                  f"{measure[0].name}.{measure[1].name}")
                measure = None
        # "placed the fewest orders", "the most contacts": the rows of a table counted, not a measure of them
        counted_rows = top is not None and top.word in ("most", "fewest", "least") and top.at + 1 < len(words) and \
            re.fullmatch(r"[a-z]{3,}[^s]s", words[top.at + 1]) is not None and \
            any(m.at == top.at + 1 and m.sense.kind == "table" and m.sense.weight >= 1.0 for m in self._mentions)
        if counted_rows and derived is None:
            measure, agg = None, "count"
            self.notes.append(f"'{top.word} {words[top.at + 1]}' read as a count of rows")  # type: ignore[union-attr]
        select: list[str] = []
        order: list[str] = []
        limit = top.n if top else None
        if ratio_cond is not None:
            factor = "100.0 * " if re.search(r"\bpercent", text) else ""
            expr = f"{factor}avg(case when {ratio_cond} then 1.0 else 0.0 end)"
            out = "percentage" if factor else "rate"
            select = [*(f"{e} as {o}" if not e.endswith(f".{o}") else e for e, o in group), f"{expr} as {out}"]
            self.notes.append(f"rate: the share of rows where {ratio_cond}")
            return self._emit(select, where, join_sql, group, [], None, when, measure_name=out)
        mexpr = derived or (f"{alias[measure[0].name]}.{measure[1].name}" if measure else None)
        mname = "value" if derived else (measure[1].name if measure else None)
        if weighted and mexpr:
            wcol = self._numeric_near(words.index("weighted") + 1, after_only=True, maxd=3)
            if wcol:
                w = f"{alias[wcol[0].name]}.{wcol[1].name}"
                select_expr = f"sum({mexpr} * {w}) / sum({w})"
                select = [*(f"{e} as {o}" if not e.endswith(f".{o}") else e for e, o in group),
                          f"{select_expr} as weighted_avg_{mname}"]
                self.notes.append(f"weighted average of {mexpr} by {w}")
                return self._emit(select, where, join_sql, group, [], None, when, measure_name=f"weighted_{mname}")
        # top-N over a measure that belongs to the rows of another entity: aggregate it per that entity
        # the table a derived measure is computed on ("quantity x unit cost" of the stock levels)
        by_alias = {al: t for t in tree for name, al in alias.items() if name == t.name}
        measured_t = measure[0] if measure else next(
            (by_alias[a] for a in re.findall(r"\b(\w+)\.\w+", derived or "") if a in by_alias), None)
        other_t = measured_t is not None and measured_t is not main
        if top and not group and (mexpr or counted_rows) and (derived is None or other_t):
            subject = self._subject(top, words, measured_t)
            if subject is None and measured_t is not None and measured_t is not main and main.parent is None:
                key = main.col("name") or (main.col(main.pk[0]) if main.pk else None)
                if key is not None:  # "the depot holding the most": the measure summed per main row
                    subject = (f"{alias[main.name]}.{key.name}", key.name)
                    self.notes.append(f"ranked {main.name} by the sum of {mexpr}")
            if subject is not None:
                group.append(subject)
                agg = agg or "sum"
        # "the priciest product in each category": the top rows within every group, not a ranking of groups
        if top and group and agg is None and mexpr and top.at + 1 < len(words) and any(
                m.at in (top.at + 1, top.at + 2) and m.sense.table is main for m in self._mentions) and any(
                w in ("each", "every", "per") for w in words[top.at:]):
            part = ", ".join(e for e, _ in group)
            self.qualify = (f"row_number() over (partition by {part} order by {mexpr} "
                            f"{'desc' if top.desc else 'asc'}) <= {top.n or 1}")
            self.notes.append(f"'{top.word}' read per {', '.join(o for _, o in group)}: the first {top.n or 1} "
                              f"rows of each by {mexpr}")
            seen: set[str] = set()
            for t in tree:
                for c in t.columns:
                    if c.name.lower() not in seen:
                        seen.add(c.name.lower())
                        select.append(f"{alias[t.name]}.{c.name}")
            return self._emit(select, where, join_sql, [], [], None, when, measure_name=None)
        if per_row and agg == "sum" and not group and not top:
            agg = None  # "for each order line, how many units ...": the value of each row
        if agg is None and group:
            # a difference or ratio of unit figures ("selling price minus unit cost" per article) is a unit figure
            # too: its average per group; anything else adds up
            unit_figure = derived is not None and re.fullmatch(r"\w+\.\w+ [-/] \w+\.\w+", derived) and all(
                any(k in col for k in ("price", "cost", "rate")) for col in re.findall(r"\.(\w+)", derived.lower()))
            agg = ("avg" if unit_figure else "sum") if mexpr else "count"
        # "on average, how many units does an order contain": the total per order, averaged over the orders
        per_entity = re.search(r"\bhow (?:many|much)\b(?:\s+\w+){1,3}?\s+(?:does|do|did|will)\s+(?:an?|each|every|"
                               r"one|the average|the typical)\s+(\w+)", text)
        if per_entity and re.search(r"\b(average|averag\w*|mean|typical|typically|usually)\b", text) and not group:
            ent_at = next((k for k in range(len(words)) if words[k] == per_entity.group(1)), -1)
            ent = next((m.sense.table for m in self._mentions if m.at == ent_at and m.sense.kind == "table"
                        and m.sense.table in tree), None)
            key = (ent.col(ent.pk[0]) if ent is not None and ent.pk else None) if ent is not None else None
            owner = ent
            if ent is not None and key is None:
                key = ent.col(f"{ent.name.split('_')[-1].rstrip('s')}_id")
            if ent is not None and key is not None and owner is not None:
                kexpr = f"{alias[owner.name]}.{key.name}"
                if mexpr and measure is not None and measure[0] is not ent:  # the key as the measured rows have it
                    kcol = measure[0].col(key.name)
                    if kcol is not None:
                        kexpr = f"{alias[measure[0].name]}.{kcol.name}"
                total = f"sum({mexpr})" if mexpr else "count(*)"
                ename = ent.name.split("_")[-1].rstrip("s")
                out = f"avg_{mname or 'rows'}_per_{ename}"
                select = [f"{total} * 1.0 / count(distinct {kexpr}) as {out}"]
                self.notes.append(f"'{per_entity.group(0)}': {total} per {ent.name}.{key.name}, averaged over them "
                                  "(rows of the measured table that have one)")
                return self._emit(select, where, join_sql, [], [], None, when, measure_name=out)
        if agg:
            gsel = [f"{e} as {o}" if not e.endswith(f".{o}") else e for e, o in group]
            if agg == "count" or not mexpr:
                out = f"{main.name.split('_')[-1]}" if not group else "count"
                aexpr = "count(*)"
                if agg not in ("count", None) and not mexpr:
                    self.notes.append(f"'{agg}': no numeric column named in the request; counting rows instead")
            else:
                word = next((w for w in words if w in ("revenue", "turnover", "sales", "spend")), None)
                out = word if word and agg == "sum" else f"{'total' if agg == 'sum' else agg}_{mname}"
                aexpr = f"{agg}({mexpr})"
                if mname and "minute" in mname.lower() and re.search(r"\b(?:in|as) hours\b", text):
                    aexpr, out = f"{aexpr} / 60.0", out.replace("minutes", "hours").replace("minute", "hours")
                    self.notes.append("in hours: minutes divided by 60")
                if group and agg == "sum" and re.search(r"\b(?:percentage|percent|share|proportion|fraction)\s+of\b",
                                                        text):
                    # "what percentage of the order value did each region bring in": each group's part of the total
                    factor = "100.0" if re.search(r"\bpercent", text) else "1.0"
                    aexpr, out = f"{factor} * {aexpr} / sum({aexpr}) over ()", \
                        "percentage" if factor == "100.0" else "share"
                    self.notes.append(f"{out}: each group's part of the total {mname}")
            select = [*gsel, f"{aexpr} as {out}"]
            if agg == "sum" and mexpr and group and not top:
                select.insert(len(gsel), f"count(*) as {main.name.split('_')[-1]}")
            if top:
                order = [f"{out} {'desc' if top.desc else 'asc'}"]
            self.notes.append(f"aggregate: {aexpr}" + (f" per {', '.join(o for _, o in group)}" if group else ""))
            return self._emit(select, where, join_sql, group, order, limit, when, measure_name=out)
        # rows; a column name two joined tables share keeps both unless it is their join key ("the bank amount
        # next to the order amount": bank_statements.amount and erp_orders.amount)
        names: set[str] = set()
        keys = " ".join(cond for _t, _u, cond in join_sql)
        for t in tree:
            for c in t.columns:
                if c.name.lower() in names:
                    if re.search(rf"\.{re.escape(c.name)}\b", keys) or c.name.lower() in ("id", "currency") or \
                            c.kind in ("time", "bool"):
                        continue
                    out_name = f"{t.name.split('_')[-1]}_{c.name}"
                    if out_name.lower() in names:
                        continue
                    names.add(out_name.lower())
                    select.append(f"{alias[t.name]}.{c.name} as {out_name}")
                    continue
                names.add(c.name.lower())
                select.append(f"{alias[t.name]}.{c.name}")
        if derived:
            select.append(f"{derived} as value")
        if top and mexpr:
            order = [f"{mexpr} {'desc' if top.desc else 'asc'}"]
            self.notes.append(f"'{top.word}' read as: ordered by {mexpr} {'descending' if top.desc else 'ascending'}"
                              + (f", the first {limit}" if limit else ""))
        elif top:
            limit = None
        return self._emit(select, where, join_sql, [], order, limit, when,
                          measure_name="value" if derived else None)

    def _duration_measure(self, words: list[str], at: int) -> tuple[Table, Column] | None:
        """A time span named in other words ("the mean handling time", "how long do chats last", "time spent"):
        the numeric column of the joined tables whose name carries a unit of time (``duration_minutes``). Only
        when an aggregate or a ranking applies to it (*at*), or the request asks "how long"."""
        near = words[at + 1: at + 5] if at >= 0 else []
        asks = any(w in ("time", "times", "long", "length", "lengths", "duration", "durations", "spent")
                   for w in near) or re.search(r"\bhow long\b", " ".join(words))
        if not asks:
            return None
        for t in self.tree:
            for c in t.columns:
                n = c.name.lower()
                if c.kind in ("int", "num") and any(x in n for x in ("duration", "minute", "second", "hour",
                                                                     "elapsed", "_days", "_ms")):
                    self.notes.append(f"assumed the time asked for is {t.name}.{c.name} (a column measured in "
                                      "a unit of time)")
                    return t, c
        return None

    def _default_measure(self, text: str) -> tuple[tuple[Table, Column] | None, str | None]:
        """The money a table's rows are worth when the request names none ("how much did each region buy",
        "stock value"): a column named amount/total/value/revenue/price, else quantity x unit price/cost."""
        tree = self.tree
        if getattr(self, "windowed", False):  # "yesterday": what happened then, not a reference figure
            tree = sorted(tree, key=lambda t: not t.partitioned)
        for t in tree:
            for c in t.columns:
                if c.kind in ("int", "num", "other") and any(w in c.name.lower() for w in (
                        "amount", "total", "value", "revenue")):
                    self.notes.append(f"assumed the value asked for is {t.name}.{c.name}")
                    return (t, c), None
        for t in self.tree:
            qty = next((c for c in t.columns if "quantit" in c.name.lower() or c.name.lower() in ("qty", "units")),
                       None)
            unit = next((c for c in t.columns if c.kind in ("num", "other") and any(
                w in c.name.lower() for w in ("price", "cost"))), None)
            if qty is not None and unit is not None:
                a = self.alias[t.name]
                expr = f"{a}.{qty.name} * {a}.{unit.name}"
                self.notes.append(f"assumed the value is {t.name}.{qty.name} x {t.name}.{unit.name} (no value column)")
                return None, expr
        return None, None

    def _system_positions(self) -> set[int]:
        return {i for i, (_span, ss) in getattr(self, "_reading_senses", {}).items()
                if any(s.kind == "system" for s in ss)}

    def _table_positions(self) -> set[int]:
        out = set()
        for i, (_span, ss) in getattr(self, "_reading_senses", {}).items():
            if any(s.kind == "table" for s in ss):
                out.add(i)
        return out

    def _time_column(self) -> tuple[Table, Column] | None:
        for t in self.tree:
            for c in t.columns:
                if c.kind == "time" and not c.name.startswith("_hub_") and "updat" not in c.name.lower():
                    return t, c
        return None

    def _group_targets(self, j: int, words: list[str]) -> list[tuple[str, str]]:
        """What "per X" groups by: a column or a value's column named at *j*; an entity (a joined table): its key
        and its name, so the answer shows both (``per depot``: warehouse id and name); else the entity's key in
        the measured table (``per customer``: customer_id)."""
        s = self.picked.get(j)
        alias = self.alias
        if s is not None and s.kind in ("column", "value") and s.table in self.tree and s.column is not None:
            return [(f"{alias[s.table.name]}.{s.column.name}", s.column.name)]
        ent = u.stem(words[j])
        for t in self.tree:
            if t is not self.main and (ent in t.entity or u.stem(t.name.split("_")[-1]) == ent or any(
                    m.at == j and m.sense.table is t for m in self._mentions)):
                pk = t.col(t.pk[0]) if len(t.pk) == 1 else None
                name = t.col("name")
                keys = [c for c in (pk, name) if c is not None]
                if keys:
                    if len(keys) == 2:
                        self.notes.append(f"per {words[j]}: grouped by {t.name}.{pk.name} and its name")  # type: ignore[union-attr]
                    return [(f"{alias[t.name]}.{c.name}", c.name) for c in keys]
        for t in self.tree:
            for c in t.columns:
                if c.name.lower() in (f"{ent}_id", f"{words[j]}_id"):
                    return [(f"{alias[t.name]}.{c.name}", c.name)]
        # an entity whose table is not read, identified in the rows read by a column the thesaurus relates to it
        # ("per article": the order lines' sku), the main table's first
        near = {ent} | u.related(ent)
        for t in sorted(self.tree, key=lambda x: x is not self.main):
            for c in t.columns:
                if c.kind in ("str", "int") and u.stem(c.name.lower()) in near and not c.name.lower().endswith("name"):
                    self.notes.append(f"per {words[j]}: grouped by {t.name}.{c.name}")
                    return [(f"{alias[t.name]}.{c.name}", c.name)]
        return []

    def _subject(self, top: u.TopN, words: list[str], measured: Table | None = None) -> tuple[str, str] | None:
        """The entity a top-N ranks, when it is not the measured table's own rows: "which three items sold the
        most units" ranks SKUs of the order lines; "the single depot holding the most" ranks warehouses."""
        lo = max(0, top.at - 4)
        before = list(range(lo, top.at))
        # "top 2 SKUs by units": the entity right after "top N"
        named = before + [k for k in range(top.at + 1, min(len(words), top.at + 3))
                          if not re.fullmatch(r"\d+", words[k])] if top.word in ("top", "bottom") else before
        for j in named:  # a column named before the superlative
            s = self.picked.get(j)
            if s is not None and s.kind == "column" and s.column is not None and s.table in self.tree and \
                    s.table is not None and s.column.kind in ("str", "int") and \
                    not _unique(s.table, s.column, self.sample):
                return f"{self.alias[s.table.name]}.{s.column.name}", s.column.name
        for j in named:  # a word the thesaurus relates to a column's name ("items" -> sku)
            stj = u.stem(words[j])
            for t in self.tree:
                for c in t.columns:
                    if c.kind == "str" and (stj == u.stem(c.name) or stj in u.related(u.stem(c.name))) and \
                            not _unique(t, c, self.sample):
                        self.notes.append(f"assumed '{words[j]}' are the values of {t.name}.{c.name}")
                        return f"{self.alias[t.name]}.{c.name}", c.name
        after = list(range(top.at + 1, min(len(words), top.at + 3)))
        for j in before + after:  # another joined table's entity
            if words[j] in u.IRREGULAR or words[j].endswith(("ed", "ing")):
                continue
            for t in self.tree:
                if t is not self.main and t is not measured and any(m.at == j and m.sense.table is t
                                                                     for m in self._mentions):
                    key = t.col("name") or (t.col(t.pk[0]) if t.pk else None)
                    if key is not None:
                        return f"{self.alias[t.name]}.{key.name}", key.name
        return None

    def _emit(self, select: list[str], where: list[str], join_sql: list[tuple[Table, Table, str]],
              group: list[tuple[str, str]], order: list[str], limit: int | None, when: u.When,
              measure_name: str | None) -> PlanResult:
        res, alias, tree, main = self.res, self.alias, self.tree, self.main

        def fill(expr: str) -> str:
            for tname, al in alias.items():
                expr = expr.replace("{" + tname + "}", al)
            return expr

        model_sql = None
        if len(tree) > 1 or where or group or order or limit or measure_name or main.parent is not None or \
                getattr(self, "qualify", None):
            lines = [f"select {', '.join(select)}", f"from {main.name} {alias[main.name]}"]
            for t, _u, cond in join_sql:
                lines.append(f"join {t.name} {alias[t.name]} on {fill(cond)}")
            if where:
                lines.append("where " + "\n  and ".join(where))
                self.notes.append("filter: " + " and ".join(where))
            if group:
                lines.append("group by all")
            if getattr(self, "qualify", None):
                lines.append(f"qualify {self.qualify}")
            if order:
                lines.append("order by " + ", ".join(order) + (f" limit {limit}" if limit else ""))
                if limit:
                    self.notes.append(f"top {limit}: order by {', '.join(order)}")
            else:
                lines.append("order by all")
            model_sql = "\n".join(lines) + "\n"
        if getattr(self, "anti", None):
            for t in self.anti:  # the anti-joined table is loaded too (the model reads it)
                if t not in tree:
                    tree = [*tree, t]
        roots = [t for t in tree if t.parent is None]
        for t in tree:
            if t.parent is not None and all(r.name != t.parent for r in roots):
                parent = next(x for x in self.vocab.tables if x.name == t.parent)
                roots.append(parent)
        needs_partitions = any(t.partitioned for t in roots) or when.partitions is not None
        pname = self.name or _pipeline_name(self.request, roots, [(None, e, o) for e, o in group])
        spec: dict[str, Any] = {"pipeline": pname, "description": self.request.strip()}
        if needs_partitions:
            kind = when.partitions or "daily"
            tmpl_p = next((t.template[0] for t in roots if t.template and t.template[0].spec.partitions), None)
            if tmpl_p is not None and tmpl_p.spec.partitions is not None:
                start, tz = tmpl_p.spec.partitions.window.start, tmpl_p.spec.partitions.window.timezone
            else:
                start, tz = date.today() - timedelta(days=30), "UTC"
            if kind == "monthly":
                start = start.replace(day=1)
            spec["partitions"] = {kind: {"start": start.isoformat(), "timezone": tz}}
            if not any(t.partitioned for t in roots):
                self.notes.append("partitions: the sources have no time parameters; each partition reloads them whole")
            self.notes.append(f"partitions: {kind} from {start} ({tz}); time parameters -> "
                              "{{ partition.start }} / {{ partition.end }}")
        else:
            spec["partitions"] = "none"
        if when.schedule:
            spec["schedule"] = when.schedule
            self.notes.append(f"schedule: {when.schedule}")
        self.notes.extend(when.notes)
        spec["systems"] = {}
        for t in roots:
            if t.system not in spec["systems"]:
                sysraw = system_raw(t.system, self.pipelines)
                if sysraw is None:
                    raise _Reject(f"system '{t.system}' of action {t.action} is in none of the given specs")
                spec["systems"][t.system] = sysraw
        spec["sources"] = {}
        wanted_children = {t.name for t in tree if t.parent is not None}
        for t in roots:
            raw = copy.deepcopy(t.raw)
            kids = raw.get("children") or {}
            if kids:
                kept = {k: v for k, v in kids.items() if k in wanted_children}
                if kept:
                    raw["children"] = kept
                else:
                    raw.pop("children")
            for col, op_where in _suggested_rules(t, where, alias).items():
                raw.setdefault("rules", {}).setdefault(col, op_where)
            spec["sources"][t.name] = raw
        if model_sql:
            mname = _model_name2(measure_name, group, tree, where, main, order)
            spec["models"] = {mname: {"description": f"Planned for: {self.request.strip()}", "sql": model_sql}}
            res.result_table = mname
        else:
            res.result_table = main.name
        res.actions = [t.action for t in roots]
        res.notes.insert(0, "actions: " + ", ".join(dict.fromkeys(f"{t.action} ({t.system})" for t in roots)))
        res.spec_text = dump_spec(spec, self.request, res.notes)
        return res


def _model_name2(measure: str | None, group: list[tuple[str, str]], tables: list[Table], where: list[str],
                 main: Table, order: list[str]) -> str:
    head = measure if measure and measure not in ("count",) else f"{main.name.split('_')[-1]}" + (
        "_count" if measure == "count" or group else "")
    if measure and measure == main.name.split("_")[-1]:
        head = f"{measure}_count"
    name = head + ("_by_" + "_".join(o for _, o in group) if group else "")
    if not group and not measure:
        name = "_".join(dict.fromkeys(t.name.split("_")[-1] for t in tables)) if len(tables) > 1 else \
            f"{main.name}_{'top' if order else 'filtered'}"
    return re.sub(r"[^a-z0-9_]", "_", name.lower())


def _alias(name: str, used: set[str]) -> str:
    parts = [p for p in name.split("_") if p]
    base = "".join(p[0] for p in parts[1:] or parts) or "t"
    alias, i = base, 2
    while alias in used or alias in ("as", "on", "or", "by", "in", "is", "to", "do"):
        alias, i = f"{base}{i}", i + 1
    used.add(alias)
    return alias


def _lit(value: str, kind: str) -> str:
    if kind in ("int", "num") and re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", value):
        return value
    return "'" + value.replace("'", "''") + "'"


def _suggested_rules(t: Table, where: list[str], alias: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Row rules to suggest: the primary key present; the allowed values of enumerated columns filtered on."""
    rules: dict[str, dict[str, Any]] = {}
    declared = {c.name for c in t.columns}
    pk = t.raw.get("primary_key") or []
    for k in [pk] if isinstance(pk, str) else pk:
        if k in declared or not t.raw.get("columns"):
            rules[k] = {"not_null": True}
    for c in t.columns:
        if c.enum and any(w.startswith(f"{alias.get(t.name)}.{c.name} ") for w in where):
            rules[c.name] = {"in": list(c.enum)}
    return rules


def _pipeline_name(request: str, tables: list[Table], group: list[tuple[Any, str, str]]) -> str:
    base = "_".join(dict.fromkeys(t.name.split("_")[-1] for t in tables if t.parent is None))
    if group:
        base += "_by_" + "_".join(o for _, _, o in group)
    return re.sub(r"[^a-z0-9_]", "_", f"plan_{base}".lower())[:60]


def _repr_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(str, _repr_str)


def dump_spec(spec: dict[str, Any], request: str, notes: Sequence[str]) -> str:
    head = ["# Planned by `hub agent plan` for the request:", f"#   {request.strip()}"]
    head += [f"# - {n}" for n in notes]
    body = yaml.dump(spec, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120, default_flow_style=False)
    return "\n".join(head) + "\n" + body


def distinct_names(text: str, pipelines: Sequence[Pipeline], path: Path) -> tuple[str, list[str]]:
    """*text* with every asset named like an asset of another spec of the project renamed
    ``<pipeline>_<name>`` (model SQL, exports, checks and depends_on follow), and a note per rename: a plan
    written next to the demo must not take over the demo's tables (issue: pipelines overwrote each other)."""
    import sqlglot
    from sqlglot import exp

    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        return text, []
    here = path.resolve()
    taken = {a for p in pipelines if p.path.resolve() != here for a in p.asset_names()}
    prefix = str(data.get("pipeline") or "plan")
    sections = [data.get(k) for k in ("sources", "models", "exports")]
    sections += [s.get("children") for s in (data.get("sources") or {}).values() if isinstance(s, dict)]
    mine = {str(k) for section in sections if isinstance(section, dict) for k in section}
    renames: dict[str, str] = {}
    for name in sorted(mine & taken):
        new = f"{prefix}_{name}"
        while new in taken or new in mine:
            new += "_"
        renames[name] = new
    if not renames:
        return text, []
    for section in sections:
        if isinstance(section, dict):
            for old in [k for k in section if k in renames]:
                section[renames[old]] = section.pop(old)

    def rewrite(sql: str) -> str:  # the tables' names only, the author's text otherwise kept as written
        tables = {t.name for t in sqlglot.parse_one(sql, read="duckdb").find_all(exp.Table)} & set(renames)
        out, at, previous = [], 0, None
        for token in sqlglot.tokenize(sql, read="duckdb"):
            qualified = previous is not None and previous.token_type == sqlglot.TokenType.DOT  # a column, o.x
            previous = token
            if token.token_type == sqlglot.TokenType.VAR and token.text in tables and not qualified:
                out += [sql[at:token.start], renames[token.text]]
                at = token.end + 1
        return "".join(out) + sql[at:]

    for model in (data.get("models") or {}).values():
        if isinstance(model, dict) and isinstance(model.get("sql"), str):
            model["sql"] = rewrite(model["sql"])
            model["depends_on"] = [renames.get(d, d) for d in model.get("depends_on") or []] or None
            if model["depends_on"] is None:
                model.pop("depends_on")
    for export in (data.get("exports") or {}).values():
        if isinstance(export, dict):
            if export.get("table") in renames:
                export["table"] = renames[export["table"]]
            if isinstance(export.get("sql"), str):
                export["sql"] = rewrite(export["sql"])
    if isinstance(data.get("checks"), dict):
        data["checks"] = {renames.get(k, k): v for k, v in data["checks"].items()}
    notes = [f"renamed {old} to {new}: another spec of the project already has an asset named {old}"
             for old, new in renames.items()]
    head = [line for line in text.splitlines() if line.startswith("#")][:64]
    body = yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120, default_flow_style=False)
    return "\n".join([*head, *[f"# - {n}" for n in notes]]) + "\n" + body, notes


# ------------------------------------------------------------------------------------------ validation

def check_params(pipeline: Pipeline, catalog: CatalogLike) -> tuple[list[str], dict[str, Any]]:
    """Each source reads an action of the catalog (read-only) and its parameters fit the action's input
    schema. Returns the problems and the action of each source."""
    import jsonschema

    problems: list[str] = []
    by_source: dict[str, Any] = {}
    for name in pipeline.sources:
        action = next((a for a in catalog.actions if _binding_matches(a, pipeline, name)), None)
        if action is None:
            problems.append(f"sources.{name}: reads no action of the catalog (system "
                            f"'{pipeline.sources[name].system_name}'); use search_actions/describe_action")
            continue
        if not _is_read(action):
            problems.append(f"sources.{name}: action {action.name} writes ({action.side_effect}); sources only read")
            continue
        by_source[name] = action
        src = pipeline.sources[name]
        params = dict(src.protocol.source_params(src.config))
        props = (action.input_schema or {}).get("properties") or {}
        for pname, value in params.items():
            ps = props.get(pname)
            if ps is None:
                if props and not (action.input_schema or {}).get("additionalProperties", False) \
                        and src.protocol.params_are_inputs:
                    problems.append(f"sources.{name}.params.{pname}: not an input of {action.name} "
                                    f"(inputs: {', '.join(props)})")
                continue
            if _is_templated(value):
                if _kind(ps) not in ("time", "str", "other"):
                    problems.append(f"sources.{name}.params.{pname}: a partition bound (text) for an input of "
                                    f"type {ps.get('type')}")
                continue
            if isinstance(value, str) and "{{" in value:
                continue
            try:
                jsonschema.validate(value, ps)
            except jsonschema.ValidationError as exc:
                problems.append(f"sources.{name}.params.{pname}: {exc.message} (input schema of {action.name})")
        for req in (action.input_schema or {}).get("required") or []:
            if req not in params and src.protocol.params_are_inputs and "default" not in (props.get(req) or {}):
                problems.append(f"sources.{name}.params: the required input '{req}' of {action.name} is missing")
    return problems, by_source


def planned_columns(pipeline: Pipeline, by_source: dict[str, Any]) -> dict[str, set[str] | None]:
    """The columns each planned table will have (None: unknown, not checked)."""
    out: dict[str, set[str] | None] = {}
    for name, src in pipeline.sources.items():
        cols = src.spec.output_columns()
        if cols is None:
            cols = src.protocol.planned_columns(src.config)
        if cols is None and name in by_source:
            props = (by_source[name].output_schema or {}).get("properties")
            cols = list(props) if props else None
        out[name] = {c.lower() for c in cols} if cols is not None else None
        for cname, child in src.spec.children.items():
            ccols = [c.name or "" for _, c in child.column_specs()] if child.columns else None
            out[cname] = {c.lower() for c in [*src.spec.primary_key, *ccols]} if ccols is not None else None
    for name in out:
        if out[name] is not None:
            out[name] |= {"_hub_partition", "_hub_run_id", "_hub_loaded_at"}  # type: ignore[operator]
    return out


def check_model_sql(pipeline: Pipeline, columns: dict[str, set[str] | None]) -> list[str]:
    """Model SQL parses as DuckDB and reads only planned tables and their columns."""
    import sqlglot
    from sqlglot import exp

    problems: list[str] = []
    for mname, model in pipeline.spec.models.items():
        try:
            tree = sqlglot.parse_one(model.sql, read="duckdb")
        except sqlglot.errors.ParseError as exc:
            problems.append(f"models.{mname}.sql: does not parse (DuckDB): {str(exc).splitlines()[0]}")
            continue
        known = {**columns, **{m: None for m in pipeline.spec.models if m != mname}}
        ctes = {c.alias_or_name for c in tree.find_all(exp.CTE)}
        aliases: dict[str, str | None] = {}
        referenced: list[str] = []
        for t in tree.find_all(exp.Table):
            if t.name in ctes:
                aliases[t.alias_or_name] = None
                continue
            if t.name not in known:
                problems.append(f"models.{mname}.sql: reads '{t.name}', which the plan does not load "
                                f"(tables: {', '.join(sorted(known))})")
                continue
            aliases[t.alias_or_name] = t.name
            referenced.append(t.name)
        for sq in tree.find_all(exp.Subquery):
            if sq.alias:
                aliases[sq.alias] = None
        select_aliases = {a.alias.lower() for a in tree.find_all(exp.Alias)}
        for col in tree.find_all(exp.Column):
            cname = col.name.lower()
            if not cname or isinstance(col.this, exp.Star):
                continue
            if col.table:
                if col.table not in aliases:
                    problems.append(f"models.{mname}.sql: '{col.table}.{col.name}': no table or alias '{col.table}'")
                    continue
                table = aliases[col.table]
                cols = known.get(table) if table else None
                if table and cols is not None and cname not in cols:
                    problems.append(f"models.{mname}.sql: {table} has no column '{col.name}' (columns: "
                                    f"{', '.join(sorted(c for c in cols if not c.startswith('_hub_')))})")
            else:
                pool = [known.get(t) for t in referenced]
                if cname in select_aliases or any(p is None for p in pool) or None in aliases.values():
                    continue
                if not any(cname in p for p in pool if p is not None):
                    problems.append(f"models.{mname}.sql: no planned table has a column '{col.name}'")
    return problems


def _partition(pipeline: Pipeline, wanted: str | None) -> str | None:
    """The plan's partition holding *wanted* (a day, as the caller's estate counts them), or its first one.

    A plan may choose a coarser grain than the day it is tried on ("per quarter" plans monthly partitions):
    its dry run then takes the month that contains that day instead of failing on a key it does not have."""
    import dagster as dg

    from hub.dagster.definitions import partitions_def

    parts = partitions_def(pipeline.spec.partitions)
    if parts is None:
        return wanted
    if wanted is None:
        return parts.get_first_partition_key()
    if parts.has_partition_key(wanted) or not isinstance(parts, dg.TimeWindowPartitionsDefinition):
        return wanted
    try:
        day = datetime.fromisoformat(wanted).replace(hour=12, tzinfo=UTC)  # noon: any zone keeps the day
    except ValueError:
        return wanted
    return parts.get_partition_key_for_timestamp(day.timestamp()) or wanted


def dry_run(text: str, path: Path, *, partition: str | None = None, warehouse: Path | None = None
            ) -> tuple[list[str], dict[str, int], str | None]:
    """Materialize the plan for one partition into a temporary DuckDB warehouse (or *warehouse*) on an
    ephemeral Dagster instance, without side effects (no exports, files stay where they are).
    Returns (problems, rows per asset, the partition)."""
    import dagster as dg

    from hub.dagster.run import run_pipeline
    from hub.files import ready_files

    data = yaml.safe_load(text)
    data.pop("exports", None)
    data.pop("schedule", None)
    for src in (data.get("sources") or {}).values():
        if isinstance(src, dict):
            src.pop("after", None)
            src.pop("sensor", None)
    with tempfile.TemporaryDirectory(prefix="hub-plan-") as tmp:
        wh = warehouse or Path(tmp) / "dry_run.duckdb"
        data["warehouse"] = f"duckdb:///{wh}"
        try:
            pipeline = loads(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), path)
        except SpecError as exc:
            return list(exc.problems), {}, None
        key = _partition(pipeline, partition)
        counts: dict[str, int] = {}
        try:
            files: list[str] | None = None
            per_file = [n for n, s in pipeline.sources.items() if s.per_file]
            if per_file:
                ready = ready_files(pipeline, per_file[0])
                files = [ready[0].name] if ready else []
            # disposed at the end: its in-memory run storage holds a SQLite connection, which would otherwise be
            # closed by the garbage collector in whatever thread runs it (and fail there, loudly)
            with dg.DagsterInstance.ephemeral() as instance:
                outcomes = run_pipeline(pipeline, instance, partitions=[key], files=files)
        except (HubError, OSError, dg.DagsterError) as exc:
            return [f"dry run ({key or 'unpartitioned'}): {exc}"], counts, key
        for o in outcomes:
            counts.update(o.row_counts)
        failed = [o for o in outcomes if not o.success]
        if failed:
            return [f"dry run ({key or 'unpartitioned'}): {o.error}" for o in failed], counts, key
        return [], counts, key


def validate_plan(text: str, pipelines: Sequence[Pipeline], catalog: CatalogLike, *, path: Path | None = None,
                  run: bool = True, partition: str | None = None, warehouse: Path | None = None
                  ) -> tuple[list[str], dict[str, int], str | None]:
    """Every check a plan must pass before it is written; returns (problems, dry-run rows, partition)."""
    path = path or (_root(pipelines) / "pipelines" / "_plan.yaml")
    try:
        pipeline = loads(text, path)
    except SpecError as exc:
        return list(exc.problems), {}, None
    problems, by_source = check_params(pipeline, catalog)
    problems += check_model_sql(pipeline, planned_columns(pipeline, by_source))
    if problems or not run:
        return problems, {}, None
    return dry_run(text, path, partition=partition, warehouse=warehouse)


def _root(pipelines: Sequence[Pipeline]) -> Path:
    return pipelines[0].root if pipelines else Path.cwd()


def result_table(text: str) -> str | None:
    """The table answering the request: the last model, else the first source."""
    data = yaml.safe_load(text) or {}
    models = list(data.get("models") or {})
    sources = list(data.get("sources") or {})
    return models[-1] if models else (sources[0] if sources else None)


# ----------------------------------------------------------------------------------------------- plan

def plan(request: str, pipelines: list[Pipeline], backend: Backend = "offline", *, catalog: CatalogLike | None = None,
         name: str | None = None, output: Path | None = None, dry_run: bool = True, partition: str | None = None,
         warehouse: Path | None = None, llm: ModelBackend | None = None) -> PlanResult:
    """Plan *request* over the actions of *pipelines*' systems and validate the plan (spec, actions,
    parameters, model SQL, a dry run of one partition). With *output*, the spec is written there only when
    every check passed. *llm*: the model backend, an :class:`hub.agent.llm.LLMConfig` (the llm module builds
    on this one, never the other way round)."""
    if catalog is None:
        from hub.agent.catalog import build_catalog

        catalog = build_catalog(pipelines)
    if name is None and output is not None:
        name = re.sub(r"[^A-Za-z0-9_]", "_", output.stem)
        name = name if re.match(r"[A-Za-z_]", name) else f"p_{name}"
    path = output or (_root(pipelines) / "pipelines" / f"{name or '_plan'}.yaml")
    if backend == "offline":
        res = compose(request, catalog, pipelines, name=name)
        if res.flow is not None and res.spec_text is not None and not res.errors:
            from hub.agent.flowplan import validate_flow

            validate_flow(res, pipelines, catalog, path=path, partition=partition, warehouse=warehouse, run=dry_run)
        elif res.spec_text is not None and not res.errors:
            res.spec_text, renamed = distinct_names(res.spec_text, pipelines, path)
            res.notes += renamed
            if renamed:  # the answering table may be among the renamed assets
                res.result_table = result_table(res.spec_text)
            problems, counts, key = validate_plan(res.spec_text, pipelines, catalog, path=path, run=dry_run,
                                                  partition=partition, warehouse=warehouse)
            res.errors += problems
            res.dry_run, res.partition = counts, key
    elif backend == "llm":
        if llm is None:
            raise HubError("the llm backend needs its endpoint: pass llm=hub.agent.llm.LLMConfig.from_env() "
                           "(HUB_LLM_BASE_URL, HUB_LLM_MODEL)")
        res = llm.plan(request, pipelines, catalog, name=name, path=path, dry_run=dry_run, partition=partition,
                       warehouse=warehouse)
    else:
        raise HubError(f"unknown planner backend '{backend}' (offline or llm)")
    res.ok = res.spec_text is not None and not res.errors and not res.refused
    if res.ok and res.spec_text is not None:
        res.result_table = res.result_table or result_table(res.spec_text)
        if res.dry_run and res.result_table in res.dry_run:
            res.notes.append(f"dry run {res.partition or '(unpartitioned)'}: {res.result_table} has "
                             f"{res.dry_run[res.result_table]} rows")
        if output is not None:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(res.spec_text, encoding="utf-8")
    return res


__all__ = ["JoinKey", "PlanResult", "Sample", "Vocabulary", "compose", "distinct_names", "join_keys", "plan", "samples",
           "tokens", "universe", "validate_plan", "write_intent"]
