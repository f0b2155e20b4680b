"""SFTP's contract (:meth:`hub.protocols.sftp.SftpProtocol.collect` and ``compare``): the layout of the newest
ready file of each drop (name pattern, encoding, delimiter, header, columns in order with types inferred from the
first rows); the columns or fields each drop reads; and the changes between a snapshot and the live drop.

Imported by the plugin's hooks on first use (it needs :mod:`hub.contracts`, above the spec layer).
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
from hub.contracts.diff import Change, Differ, column_relation, compare_columns
from hub.contracts.schema import infer
from hub.contracts.usage import Usage, record_uses, system_sources
from hub.spec.loader import Pipeline

HEAD_BYTES = 256 * 1024


SAMPLE_ROWS = 200


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


def sftp_usage(pipeline: Pipeline, system: str) -> Usage:
    """Scope ``file:SOURCE``: the columns (CSV, fixed width) or fields (JSON lines, XML) a drop reads."""
    usage = Usage()
    for source in system_sources(pipeline, system):
        record_uses(usage, f"file:{source.name}", (), source, "the file")
    return usage


def csv_relation(cb: dict[str, Any], ca: dict[str, Any]) -> str:
    """Relation of two inferred CSV column types (``integer``, ``decimal(,)``, ``date(%d.%m.%Y)``, ...)."""
    before, after = str(cb.get("type")), str(ca.get("type"))
    if before == after or "empty" in (before, after):
        return "same"
    if before == "integer" and after.startswith("decimal"):
        return "widened"
    if before.startswith("decimal") and after == "integer":
        return "narrowed"
    return "changed"


def compare_sftp(system: str, before: dict[str, Any], after: dict[str, Any], usage: Usage) -> list[Change]:
    d = Differ(system, usage)
    fb, fa = before.get("files") or {}, after.get("files") or {}
    for source, lb in fb.items():
        la = fa.get(source)
        element = f"file {lb.get('path', '')}/{lb.get('glob', '')} ({source})"
        scope = f"file:{source}"
        everything = usage.users(scope, ())
        if la is None:
            d.add(element, "", "no longer read by the pipeline (take a new snapshot)", "read", "absent", uses=[],
                  breaking=False)
            continue
        if lb.get("sample") is None or la.get("sample") is None:
            if lb.get("sample") is not None:
                d.add(element, "", "no ready file to compare with", lb.get("name_pattern"), "no file", uses=[],
                      breaking=False)
            elif la.get("sample") is not None:
                d.add(element, "", "a file to compare with (take a new snapshot)", "no file", la.get("name_pattern"),
                      uses=[], breaking=False)
            continue
        if lb.get("name_pattern") != la.get("name_pattern"):
            d.add(element, "name", "file names changed", lb.get("name_pattern"), la.get("name_pattern"), uses=[],
                  breaking=False)
        for key in ("format", "delimiter", "header", "compression"):
            if lb.get(key) != la.get(key):
                d.add(element, key, f"{key} changed", lb.get(key), la.get(key), uses=everything,
                      breaking=bool(everything))
        eb, ea = lb.get("encoding"), la.get("encoding")
        if eb != ea:
            declared = la.get("declared_encoding")
            fits = ea == "ascii" or ea == declared or (declared in ("utf-8", "utf_8") and ea == "utf-8")
            d.add(element, "encoding", "encoding changed", eb, ea, uses=everything,
                  breaking=bool(everything) and not fits)
        if "columns" in lb or "columns" in la:
            compare_columns(d, lb.get("columns") or [], la.get("columns") or [], element=element, scope=scope,
                             positional=not lb.get("header", True),
                             relation_=column_relation if lb.get("format") == "parquet" else csv_relation)
        if lb.get("line_length") != la.get("line_length") and "line_length" in lb:
            d.add(element, "line length", "line length changed", lb.get("line_length"), la.get("line_length"),
                  uses=everything, breaking=bool(everything))
        if "schema" in lb or "schema" in la:
            d.schema(lb.get("schema"), la.get("schema"), element=element, scope=scope)
    for source, la in fa.items():
        if source not in fb:
            d.add(f"file {la.get('path', '')}/{la.get('glob', '')} ({source})", "", "not in the snapshot (take a "
                  "new snapshot)", "absent", la.get("name_pattern"), uses=[], breaking=False)
    return d.changes
