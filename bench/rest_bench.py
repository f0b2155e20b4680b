"""REST source benchmark: the hub vs dlt's ``rest_api`` vs a hand-written ``httpx.AsyncClient`` loop.

Usage::

    .venv/bin/python bench/rest_bench.py [--records 200000] [--page-size 1000] [--latency-ms 20]
                                         [--repeat 3] [--peers hub,dlt,loop,hub_ckpt,hub_nockpt] [--out FILE]
    .venv/bin/python bench/rest_bench.py --profile      # where the hub spends its time (2 hub runs)

A local paginated JSON API runs in its own process on loopback (every page pre-rendered at start-up,
``--latency-ms`` of sleep per page, ``GET /items?page=N`` -> ``{"data": [...], "page": N,
"total_pages": T}``). Each peer runs in a fresh subprocess, so imports and memory never mix; the
subprocess times only the data movement (imports and verification are outside the timer), checks that
every record arrived exactly once, and reports its peak RSS (its own ``VmHWM``, bench/_mem.py). Each peer runs
``--repeat`` times, interleaved, and the median is reported.

Peers:

* ``hub``  - ``hub.materialize.materialize_source`` (REST adapter -> Arrow -> DuckDB, merged on ``id``
  in one transaction), no Dagster;
* ``dlt``  - ``dlt.sources.rest_api.rest_api_source`` with the page-number paginator, ``pipeline.run``
  into DuckDB (default ``append`` disposition: the cheapest load dlt has);
* ``loop`` - 16 concurrent ``httpx.AsyncClient`` requests, ``resp.json()`` into a list: the ceiling
  for fetching and parsing in Python; it writes nothing.

What resume checkpoints cost (``hub.runtime.checkpoint``: every batch spooled as compressed Arrow IPC and
fsynced next to the load, the resume token saved after it), measured as a pair:

* ``hub_ckpt``   - ``materialize_source`` on the same records as one daily partition whose window is in the
  past (2024-01-01; the server ignores the ``day`` parameter), so its page numbers are checkpointed. The
  run verifies that it really was: batches were spooled (counted by wrapping ``Checkpoint.append``), the
  rows spooled equal the records, the outcome says ``resumed: false`` with no reason against resuming, and
  the spool folder is gone after the commit;
* ``hub_nockpt`` - the same spec and partition with ``HUB_CHECKPOINTS=off``: the baseline (verified: no
  batch spooled, the outcome names ``$HUB_CHECKPOINTS`` as the reason).

The two alternate which goes first from one repeat to the next. Their spool lives in the run's temporary
directory (``HUB_STATE_DIR``), on the same disk as the DuckDB file.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from _mem import peak_rss_mb  # bench/_mem.py: bench/ is sys.path[0] when a bench runs as a script

ROOT = Path(__file__).resolve().parent.parent
PEERS = ("hub", "dlt", "loop", "hub_ckpt", "hub_nockpt")
CKPT_PAIR = ("hub_ckpt", "hub_nockpt")
CONCURRENCY = 16

TARGET_VS_DLT = 20.0  # hub must be at least this many times faster than dlt
TARGET_VS_LOOP = 0.8  # hub must reach at least this fraction of the hand-written loop's speed
TARGET_RSS_MB = 300.0  # hub peak RSS must stay below this
TARGET = 0.15  # resume checkpoints may add at most this fraction to the load (hub_ckpt / hub_nockpt - 1)

# --------------------------------------------------------------------------------------------------------
# The API server (runs in its own process)
# --------------------------------------------------------------------------------------------------------

_CITIES = ["Berlin", "Lisbon", "Osaka", "Toronto", "Nairobi", "Lima", "Oslo", "Austin", "Pune", "Lyon"]
_STATUSES = ["active", "pending", "suspended", "closed"]
_COUNTRIES = ["DE", "PT", "JP", "CA", "KE", "PE", "NO", "US", "IN", "FR"]
_WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
          "kilo", "lima", "mike", "november", "oscar", "papa"]


def make_record(i: int, rng: random.Random, epoch: datetime) -> dict[str, Any]:
    """One realistic record: 10 fields, one of them a nested object with 2 fields."""
    first = rng.choice(_WORDS).title()
    last = rng.choice(_WORDS).title()
    return {
        "id": i,
        "name": f"{first} {last}",
        "email": f"{first.lower()}.{last.lower()}{i}@example.com",
        "status": rng.choice(_STATUSES),
        "country": rng.choice(_COUNTRIES),
        "amount": round(rng.uniform(0, 10_000), 2),
        "is_active": rng.random() < 0.8,
        "created_at": (epoch + timedelta(seconds=rng.randrange(0, 3 * 365 * 86400))).isoformat(),
        "description": " ".join(rng.choice(_WORDS) for _ in range(6)),
        "address": {"city": rng.choice(_CITIES), "postcode": f"{rng.randrange(10000, 99999)}"},
    }


def render_pages(records: int, page_size: int) -> tuple[dict[int, bytes], int]:
    """Every page's full HTTP response (headers + JSON body), keyed by page number (1-based)."""
    rng = random.Random(42)
    epoch = datetime(2022, 1, 1, tzinfo=UTC)
    total_pages = max(1, math.ceil(records / page_size))
    pages: dict[int, bytes] = {}
    for page in range(1, total_pages + 1):
        lo, hi = (page - 1) * page_size, min(page * page_size, records)
        data = [make_record(i, rng, epoch) for i in range(lo + 1, hi + 1)]
        body = json.dumps({"data": data, "page": page, "total_pages": total_pages},
                          separators=(",", ":")).encode()
        pages[page] = _response(200, body)
    return pages, total_pages


def _response(status: int, body: bytes) -> bytes:
    reason = {200: "OK", 404: "Not Found"}[status]
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n")
    return head.encode() + body


def serve(records: int, page_size: int, latency_ms: float, conn: Any) -> None:
    """Server process entry point: pre-render, bind an ephemeral loopback port, report it, serve."""
    pages, total_pages = render_pages(records, page_size)
    empty = _response(200, json.dumps({"data": [], "page": 0, "total_pages": total_pages}).encode())
    not_found = _response(404, b'{"error":"not found"}')
    delay = latency_ms / 1000.0
    counter = {"requests": 0}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path == "/_stats":  # request count since the last reset (not delayed, not counted)
                with lock:
                    n = counter["requests"]
                    if "reset" in url.query:
                        counter["requests"] = 0
                self.wfile.write(_response(200, json.dumps({"requests": n}).encode()))
                return
            if url.path.rstrip("/") != "/items":
                self.wfile.write(not_found)
                return
            with lock:
                counter["requests"] += 1
            try:
                page = int(parse_qs(url.query).get("page", ["1"])[0])
            except ValueError:
                page = 1
            time.sleep(delay)
            self.wfile.write(pages.get(page, empty))

        def log_message(self, format: str, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 256

    server = Server(("127.0.0.1", 0), Handler)
    conn.send(server.server_address[1])
    conn.close()
    server.serve_forever(poll_interval=0.2)


def start_server(records: int, page_size: int, latency_ms: float) -> tuple[mp.process.BaseProcess, int]:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=serve, args=(records, page_size, latency_ms, child), daemon=True,
                       name="rest-bench-server")
    proc.start()
    child.close()
    if not parent.poll(300):
        proc.terminate()
        raise RuntimeError("benchmark server did not start within 300 s")
    return proc, int(parent.recv())


def server_requests(port: int, reset: bool = False) -> int:
    import http.client

    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/_stats" + ("?reset=1" if reset else ""))
    n = int(json.loads(c.getresponse().read())["requests"])
    c.close()
    return n


# --------------------------------------------------------------------------------------------------------
# Peers (each runs inside its own subprocess: `rest_bench.py --worker PEER ...`)
# --------------------------------------------------------------------------------------------------------

HUB_SPEC = """\
pipeline: bench
warehouse: duckdb:///{db}
systems:
  api: {{rest: {{base_url: "http://127.0.0.1:{port}", concurrency: {concurrency}}}}}
sources:
  items:
    system: api
    request: {{path: /items}}
    records: $.data[*]
    paginate: {{page_number: {{param: page, total_pages: $.total_pages}}}}
    primary_key: [id]
"""


def peer_hub(port: int, tmp: Path, records: int, profile: Path | None = None) -> dict[str, Any]:
    import duckdb

    from hub.materialize import materialize_source
    from hub.spec import loads

    db = tmp / "hub.duckdb"
    text = HUB_SPEC.format(db=db, port=port, concurrency=CONCURRENCY)
    # --profile: a ".json" target records per-step timings and RSS marks (cheap, timings stay true);
    # a ".prof" target records cProfile stats of every thread (slows the run down).
    phases = _Phases() if profile and profile.suffix == ".json" else None
    profiler = _ThreadProfiler() if profile and profile.suffix == ".prof" else None
    for tool in (phases, profiler):
        if tool:
            tool.install()
    started = time.perf_counter()
    pipeline = loads(text, tmp / "bench.yaml")
    outcome = materialize_source(pipeline, "items", window=None, run_id="bench")
    elapsed = time.perf_counter() - started
    for tool in (profiler, phases):
        if tool and profile:
            tool.uninstall()
            tool.dump(profile, elapsed)
    with duckdb.connect(str(db), read_only=True) as con:
        total, distinct = con.execute("SELECT count(*), count(DISTINCT id) FROM items").fetchone()  # type: ignore[misc]
    ok = outcome.load.table_rows == records and total == records and distinct == records
    return {"seconds": elapsed, "rows": int(total), "distinct": int(distinct), "ok": ok,
            "detail": f"table_rows={outcome.load.table_rows} rows_loaded={outcome.load.rows_loaded} "
                      f"pages={outcome.details.get('pages')}"}


HUB_CKPT_SPEC = """\
pipeline: bench
warehouse: duckdb:///{db}
partitions: {{daily: {{start: 2024-01-01}}}}
systems:
  api: {{rest: {{base_url: "http://127.0.0.1:{port}", concurrency: {concurrency}}}}}
sources:
  items:
    system: api
    request: {{path: /items, params: {{day: "{{{{ partition.key }}}}"}}}}
    records: $.data[*]
    paginate: {{page_number: {{param: page, total_pages: $.total_pages}}}}
    primary_key: [id]
"""
CKPT_PARTITION = "2024-01-01"  # a window in the past: page numbers of settled data are checkpointed


def peer_hub_checkpoints(port: int, tmp: Path, records: int, checkpoints: bool) -> dict[str, Any]:
    """One partition in the past loaded by ``materialize_source``, with resume checkpoints on or off
    (``$HUB_CHECKPOINTS``); checks that the spool was (or was not) written and that a commit removed it."""
    from datetime import UTC, datetime, timedelta

    import duckdb

    from hub.materialize import materialize_source
    from hub.runtime import checkpoint as ckpt
    from hub.runtime.window import Window
    from hub.spec import loads

    state = tmp / "state"
    os.environ["HUB_STATE_DIR"] = str(state)  # the spool: <state>/checkpoints/bench/items/<partition>/
    if checkpoints:
        os.environ.pop("HUB_CHECKPOINTS", None)
    else:
        os.environ["HUB_CHECKPOINTS"] = "off"
    spool: dict[str, Any] = {"batches": 0, "rows": 0, "bytes": 0, "seconds": 0.0, "folders": set()}
    append = ckpt.Checkpoint.append

    def counted(self: ckpt.Checkpoint, batch: Any, token: Any) -> None:
        t0 = time.perf_counter()
        append(self, batch, token)
        spool["seconds"] += time.perf_counter() - t0
        spool["batches"] += 1
        spool["rows"] += batch.num_rows
        spool["bytes"] += self._path(self._written - 1).stat().st_size
        spool["folders"].add(self.folder)

    ckpt.Checkpoint.append = counted  # type: ignore[method-assign]

    db = tmp / "hub.duckdb"
    pipeline = loads(HUB_CKPT_SPEC.format(db=db, port=port, concurrency=CONCURRENCY), tmp / "bench.yaml")
    start = datetime(2024, 1, 1, tzinfo=UTC)
    window = Window(key=CKPT_PARTITION, start=start, end=start + timedelta(days=1))
    started = time.perf_counter()
    outcome = materialize_source(pipeline, "items", window=window, run_id="bench")
    elapsed = time.perf_counter() - started
    ckpt.Checkpoint.append = append  # type: ignore[method-assign]

    with duckdb.connect(str(db), read_only=True) as con:
        total, distinct = con.execute("SELECT count(*), count(DISTINCT id) FROM items").fetchone()  # type: ignore[misc]
    ok = outcome.load.table_rows == records and total == records and distinct == records
    details = outcome.details
    left = sorted(str(p) for p in (state / "checkpoints").rglob("*.arrows")) if state.exists() else []
    if checkpoints:
        problems = [msg for bad, msg in [
            (spool["batches"] == 0, "no batch was spooled"),
            (spool["rows"] != records, f"{spool['rows']} rows spooled, not {records}"),
            (details.get("resumed") is not False or "resume_reason" in details,
             f"outcome says resumed={details.get('resumed')!r} reason={details.get('resume_reason')!r}"),
            (any(f.exists() for f in spool["folders"]) or bool(left), "the spool outlived the commit"),
        ] if bad]
    else:
        problems = [msg for bad, msg in [
            (spool["batches"] != 0, f"{spool['batches']} batches spooled with checkpoints off"),
            ("HUB_CHECKPOINTS" not in str(details.get("resume_reason")),
             f"outcome gives no 'checkpoints off' reason ({details.get('resume_reason')!r})"),
        ] if bad]
    detail = (f"table_rows={outcome.load.table_rows} pages={details.get('pages')} "
              f"spooled={spool['batches']} batches/{spool['rows']} rows/{spool['bytes'] / 1e6:.1f} MB "
              f"in {spool['seconds']:.2f} s")
    if problems:
        detail += " PROBLEM: " + "; ".join(problems)
    return {"seconds": elapsed, "rows": int(total), "distinct": int(distinct), "ok": ok and not problems,
            "detail": detail, "checkpointed": checkpoints and not problems,
            "spool_batches": spool["batches"], "spool_rows": spool["rows"], "spool_bytes": spool["bytes"],
            "spool_s": spool["seconds"]}


def peer_dlt(port: int, tmp: Path, records: int) -> dict[str, Any]:
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    os.environ.setdefault("RUNTIME__LOG_LEVEL", "WARNING")
    import dlt
    import duckdb
    from dlt.sources.rest_api import rest_api_source

    db = tmp / "dlt.duckdb"
    started = time.perf_counter()
    source = rest_api_source({
        "client": {
            "base_url": f"http://127.0.0.1:{port}/",
            "paginator": {"type": "page_number", "base_page": 1, "page_param": "page",
                          "total_path": "total_pages"},
        },
        "resources": [{"name": "items", "endpoint": {"path": "items", "data_selector": "data"}}],
    })
    pipeline = dlt.pipeline(pipeline_name="rest_bench", pipelines_dir=str(tmp / "dlt_pipelines"),
                            destination=dlt.destinations.duckdb(str(db)), dataset_name="bench",
                            progress=None)
    info = pipeline.run(source)
    elapsed = time.perf_counter() - started
    info.raise_on_failed_jobs()
    with duckdb.connect(str(db), read_only=True) as con:
        total, distinct = con.execute(
            "SELECT count(*), count(DISTINCT id) FROM bench.items").fetchone()  # type: ignore[misc]
    return {"seconds": elapsed, "rows": int(total), "distinct": int(distinct),
            "ok": total == records and distinct == records, "detail": ""}


def peer_loop(port: int, tmp: Path, records: int) -> dict[str, Any]:
    import asyncio

    import httpx

    async def run() -> list[Any]:
        limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
        sem = asyncio.Semaphore(CONCURRENCY)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits,
                                     timeout=60) as client:

            async def page(n: int) -> Any:
                async with sem:
                    resp = await client.get("/items", params={"page": n})
                    resp.raise_for_status()
                    return resp.json()

            first = await page(1)
            rest = await asyncio.gather(*(page(n) for n in range(2, int(first["total_pages"]) + 1)))
            out: list[Any] = list(first["data"])
            for doc in rest:
                out.extend(doc["data"])
            return out

    started = time.perf_counter()
    rows = asyncio.run(run())
    elapsed = time.perf_counter() - started
    distinct = len({r["id"] for r in rows})
    return {"seconds": elapsed, "rows": len(rows), "distinct": distinct,
            "ok": len(rows) == records and distinct == records, "detail": ""}


def worker(peer: str, port: int, records: int, profile: Path | None) -> None:
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory(prefix=f"rest-bench-{peer}-") as tmp:
        if peer == "hub":
            result = peer_hub(port, Path(tmp), records, profile)
        elif peer in CKPT_PAIR:
            result = peer_hub_checkpoints(port, Path(tmp), records, checkpoints=peer == "hub_ckpt")
        elif peer == "dlt":
            result = peer_dlt(port, Path(tmp), records)
        else:
            result = peer_loop(port, Path(tmp), records)
        result["peak_rss_mb"] = peak_rss_mb()
    print("RESULT " + json.dumps(result), flush=True)


# --------------------------------------------------------------------------------------------------------
# Profiling helpers (only with --profile): cProfile in every thread, and wall time per phase
# --------------------------------------------------------------------------------------------------------

class _ThreadProfiler:
    """cProfile for the main thread plus the adapter's event-loop thread (cProfile sees one thread)."""

    def __init__(self) -> None:
        import cProfile

        self._main = cProfile.Profile()
        self._loop = cProfile.Profile()
        self._orig: Any = None

    def install(self) -> None:
        from adapters.rest.client import RestSource

        self._orig = RestSource._walk
        orig, prof = self._orig, self._loop

        async def walk(source: Any, emit: Any, resume: Any = None) -> Any:
            prof.enable()  # runs in the loop thread: everything on the loop is profiled from here on
            try:
                return await orig(source, emit, resume)
            finally:
                prof.disable()

        RestSource._walk = walk  # type: ignore[method-assign,assignment]
        self._main.enable()

    def uninstall(self) -> None:
        from adapters.rest.client import RestSource

        self._main.disable()
        RestSource._walk = self._orig  # type: ignore[method-assign]

    def dump(self, path: Path, elapsed: float) -> None:
        import pstats

        stats = pstats.Stats(self._main)
        stats.add(self._loop)
        stats.dump_stats(str(path))


class _Phases:
    """Per hub step: wall seconds and thread CPU seconds summed over calls (fetch threads add up), when
    the step first started and last ended (relative to the start of the run), and peak RSS marks."""

    TARGETS = [
        ("adapters.rest.client", "RestSource", "fetch", "loop: fetch, total (async, 16 in flight)"),
        ("adapters.rest.client", "RestSource", "_request", "loop: HTTP request + read body (async)"),
        ("adapters.rest.client", "RestSource", "_parse", "loop: orjson.loads"),
        ("adapters.rest.client", None, "records_to_batch", "loop: records -> Arrow (records_to_batch)"),
        ("hub.transform.mapping", "Mapper", "apply", "main: Mapper.apply"),
        ("hub.warehouse.duckdb", "_DuckDBLoad", "_insert", "main: DuckDB insert of a chunk (in the transaction)"),
        ("hub.warehouse.duckdb", "_DuckDBLoad", "commit", "main: DuckDB commit (merge dedupe, quarantine, commit)"),
    ]

    def __init__(self) -> None:
        self.totals: dict[str, dict[str, float]] = {}
        self.rss: dict[str, float] = {}
        self._saved: list[tuple[Any, str, Any]] = []
        self._lock = threading.Lock()
        self._t0 = time.perf_counter()

    def mark(self, label: str) -> None:
        self.rss[label] = peak_rss_mb()

    def install(self) -> None:
        import importlib

        self.mark("peak RSS after imports")
        for mod_name, cls_name, attr, label in self.TARGETS:
            mod = importlib.import_module(mod_name)
            owner = getattr(mod, cls_name) if cls_name else mod
            orig = getattr(owner, attr)
            self._saved.append((owner, attr, orig))
            setattr(owner, attr, self._wrap(orig, label))
        self._t0 = time.perf_counter()

    def _wrap(self, fn: Any, label: str) -> Any:
        import inspect

        totals, lock, phases = self.totals, self._lock, self

        def record(t0: float, c0: float) -> None:
            t1, c1 = time.perf_counter(), time.thread_time()
            with lock:
                e = totals.setdefault(label, {"wall": 0.0, "cpu": 0.0, "calls": 0, "first": 1e9, "last": 0.0})
                e["wall"] += t1 - t0
                e["cpu"] += c1 - c0  # for async steps: CPU of everything the loop ran meanwhile
                e["calls"] += 1
                e["first"] = min(e["first"], t0 - phases._t0)
                e["last"] = max(e["last"], t1 - phases._t0)

        if inspect.iscoroutinefunction(fn):
            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                t0, c0 = time.perf_counter(), time.thread_time()
                try:
                    return await fn(*args, **kwargs)
                finally:
                    record(t0, c0)

            return timed_async

        def timed(*args: Any, **kwargs: Any) -> Any:
            if label.startswith("main: DuckDB commit"):
                phases.mark("peak RSS before the DuckDB commit")
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                record(t0, c0)

        return timed

    def uninstall(self) -> None:
        for owner, attr, orig in reversed(self._saved):
            setattr(owner, attr, orig)
        self.mark("peak RSS at the end")

    def dump(self, path: Path, elapsed: float) -> None:
        path.write_text(json.dumps({"elapsed": elapsed, "phases": self.totals, "rss": self.rss}, indent=1))


# --------------------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------------------

def run_peer(peer: str, port: int, records: int, profile: Path | None = None,
             timeout: float = 1800) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", peer, "--port", str(port),
           "--records", str(records)]
    if profile:
        cmd += ["--profile-out", str(profile)]
    server_requests(port, reset=True)
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    process_s = time.perf_counter() - started
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
        raise RuntimeError(f"peer {peer} failed (exit {proc.returncode})")
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT "):])
    result["process_s"] = process_s
    result["requests"] = server_requests(port)
    return result


def _fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def report(args: argparse.Namespace, results: dict[str, list[dict[str, Any]]]) -> str:
    pages = max(1, math.ceil(args.records / args.page_size))
    med: dict[str, float] = {p: statistics.median(r["seconds"] for r in rs) for p, rs in results.items()}
    rss: dict[str, float] = {p: max(r["peak_rss_mb"] for r in rs) for p, rs in results.items()}
    names = {"hub": "hub (materialize_source -> DuckDB)", "dlt": "dlt rest_api -> DuckDB",
             "loop": "httpx.AsyncClient loop, 16 concurrent (no write)",
             "hub_ckpt": "hub, past daily partition, resume checkpoints on",
             "hub_nockpt": "hub, past daily partition, HUB_CHECKPOINTS=off"}
    lines = [
        f"{args.records:,} records, {pages} pages of {args.page_size}, "
        f"{args.latency_ms:g} ms latency per page, "
        f"median of {args.repeat} run(s); peak RSS is the max over runs.",
        "",
        "| peer | median s | records/s | peak RSS MB | runs (s) | process s (median) | requests | verified |",
        "| --- | ---: | ---: | ---: | --- | ---: | ---: | --- |",
    ]
    for peer in PEERS:
        if peer not in results:
            continue
        rs = results[peer]
        runs = ", ".join(f"{r['seconds']:.2f}" for r in rs)
        proc_s = statistics.median(r["process_s"] for r in rs)
        reqs = "/".join(sorted({str(r["requests"]) for r in rs}))
        ok = all(r["ok"] for r in rs)
        verified = (f"{rs[0]['rows']:,} rows, {rs[0]['distinct']:,} distinct ids" if ok
                    else "FAILED: " + "; ".join(f"{r['rows']} rows/{r['distinct']} distinct" for r in rs))
        if ok and peer == "hub_ckpt":
            verified += (f"; spooled {statistics.median(r['spool_batches'] for r in rs):.0f} batches, "
                         f"{statistics.median(r['spool_bytes'] for r in rs) / 1e6:.1f} MB, deleted at commit")
        elif ok and peer == "hub_nockpt":
            verified += "; nothing spooled"
        lines.append(f"| {names[peer]} | {med[peer]:.2f} | {args.records / med[peer]:,.0f} | {rss[peer]:.0f} "
                     f"| {runs} | {proc_s:.2f} | {reqs} | {verified} |")
    lines += ["", "| target | measured | result |", "| --- | --- | --- |"]
    if "hub" in med:
        hub = med["hub"]
        if "dlt" in med:
            r = med["dlt"] / hub
            lines.append(f"| hub >= {TARGET_VS_DLT:g}x faster than dlt (dlt_time / hub_time) | "
                         f"{_fmt_ratio(r)} | {'PASS' if r >= TARGET_VS_DLT else 'FAIL'} |")
        if "loop" in med:
            r = med["loop"] / hub
            lines.append(f"| hub >= {TARGET_VS_LOOP:g}x the hand-written loop (loop_time / hub_time) | "
                         f"{_fmt_ratio(r)} | {'PASS' if r >= TARGET_VS_LOOP else 'FAIL'} |")
        lines.append(f"| hub peak RSS < {TARGET_RSS_MB:g} MB | {rss['hub']:.0f} MB | "
                     f"{'PASS' if rss['hub'] < TARGET_RSS_MB else 'FAIL'} |")
        if not all(r["ok"] for r in results["hub"]):
            lines.append("| hub table has exactly the records, no duplicates | see above | FAIL |")
    if all(p in med for p in CKPT_PAIR):
        on, off = med["hub_ckpt"], med["hub_nockpt"]
        overhead = on / off - 1
        pair_ok = (all(r["ok"] and r["checkpointed"] for r in results["hub_ckpt"])
                   and all(r["ok"] for r in results["hub_nockpt"]))
        spool_s = statistics.median(r["spool_s"] for r in results["hub_ckpt"])
        lines.append(f"| resume checkpoints add <= {TARGET:.0%} to the load (ckpt_time / nockpt_time - 1) | "
                     f"{on / off:.3f}x ({overhead:+.1%}; spooling itself {spool_s:.2f} s); peak RSS "
                     f"{rss['hub_ckpt']:.0f} MB vs {rss['hub_nockpt']:.0f} MB | "
                     f"{'PASS' if overhead <= TARGET and pair_ok else 'FAIL'} |")
        if not pair_ok:
            lines.append("| the checkpointed runs really spooled, both loaded every record once | see above | FAIL |")
    return "\n".join(lines) + "\n"


def profile_hub(port: int, records: int, top: int) -> None:
    import pstats

    out = Path(tempfile.mkdtemp(prefix="rest-bench-profile-"))
    result = run_peer("hub", port, records, profile=out / "phases.json")
    print(f"hub with step timers: {result['seconds']:.2f} s, peak RSS {result['peak_rss_mb']:.0f} MB, "
          f"ok={result['ok']}, {result['detail']}")
    data = json.loads((out / "phases.json").read_text())
    print(f"\nPer step ('loop' steps run on the adapter's event loop with {CONCURRENCY} requests in flight, so "
          f"async wall seconds overlap; cpu is thread CPU time; from/to are seconds since the start of the "
          f"{data['elapsed']:.2f} s run):")
    print(f"  {'wall s':>8} {'cpu s':>7} {'calls':>6} {'from':>6} {'to':>6}  step")
    for label, e in data["phases"].items():
        print(f"  {e['wall']:8.3f} {e['cpu']:7.3f} {e['calls']:6d} {e['first']:6.2f} {e['last']:6.2f}  "
              f"{label}")
    for label, mb in data["rss"].items():
        print(f"  {label}: {mb:.0f} MB")

    result = run_peer("hub", port, records, profile=out / "hub.prof")
    print(f"\nhub under cProfile (all threads merged; slower): {result['seconds']:.2f} s; "
          f"pstats file {out / 'hub.prof'}")
    stats = pstats.Stats(str(out / "hub.prof"))
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--page-size", type=int, default=1000)
    ap.add_argument("--latency-ms", type=float, default=20.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--peers", default=",".join(PEERS), help=f"comma-separated subset of {','.join(PEERS)}")
    ap.add_argument("--out", type=Path, help="also write the Markdown report to this file")
    ap.add_argument("--profile", action="store_true",
                    help="instead of the benchmark, run the hub with step timers, then under cProfile "
                         "(all threads), and print where its time goes")
    ap.add_argument("--profile-top", type=int, default=30)
    ap.add_argument("--worker", choices=PEERS, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--profile-out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        worker(args.worker, args.port, args.records, args.profile_out)
        return 0

    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = [p for p in peers if p not in PEERS]
    if unknown:
        ap.error(f"unknown peer(s): {', '.join(unknown)} (choose from {', '.join(PEERS)})")

    t0 = time.perf_counter()
    server, port = start_server(args.records, args.page_size, args.latency_ms)
    print(f"server on 127.0.0.1:{port} (pid {server.pid}), pages pre-rendered in "
          f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)
    try:
        if args.profile:
            profile_hub(port, args.records, args.profile_top)
            return 0
        results: dict[str, list[dict[str, Any]]] = {p: [] for p in peers}
        for i in range(args.repeat):
            order = list(peers)
            if i % 2 and all(p in order for p in CKPT_PAIR):  # the checkpoint pair alternates who goes first
                a, b = (order.index(p) for p in CKPT_PAIR)
                order[a], order[b] = order[b], order[a]
            for peer in order:
                r = run_peer(peer, port, args.records)
                results[peer].append(r)
                print(f"run {i + 1}/{args.repeat} {peer:5s} {r['seconds']:7.2f} s  "
                      f"rss {r['peak_rss_mb']:6.0f} MB  "
                      f"rows {r['rows']:,}  requests {r['requests']}  {'ok' if r['ok'] else 'NOT OK'} "
                      f"{r['detail']}", file=sys.stderr)
        md = report(args, results)
        print(md)
        if args.out:
            args.out.write_text(md)
        return 0 if all(r["ok"] for rs in results.values() for r in rs) else 1
    finally:
        server.terminate()
        server.join(10)


if __name__ == "__main__":
    sys.exit(main())
