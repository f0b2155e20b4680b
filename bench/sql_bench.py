"""SQL source benchmark: PostgreSQL -> Arrow / DuckDB. The hub vs connectorx, raw ADBC, dlt and pandas.

Usage::

    .venv/bin/python bench/sql_bench.py [--rows 2000000] [--repeat 3] [--peers hub,cx,...] [--out FILE]
    .venv/bin/python bench/sql_bench.py --profile      # where the hub spends its time

A scratch database ``hub_bench_<random>`` is created on the PostgreSQL server (``--server``, default
``$HUB_BENCH_POSTGRES`` or ``postgresql://postgres@127.0.0.1:5432``) holding one table, ``orders``, of
``--rows`` rows generated server-side with ``generate_series`` (10 columns: bigint id primary key, int,
varchar, int, numeric(12,2), text, timestamptz, timestamp, date, text; some NULLs), then VACUUM ANALYZE;
it is dropped at the end, also on failure (``--database NAME`` reuses an existing one and keeps it).

Each peer runs in a fresh subprocess, so imports and memory never mix; the subprocess times only the data
movement (imports and verification are outside the timer), checks the rows, and reports its peak RSS
(its own ``VmHWM``, bench/_mem.py) and its RSS after imports. Every peer runs
``--repeat`` times, interleaved, and the median is reported.

Extract only (Arrow or DataFrames in memory, each batch dropped as soon as it is counted where the peer
streams; the count and the sum of ``id`` are checked):

* ``hub``        - ``adapters.sql.SqlSource.batches()``: the fast path (ADBC, binary COPY) + type mapping;
* ``hub-dbapi``  - the same with ``fast_path: false`` (SQLAlchemy + psycopg, server-side cursor); for
  information;
* ``cx``         - ``connectorx.read_sql(..., return_type="arrow")``: one pyarrow Table of everything;
* ``adbc``       - raw ``adbc_driver_postgresql.dbapi``: ``cursor.fetch_record_batch()`` iterated;
* ``pandas``     - ``pandas.read_sql(..., chunksize=100_000)`` iterated, on a SQLAlchemy (psycopg)
  connection with ``stream_results=True`` so that the chunks are really streamed.

Into a new DuckDB file (end to end; ``count(*)`` and ``count(DISTINCT id)`` are checked):

* ``hub-load``    - ``hub.materialize.materialize_source``, a source with no primary key (a plain full
  load: replace), one transaction; the same code path a Dagster asset runs;
* ``dlt-load``    - ``dlt.sources.sql_database.sql_database(backend="pyarrow", chunk_size=100_000)``,
  ``pipeline.run`` into DuckDB (default ``append``);
* ``cx-load``     - connectorx's Arrow table, then ``CREATE TABLE orders AS SELECT * FROM`` it in DuckDB;
* ``pandas-load`` - the pandas chunks above, each inserted into DuckDB (``CREATE TABLE AS`` for the first).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from _mem import peak_rss_mb  # bench/_mem.py: bench/ is sys.path[0] when a bench runs as a script

ROOT = Path(__file__).resolve().parent.parent
TABLE = "orders"
CHUNK = 100_000  # rows per batch / chunk for every peer that takes a size

TARGET_VS_CX = 0.8  # hub extract must reach at least this fraction of connectorx's throughput
TARGET_VS_ADBC = 0.8  # ... and of raw ADBC's
TARGET_VS_PANDAS = 5.0  # hub must be at least this many times faster than pandas.read_sql chunks
TARGET_RSS_MB = 500.0  # hub peak RSS must stay below this

EXTRACT_PEERS = ("hub", "hub-dbapi", "cx", "adbc", "pandas")
LOAD_PEERS = ("hub-load", "dlt-load", "cx-load", "pandas-load")
PEERS = EXTRACT_PEERS + LOAD_PEERS
NAMES = {
    "hub": "hub SqlSource.batches() (ADBC fast path)",
    "hub-dbapi": "hub SqlSource.batches(), fast_path: false (SQLAlchemy + psycopg)",
    "cx": "connectorx read_sql -> pyarrow Table",
    "adbc": "raw ADBC fetch_record_batch()",
    "pandas": "pandas.read_sql, chunksize=100000",
    "hub-load": "hub materialize_source -> DuckDB",
    "dlt-load": "dlt sql_database (pyarrow) -> DuckDB",
    "cx-load": "connectorx -> DuckDB CREATE TABLE AS",
    "pandas-load": "pandas.read_sql chunks -> DuckDB inserts",
}

# --------------------------------------------------------------------------------------------------------
# The source database
# --------------------------------------------------------------------------------------------------------

CREATE = f"""
CREATE TABLE {TABLE} (
    id          bigint PRIMARY KEY,
    customer_id integer NOT NULL,
    sku         varchar(16) NOT NULL,
    quantity    integer NOT NULL,
    amount      numeric(12,2),
    status      text NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamp,
    ship_date   date,
    note        text
)"""

# random() sits in a sub-select so that every row draws its own values (PostgreSQL does not flatten a
# sub-select with volatile functions); setseed() in the same session makes the data the same every time.
FILL = f"""
INSERT INTO {TABLE}
SELECT g,
       1 + floor(r1 * 250000)::int,
       'SKU-' || lpad(floor(r2 * 60000)::int::text, 6, '0'),
       1 + floor(r3 * 12)::int,
       CASE WHEN r4 < 0.02 THEN NULL ELSE round((r4 * 2500)::numeric, 2) END,
       (ARRAY['new', 'paid', 'picking', 'shipped', 'delivered', 'cancelled', 'returned'])[1 + floor(r5 * 7)::int],
       created,
       CASE WHEN r6 < 0.1 THEN NULL ELSE (created + r6 * interval '30 days') AT TIME ZONE 'UTC' END,
       CASE WHEN r5 BETWEEN 3.0 / 7 AND 5.0 / 7 THEN (created + interval '2 days')::date END,
       CASE WHEN r7 < 0.7 THEN NULL
            ELSE (ARRAY['leave at the door', 'gift wrap, no invoice in the box', 'call before delivery',
                        'fragile: glass', 'customer asked for an express upgrade', 'Zoë''s order, deliver to the café'])
                 [1 + mod(floor(r7 * 1000)::int, 6)] || ' #' || g END
FROM (SELECT g, random() AS r1, random() AS r2, random() AS r3, random() AS r4, random() AS r5,
             random() AS r6, random() AS r7,
             timestamptz '2022-01-01 00:00:00+00' + g * interval '40 seconds' + random() * interval '40 seconds'
                 AS created
      FROM generate_series(1, %(rows)s) AS g) AS s
"""


def _admin(server: str, dbname: str = "postgres") -> Any:
    import psycopg

    return psycopg.connect(f"{server}/{dbname}", autocommit=True, connect_timeout=10)


@contextmanager
def scratch_database(server: str, rows: int, reuse: str | None, keep: bool = False) -> Iterator[str]:
    """Yield the name of a database holding ``orders`` with *rows* rows; a new one is dropped afterwards
    (unless *keep*)."""
    if reuse:
        with _admin(server, reuse) as con:
            (n,) = con.execute(f"SELECT count(*) FROM {TABLE}").fetchone()  # type: ignore[misc]
        if n != rows:
            raise SystemExit(f"--database {reuse}: {TABLE} has {n:,} rows, not --rows {rows:,}")
        yield reuse
        return
    name = f"hub_bench_{secrets.token_hex(4)}"
    with _admin(server) as con:
        con.execute(f"CREATE DATABASE {name}")
    drop = True  # on any failure, and at the end unless --keep
    try:
        t0 = time.perf_counter()
        with _admin(server, name) as con:
            con.execute(CREATE)
            con.execute("SELECT setseed(0.42)")
            con.execute(FILL, {"rows": rows})
            con.execute("VACUUM ANALYZE " + TABLE)
            (size,) = con.execute(f"SELECT pg_total_relation_size('{TABLE}')").fetchone()  # type: ignore[misc]
        print(f"database {name}: {rows:,} rows, {size / 2**20:.0f} MB (table + index), generated in "
              f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)
        yield name
        drop = not keep
    finally:
        if drop:
            with _admin(server) as con:
                con.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            print(f"database {name} dropped", file=sys.stderr)
        else:
            print(f"database {name} kept (--keep): reuse it with --database {name}", file=sys.stderr)


def table_info(server: str, database: str) -> dict[str, Any]:
    with _admin(server, database) as con:
        (size,) = con.execute(f"SELECT pg_relation_size('{TABLE}')").fetchone()  # type: ignore[misc]
        (version,) = con.execute("SHOW server_version").fetchone()  # type: ignore[misc]
        nulls = con.execute(f"SELECT count(*) FILTER (WHERE amount IS NULL), count(*) FILTER (WHERE updated_at IS "
                            f"NULL), count(*) FILTER (WHERE ship_date IS NULL), count(*) FILTER (WHERE note IS "
                            f"NULL) FROM {TABLE}").fetchone()
    return {"heap_mb": size / 2**20, "server_version": version, "nulls": list(nulls or [])}


# --------------------------------------------------------------------------------------------------------
# Peers (each runs inside its own subprocess: `sql_bench.py --worker PEER ...`)
# --------------------------------------------------------------------------------------------------------

class Ctx:
    """What a peer gets: URLs of the source database, the expected row count, a scratch directory."""

    def __init__(self, server: str, database: str, rows: int, tmp: Path) -> None:
        self.rows, self.tmp = rows, tmp
        self.url = f"{server}/{database}"  # postgresql://user@host:port/db: libpq, ADBC, connectorx, the hub
        self.sa_url = self.url.replace("postgresql://", "postgresql+psycopg://", 1)  # SQLAlchemy (pandas, dlt)
        self.sql = f"SELECT * FROM {TABLE}"
        self.id_sum = rows * (rows + 1) // 2
        self.rss_after_imports = 0.0

    def imported(self) -> None:
        self.rss_after_imports = _peak_rss_mb()

    def extracted(self, seconds: float, rows: int, id_sum: int, detail: str = "") -> dict[str, Any]:
        ok = rows == self.rows and id_sum == self.id_sum
        return {"seconds": seconds, "rows": rows, "ok": ok,
                "verified": f"{rows:,} rows, id sum {'ok' if id_sum == self.id_sum else 'WRONG'}", "detail": detail}

    def loaded(self, seconds: float, db: Path, table: str, detail: str = "") -> dict[str, Any]:
        import duckdb

        with duckdb.connect(str(db), read_only=True) as con:
            total, distinct = con.execute(f"SELECT count(*), count(DISTINCT id) FROM {table}").fetchone()  # type: ignore[misc]
        ok = total == self.rows and distinct == self.rows
        return {"seconds": seconds, "rows": int(total), "ok": ok,
                "verified": f"{total:,} rows, {distinct:,} distinct ids", "detail": detail}


def _peak_rss_mb() -> float:
    return peak_rss_mb()


def _warm_drivers(adbc: bool = False) -> None:
    """Import what the hub, SQLAlchemy and pandas import lazily on their first connection (the PostgreSQL
    dialect, psycopg; *adbc*: ADBC's DBAPI module, which pulls in pandas and pyarrow.dataset): ~0.3 s in a
    fresh process that a long-running Dagster process pays once. Imports stay outside the timings."""
    import psycopg  # noqa: F401
    import sqlalchemy.dialects.postgresql.psycopg  # noqa: F401

    if adbc:
        import adbc_driver_postgresql.dbapi  # noqa: F401


def _batch_id_sum(batch: Any) -> int:
    import pyarrow.compute as pc

    return int(pc.sum(batch.column("id")).as_py() or 0)


def hub_spec(ctx: Ctx, db: Path, fast: bool = True) -> str:
    return (f"pipeline: bench\nwarehouse: duckdb:///{db}\n"
            f"systems:\n  pg: {{sql: {{url: \"{ctx.url}\", fast_path: {str(fast).lower()}}}}}\n"
            f"sources:\n  {TABLE}: {{system: pg, table: {TABLE}}}\n")


def peer_hub(ctx: Ctx, fast: bool = True) -> dict[str, Any]:
    from adapters.sql import SqlSource, SqlSourceConfig, SqlSystemConfig

    _warm_drivers(adbc=True)
    ctx.imported()
    started = time.perf_counter()
    source = SqlSource(SqlSystemConfig(url=ctx.url, fast_path=fast), SqlSourceConfig(table=TABLE), name=TABLE)
    rows = id_sum = batches = 0
    for batch in source.batches():
        rows += batch.num_rows
        id_sum += _batch_id_sum(batch)
        batches += 1
    elapsed = time.perf_counter() - started
    return ctx.extracted(elapsed, rows, id_sum, f"{batches} batches, reader {source.details()['reader']}")


def peer_hub_dbapi(ctx: Ctx) -> dict[str, Any]:
    return peer_hub(ctx, fast=False)


def peer_cx(ctx: Ctx) -> dict[str, Any]:
    import connectorx as cx
    import pyarrow  # noqa: F401  (imported outside the timer)

    ctx.imported()
    started = time.perf_counter()
    table = cx.read_sql(ctx.url, ctx.sql, return_type="arrow")
    elapsed = time.perf_counter() - started
    return ctx.extracted(elapsed, table.num_rows, _batch_id_sum(table), f"{table.column('amount').type}")


def peer_adbc(ctx: Ctx) -> dict[str, Any]:
    import adbc_driver_postgresql.dbapi as adbc
    import pyarrow  # noqa: F401

    ctx.imported()
    started = time.perf_counter()
    rows = id_sum = batches = 0
    with adbc.connect(ctx.url) as conn, conn.cursor() as cur:
        cur.execute(ctx.sql)
        for batch in cur.fetch_record_batch():
            rows += batch.num_rows
            id_sum += _batch_id_sum(batch)
            batches += 1
    elapsed = time.perf_counter() - started
    return ctx.extracted(elapsed, rows, id_sum, f"{batches} batches (driver default size)")


def _pandas_chunks(ctx: Ctx) -> Iterator[Any]:
    import pandas as pd
    import sqlalchemy as sa

    engine = sa.create_engine(ctx.sa_url)
    try:
        with engine.connect() as conn:
            yield from pd.read_sql(sa.text(ctx.sql), conn.execution_options(stream_results=True), chunksize=CHUNK)
    finally:
        engine.dispose()


def peer_pandas(ctx: Ctx) -> dict[str, Any]:
    import pandas  # noqa: F401

    _warm_drivers()
    ctx.imported()
    started = time.perf_counter()
    rows = id_sum = chunks = 0
    for df in _pandas_chunks(ctx):
        rows += len(df)
        id_sum += int(df["id"].sum())
        chunks += 1
    elapsed = time.perf_counter() - started
    return ctx.extracted(elapsed, rows, id_sum, f"{chunks} chunks")


def peer_hub_load(ctx: Ctx) -> dict[str, Any]:
    import duckdb  # noqa: F401

    from hub.materialize import materialize_source
    from hub.spec import loads

    _warm_drivers(adbc=True)
    ctx.imported()
    db = ctx.tmp / "hub.duckdb"
    started = time.perf_counter()
    pipeline = loads(hub_spec(ctx, db), ctx.tmp / "bench.yaml")
    outcome = materialize_source(pipeline, TABLE, window=None, run_id="bench")
    elapsed = time.perf_counter() - started
    result = ctx.loaded(elapsed, db, TABLE,
                        f"table_rows={outcome.load.table_rows} reader={outcome.details.get('reader')}")
    result["ok"] = result["ok"] and outcome.load.table_rows == ctx.rows
    return result


def peer_dlt_load(ctx: Ctx) -> dict[str, Any]:
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    os.environ.setdefault("RUNTIME__LOG_LEVEL", "WARNING")
    import dlt
    from dlt.sources.sql_database import sql_database

    _warm_drivers()
    ctx.imported()
    db = ctx.tmp / "dlt.duckdb"
    started = time.perf_counter()
    source = sql_database(credentials=ctx.sa_url, table_names=[TABLE], backend="pyarrow", chunk_size=CHUNK)
    pipeline = dlt.pipeline(pipeline_name="sql_bench", pipelines_dir=str(ctx.tmp / "dlt_pipelines"),
                            destination=dlt.destinations.duckdb(str(db)), dataset_name="bench", progress=None)
    info = pipeline.run(source)
    elapsed = time.perf_counter() - started
    info.raise_on_failed_jobs()
    return ctx.loaded(elapsed, db, f"bench.{TABLE}")


def peer_cx_load(ctx: Ctx) -> dict[str, Any]:
    import connectorx as cx
    import duckdb

    ctx.imported()
    db = ctx.tmp / "cx.duckdb"
    started = time.perf_counter()
    table = cx.read_sql(ctx.url, ctx.sql, return_type="arrow")
    with duckdb.connect(str(db)) as con:
        con.from_arrow(table).query("_cx", f"CREATE TABLE {TABLE} AS SELECT * FROM _cx")
    del table
    elapsed = time.perf_counter() - started
    return ctx.loaded(elapsed, db, TABLE)


def peer_pandas_load(ctx: Ctx) -> dict[str, Any]:
    import duckdb
    import pandas  # noqa: F401

    _warm_drivers()
    ctx.imported()
    db = ctx.tmp / "pandas.duckdb"
    started = time.perf_counter()
    with duckdb.connect(str(db)) as con:
        created = False
        for df in _pandas_chunks(ctx):
            con.register("_chunk", df)
            con.execute(f"INSERT INTO {TABLE} SELECT * FROM _chunk" if created
                        else f"CREATE TABLE {TABLE} AS SELECT * FROM _chunk")
            con.unregister("_chunk")
            created = True
    elapsed = time.perf_counter() - started
    return ctx.loaded(elapsed, db, TABLE)


RUNNERS: dict[str, Callable[[Ctx], dict[str, Any]]] = {
    "hub": peer_hub, "hub-dbapi": peer_hub_dbapi, "cx": peer_cx, "adbc": peer_adbc, "pandas": peer_pandas,
    "hub-load": peer_hub_load, "dlt-load": peer_dlt_load, "cx-load": peer_cx_load, "pandas-load": peer_pandas_load,
}


def worker(peer: str, server: str, database: str, rows: int, profile: Path | None) -> None:
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory(prefix=f"sql-bench-{peer}-") as tmp:
        ctx = Ctx(server, database, rows, Path(tmp))
        result = profile_worker(peer, ctx, profile) if profile is not None else RUNNERS[peer](ctx)
        result["peak_rss_mb"] = _peak_rss_mb()
        result["rss_after_imports_mb"] = ctx.rss_after_imports
    print("RESULT " + json.dumps(result), flush=True)


# --------------------------------------------------------------------------------------------------------
# Profiling (only with --profile): wall time per step of the hub, then cProfile
# --------------------------------------------------------------------------------------------------------

class _Steps:
    """Wall and thread-CPU seconds per wrapped function and thread, summed over calls, each *excluding* the
    wrapped functions it calls (the commit's last chunk insert counts as an insert), so that the steps of
    one thread add up. The adapter may read in a background thread (prefetch), overlapping the main one."""

    TARGETS = [
        ("adapters.sql.client", "SqlSource._plan", "SqlSource._plan (connect, reflect the table)"),
        ("adapters.sql.client", "normalize_adbc", "normalize_adbc (ADBC batch -> the hub's types)"),
        ("adapters.sql.client", "SqlSource._batch", "SqlSource._batch (DBAPI rows -> Arrow)"),
        ("hub.transform.mapping", "Mapper.apply", "Mapper.apply"),
        ("hub.warehouse.duckdb", "_DuckDBLoad._insert", "DuckDB insert of a chunk (in the transaction)"),
        ("hub.warehouse.duckdb", "_DuckDBLoad.commit", "DuckDB commit (minus its last insert)"),
    ]

    def __init__(self) -> None:
        import threading

        self.totals: dict[str, dict[str, Any]] = {}
        self._saved: list[tuple[Any, str, Any]] = []
        self._local = threading.local()  # per thread, per active call: [wall of nested calls, cpu of nested]
        self._lock = threading.Lock()

    def install(self) -> None:
        import importlib

        for mod_name, attr_path, label in self.TARGETS:
            try:
                owner: Any = importlib.import_module(mod_name)
                *owners, attr = attr_path.split(".")
                for part in owners:
                    owner = getattr(owner, part)
                orig = getattr(owner, attr)
            except (ImportError, AttributeError):
                print(f"(profile: {mod_name}.{attr_path} not found, not timed)", file=sys.stderr)
                continue
            self._saved.append((owner, attr, orig))
            setattr(owner, attr, self._wrap(orig, label))

    def _wrap(self, fn: Any, label: str) -> Any:
        import threading

        totals, local, lock = self.totals, self._local, self._lock

        def record(stack: list[list[float]], wall: float, cpu: float) -> None:
            nested = stack.pop()
            thread = "main" if threading.current_thread() is threading.main_thread() else "background"
            with lock:
                e = totals.setdefault(f"{thread}: {label}", {"wall": 0.0, "cpu": 0.0, "calls": 0, "thread": thread})
                e["wall"] += wall - nested[0]
                e["cpu"] += cpu - nested[1]
                e["calls"] += 1
            if stack:
                stack[-1][0] += wall
                stack[-1][1] += cpu

        def timed(*args: Any, **kwargs: Any) -> Any:
            stack = local.__dict__.setdefault("stack", [])
            stack.append([0.0, 0.0])
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                record(stack, time.perf_counter() - t0, time.thread_time() - c0)

        return timed

    def uninstall(self) -> None:
        for owner, attr, orig in reversed(self._saved):
            setattr(owner, attr, orig)


def profile_worker(peer: str, ctx: Ctx, out: Path) -> dict[str, Any]:
    """Run *peer* (hub or hub-load) with step timers (``.json``) or under cProfile (``.prof``)."""
    import cProfile

    import duckdb  # noqa: F401

    import adapters.sql.client  # noqa: F401
    import hub.materialize
    import hub.spec  # noqa: F401

    _warm_drivers(adbc=True)  # imports stay out of the profile too
    steps = _Steps() if out.suffix == ".json" else None
    prof = cProfile.Profile() if out.suffix == ".prof" else None
    if steps:
        steps.install()
    if prof:
        prof.enable()
    cpu0 = time.process_time()
    result = RUNNERS[peer](ctx)
    result["process_cpu"] = time.process_time() - cpu0
    if prof:
        prof.disable()
        prof.dump_stats(str(out))
    if steps:
        steps.uninstall()
        out.write_text(json.dumps({"elapsed": result["seconds"], "cpu": result["process_cpu"],
                                   "steps": steps.totals}, indent=1))
    return result


# --------------------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------------------

def run_peer(peer: str, args: argparse.Namespace, database: str, profile: Path | None = None) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", peer, "--server", args.server,
           "--database", database, "--rows", str(args.rows)]
    if profile:
        cmd += ["--profile-out", str(profile)]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, cwd=ROOT)
    process_s = time.perf_counter() - started
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
        raise RuntimeError(f"peer {peer} failed (exit {proc.returncode})")
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT "):])
    result["process_s"] = process_s
    return result


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    out = [f"Python {sys.version.split()[0]}"]
    for pkg in ("duckdb", "pyarrow", "adbc-driver-postgresql", "connectorx", "sqlalchemy", "psycopg", "pandas",
                "dlt"):
        with suppress(PackageNotFoundError):
            out.append(f"{pkg} {version(pkg)}")
    return ", ".join(out)


def _ratio(num: float, den: float) -> float:
    return num / den if den else float("inf")


def report(args: argparse.Namespace, info: dict[str, Any], results: dict[str, list[dict[str, Any]]]) -> str:
    med = {p: statistics.median(r["seconds"] for r in rs) for p, rs in results.items()}
    rss = {p: max(r["peak_rss_mb"] for r in rs) for p, rs in results.items()}
    nulls = info.get("nulls") or [0, 0, 0, 0]
    lines = [
        f"{args.rows:,} rows of 10 columns in PostgreSQL {info.get('server_version', '?')} "
        f"(heap {info.get('heap_mb', 0):.0f} MB; NULLs: amount {nulls[0]:,}, updated_at {nulls[1]:,}, "
        f"ship_date {nulls[2]:,}, note {nulls[3]:,}), median of {args.repeat} interleaved run(s); "
        f"peak RSS is the max over runs.",
        "",
        "| peer | median s | rows/s | peak RSS MB | RSS after imports MB | runs (s) | verified |",
        "| --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for group, peers in (("**extract**", EXTRACT_PEERS), ("**-> DuckDB file**", LOAD_PEERS)):
        present = [p for p in peers if p in results]
        if not present:
            continue
        lines.append(f"| {group} | | | | | | |")
        for peer in present:
            rs = results[peer]
            runs = ", ".join(f"{r['seconds']:.2f}" for r in rs)
            ok = all(r["ok"] for r in rs)
            verified = rs[0]["verified"] if ok else "FAILED: " + "; ".join(r["verified"] for r in rs)
            base = max(r["rss_after_imports_mb"] for r in rs)
            lines.append(f"| {NAMES[peer]} | {med[peer]:.2f} | {args.rows / med[peer]:,.0f} | {rss[peer]:.0f} "
                         f"| {base:.0f} | {runs} | {verified} |")
    lines += ["", "| target | measured | result |", "| --- | --- | --- |"]

    def target(label: str, value: float, goal: float) -> None:
        lines.append(f"| {label} | {value:.2f}x | {'PASS' if value >= goal else 'FAIL'} |")

    if "hub" in med:
        hub = med["hub"]
        if "cx" in med:
            target(f"hub extract >= {TARGET_VS_CX:g}x connectorx's throughput (cx_time / hub_time)",
                   _ratio(med["cx"], hub), TARGET_VS_CX)
        if "adbc" in med:
            target(f"hub extract >= {TARGET_VS_ADBC:g}x raw ADBC's throughput (adbc_time / hub_time)",
                   _ratio(med["adbc"], hub), TARGET_VS_ADBC)
        if "pandas" in med:
            target(f"hub extract >= {TARGET_VS_PANDAS:g}x faster than pandas.read_sql chunks",
                   _ratio(med["pandas"], hub), TARGET_VS_PANDAS)
    if "hub-load" in med and "pandas-load" in med:
        target(f"hub -> DuckDB >= {TARGET_VS_PANDAS:g}x faster than pandas chunks -> DuckDB",
               _ratio(med["pandas-load"], med["hub-load"]), TARGET_VS_PANDAS)
    for peer in ("hub", "hub-load"):
        if peer in rss:
            cx_peer = "cx" if peer == "hub" else "cx-load"
            also = f" (connectorx: {rss[cx_peer]:.0f} MB)" if cx_peer in rss else ""
            lines.append(f"| {NAMES[peer]}: peak RSS < {TARGET_RSS_MB:g} MB | {rss[peer]:.0f} MB{also} | "
                         f"{'PASS' if rss[peer] < TARGET_RSS_MB else 'FAIL'} |")
    for peer in ("hub", "hub-load"):
        if peer in results and not all(r["ok"] for r in results[peer]):
            lines.append(f"| {NAMES[peer]}: every row, exactly once | see above | FAIL |")
    return "\n".join(lines) + "\n"


def profile_hub(args: argparse.Namespace, database: str) -> None:
    import pstats

    out = Path(tempfile.mkdtemp(prefix="sql-bench-profile-"))
    for peer in ("hub", "hub-load"):
        result = run_peer(peer, args, database, profile=out / f"{peer}.json")
        data = json.loads((out / f"{peer}.json").read_text())
        print(f"\n{NAMES[peer]} with step timers: {result['seconds']:.2f} s wall, {data['cpu']:.2f} s process CPU "
              f"(all threads), peak RSS {result['peak_rss_mb']:.0f} MB, ok={result['ok']}, {result['detail']}")
        print(f"  {'wall s':>8} {'cpu s':>7} {'calls':>6}  thread: step")
        main = 0.0
        for label, e in data["steps"].items():
            print(f"  {e['wall']:8.3f} {e['cpu']:7.3f} {int(e['calls']):6d}  {label}")
            main += e["wall"] if e["thread"] == "main" else 0.0
        print(f"  {data['elapsed'] - main:8.3f} {'':>7} {'':>6}  main: the rest (waiting for or reading batches: "
              "ADBC decoding the COPY stream in C++; spec, connections, the loop)")
    for peer in ("hub", "hub-load"):
        result = run_peer(peer, args, database, profile=out / f"{peer}.prof")
        print(f"\n{NAMES[peer]} under cProfile (main thread; slower): {result['seconds']:.2f} s; "
              f"pstats file {out / (peer + '.prof')}")
        stats = pstats.Stats(str(out / f"{peer}.prof"))
        stats.sort_stats("tottime").print_stats(args.profile_top)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--peers", default=",".join(PEERS), help=f"comma-separated subset of {','.join(PEERS)}")
    ap.add_argument("--server", default=os.environ.get("HUB_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432"),
                    help="PostgreSQL server URL without a database (a role that may create databases)")
    ap.add_argument("--database", help="use this existing database (with the orders table of --rows rows) and "
                                       "keep it, instead of a new scratch database")
    ap.add_argument("--keep", action="store_true", help="keep the scratch database (to reuse with --database)")
    ap.add_argument("--out", type=Path, help="also write the Markdown report to this file")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per peer run")
    ap.add_argument("--profile", action="store_true",
                    help="instead of the benchmark, run the hub (extract, then -> DuckDB) with step timers, then "
                         "under cProfile, and print where its time goes")
    ap.add_argument("--profile-top", type=int, default=25)
    ap.add_argument("--worker", choices=PEERS, help=argparse.SUPPRESS)
    ap.add_argument("--profile-out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.server = args.server.rstrip("/")

    if args.worker:
        worker(args.worker, args.server, args.database, args.rows, args.profile_out)
        return 0

    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = [p for p in peers if p not in PEERS]
    if unknown:
        ap.error(f"unknown peer(s): {', '.join(unknown)} (choose from {', '.join(PEERS)})")

    def _terminate(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)  # unwinds through scratch_database, which drops the database

    signal.signal(signal.SIGTERM, _terminate)
    with scratch_database(args.server, args.rows, args.database, args.keep) as database:
        info = table_info(args.server, database)
        if args.profile:
            profile_hub(args, database)
            return 0
        results: dict[str, list[dict[str, Any]]] = {p: [] for p in peers}
        for i in range(args.repeat):
            for peer in peers:
                r = run_peer(peer, args, database)
                results[peer].append(r)
                print(f"run {i + 1}/{args.repeat} {peer:12s} {r['seconds']:7.2f} s  rss {r['peak_rss_mb']:6.0f} MB "
                      f"(after imports {r['rss_after_imports_mb']:4.0f})  {r['verified']}  "
                      f"{'ok' if r['ok'] else 'NOT OK'} {r['detail']}", file=sys.stderr)
        md = report(args, info, results)
        md += f"\n{versions()}\n"
        print(md)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(md)
        return 0 if all(r["ok"] for rs in results.values() for r in rs) else 1


if __name__ == "__main__":
    sys.exit(main())
