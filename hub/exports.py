"""Outbound drops: a warehouse table or query written as a file into a partner's SFTP folder.

The file is written locally first (streamed from the warehouse, in the partner's encoding and layout),
then uploaded under a temporary name and renamed, so the partner never picks up half a file.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv

from adapters.sftp import CsvFormat, FixedWidthFormat, load_layout
from hub.errors import HubError
from hub.runtime.window import render_with
from hub.spec.loader import Pipeline
from hub.warehouse import connect


@dataclass
class ExportOutcome:
    export: str
    remote_path: str
    rows: int
    bytes: int
    duration_s: float


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _write_csv(batches: Iterable[pa.RecordBatch], out: Path, cfg: CsvFormat, what: str) -> int:
    rows = 0
    header = cfg.header
    with out.open("wb") as fh:
        for batch in batches:
            buffer = pa.BufferOutputStream()
            pacsv.write_csv(batch, buffer, pacsv.WriteOptions(include_header=header, delimiter=cfg.delimiter,
                                                              quoting_style="needed"))
            header = False
            text = buffer.getvalue().to_pybytes()
            if cfg.encoding.lower().replace("-", "") not in ("utf8",):
                try:
                    text = text.decode("utf-8").encode(cfg.encoding)
                except UnicodeEncodeError as exc:
                    bad = exc.object[max(exc.start - 20, 0): exc.end + 20]
                    raise HubError(f"{what}: a value cannot be written in {cfg.encoding}: ...{bad}...") from None
            fh.write(text)
            rows += batch.num_rows
    return rows


def _write_fixed_width(batches: Iterable[pa.RecordBatch], out: Path, cfg: FixedWidthFormat,
                       base_dir: Path, what: str) -> int:
    fields = load_layout(cfg, base_dir)
    rows = 0
    with out.open("w", encoding=cfg.encoding, newline="\n") as fh:
        for batch in batches:
            missing = [f.name for f in fields if f.name not in batch.schema.names]
            if missing:
                raise HubError(f"{what}: the layout names column(s) {', '.join(missing)} the data does not have "
                               f"({', '.join(batch.schema.names)})")
            columns = [batch.column(f.name).to_pylist() for f in fields]
            for i in range(batch.num_rows):
                line = []
                for f, col in zip(fields, columns, strict=True):
                    text = "" if col[i] is None else str(col[i])
                    if len(text) > f.width:
                        raise HubError(f"{what}: row {rows + i + 1}: {f.name}={text!r} is wider than {f.width}")
                    line.append(text.ljust(f.width))
                fh.write("".join(line) + "\n")
            rows += batch.num_rows
    return rows


def run_export(pipeline: Pipeline, name: str) -> ExportOutcome:
    """Write export *name* and upload it atomically."""
    started = time.monotonic()
    export = pipeline.spec.exports[name]
    what = f"exports.{name}"
    system = pipeline.spec.systems[export.system]
    system.protocol.resolve_system(export.system, system)  # secrets are checked before the warehouse is read
    now = datetime.now(UTC)
    remote = render_with(export.path, {"run": {"date": now.date().isoformat(), "timestamp": now.strftime(
        "%Y%m%dT%H%M%SZ")}}, field=f"{what}.path")
    sql = export.sql or ""
    if export.table:  # the table's own columns: the hub's bookkeeping columns stay home
        columns = connect(pipeline.warehouse_url).query(f"SELECT * FROM {_quote(export.table)} LIMIT 0").column_names
        sql = f"SELECT {', '.join(_quote(c) for c in columns if not c.startswith('_hub_'))} FROM {_quote(export.table)}"
    spool = pipeline.spool_dir()
    spool.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=spool) as tmp:
        local = Path(tmp) / Path(remote).name
        batches = connect(pipeline.warehouse_url).stream(sql, sandboxed=bool(export.sql))
        if export.format.csv is not None:
            rows = _write_csv(batches, local, export.format.csv, what)
        else:
            assert export.format.fixed_width is not None
            rows = _write_fixed_width(batches, local, export.format.fixed_width, pipeline.root, what)
        size = local.stat().st_size
        system.protocol.upload(pipeline, export.system, local, remote)
    return ExportOutcome(name, remote, rows, size, time.monotonic() - started)
