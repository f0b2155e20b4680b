"""Benchmark: messages from RabbitMQ and NATS JetStream into the event store and the mapped table.

Peers, each in a fresh subprocess (``events_bench.py --worker PEER ...``), interleaved per repeat:

* ``amqp_hub``: the hub's listener path, driven in-process (:class:`hub.events.listen.Listener`, the code
  ``hub listen`` runs): fetch → one store transaction → commit → ack, and absorbs into the DuckDB table
  (mapping with casts, merge on the message id) in short transactions. Timed until every message is a
  committed row of the table (the table's mark covers the last position).
* ``amqp_raw``: aio-pika with the same prefetch, acking every message and discarding it.
* ``nats_hub`` / ``nats_raw``: the same over a JetStream durable pull consumer (nats-py ``pull_subscribe``,
  ``fetch`` in batches of the same size, ``max_ack_pending`` the same).
* ``replay``: ``hub events replay`` (:func:`hub.events.replay.replay_source`) of ``--replay-events`` stored
  events (default 1,000,000, appended straight to the store beforehand): the table rebuilt from scratch.
* ``latency``: ``hub listen`` as a process; messages published at a steady rate carry their publish time;
  a watcher polls the store's copy of the table's mark (written after the warehouse commit) every 20 ms,
  so a message's latency is from its publish to the first poll that sees its position committed.

The queue (a quorum queue, the hub's default) or the stream is filled before each consuming peer starts,
so peers measure consumption of the same backlog. Every worker reports its own peak RSS, read from its own
``/proc/self/status`` (VmHWM; ``ru_maxrss`` would include the parent's, inherited across exec).

Usage: ``.venv/bin/python bench/events_bench.py [--messages 1000000] [--repeat 2] [--out FILE]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
NATS_URL = "nats://127.0.0.1:4222"
PREFETCH = 1000
BATCH = 500


def vm_hwm_mb() -> float:
    """This process's own peak resident set (VmHWM), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def pid_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def body(i: int, sent: float | None = None) -> bytes:
    """One JSON message (about 130 bytes)."""
    return json.dumps({"id": i, "sku": f"SKU-{i % 5000:05d}", "qty": i % 17 + 1, "price": round(i % 1000 * 0.37, 2),
                       "warehouse": "north" if i % 3 else "south", "sent": sent if sent is not None else 0.0}
                      ).encode()


# --- brokers ---------------------------------------------------------------------------------------------


async def amqp_fill(queue: str, n: int, *, declare: bool = True) -> float:
    """Declare *queue* (quorum) and publish *n* messages with confirms (1,000 in flight); seconds taken."""
    import aio_pika

    conn = await aio_pika.connect(AMQP_URL)
    async with conn:
        ch = await conn.channel(publisher_confirms=True)
        if declare:
            await ch.declare_queue(queue, durable=True, arguments={"x-queue-type": "quorum"})
        started = time.perf_counter()
        window = 1000
        for start in range(0, n, window):
            await asyncio.gather(*(ch.default_exchange.publish(
                aio_pika.Message(body(i), message_id=str(i), delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=queue) for i in range(start, min(start + window, n))))
        return time.perf_counter() - started


async def amqp_delete(queue: str) -> None:
    import aio_pika

    conn = await aio_pika.connect(AMQP_URL)
    async with conn:
        ch = await conn.channel()
        await ch.queue_delete(queue)


async def nats_fill(stream: str, n: int) -> float:
    """A fresh stream ``stream`` on subject ``stream.orders`` with *n* messages (JetStream publishes, 1,000
    in flight); seconds taken."""
    import nats
    from nats.js.api import StreamConfig

    nc = await nats.connect(NATS_URL)
    try:
        js = nc.jetstream()
        with contextlib.suppress(Exception):  # not there yet
            await js.delete_stream(stream)
        await js.add_stream(StreamConfig(name=stream, subjects=[f"{stream}.orders"]))
        started = time.perf_counter()
        window = 1000
        for start in range(0, n, window):
            await asyncio.gather(*(js.publish(f"{stream}.orders", body(i), headers={"Nats-Msg-Id": str(i)})
                                   for i in range(start, min(start + window, n))))
        return time.perf_counter() - started
    finally:
        await nc.close()


async def nats_delete(stream: str) -> None:
    import nats

    nc = await nats.connect(NATS_URL)
    try:
        with contextlib.suppress(Exception):
            await nc.jetstream().delete_stream(stream)
    finally:
        await nc.close()


# --- peers (inside their own subprocess) -------------------------------------------------------------------


SPEC = """\
pipeline: bench
partitions: none
warehouse: duckdb:///wh/hub.duckdb
systems:
  mq: {system}
sources:
  orders:
    system: mq
{source}    id: "$.id"
    columns: {{id: {{type: int64}}, sku: sku, qty: {{type: int64}}, price: {{type: float64}}, warehouse: warehouse,
               sent: {{type: float64}}}}
"""


def write_spec(tmp: Path, kind: str, name: str) -> Path:
    (tmp / "workspace.yaml").write_text("load_from: []\n")
    if kind == "amqp":
        system = f'{{amqp: {{url: "{AMQP_URL}", prefetch: {PREFETCH}}}}}'
        source = f"    queue: {name}\n"
    else:
        system = f'{{nats: {{servers: ["{NATS_URL}"]}}}}'
        source = f"    stream: {name}\n    consumer: hub_bench\n    max_ack_pending: {PREFETCH}\n"
    spec = tmp / "bench.yaml"
    spec.write_text(SPEC.format(system=system, source=source))
    return spec


def peer_hub(kind: str, name: str, n: int, tmp: Path) -> dict[str, Any]:
    from hub.events.listen import Listener, ListenOptions
    from hub.spec import load

    spec = write_spec(tmp, kind, name)
    pipeline = load(spec)
    listener = Listener([pipeline], options=ListenOptions(batch=BATCH, progress_every=3600.0),
                        echo=lambda line: None)
    stats = listener.stats["orders"]
    marks: dict[str, float] = {}

    async def main() -> None:
        task = asyncio.create_task(listener.run())
        started = time.perf_counter()
        while not task.done():
            await asyncio.sleep(0.02)
            if stats.stored >= n and "stored" not in marks:
                marks["stored"] = time.perf_counter() - started
            if stats.stored >= n and stats.absorbed >= stats.position:
                marks["table"] = time.perf_counter() - started
                break
        listener.stop()
        await task

    asyncio.run(main())
    import duckdb

    con = duckdb.connect(str(tmp / "wh" / "hub.duckdb"), read_only=True)
    rows, distinct = con.execute("SELECT count(*), count(DISTINCT id) FROM orders").fetchone()  # type: ignore[misc]
    con.close()
    return {"seconds": marks["table"], "stored_s": marks.get("stored"), "rows": rows, "distinct": distinct,
            "duplicates": stats.duplicates, "spec": str(spec)}


def peer_amqp_raw(name: str, n: int) -> dict[str, Any]:
    import aio_pika

    async def main() -> float:
        conn = await aio_pika.connect(AMQP_URL)
        async with conn:
            ch = await conn.channel()
            await ch.set_qos(prefetch_count=PREFETCH)
            queue = await ch.get_queue(name)
            done = asyncio.Event()
            count = 0

            async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                nonlocal count
                await message.ack()
                count += 1
                if count >= n:
                    done.set()

            started = time.perf_counter()
            await queue.consume(on_message, no_ack=False)
            await done.wait()
            return time.perf_counter() - started

    return {"seconds": asyncio.run(main()), "rows": n, "distinct": n}


def peer_nats_raw(name: str, n: int) -> dict[str, Any]:
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig

    async def main() -> float:
        nc = await nats.connect(NATS_URL)
        try:
            js = nc.jetstream()
            sub = await js.pull_subscribe(f"{name}.orders", durable="raw_bench", stream=name,
                                          config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT,
                                                                max_ack_pending=PREFETCH))
            count = 0
            started = time.perf_counter()
            while count < n:
                try:
                    msgs = await sub.fetch(BATCH, timeout=1.0)
                except nats.errors.TimeoutError:
                    continue
                for m in msgs:
                    await m.ack()
                count += len(msgs)
            return time.perf_counter() - started
        finally:
            await nc.close()

    return {"seconds": asyncio.run(main()), "rows": n, "distinct": n}


def fill_store(spec: Path, n: int) -> float:
    """*n* events appended straight to the event store of *spec* (what a listener would have stored), in
    batches of 5,000; seconds taken."""
    from hub.events.store import Incoming, open_store
    from hub.spec import load

    pipeline = load(spec)
    store = open_store(pipeline.warehouse_url, pipeline.root)
    started = time.perf_counter()
    for first in range(0, n, 5000):
        batch = range(first, min(n, first + 5000))
        store.append("orders", [Incoming(message_id=str(i), payload=body(i)) for i in batch])
    return time.perf_counter() - started


def peer_replay(spec: Path, n: int) -> dict[str, Any]:
    from hub.events.replay import replay_source
    from hub.spec import load

    pipeline = load(spec)
    started = time.perf_counter()
    out = replay_source(pipeline, "orders", run_id="bench-replay", rebuild_models=False)
    seconds = time.perf_counter() - started
    rows = sum(a.load.rows_loaded for a in out.absorbs if a.load is not None)
    return {"seconds": seconds, "events": out.events, "rows": rows}


def worker(args: argparse.Namespace) -> None:
    tmp = Path(args.tmp)
    if args.worker in ("amqp_hub", "nats_hub"):
        result = peer_hub(args.worker.split("_")[0], args.name, args.messages, tmp)
    elif args.worker == "amqp_raw":
        result = peer_amqp_raw(args.name, args.messages)
    elif args.worker == "nats_raw":
        result = peer_nats_raw(args.name, args.messages)
    elif args.worker == "replay":
        result = peer_replay(Path(args.name), args.messages)
    else:
        raise SystemExit(f"unknown peer {args.worker}")
    result["peak_rss_mb"] = vm_hwm_mb()
    print("RESULT " + json.dumps(result))


def _env() -> dict[str, str]:
    """The environment of a peer: this checkout first on the path (then whatever the caller had)."""
    extra = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": str(ROOT) + (os.pathsep + extra if extra else "")}


def run_worker(peer: str, name: str, n: int, tmp: Path, timeout: float) -> dict[str, Any]:
    env = _env()
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", peer, "--name", name, "--messages", str(n),
           "--tmp", str(tmp)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=tmp, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"peer {peer} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT "):])
    return result


# --- latency of `hub listen` -------------------------------------------------------------------------------


def measure_latency(tmp: Path, rate: int, seconds: float) -> dict[str, Any]:
    """`hub listen` as a process; *rate* messages/s for *seconds*; latency publish → committed row."""
    queue = f"hub_bench_lat_{uuid.uuid4().hex[:8]}"
    asyncio.run(amqp_fill(queue, 0))
    spec = write_spec(tmp, "amqp", queue)
    env = _env()
    proc = subprocess.Popen([sys.executable, "-m", "hub.cli.main", "listen", str(spec), "--progress-every", "5"],
                            cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    store = tmp / "wh" / "hub.events.sqlite"
    try:
        deadline = time.monotonic() + 60
        while not store.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # the listener subscribed
        n = int(rate * seconds)
        sent: dict[str, float] = {}
        committed: dict[int, float] = {}  # position -> first time seen covered by the mark
        marks: list[tuple[float, int]] = []

        async def publish() -> None:
            import aio_pika

            conn = await aio_pika.connect(AMQP_URL)
            async with conn:
                ch = await conn.channel(publisher_confirms=True)
                start = time.time()
                for i in range(n):
                    due = start + i / rate
                    delay = due - time.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    now = time.time()
                    sent[str(i)] = now
                    await ch.default_exchange.publish(
                        aio_pika.Message(body(i, now), message_id=str(i),
                                         delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=queue)

        async def watch(stop: asyncio.Event) -> None:
            con = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
            while not stop.is_set():
                row = con.execute("SELECT absorbed FROM streams WHERE source = 'orders'").fetchone()
                if row:
                    marks.append((time.time(), int(row[0])))
                await asyncio.sleep(0.02)
            con.close()

        async def main() -> None:
            stop = asyncio.Event()
            watcher = asyncio.create_task(watch(stop))
            await publish()
            end = time.monotonic() + 30
            con = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
            while time.monotonic() < end:
                row = con.execute("SELECT count(*), (SELECT absorbed FROM streams WHERE source = 'orders'), "
                                  "max(position) FROM events WHERE source = 'orders'").fetchone()
                if row[0] >= n and row[1] is not None and row[1] >= row[2]:
                    break
                await asyncio.sleep(0.05)
            con.close()
            await asyncio.sleep(0.1)
            stop.set()
            await watcher

        asyncio.run(main())
        rss = pid_hwm_mb(proc.pid)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
        asyncio.run(amqp_delete(queue))
    con = sqlite3.connect(store)
    positions = dict(con.execute("SELECT message_id, position FROM events WHERE source = 'orders'").fetchall())
    con.close()
    latencies = []
    j = 0
    for mid, position in sorted(positions.items(), key=lambda kv: kv[1]):
        while j < len(marks) and marks[j][1] < position:
            j += 1
        if j < len(marks):
            committed[position] = marks[j][0]
            latencies.append(marks[j][0] - sent[mid])
    latencies.sort()
    if not latencies:
        raise SystemExit(f"latency: nothing committed; listener output:\n{out[-3000:]}")

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))]

    return {"messages": n, "committed": len(latencies), "p50": pct(0.5), "p95": pct(0.95), "p99": pct(0.99),
            "max": latencies[-1], "peak_rss_mb": rss}


# --- the run ---------------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--peers", default="amqp,nats,replay,latency", help="Groups to run: amqp, nats, replay, latency.")
    ap.add_argument("--replay-events", type=int, default=1_000_000, help="Events stored for the replay peer.")
    ap.add_argument("--rate", type=int, default=1000, help="Messages/s of the latency run.")
    ap.add_argument("--rate-seconds", type=float, default=30.0)
    ap.add_argument("--out", type=Path, help="Write the Markdown tables here too.")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--name", help=argparse.SUPPRESS)
    ap.add_argument("--tmp", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    groups = args.peers.split(",")
    n = args.messages
    timeout = max(600.0, n / 1000)
    results: dict[str, list[dict[str, Any]]] = {}
    fills: list[str] = []
    load_before = os.getloadavg()
    base = Path(tempfile.mkdtemp(prefix="events_bench_"))
    try:
        for r in range(args.repeat):
            order = ["hub", "raw"] if r % 2 == 0 else ["raw", "hub"]
            if "amqp" in groups:
                for who in order:
                    queue = f"hub_bench_{uuid.uuid4().hex[:8]}"
                    fills.append(f"amqp {n:,} in {asyncio.run(amqp_fill(queue, n)):.1f}s")
                    tmp = base / f"amqp_{who}_{r}"
                    tmp.mkdir()
                    try:
                        res = run_worker(f"amqp_{who}", queue, n, tmp, timeout)
                    finally:
                        asyncio.run(amqp_delete(queue))
                    results.setdefault(f"amqp_{who}", []).append(res)
                    print(f"amqp_{who} run {r + 1}: {res}", flush=True)
            if "nats" in groups:
                for who in order:
                    stream = f"HUBBENCH_{uuid.uuid4().hex[:8]}"
                    fills.append(f"nats {n:,} in {asyncio.run(nats_fill(stream, n)):.1f}s")
                    tmp = base / f"nats_{who}_{r}"
                    tmp.mkdir()
                    try:
                        res = run_worker(f"nats_{who}", stream, n, tmp, timeout)
                    finally:
                        asyncio.run(nats_delete(stream))
                    results.setdefault(f"nats_{who}", []).append(res)
                    print(f"nats_{who} run {r + 1}: {res}", flush=True)
        if "replay" in groups:
            tmp = base / "replay"
            tmp.mkdir()
            spec = write_spec(tmp, "amqp", "replay")
            fills.append(f"store {args.replay_events:,} events in {fill_store(spec, args.replay_events):.1f}s")
            for r in range(args.repeat):
                res = run_worker("replay", str(spec), args.replay_events, tmp, timeout)
                results.setdefault("replay", []).append(res)
                print(f"replay run {r + 1}: {res}", flush=True)
        if "latency" in groups:
            tmp = base / "latency"
            tmp.mkdir()
            res = measure_latency(tmp, args.rate, args.rate_seconds)
            results["latency"] = [res]
            print(f"latency: {res}", flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    report = render(results, n, args, fills, load_before, os.getloadavg())
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)


def render(results: dict[str, list[dict[str, Any]]], n: int, args: argparse.Namespace, fills: list[str],
           load_before: tuple[float, float, float], load_after: tuple[float, float, float]) -> str:
    lines = [f"{n:,} JSON messages (~130 bytes), prefetch / max_ack_pending {PREFETCH}, hub batch {BATCH}, "
             f"{args.repeat} interleaved run(s) per peer; median seconds; peak RSS = max VmHWM of the peer's own "
             "process. Load average before/after: "
             f"{' '.join(f'{x:.2f}' for x in load_before)} / {' '.join(f'{x:.2f}' for x in load_after)}.", "",
             "| peer | median s | msg/s | runs (s) | peak RSS MB | verified |",
             "| --- | ---: | ---: | --- | ---: | --- |"]
    labels = {"amqp_hub": "hub listener path, RabbitMQ → store → DuckDB table",
              "amqp_raw": "aio-pika, ack and discard",
              "nats_hub": "hub listener path, JetStream → store → DuckDB table",
              "nats_raw": "nats-py pull consumer, ack and discard", "replay": "replay of the stored events"}
    med: dict[str, float] = {}
    rss: dict[str, float] = {}
    for peer, label in labels.items():
        runs = results.get(peer)
        if not runs:
            continue
        secs = [r["seconds"] for r in runs]
        med[peer] = statistics.median(secs)
        rss[peer] = max(r["peak_rss_mb"] for r in runs)
        count = runs[0].get("events", n)
        verified = ", ".join(f"{r.get('rows', 0):,} rows / {r.get('distinct', r.get('rows', 0)):,} ids" for r in runs)
        extra = ""
        if peer.endswith("_hub"):
            extra = " (all stored and acked after " + ", ".join(f"{r['stored_s']:.1f}" for r in runs) + " s)"
        lines.append(f"| {label} | {med[peer]:.2f} | {count / med[peer]:,.0f} | "
                     f"{', '.join(f'{s:.2f}' for s in secs)}{extra} | {rss[peer]:.0f} | {verified} |")
    lat = (results.get("latency") or [{}])[0]
    if lat:
        lines += ["", f"`hub listen` at {args.rate:,} msg/s for {args.rate_seconds:.0f} s ({lat['messages']:,} "
                  f"messages, {lat['committed']:,} seen committed): p50 {lat['p50'] * 1000:.0f} ms, p95 "
                  f"{lat['p95'] * 1000:.0f} ms, p99 {lat['p99'] * 1000:.0f} ms, max {lat['max'] * 1000:.0f} ms; "
                  f"peak RSS {lat['peak_rss_mb']:.0f} MB."]
        rss["latency"] = lat["peak_rss_mb"]
    lines += ["", "| target | measured | result |", "| --- | --- | --- |"]

    def row(name: str, value: str, ok: bool) -> None:
        lines.append(f"| {name} | {value} | {'PASS' if ok else 'FAIL'} |")

    for kind in ("amqp", "nats"):
        if f"{kind}_hub" in med and f"{kind}_raw" in med:
            ratio = med[f"{kind}_raw"] / med[f"{kind}_hub"]
            rate = n / med[f"{kind}_hub"]
            row(f"{kind}: hub ≥ 0.5x the raw consumer", f"{ratio:.2f}x", ratio >= 0.5)
            row(f"{kind}: hub ≥ 5,000 msg/s", f"{rate:,.0f} msg/s", rate >= 5000)
    if "replay" in med:
        rate = results["replay"][0]["events"] / med["replay"]
        row("replay ≥ 200,000 events/s", f"{rate:,.0f} events/s", rate >= 200_000)
    if lat:
        row("`hub listen` p95 publish → committed row ≤ 1 s at 1,000 msg/s", f"{lat['p95'] * 1000:.0f} ms",
            lat["p95"] <= 1.0)
    if rss:
        worst = max(rss, key=lambda k: rss[k])
        row("peak RSS < 400 MB (every peer)", f"{rss[worst]:.0f} MB ({worst})", rss[worst] < 400)
    lines += ["", "Broker fills (not timed): " + "; ".join(fills)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
