"""CSV drops loaded by DuckDB's own reader, inside the load's transaction, with the hub's guarantees kept.

Why: streaming Arrow chunks from pyarrow's reader through the mapping into DuckDB cost about as much as DuckDB
reading the whole file itself (docs/benchmarks.md). When the warehouse is DuckDB and the source's format,
mapping and rules can be written in SQL (:func:`plan`), one ``INSERT ... SELECT ... FROM read_csv(...)`` reads
the spooled file (every field as text), casts it to the declared types and checks the rules, in the same
transaction as the ledger row. Nothing a row loses is decided by SQL alone:

* rows DuckDB's reader rejects (wrong number of fields) come from its rejects table, with file, line, raw
  text and the reason the pyarrow reader gives;
* every row that is not plainly good — a value not in the canonical form of its type (``12.5`` for
  decimal(12,2), ``007``), a value that does not cast, a null key, a failed rule — is inserted marked (its
  raw fields kept), and the marked rows (few) then go through the very :class:`~hub.transform.mapping.Mapper`
  and :class:`~hub.validation.rules.RowRules` of the Arrow path: they decide and word the quarantine, and the
  rows they accept are written back in place;
* uniqueness (the primary key, or one ``unique`` column) is checked over the loaded rows in file order.

Fixed-width files were read this way too (whole lines, cut by ``substr``) until the Arrow path, reading while
the file downloads and cutting ASCII lines by bytes, became faster than DuckDB's single-threaded statement
(docs/benchmarks.md): they go the Arrow way.

Quarantine rows carry the line the Arrow path gives (the record's position among the parsed rows, skipping
rejected lines). Anything this path cannot express falls back to the Arrow path before it starts
(:func:`plan` names why); anything unexpected while it runs (a reject other than a wrong field count, rows
not in file order, too many marked rows) raises :class:`NativeUnsupported`, the transaction is rolled back
and the file is loaded by the Arrow path instead.
"""

from __future__ import annotations

import bisect
import csv
import io
import json
import re
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import pyarrow as pa

from adapters.sftp import CsvFormat, FormatConfig, csv_columns
from hub.errors import HubError
from hub.transform.mapping import LINE_COLUMN, RESERVED, Column, Mapper
from hub.transform.types import JSON
from hub.validation.rules import RowRules
from hub.warehouse import Load
from hub.warehouse.base import LOADED_AT_COLUMN, PARTITION_COLUMN, RUN_COLUMN, ident, literal

#: The partition value of marked rows while the load runs (they are gone before the commit).
MARK = "\x00hub:check"
#: More marked rows than this: the Arrow path, which streams them, is the better tool.
MAX_MARKED = 65_536
_REJECTS, _SCANS = "_hub_csv_rejects", "_hub_csv_scans"
_FIELDS = re.compile(r"Expected Number of Columns: (\d+) Found: (\d+)")


class NativeUnsupported(HubError):
    """The file cannot be loaded by DuckDB's reader with the Arrow path's results: load it the Arrow way."""


@dataclass(frozen=True)
class _Out:
    """One output column: its SQL type, value and the condition under which the value is plainly right."""

    name: str
    duck: str
    value: str
    clean: str | None  # None: always


@dataclass(frozen=True)
class CsvPlan:
    """How one CSV file is read and checked in SQL (built by :func:`plan`)."""

    cfg: CsvFormat
    names: list[str]  # the file's fields, in order
    out: list[_Out]
    checks: list[str]  # SQL conditions under which a row is marked (rules, null keys)
    unique: tuple[str, ...]  # the one uniqueness check: key columns (empty: none)
    unique_rule: str | None  # the `unique` rule's column, or None for the primary key
    screen: RowRules  # the rules without uniqueness, for marked rows

    @property
    def first(self) -> int:
        """The line of the file's first record."""
        return self.cfg.skip_rows + (2 if self.cfg.header else 1)

    def read_csv(self, path: Path, rejects: str, scans: str) -> str:
        """The FROM item giving the file's fields as text in file order."""
        cfg = self.cfg
        columns = "{" + ", ".join(f"{literal(n)}: 'VARCHAR'" for n in self.names) + "}"
        nulls = "[" + ", ".join(literal(v) for v in cfg.null_values) + "]"
        assert cfg.quote_char is not False
        return (f"read_csv({literal(str(path))}, columns = {columns}, header = {str(cfg.header).lower()}, "
                f"skip = {cfg.skip_rows}, delim = {literal(cfg.delimiter)}, quote = {literal(cfg.quote_char)}, "
                f"escape = {literal(cfg.quote_char)}, nullstr = {nulls}, auto_detect = false, "
                f"store_rejects = true, rejects_table = {literal(rejects)}, rejects_scan = {literal(scans)})")


# --- planning -------------------------------------------------------------------------------------------

_INTS = {pa.int8(): "TINYINT", pa.int16(): "SMALLINT", pa.int32(): "INTEGER", pa.int64(): "BIGINT",
         pa.uint8(): "UTINYINT", pa.uint16(): "USMALLINT", pa.uint32(): "UINTEGER", pa.uint64(): "UBIGINT"}
_TRUE, _FALSE = ("true", "1", "yes", "y", "t"), ("false", "0", "no", "n", "f")


def _column(col: Column, names: list[str]) -> _Out | str:
    """The SQL of one mapped column, or why it cannot be written in SQL."""
    if len(col.path) != 1:
        return f"column {col.name}: a dotted path"
    if col.fmt:
        return f"column {col.name}: a declared text format ({', '.join(col.fmt)})"
    raw = ident(col.path[0]) if col.path[0] in names else None
    typ = col.type
    if typ is None or typ == JSON or typ == pa.string():
        return _Out(col.name, "VARCHAR", raw or "CAST(NULL AS VARCHAR)", None)
    if not isinstance(typ, pa.DataType):
        return f"column {col.name}: type {typ}"
    if pa.types.is_integer(typ):
        duck, pattern = _INTS[typ], "-?[0-9]+"
    elif pa.types.is_float64(typ):
        duck, pattern = "DOUBLE", "-?[0-9]+(\\.[0-9]+)?([eE][-+]?[0-9]+)?"
    elif isinstance(typ, pa.Decimal128Type):
        duck = f"DECIMAL({typ.precision}, {typ.scale})"
        pattern = "-?[0-9]+" + (f"(\\.[0-9]{{1,{typ.scale}}})?" if typ.scale > 0 else "")
    elif pa.types.is_date32(typ):
        duck, pattern = "DATE", "[0-9]{4}-[0-9]{2}-[0-9]{2}"
    elif pa.types.is_boolean(typ):
        if raw is None:
            return _Out(col.name, "BOOLEAN", "CAST(NULL AS BOOLEAN)", None)
        text = f"lower(trim({raw}))"
        value = (f"CASE WHEN {text} IN ({', '.join(map(literal, _TRUE))}) THEN true "
                 f"WHEN {text} IN ({', '.join(map(literal, _FALSE))}) THEN false END")
        return _Out(col.name, "BOOLEAN", value, f"({raw} IS NULL OR {value} IS NOT NULL)")
    else:
        return f"column {col.name}: type {typ} (timestamps, times, float32 and others go the Arrow way)"
    if raw is None:
        return _Out(col.name, duck, f"CAST(NULL AS {duck})", None)
    value = f"TRY_CAST({raw} AS {duck})"
    # plainly right: the canonical text of the type, which DuckDB, Arrow and Python read alike
    return _Out(col.name, duck, value,
                f"({raw} IS NULL OR (regexp_full_match({raw}, {literal(pattern)}) AND {value} IS NOT NULL))")


def _sql_value(value: Any, typ: pa.DataType) -> str:
    """*value* (a rule's bound or allowed value from YAML) as a SQL literal comparable with a column of type *typ*,
    read as :func:`hub.validation.rules._scalar` reads it (without pa.scalar, whose first call imports pandas:
    a second on a busy machine). Raises ValueError or TypeError where that refuses it too, or is not sure."""
    if pa.types.is_decimal(typ) or pa.types.is_integer(typ) or pa.types.is_floating(typ):
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise TypeError(f"expected a number, got {type(value).__name__}")
        if isinstance(value, str):
            if not pa.types.is_decimal(typ):
                raise TypeError("expected a number, got str")
            value = Decimal(value)
        if isinstance(value, int):
            return str(value)
        if isinstance(value, float):
            return f"CAST({literal(repr(value))} AS DOUBLE)"
        d = Decimal(value)
        exponent = d.as_tuple().exponent
        scale = max(0, -exponent) if isinstance(exponent, int) else 39
        if len(d.as_tuple().digits) > 38 or scale > 38:
            raise ValueError(f"{value} has too many digits")
        return f"CAST({literal(str(d))} AS DECIMAL(38, {scale}))"
    if pa.types.is_date32(typ):
        day = value.date() if isinstance(value, datetime) else value if isinstance(value, date) else \
            date.fromisoformat(str(value))
        return f"DATE {literal(day.isoformat())}"
    if pa.types.is_string(typ):
        return literal(value if isinstance(value, str) else str(value))
    raise ValueError(f"no SQL literal for {typ}")


def _arrow_type(out: _Out, mapper: Mapper) -> pa.DataType:
    assert mapper.columns is not None
    col = next(c for c in mapper.columns if c.name == out.name)
    return col.type if isinstance(col.type, pa.DataType) else pa.string()


def plan(fmt: FormatConfig, path: Path, name: str, mapper: Mapper, rules: RowRules, load: Load) -> CsvPlan | str:
    """How DuckDB reads *path* (the spooled file *name*) into *load* with the Arrow path's results, or why it
    cannot (then the Arrow path loads it)."""
    cfg = fmt.csv
    if load.native_sql != "duckdb":
        return "the warehouse is not DuckDB"
    if cfg is None:
        return "not a CSV file"
    compression = fmt.compression
    if compression == "auto":
        compression = "gzip" if name.endswith(".gz") else "zip" if name.endswith(".zip") else "none"
    if compression != "none":
        return f"{compression} compressed (the decompression limits are the adapter's)"
    if cfg.encoding.lower().replace("_", "-") not in ("utf-8", "utf8"):
        return f"encoding {cfg.encoding}"
    if cfg.escape_char or cfg.quote_char is False:
        return "an escape character, or no quoting"
    if not cfg.null_values:
        return "no null values"
    if not load.sql("SELECT current_setting('preserve_insertion_order') AS on").column(0)[0].as_py():
        return "preserve_insertion_order is off (row ids would not follow the file)"
    try:
        names = csv_columns(path, cfg, name)
    except HubError as exc:
        return str(exc)
    if len(set(names)) != len(names) or any(n in RESERVED or n.startswith("_hub_") for n in names):
        return "repeated or reserved column names"
    columns = mapper.columns if mapper.columns is not None else [Column((n,), n, None) for n in names]
    out: list[_Out] = []
    for col in columns:
        made = _column(col, names)
        if isinstance(made, str):
            return made
        out.append(made)
    out_names = [o.name for o in out]
    if len(set(out_names)) != len(out_names) or any(n.startswith("_hub_") for n in out_names):
        return "repeated or reserved output column names"
    if any(k not in out_names for k in mapper.required):
        return "a primary key column is not in the records"
    by_name = {o.name: o for o in out}
    ref = {o.name: f"_hub_v{i}" for i, o in enumerate(out)}  # the typed value in load()'s SELECT
    checks = [f"{ref[k]} IS NULL" for k in mapper.required]
    unique: list[tuple[tuple[str, ...], str | None]] = []
    screened: dict[str, Any] = {}
    for column, rule in rules.rules.items():
        if column not in by_name:
            return f"rules.{column}: not an output column"
        o = by_name[column]
        typ = _arrow_type(o, mapper) if mapper.columns is not None else pa.string()
        col_sql = ref[column]
        for check in rule.checks():
            value = getattr(rule, "in_" if check == "in" else check)
            try:
                if check == "not_null":
                    checks.append(f"{col_sql} IS NULL")
                elif check in ("min", "max"):
                    bound = _sql_value(value, typ)
                    checks.append(f"{col_sql} {'<' if check == 'min' else '>'} {bound}")
                elif check == "regex" and o.duck == "VARCHAR":
                    checks.append(f"NOT regexp_matches({col_sql}, {literal(value)})")
                elif check == "in":
                    allowed = ", ".join(_sql_value(v, typ) for v in value)
                    checks.append(f"{col_sql} NOT IN ({allowed})")
                elif check == "unique":
                    unique.append(((column,), column))
                else:
                    return f"rules.{column}.{check} on {o.duck}"
            except (ValueError, TypeError, InvalidOperation) as exc:
                return f"rules.{column}.{check}: {exc}"
        screened[column] = rule.model_copy(update={"unique": False})
    if rules.key:
        unique.append((rules.key, None))
    if len(unique) > 1:
        return "more than one uniqueness check"
    screen = RowRules({c: r for c, r in screened.items() if r.checks()}, where=rules.where)
    return CsvPlan(cfg, names, out, checks, unique[0][0] if unique else (), unique[0][1] if unique else None,
                   screen)


# --- loading --------------------------------------------------------------------------------------------

@dataclass
class CsvLoaded:
    rows_read: int
    quarantine: list[dict[str, Any]]


def load(p: CsvPlan, load: Load, path: Path, name: str, mapper: Mapper) -> CsvLoaded:
    """Read *path* into *load* (its partition is the file); the rows read and the quarantine, as the Arrow path
    gives them. Raises :class:`NativeUnsupported` when the Arrow path must take over."""
    partition, run_id = load.request.partition, load.request.run_id
    marked = " OR ".join([f"NOT {o.clean}" for o in p.out if o.clean] + [f"({c})" for c in p.checks]) or "false"
    # what a marked row keeps for the closer look: its fields
    raw_json = "CAST(json_object(" + ", ".join(f"{literal(n)}, {ident(n)}" for n in p.names) + ") AS VARCHAR)"
    typed = ", ".join(f"CAST({o.value} AS {o.duck}) AS _hub_v{i}" for i, o in enumerate(p.out))
    select = (f"SELECT {', '.join(f'_hub_v{i} AS {ident(o.name)}' for i, o in enumerate(p.out))}, "
              f"CASE WHEN _hub_marked THEN {literal(MARK)} ELSE {literal(partition)} END AS {ident(PARTITION_COLUMN)}, "
              f"CASE WHEN _hub_marked THEN {raw_json} ELSE {literal(run_id)} END AS {ident(RUN_COLUMN)}, "
              f"now() AS {ident(LOADED_AT_COLUMN)} FROM (SELECT *, ({marked}) AS _hub_marked FROM "
              f"(SELECT *, {typed} FROM {p.read_csv(path, _REJECTS, _SCANS)}))")
    # one thread: DuckDB inserts a file it reads in parallel out of file order (tests/test_files_csv.py, 80 MB with
    # two threads), and the row ids must give each row's line
    load.sql("SET threads = 1")
    inserted = load.insert_query(select)
    rejected = _rejects(load, name, p.cfg)
    first = p.first
    skip = sorted(line for line in rejected if line >= first)

    def line_of(ordinal: int) -> int:
        """The Arrow path's line of the parsed row at *ordinal*: consecutive lines, skipping rejected ones."""
        line = first + ordinal
        while True:
            at = first + ordinal + bisect.bisect_right(skip, line)
            if at == line:
                return line
            line = at

    target = load.target
    ours = f"{ident(PARTITION_COLUMN)} IN ({literal(partition)}, {literal(MARK)})"
    mine = f"{ident(PARTITION_COLUMN)} = {literal(partition)}"
    # one scan: the row ids (file order), the marked rows, and whether the loaded rows repeat a key
    span = load.sql(f"SELECT min(rowid) AS lo, max(rowid) AS hi, count(*) AS n, "
                    f"count(*) FILTER (WHERE {ident(PARTITION_COLUMN)} = {literal(MARK)}) AS marked, "
                    f"{_repeats(p, mine)} AS repeats FROM {target} WHERE {ours}").to_pylist()[0]
    if span["n"] != inserted or (inserted and span["hi"] - span["lo"] + 1 != inserted):
        raise NativeUnsupported(f"{name}: the rows DuckDB inserted are not in one run of row ids")
    if span["marked"] > MAX_MARKED:
        raise NativeUnsupported(f"{name}: {span['marked']} rows need a closer look (more than {MAX_MARKED})")
    base = span["lo"] or 0
    quarantine = [q for _, q in sorted(rejected.items())]
    deleted = 0
    repeats = span["repeats"]
    if span["marked"]:
        marks = load.sql(f"SELECT rowid AS r, {ident(RUN_COLUMN)} AS raw FROM {target} "
                         f"WHERE {ident(PARTITION_COLUMN)} = {literal(MARK)} ORDER BY rowid")
        quarantine += _screen(p, load, mapper, marks, line_of, base)
        deleted += _count(load.sql(f"DELETE FROM {target} WHERE {ident(PARTITION_COLUMN)} = {literal(MARK)}"))
        if p.unique:  # rows written back may repeat a key
            repeats = _count(load.sql(f"SELECT {_repeats(p, mine)} FROM {target} WHERE {mine}"))
    if repeats:
        dupes, removed = _duplicates(p, load, path, line_of, base)
        quarantine += dupes
        deleted += removed
    load.rows -= deleted
    if load.rows == 0:
        raise NativeUnsupported(f"{name}: no row loaded (the Arrow path leaves no empty table behind)")
    quarantine.sort(key=lambda q: q["row"])
    return CsvLoaded(inserted + len(rejected), quarantine)


def _count(result: pa.Table) -> int:
    return int(result.column(0)[0].as_py()) if result.num_rows else 0


def _rejects(load: Load, name: str, cfg: CsvFormat) -> dict[int, dict[str, Any]]:
    """The rows DuckDB's reader rejected, by line, as the Arrow path's reader words them. The number of fields is
    counted again from the raw line: DuckDB's message miscounted a row at the edge of its buffers (4 for 3)."""
    rows = load.sql(f"SELECT line, error_type, csv_line, error_message FROM {_REJECTS} ORDER BY line").to_pylist()
    load.sql(f"DROP TABLE IF EXISTS {_REJECTS}")
    load.sql(f"DROP TABLE IF EXISTS {_SCANS}")
    out: dict[int, dict[str, Any]] = {}
    for r in rows:
        found = _FIELDS.search(r["error_message"] or "")
        if r["error_type"] not in ("TOO MANY COLUMNS", "MISSING COLUMNS") or found is None:
            raise NativeUnsupported(f"{name}:{r['line']}: {r['error_type']}: {r['error_message']}")
        line = int(r["line"])
        fields = found.group(2)
        if r["csv_line"] is not None:
            assert cfg.quote_char is not False  # plan() sends files without quoting the Arrow way
            parsed = next(csv.reader(io.StringIO(r["csv_line"], newline=""), delimiter=cfg.delimiter,
                                     quotechar=cfg.quote_char, doublequote=True, strict=False), [])
            fields = str(len(parsed))
        message = f"{name}:{line}: expected {found.group(1)} fields, found {fields}"
        out.setdefault(line, {"row": line, "column": message.split(":", 1)[0], "value": None, "reason": message,
                              "record": r["csv_line"]})
    return out


def _screen(p: CsvPlan, load: Load, mapper: Mapper, marks: pa.Table, line_of: Any,
            base: int) -> list[dict[str, Any]]:
    """Decide the marked rows with the Arrow path's Mapper and rules; write the good ones back in place."""
    rowids = marks.column("r").to_pylist()
    lines = pa.array([line_of(r - base) for r in rowids], pa.int64())
    records = [json.loads(r) for r in marks.column("raw").to_pylist()]
    raw = pa.RecordBatch.from_pydict({
        **{n: pa.array([rec.get(n) for rec in records], pa.string()) for n in p.names}, LINE_COLUMN: lines})
    mapped = mapper.apply(raw)
    if p.screen:
        mapped = p.screen.apply(mapped, raw)
    if mapped.batch.num_rows:
        kept = [r for r, k in zip(rowids, mapped.kept.to_pylist() if mapped.kept is not None else
                                  [True] * len(rowids), strict=True) if k]
        good = pa.Table.from_batches([mapped.batch]).append_column("_hub_rowid", pa.array(kept, pa.int64()))
        sets = ", ".join(f"{ident(c)} = s.{ident(c)}" for c in mapped.batch.schema.names)
        load.sql(f"UPDATE {load.target} SET {sets}, {ident(PARTITION_COLUMN)} = {literal(load.request.partition)}, "
                 f"{ident(RUN_COLUMN)} = {literal(load.request.run_id)} FROM _hub_arrow s "
                 f"WHERE {load.target}.rowid = s._hub_rowid", good)
    return mapped.quarantine


def _repeats(p: CsvPlan, where: str) -> str:
    """SQL counting the rows (of those matching *where*) whose key repeats an earlier one; 0 without a check."""
    if not p.unique:
        return "0"
    keys = ", ".join(ident(k) for k in p.unique)
    present = " AND ".join(f"{ident(k)} IS NOT NULL" for k in p.unique)
    distinct = keys if len(p.unique) == 1 else f"({keys})"
    return (f"(count(*) FILTER (WHERE {where} AND {present}) - "
            f"count(DISTINCT {distinct}) FILTER (WHERE {where} AND {present}))")


def _duplicates(p: CsvPlan, load: Load, path: Path, line_of: Any, base: int) -> tuple[list[dict[str, Any]], int]:
    """Rows whose key (or `unique` column) an earlier loaded row of the file already has: quarantined as
    :class:`RowRules` words them (the first row in file order stays), and deleted."""
    keys = ", ".join(ident(k) for k in p.unique)
    present = " AND ".join(f"{ident(k)} IS NOT NULL" for k in p.unique)
    ours = f"{ident(PARTITION_COLUMN)} = {literal(load.request.partition)} AND {present}"
    dupes = load.sql(f"SELECT rowid AS _hub_rowid, {keys} FROM {load.target} WHERE {ours} "
                     f"QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY rowid) > 1 ORDER BY rowid")
    ordinals = [r - base for r in dupes.column("_hub_rowid").to_pylist()]
    # the records as the file has them: read again (only now that there are duplicates), by position
    wanted = pa.table({"_hub_k": pa.array(ordinals, pa.int64())})
    scan = p.read_csv(path, _REJECTS + "_again", _SCANS + "_again")
    raw = load.sql(f"SELECT f.* FROM (SELECT row_number() OVER () - 1 AS _hub_k, * FROM {scan}) f "
                   f"SEMI JOIN _hub_arrow w ON f._hub_k = w._hub_k ORDER BY f._hub_k", wanted)
    load.sql(f"DROP TABLE IF EXISTS {_REJECTS}_again")
    load.sql(f"DROP TABLE IF EXISTS {_SCANS}_again")
    texts = {r.pop("_hub_k"): r for r in raw.to_pylist()}
    if p.unique_rule is None:
        label, rule = ", ".join(p.unique), "rules.primary_key.unique"
        cols = [dupes.column(k).combine_chunks() for k in p.unique]
        values = (cols[0] if len(cols) == 1 else pa.StructArray.from_arrays(cols, names=list(p.unique))).to_pylist()
        reasons = [f"primary key ({label}) {v!r} was already seen in this load" for v in values]
    else:
        label, rule = p.unique_rule, f"rules.{p.unique_rule}.unique"
        values = dupes.column(p.unique_rule).to_pylist()
        reasons = [f"{label} {v!r} was already seen in this load" for v in values]
    out = []
    for k, v, reason in zip(ordinals, values, reasons, strict=True):
        if k not in texts:
            raise NativeUnsupported(f"row {k} of the file was not found when read again")
        out.append({"row": line_of(k), "column": label, "value": None if v is None else str(v)[:200],
                    "reason": f"{rule}: {reason}", "record": json.dumps(texts[k], default=str, ensure_ascii=False)})
    removed = _count(load.sql(f"DELETE FROM {load.target} WHERE rowid IN (SELECT _hub_rowid FROM _hub_arrow)",
                              dupes.select(["_hub_rowid"])))
    return out, removed
