"""Expectation suites: ``contracts/<system>/<asset>.suite.yaml``, a list of Great Expectations 1.x
expectations, each one a Dagster asset check on the asset that names the suite in ``checks:``.

The format (long form, and the short form with the type as the key)::

    - type: expect_column_values_to_not_be_null
      kwargs: {column: order_id}
      severity: error              # error (default): a blocking check; warn: reported, never blocks
    - expect_column_values_to_be_between: {column: amount, min_value: 0}
      severity: warn
      name: amount_not_negative    # optional: the check's name (default <type>__<column>)
      description: Refunds are separate documents.

Loading checks every expectation against Great Expectations itself (the type is a registered expectation,
its kwargs validate against its model) and reports every problem with line and field.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hub.errors import SuiteError

SEVERITIES = ("error", "warn")
_META_KEYS = ("severity", "name", "description")
_NAME_RE = re.compile(r"^[A-Za-z0-9_]+$")
#: Registered expectations that need a SQL database (the hub validates a DataFrame).
_SQL_ONLY = ("unexpected_rows_expectation", "expect_query_results_to_match_comparison",
             "expect_table_row_count_to_equal_other_table")


@dataclass(frozen=True)
class Expectation:
    """One expectation of a suite; ``name`` is its (stable) Dagster asset check name."""

    type: str
    kwargs: dict[str, Any]
    severity: str = "error"
    name: str = ""
    description: str | None = None
    line: int | None = None

    @property
    def blocking(self) -> bool:
        return self.severity == "error"

    @property
    def columns(self) -> list[str]:
        """The columns it is about (``column``, ``column_A``/``column_B``, ``column_list``)."""
        kw = self.kwargs
        if isinstance(kw.get("column"), str):
            return [kw["column"]]
        if isinstance(kw.get("column_A"), str) and isinstance(kw.get("column_B"), str):
            return [kw["column_A"], kw["column_B"]]
        if isinstance(kw.get("column_list"), list):
            return [str(c) for c in kw["column_list"]]
        return []

    def to_yaml(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "kwargs": self.kwargs}
        if self.severity != "error":
            out["severity"] = self.severity
        if self.description:
            out["description"] = self.description
        return out


@dataclass(frozen=True)
class Suite:
    """The expectations one asset is checked against."""

    asset: str
    path: Path
    expectations: tuple[Expectation, ...]


def check_name(type_: str, kwargs: dict[str, Any]) -> str:
    """``<expectation_type>__<column>`` (two columns: ``__A__B``; a list: joined with ``_``)."""
    cols = Expectation(type_, kwargs).columns
    base = type_ + ("__" + ("__" if len(cols) == 2 and "column_A" in kwargs else "_").join(cols) if cols else "")
    return re.sub(r"[^A-Za-z0-9_]", "_", base)


def load_suite(path: str | Path, *, asset: str, display: str | None = None) -> Suite:
    """Read and check the suite at *path* for *asset*. Raises :class:`SuiteError` with every problem,
    each naming its line and field (``[2].kwargs.column``)."""
    path = Path(path)
    shown = display or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SuiteError(shown, [f"cannot read file: {exc.strerror}"]) from None
    return parse_suite(text, path, asset=asset, display=shown)


def parse_suite(text: str, path: Path, *, asset: str, display: str | None = None) -> Suite:
    from hub.spec.loader import _parse  # the spec loader's parser and line marks (imported late: it imports us)

    shown = display or str(path)
    try:
        marks, data = _parse(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise SuiteError(shown, [f"{where}not valid YAML: {getattr(exc, 'problem', exc)}"]) from None
    if marks.refused:
        raise SuiteError(shown, [f"not a usable YAML document: {marks.refused}"])
    problems: list[tuple[int, str]] = []

    def add(loc: tuple[str | int, ...], message: str) -> None:
        line = marks.line(loc) or 0
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".") or "(document)"
        problems.append((line, f"line {line}: {where}: {message}" if line else f"{where}: {message}"))

    for loc, line in marks.duplicates:
        problems.append((line, f"line {line}: {''.join(f'[{p}]' if isinstance(p, int) else f'.{p}' for p in loc)}"
                               ": key given twice"))
    if not isinstance(data, list):
        raise SuiteError(shown, ["expected a list of expectations (- type: expect_..., kwargs: {...})"])
    out: list[Expectation] = []
    names: dict[str, int] = {}
    for i, entry in enumerate(data):
        exp = _entry(i, entry, add)
        if exp is None:
            continue
        name = exp.name or check_name(exp.type, exp.kwargs)
        if exp.name and exp.name in names:
            add((i, "name"), f"'{exp.name}' is also the name of expectation [{names[exp.name]}]")
        elif not exp.name and name in names:  # the same type on the same column twice: number them
            n = 2
            while f"{name}__{n}" in names:
                n += 1
            name = f"{name}__{n}"
        names[name] = i
        out.append(Expectation(exp.type, exp.kwargs, exp.severity, name, exp.description, marks.line((i,))))
    if problems:
        problems.sort(key=lambda p: p[0])
        raise SuiteError(shown, [m for _, m in problems])
    return Suite(asset=asset, path=path, expectations=tuple(out))


def _entry(i: int, entry: Any, add: Any) -> Expectation | None:
    if isinstance(entry, str):
        entry = {entry: {}}
    if not isinstance(entry, dict):
        add((i,), "expected a mapping: {type: expect_..., kwargs: {...}} or {expect_...: {kwargs}}")
        return None
    meta = {k: entry[k] for k in _META_KEYS if k in entry}
    if "type" in entry:
        type_, kwargs, kloc = entry["type"], entry.get("kwargs", {}), (i, "kwargs")
        for key in entry:
            if key not in ("type", "kwargs", *_META_KEYS):
                add((i, key), "unknown field (expected type, kwargs, severity, name, description)")
    else:
        keys = [k for k in entry if k not in _META_KEYS]
        if len(keys) != 1:
            add((i,), "expected `type: expect_...` or exactly one `expect_...: {kwargs}` key (found "
                      f"{', '.join(map(str, keys)) or 'none'})")
            return None
        type_, kwargs, kloc = keys[0], entry[keys[0]], (i, keys[0])
    ok = True
    if not isinstance(type_, str):
        add((i, "type"), f"expected the name of an expectation, got {type_!r}")
        return None
    if kwargs is None:
        kwargs = {}
    if not isinstance(kwargs, dict):
        add(kloc, f"expected a mapping of the expectation's arguments, got {kwargs!r}")
        return None
    severity = meta.get("severity", "error")
    if severity not in SEVERITIES:
        add((i, "severity"), f"expected error or warn, got {severity!r}")
        ok = False
    name = meta.get("name")
    if name is not None and not (isinstance(name, str) and _NAME_RE.match(name)):
        add((i, "name"), f"expected a check name of letters, digits and _, got {name!r}")
        ok = False
    description = meta.get("description")
    if "severity" in kwargs:
        add((*kloc, "severity"), "put severity next to the expectation's type (error or warn), not in its kwargs")
        ok = False
    for field, message in check_expectation(type_, kwargs):
        add((i, "type" if "type" in entry else type_) if field is None else (*kloc, *field), message)
        ok = False
    if not ok:
        return None
    return Expectation(type_, dict(kwargs), severity, name or "", str(description) if description else None)


Problem = tuple[tuple[str, ...] | None, str]


def check_expectation(type_: str, kwargs: dict[str, Any]) -> list[Problem]:
    """Problems of one expectation as (field path within kwargs, message); None: the type itself.

    Asking Great Expectations means importing it (about four seconds), which ``hub validate`` would pay on
    every call. The answer depends only on the installed GX version, the type and the kwargs, so it is kept in
    a per-user cache (:func:`_checked`): a suite checked once is checked again without importing GX."""
    cache = _checked()
    key = _key(type_, kwargs)
    if key in cache:
        return [(None if loc is None else tuple(loc), msg) for loc, msg in cache[key]]
    problems = _ask_gx(type_, kwargs)
    cache[key] = [[None if loc is None else list(loc), msg] for loc, msg in problems]
    _save_checked()
    return problems


_cache: dict[str, list[list[Any]]] | None = None


def _cache_file() -> Path:
    from importlib.metadata import version

    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hub"
    return base / f"expectations-gx{version('great_expectations')}.json"


def _checked() -> dict[str, list[list[Any]]]:
    """The cached answers of this GX version (loaded once per process; a missing or broken file is empty)."""
    global _cache
    if _cache is None:
        try:
            loaded = json.loads(_cache_file().read_text(encoding="utf-8"))
            _cache = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            _cache = {}
    return _cache


def _save_checked() -> None:
    """Write the cache atomically; a cache that cannot be written only costs the next call time."""
    path = _cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(_checked()), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass


def _key(type_: str, kwargs: dict[str, Any]) -> str:
    """The expectation as canonical JSON, each non-JSON value tagged with its type (a date is not a string)."""
    return json.dumps([type_, kwargs], sort_keys=True, default=lambda v: f"{type(v).__name__}:{v!r}")


def _ask_gx(type_: str, kwargs: dict[str, Any]) -> list[Problem]:
    impl = expectation_class(type_)
    if impl is None:
        from great_expectations.expectations.registry import list_registered_expectation_implementations

        close = difflib.get_close_matches(type_, list_registered_expectation_implementations(), n=2)
        hint = f" (did you mean {' or '.join(close)}?)" if close else \
            " (see https://greatexpectations.io/expectations for the list)"
        return [(None, f"'{type_}' is not a Great Expectations expectation{hint}")]
    if type_ in _SQL_ONLY:
        return [(None, f"'{type_}' runs SQL in a database; the hub validates the loaded rows as a DataFrame")]
    from great_expectations.compatibility.pydantic import ValidationError

    try:
        impl(**kwargs)
    except ValidationError as exc:
        grouped: dict[tuple[str, ...] | None, list[str]] = {}
        for err in exc.errors():
            loc = tuple(str(p) for p in err["loc"] if p != "__root__")
            msg = str(err["msg"])
            if err["type"] == "value_error.extra":
                msg = "unknown argument of this expectation (check the spelling)"
            elif err["type"] == "value_error.missing":
                msg = "required argument is missing"
            grouped.setdefault(loc, [])
            if msg not in grouped[loc]:
                grouped[loc].append(msg)
        return [(loc, " or ".join(msgs)) for loc, msgs in grouped.items()]
    except (TypeError, ValueError) as exc:
        return [((), str(exc))]
    return []


def expectation_class(type_: str) -> Any:
    """The Great Expectations class of expectation *type_*, or None."""
    import great_expectations.expectations  # noqa: F401  (registers the core expectations)
    from great_expectations.exceptions import ExpectationNotFoundError
    from great_expectations.expectations.registry import get_expectation_impl

    try:
        return get_expectation_impl(type_)
    except ExpectationNotFoundError:
        return None


def dump_suite(expectations: list[Expectation], header: str = "") -> str:
    """The suite as YAML (the long form, one flow mapping of kwargs per expectation)."""
    body = yaml.safe_dump([e.to_yaml() for e in expectations], sort_keys=False, default_flow_style=None,
                          allow_unicode=True, width=120)
    return header + body
