"""The calls of an asset materialization (:mod:`hub.runtime.tracing`) as rows of ``_hub_calls``.

Tracing is runtime (the lowest layer) and must not import the warehouse; it hands the calls of a scope to a
sink, and this module is the sink that writes them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial

import pyarrow as pa

from hub.runtime.secrets import mask
from hub.runtime.tracing import CALLS_TABLE, AssetScope
from hub.warehouse import LoadRequest, connect

log = logging.getLogger("hub.tracing")

#: Columns of ``_hub_calls`` (the warehouse adds ``_hub_partition``, ``_hub_run_id``, ``_hub_loaded_at``).
CALLS_SCHEMA = pa.schema([
    ("call_id", pa.string()), ("run_id", pa.string()), ("asset", pa.string()), ("partition_key", pa.string()),
    ("system", pa.string()), ("protocol", pa.string()), ("operation", pa.string()), ("target", pa.string()),
    ("status", pa.string()), ("http_status", pa.int64()), ("attempts", pa.int64()), ("retries", pa.int64()),
    ("rows", pa.int64()), ("bytes", pa.int64()), ("started_at", pa.timestamp("us", tz="UTC")),
    ("duration_ms", pa.float64()), ("trace_id", pa.string()), ("span_id", pa.string()), ("error", pa.string())])


def calls_sink(warehouse_url: str) -> Callable[[AssetScope], None]:
    """What :func:`hub.runtime.tracing.asset_scope` calls at the end of a scope: writes its calls."""
    return partial(write_calls, warehouse_url)


def write_calls(warehouse_url: str, scope: AssetScope) -> None:
    """Append the calls of *scope* to ``_hub_calls`` in a transaction of their own (the load's may have rolled
    back). Failing to write them is logged, not raised: it must not hide the load's own error, nor fail an
    asset whose rows are committed."""
    rows = [{"call_id": c.call_id, "run_id": scope.run_id, "asset": scope.asset, "partition_key": scope.partition,
             "system": c.system, "protocol": c.protocol, "operation": c.operation, "target": c.target,
             "status": c.status, "http_status": c.http_status, "attempts": c.attempts, "retries": c.attempts - 1,
             "rows": c.rows, "bytes": c.bytes, "started_at": c.started_at, "duration_ms": c.duration_ms,
             "trace_id": c.trace_id, "span_id": c.span_id, "error": c.error} for c in scope.calls]
    batch = pa.RecordBatch.from_pylist(rows, schema=CALLS_SCHEMA)
    try:
        wh = connect(warehouse_url)
        with wh.begin(LoadRequest(table=CALLS_TABLE, mode="merge", run_id=scope.run_id,
                                  primary_key=("call_id",))) as load:
            load.write(batch)
            load.commit()
    except Exception as exc:  # reported, never raised (see the docstring)
        log.warning("%s: %d call(s) of %s could not be written to %s: %s", scope.asset, len(rows), scope.run_id,
                    CALLS_TABLE, mask(f"{type(exc).__name__}: {exc}"))
