"""What a system offers now, as a contract document: read from the live system through the hub's adapters.

* SOAP: the WSDL's chosen service and port, every operation with input and output JSON Schemas
  (:func:`adapters.soap.catalog.describe`), and whether the first response of each source still matches
  the WSDL;
* REST: the OpenAPI document when the system declares one, and the JSON Schema observed in the first page
  of each source (of the first partition);
* SFTP: the layout of the newest ready file of each drop: name pattern, encoding, delimiter, header,
  columns in order with types inferred from the first rows;
* SQL: the columns, types and keys of the tables the sources read (:func:`adapters.sql.catalog.describe`).

Documents hold nothing run-specific (no hosts, ports, file names, timestamps or row values), so a snapshot
of an unchanged system is byte-for-byte the same every time.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import posixpath
import re
import tempfile
import zlib
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from adapters.sftp import CsvFormat, FormatConfig
from hub.contracts.schema import infer
from hub.contracts.usage import (
    query_columns,
    sql_flow_procedures,
    sql_flow_writes,
    sqlglot_dialect,
    system_sources,
    table_key,
)
from hub.errors import HubError
from hub.runtime.secrets import mask
from hub.runtime.window import Window, sample_window
from hub.spec.loader import Pipeline

#: Bump when the document layout changes incompatibly.
FORMAT = 1
HEAD_BYTES = 256 * 1024
SAMPLE_ROWS = 200
_URL_HOST = re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s]+", re.I)


def first_window(pipeline: Pipeline) -> Window | None:
    """The pipeline's first partition: every partitioned source is sampled there, so samples are stable."""
    parts = pipeline.spec.partitions
    if parts is None:
        return None
    return sample_window(parts.kind, parts.window.start, parts.window.timezone)


def collect(pipeline: Pipeline, system: str) -> dict[str, Any]:
    """The contract document of *system* as the pipeline sees it now."""
    cfg = pipeline.spec.systems.get(system)
    if cfg is None:
        known = ", ".join(pipeline.spec.systems)
        raise HubError(f"pipeline {pipeline.name} has no system '{system}' (systems: {known})")
    protocol = cfg.kind
    body = cfg.protocol.collect(pipeline, system)  # the protocol's own document (hub.protocols)
    if body is None:
        raise HubError(f"systems.{system}: protocol {protocol} has no contract to collect")
    return {"contract": FORMAT, "pipeline": pipeline.name, "system": system, "protocol": protocol, protocol: body}


def scrub(text: str) -> str:
    """A message without secrets and without scheme://host:port (run-specific)."""
    return _URL_HOST.sub("", mask(text)).strip()


# --- SFTP ------------------------------------------------------------------------------------------------

def collect_sftp(pipeline: Pipeline, system: str) -> dict[str, Any]:
    from hub.files import build_sftp

    files: dict[str, Any] = {}
    for source in system_sources(pipeline, system):
        adapter = build_sftp(pipeline, source)
        cfg = adapter.source
        entry: dict[str, Any] = {"path": cfg.files.path, "glob": cfg.files.glob, "format": cfg.format.kind,
                                 "compression": cfg.format.compression}
        with adapter.session() as session:
            candidates = adapter.ready_files(session)
            sample = "the newest ready file"
            if not candidates and cfg.after.move_to:  # loaded files are archived: they are complete
                sample = "the newest archived file"
                candidates = session.list_files(cfg.after.move_to, cfg.files.glob, recursive=cfg.files.recursive,
                                                 ignore=cfg.files.ignore)
            if not candidates:
                files[source.name] = {**entry, "sample": None}
                continue
            newest = max(candidates, key=lambda f: (f.mtime, f.path))
            name = posixpath.basename(newest.path)
            compression = cfg.format.compression
            if compression == "auto":
                compression = "gzip" if name.endswith(".gz") else "zip" if name.endswith(".zip") else "none"
            whole = compression == "zip" or cfg.format.kind in ("parquet", "xml")
            if whole:
                with tempfile.TemporaryDirectory(prefix="hub-contract-") as tmp:
                    local = Path(tmp) / "sample"  # not the remote name: it may be too long or not UTF-8 locally
                    session.download(newest.remote, local)
                    layout = _file_layout(local.read_bytes(), cfg.format, name, compression, complete=True,
                                          base_dir=pipeline.root)
            else:
                head = session.read_head(newest.remote, HEAD_BYTES)
                layout = _file_layout(head, cfg.format, name, compression, complete=len(head) < HEAD_BYTES,
                                      base_dir=pipeline.root)
        files[source.name] = {**entry, "sample": sample,
                              "name_pattern": re.sub(r"\d", "#", newest.name), **layout}
    return {"files": files}


def _file_layout(data: bytes, fmt: FormatConfig, name: str, compression: str, *, complete: bool,
                 base_dir: Path) -> dict[str, Any]:
    if compression == "gzip":
        data = zlib.decompressobj(wbits=31).decompress(data, HEAD_BYTES * 8)
        complete = False
    elif compression == "zip":
        import zipfile

        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            member = next((i for i in archive.infolist() if not i.is_dir()), None)
            if member is None:
                return {"members": 0}
            with archive.open(member) as stream:
                data = stream.read(HEAD_BYTES)
            complete = member.file_size <= HEAD_BYTES
    if not complete and b"\n" in data:
        data = data[: data.rfind(b"\n") + 1]  # whole lines only
    if fmt.csv is not None:
        return csv_layout(data, fmt.csv)
    if fmt.fixed_width is not None:
        return _fixed_width_layout(data, fmt, base_dir)
    if fmt.jsonl is not None:
        text = data.decode(fmt.jsonl.encoding, errors="replace")
        records = []
        for line in text.splitlines():
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
            if len(records) >= SAMPLE_ROWS:
                break
        return {"encoding": observed_encoding(data, fmt.jsonl.encoding), "schema": infer(records)}
    if fmt.xml is not None:
        from adapters.sftp import read_xml

        rows: list[Any] = []
        for batch in read_xml(io.BytesIO(data), fmt.xml.records, name, SAMPLE_ROWS, fmt.xml.max_depth):
            if "_hub_error" in batch.schema.names:  # records too deep to read: not a sample of the schema
                continue
            rows.extend(batch.drop_columns([c for c in ("_hub_line",) if c in batch.schema.names]).to_pylist())
            break
        return {"records": fmt.xml.records, "schema": infer(rows)}
    import pyarrow.parquet as pq

    schema = pq.ParquetFile(io.BytesIO(data)).schema_arrow
    return {"columns": [{"name": f.name, "type": str(f.type), "arrow": str(f.type)} for f in schema]}


def observed_encoding(data: bytes, declared: str) -> str:
    """``ascii`` (fits any encoding), ``utf-8``, the declared encoding when the bytes decode with it, else
    ``unknown``."""
    body = data[len(codecs.BOM_UTF8):] if data.startswith(codecs.BOM_UTF8) else data
    if body.isascii():
        return "ascii"
    try:
        body.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        body.decode(declared)
        return codecs.lookup(declared).name
    except (UnicodeDecodeError, LookupError):
        return "unknown"


def _canonical_codec(name: str) -> str:
    try:
        return codecs.lookup(name).name
    except LookupError:
        return name


def csv_layout(data: bytes, cfg: CsvFormat) -> dict[str, Any]:
    """Encoding, delimiter, header and columns (in order, with inferred types) of the start of a CSV file."""
    encoding = observed_encoding(data, cfg.encoding)
    codec = "utf-8-sig" if encoding in ("ascii", "utf-8") else cfg.encoding
    text = data.decode(codec, errors="replace").lstrip("\ufeff")
    lines = text.splitlines()[cfg.skip_rows:]
    delimiter = sniff_delimiter(lines[:50], cfg.delimiter, cfg.quote_char or None)
    sample = io.StringIO("\n".join(lines[: SAMPLE_ROWS + 1]))
    reader = csv.reader(sample, delimiter=delimiter, quotechar=cfg.quote_char) if cfg.quote_char else \
        csv.reader(sample, delimiter=delimiter, quoting=csv.QUOTE_NONE)
    rows = [r for r in reader if r]
    header = bool(cfg.header)
    if header and rows:
        names, body = rows[0], rows[1:]
    else:
        width = max((len(r) for r in rows), default=0)
        names = list(cfg.columns or [])[:width] + [f"column {i + 1}" for i in range(len(cfg.columns or []), width)]
        body = rows
    names = [n.strip() for n in names]
    columns = []
    for i, column_name in enumerate(names):
        values = [r[i] for r in body if i < len(r)]
        columns.append({"name": column_name, "type": column_type(values, cfg.null_values)})
    if header and rows and _header_looks_like_data(rows[0], columns):
        header = False  # the first line is a record: the partner stopped sending the header
    return {"encoding": encoding, "declared_encoding": _canonical_codec(cfg.encoding), "delimiter": delimiter,
            "header": header, "columns": columns}


def sniff_delimiter(lines: list[str], declared: str, quote: str | None) -> str:
    """The delimiter that splits every sample line into the same number (> 1) of fields; the declared one
    when it does."""
    sample = [line for line in lines if line.strip()]
    if not sample:
        return declared
    best, best_fields = declared, 0
    for candidate in dict.fromkeys([declared, ",", ";", "\t", "|"]):
        counts = {len(r) for r in csv.reader(sample, delimiter=candidate, quotechar=quote or '"')}
        if len(counts) == 1:
            fields = counts.pop()
            if fields > 1 and candidate == declared:
                return declared
            if fields > best_fields:
                best, best_fields = candidate, fields
    return best


_INTEGER = re.compile(r"^[+-]?\d+$")
_DECIMAL_COMMA = re.compile(r"^[+-]?(\d{1,3}(\.\d{3})+|\d+),\d+$")
_DECIMAL_POINT = re.compile(r"^[+-]?(\d{1,3}(,\d{3})+|\d+)\.\d+$")
_SLASHED = re.compile(r"^\d{1,2}/\d{1,2}/\d{4}$")
_DATE_FORMATS = [("%d.%m.%Y", re.compile(r"^\d{1,2}\.\d{1,2}\.\d{4}$")),
                 ("%Y-%m-%d", re.compile(r"^\d{4}-\d{2}-\d{2}$")),
                 ("%d/%m/%Y", _SLASHED), ("%m/%d/%Y", _SLASHED)]
_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$")
_BOOLEAN = {"true", "false"}


def _fits(value: str, kind: str) -> bool:
    if kind == "integer":
        return bool(_INTEGER.match(value))
    if kind == "decimal(,)":
        return bool(_INTEGER.match(value) or _DECIMAL_COMMA.match(value))
    if kind == "decimal(.)":
        return bool(_INTEGER.match(value) or _DECIMAL_POINT.match(value))
    if kind == "timestamp":
        return bool(_TIMESTAMP.match(value))
    if kind == "boolean":
        return value.lower() in _BOOLEAN
    if kind.startswith("date("):
        fmt = kind[5:-1]
        pattern = dict(_DATE_FORMATS).get(fmt)
        if pattern is None or not pattern.match(value):
            return False
        try:
            datetime.strptime(value, fmt)
        except ValueError:
            return False
        return True
    return True


_KINDS = ["integer", "decimal(,)", "decimal(.)", *[f"date({f})" for f, _ in _DATE_FORMATS], "timestamp", "boolean"]


def column_type(values: list[str], nulls: list[str] | None = None) -> str:
    """The narrowest type every non-empty value fits: integer, decimal(,) / decimal(.) (the decimal
    separator), date(FORMAT), timestamp, boolean, else string; ``empty`` when no value is given."""
    nulls_ = set(nulls if nulls is not None else [""])
    seen = [v.strip() for v in values if v.strip() not in nulls_ and v.strip()]
    if not seen:
        return "empty"
    for kind in _KINDS:
        if all(_fits(v, kind) for v in seen):
            return kind
    return "string"


def _header_looks_like_data(first: list[str], columns: list[dict[str, Any]]) -> bool:
    typed = [(v.strip(), c["type"]) for v, c in zip(first, columns, strict=False)
             if c["type"] not in ("string", "empty")]
    return bool(typed) and all(_fits(v, t) for v, t in typed)


def _fixed_width_layout(data: bytes, fmt: FormatConfig, base_dir: Path) -> dict[str, Any]:
    from adapters.sftp import load_layout

    cfg = fmt.fixed_width
    assert cfg is not None
    fields = load_layout(cfg, base_dir)
    text = data.decode(cfg.encoding, errors="replace")
    lines = [line for line in text.splitlines()[cfg.skip_rows:] if line.strip()][:SAMPLE_ROWS]
    lengths = Counter(len(line) for line in lines)
    columns = [{"name": f.name, "type": column_type([line[f.start - 1: f.start - 1 + f.width] for line in lines])}
               for f in fields]
    return {"encoding": observed_encoding(data, cfg.encoding), "declared_encoding": _canonical_codec(cfg.encoding),
            "line_length": lengths.most_common(1)[0][0] if lengths else 0, "columns": columns}


# --- SQL -------------------------------------------------------------------------------------------------

def collect_sql(pipeline: Pipeline, system: str) -> dict[str, Any]:
    from adapters.sql.catalog import describe, describe_procedures
    from hub.spec.flows import flow_calls

    sources = system_sources(pipeline, system)
    written = sql_flow_writes(pipeline, system)
    calls = flow_calls(pipeline.spec.flows, system)
    flow_tables = {written[c.operation] for c in calls if c.operation in written}
    called = sql_flow_procedures(pipeline, system)
    flow_procs = {called[c.operation] for c in calls if c.operation in called}
    if not sources and not flow_tables and not flow_procs:
        return {"tables": {}}
    block = pipeline.spec.systems[system]
    cfg = block.protocol.resolve_system(system, block, root=pipeline.root)
    procedures: dict[str, Any] = {}
    for schema_name in sorted({s for s, _ in flow_procs}, key=lambda s: s or ""):  # what flows call, by schema
        names = {p for s, p in flow_procs if s == schema_name}
        for name, proc in describe_procedures(cfg, names, schema_name).items():
            procedures[table_key(name, schema_name)] = proc
    wanted: dict[str | None, set[str]] = {}
    for schema_name, table_name in flow_tables:  # the tables flows write are part of the contract too
        wanted.setdefault(schema_name, set()).add(table_name)
    for source in sources:
        sql = source.config
        assert sql is not None
        if sql.table is not None:
            wanted.setdefault(sql.schema_, set()).add(sql.table)
        elif sql.query is not None:
            for key in query_columns(sql.query, sqlglot_dialect(source)):
                prefix, _, table = key.rpartition(".")
                wanted.setdefault(prefix or None, set()).add(table)
    tables: dict[str, Any] = {}
    dialect = None
    for schema, names in sorted(wanted.items(), key=lambda kv: kv[0] or ""):
        catalog = describe(cfg, schema=schema, tables=names)
        dialect = catalog["dialect"]
        for t in catalog["tables"]:
            tables[table_key(t["name"], schema)] = {
                "kind": t["kind"], "columns": t["columns"], "primary_key": t["primary_key"],
                "foreign_keys": [{k: v for k, v in fk.items() if v is not None} for fk in t["foreign_keys"]]}
    out: dict[str, Any] = {"dialect": dialect, "tables": tables}
    if flow_procs:
        out["procedures"] = procedures
    return out
