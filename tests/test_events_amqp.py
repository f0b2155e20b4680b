"""``hub listen`` against the real RabbitMQ on 127.0.0.1:5672 (guest/guest): crash consistency at each named
point, redelivery, poison messages, per-key order, a cut connection, and a listener next to a backfill."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import aio_pika
import duckdb
import pytest

from adapters.amqp import publish
from hub.events.store import open_store
from hub.spec import load
from tests.fault_proxy import FaultProxy

REPO = Path(__file__).resolve().parents[1]
HOST, PORT = "127.0.0.1", 5672
URL = f"amqp://guest:guest@{HOST}:{PORT}/"


def _rabbit_up() -> bool:
    try:
        with socket.create_connection((HOST, PORT), timeout=1):
            return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not _rabbit_up(), reason=f"RabbitMQ is not listening on {HOST}:{PORT}")


@pytest.fixture
def queue() -> Iterator[str]:
    """A fresh quorum queue, deleted afterwards."""
    name = f"hub_test_{uuid.uuid4().hex[:10]}"

    async def declare() -> None:
        conn = await aio_pika.connect(URL)
        async with conn:
            ch = await conn.channel()
            await ch.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})

    async def delete() -> None:
        conn = await aio_pika.connect(URL)
        async with conn:
            ch = await conn.channel()
            await ch.queue_delete(name)

    asyncio.run(declare())
    yield name
    asyncio.run(delete())


def _spec(tmp_path: Path, queue: str, extra: str = "", url: str = URL, more: str = "") -> Path:
    (tmp_path / "workspace.yaml").write_text("load_from: []\n")
    spec = tmp_path / "ev.yaml"
    spec.write_text(f"""\
pipeline: ev_{queue}
partitions: none
warehouse: duckdb:///wh/hub.duckdb
systems:
  erp: {{amqp: {{url: "{url}", prefetch: 100, retries: {{backoff: 0.2, max_backoff: 1}}}}}}
{more.split("@@")[0] if more else ""}sources:
  orders:
    system: erp
    queue: {queue}
    declare: true
    id: "$.id"
{extra}{more.split("@@")[1] if more else ""}""")
    return spec


def _send(queue: str, records: list[dict], ids: list[str | None] | None = None) -> None:
    asyncio.run(publish(URL, queue, [json.dumps(r).encode() for r in records], message_ids=ids))


def _listen(spec: Path, *args: str, crash: str | None = None) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("HUB_TEST_CRASH_AT", None)
    if crash:
        env["HUB_TEST_CRASH_AT"] = crash
    return subprocess.Popen([sys.executable, "-m", "hub.cli.main", "listen", str(spec), "--batch", "50",
                             "--progress-every", "1", *args], cwd=spec.parent, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait(cond: Callable[[], bool], what: str, timeout: float = 60, proc: subprocess.Popen[str] | None = None
          ) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"listener exited ({proc.returncode}) before {what}:\n{out}\n{err}")
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _status(spec: Path) -> tuple[int, int, int, int]:
    """(events stored, absorbed position, duplicates, dead) of the source."""
    p = load(spec)
    st = open_store(p.warehouse_url, p.root).status(["orders"])[0]
    return st.events, st.absorbed, st.duplicates, st.dead


def _absorbed_all(spec: Path, n: int) -> Callable[[], bool]:
    def check() -> bool:
        events, absorbed, _, _ = _status(spec)
        p = load(spec)
        return events >= n and absorbed >= open_store(p.warehouse_url, p.root).last_position("orders")
    return check


def _stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, f"listener exited {proc.returncode}:\n{out}\n{err}"
    return out, err


def _rows(tmp_path: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(tmp_path / "wh" / "hub.duckdb"), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


@pytest.mark.slow
def test_listen_stores_acks_absorbs_and_stops_on_sigterm(tmp_path: Path, queue: str) -> None:
    spec = _spec(tmp_path, queue, "    columns: {id: {type: int64}, amount: {type: float64}}\n")
    _send(queue, [{"id": i, "amount": i / 2} for i in range(200)])
    _send(queue, [{"id": 7, "amount": 3.5}])  # re-published: stored once
    asyncio.run(publish(URL, queue, [b"{broken"], message_ids=["bad-1"]))
    proc = _listen(spec)
    _wait(_absorbed_all(spec, 200), "200 events absorbed", proc=proc)
    out, _ = _stop(proc)
    assert "SIGTERM: stopping" in out and "msg/s" in out and "broker lag" in out
    assert _rows(tmp_path, "SELECT count(*), count(DISTINCT id), sum(amount) FROM orders") == \
        [(200, 200, sum(i / 2 for i in range(200)))]
    events, _, duplicates, dead = _status(spec)
    assert (events, duplicates, dead) == (200, 1, 1)
    p = load(spec)
    letter = open_store(p.warehouse_url, p.root).dead_letters("orders")[0]
    assert letter.message_id == "bad-1" and "not valid json" in letter.reason
    # everything was acknowledged: the queue is empty
    events_cli = subprocess.run([sys.executable, "-m", "hub.cli.main", "events", "dead-letters", str(spec)],
                                env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True)
    assert "bad-1" in events_cli.stdout


@pytest.mark.slow
@pytest.mark.parametrize("point", ["after_receive", "after_commit", "after_ack"])
def test_sigkill_at_each_point_loses_and_duplicates_nothing(tmp_path: Path, queue: str, point: str) -> None:
    n = 300
    spec = _spec(tmp_path, queue, "    columns: {id: {type: int64}}\n")
    _send(queue, [{"id": i} for i in range(n)])
    crashed = _listen(spec, crash=f"{point}:2")
    crashed.communicate(timeout=60)
    assert crashed.returncode == -signal.SIGKILL, "the crash hook did not fire"
    stored_at_crash = _status(spec)[0]
    assert stored_at_crash < n  # the crash really happened mid-stream
    proc = _listen(spec)
    _wait(_absorbed_all(spec, n), f"{n} events absorbed after the restart", proc=proc)
    _stop(proc)
    assert _rows(tmp_path, "SELECT count(*), count(DISTINCT id), min(id), max(id) FROM orders") == [(n, n, 0, n - 1)]
    events, _, duplicates, dead = _status(spec)
    assert (events, dead) == (n, 0)
    if point == "after_commit":  # stored but never acknowledged: redelivered, and dropped by the store
        assert duplicates >= 1


@pytest.mark.slow
def test_poison_message_dead_lettered_after_max_deliver_while_others_land(tmp_path: Path, queue: str) -> None:
    spec = _spec(tmp_path, queue, "    max_deliver: 3\n")
    _send(queue, [{"id": "poison"}])

    async def fail_twice() -> None:  # two deliveries that were never handled (a consumer that died on it)
        conn = await aio_pika.connect(URL)
        async with conn:
            ch = await conn.channel()
            q = await ch.get_queue(queue)
            for _ in range(2):
                msg = await q.get(no_ack=False, fail=True, timeout=5)
                assert msg is not None
                await msg.nack(requeue=True)

    asyncio.run(fail_twice())
    _send(queue, [{"id": f"ok-{i}"} for i in range(20)])
    proc = _listen(spec)
    _wait(_absorbed_all(spec, 20), "the good messages absorbed", proc=proc)
    _wait(lambda: _status(spec)[3] == 1, "the poison message dead-lettered", proc=proc)
    _stop(proc)
    p = load(spec)
    letter = open_store(p.warehouse_url, p.root).dead_letters("orders")[0]
    assert (letter.message_id, letter.attempts) == ("poison", 3) and "max_deliver 3" in letter.reason
    assert _rows(tmp_path, "SELECT count(*) FROM orders WHERE id LIKE 'ok-%'") == [(20,)]
    assert _rows(tmp_path, "SELECT count(*) FROM orders WHERE id = 'poison'") == [(0,)]


@pytest.mark.slow
def test_per_key_order_is_preserved(tmp_path: Path, queue: str) -> None:
    spec = _spec(tmp_path, queue, "    primary_key: key\n    columns: {key: key, seq: {type: int64}}\n")
    updates = [{"id": f"{k}-{s}", "key": k, "seq": s} for s in range(40) for k in ("a", "b", "c")]
    _send(queue, updates)
    proc = _listen(spec)
    _wait(_absorbed_all(spec, len(updates)), "every update absorbed", proc=proc)
    _stop(proc)
    assert _rows(tmp_path, "SELECT key, seq FROM orders ORDER BY key") == [("a", 39), ("b", 39), ("c", 39)]
    p = load(spec)
    store = open_store(p.warehouse_url, p.root)
    seqs: dict[str, list[int]] = {}
    for chunk in store.read("orders"):
        for ev in chunk:
            body = json.loads(ev.payload)
            seqs.setdefault(body["key"], []).append(body["seq"])
    assert all(v == list(range(40)) for v in seqs.values()) and len(seqs) == 3


@pytest.mark.slow
def test_connection_cut_mid_stream_resumes(tmp_path: Path, queue: str) -> None:
    n = 400
    with FaultProxy(PORT) as proxy:
        proxy.inject("reset", after=20_000)  # the first connection is cut after 20 kB of deliveries
        spec = _spec(tmp_path, queue, "    columns: {id: {type: int64}}\n",
                     url=f"amqp://guest:guest@127.0.0.1:{proxy.port}/")
        _send(queue, [{"id": i, "pad": "x" * 100} for i in range(n)])
        proc = _listen(spec)
        _wait(_absorbed_all(spec, n), "every message after the cut", proc=proc)
        assert not proxy.armed, "the proxy never cut the connection"
        _, err = _stop(proc)
    assert "lost" in err
    assert _rows(tmp_path, "SELECT count(*), count(DISTINCT id) FROM orders") == [(n, n)]


@pytest.mark.slow
def test_listener_and_backfill_run_together(tmp_path: Path, queue: str) -> None:
    db = tmp_path / "big.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE big (id INTEGER PRIMARY KEY, name TEXT, amount REAL)")
    con.executemany("INSERT INTO big VALUES (?, ?, ?)", ((i, f"n{i}", i * 0.5) for i in range(400_000)))
    con.commit()
    con.close()
    more = f'  db: {{sql: {{url: "sqlite:///{db}"}}}}\n@@  big: {{system: db, table: big}}\n'
    spec = _spec(tmp_path, queue, "    columns: {id: {type: int64}}\n", more=more)
    proc = _listen(spec)
    _wait(lambda: (tmp_path / "wh" / "hub.events.sqlite").exists(), "the store", proc=proc)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    backfill = subprocess.Popen([sys.executable, "-m", "hub.cli.main", "run", str(spec), "--asset", "big"],
                                cwd=tmp_path, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    stored_during = 0
    for i in range(10):  # messages keep flowing while the backfill writes the warehouse
        _send(queue, [{"id": i * 20 + j} for j in range(20)])
        if backfill.poll() is None:
            stored_during = _status(spec)[0]
        time.sleep(0.3)
    out, _ = backfill.communicate(timeout=300)
    assert backfill.returncode == 0, out
    _wait(_absorbed_all(spec, 200), "every message absorbed after the backfill", proc=proc)
    _stop(proc)
    assert stored_during > 0, "nothing was stored while the backfill ran"
    assert _rows(tmp_path, "SELECT count(*) FROM big") == [(400_000,)]
    assert _rows(tmp_path, "SELECT count(*), count(DISTINCT id) FROM orders") == [(200, 200)]


@pytest.mark.slow
def test_dagster_sensor_drains_a_batch_and_requests_one_run(tmp_path: Path, queue: str) -> None:
    import dagster as dg

    from hub.dagster.definitions import pipeline_definitions

    spec = _spec(tmp_path, queue, "    columns: {id: {type: int64}}\n")
    pipeline = load(spec)
    defs = pipeline_definitions(pipeline)
    sensor = defs.get_sensor_def("orders_sensor")
    _send(queue, [{"id": i} for i in range(120)])
    with dg.instance_for_test() as instance:
        result = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=None))
        assert len(result.run_requests) == 1  # one run for the whole batch, never one per message
        request = result.run_requests[0]
        assert request.run_key == "orders:1-120" and result.cursor == "120"
        assert request.tags["hub/broker_lag"] == "0"
        again = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=result.cursor))
        assert not again.run_requests  # nothing new, nothing requested
        run = defs.get_job_def("orders_job").execute_in_process(instance=instance, tags=request.tags)
        assert run.success
        md = run.asset_materializations_for_node("orders")[0].metadata
        assert md["hub/events"].value == 120 and md["hub/lag_events"].value == 0 and md["hub/mark"].value == 120
    assert _rows(tmp_path, "SELECT count(*), count(DISTINCT id) FROM orders") == [(120, 120)]


def test_exchange_binding_declared_and_secret_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """A source bound to an exchange: declared when asked, routed by binding key; the URL's password comes
    from the environment; acks only when asked (an unacked message comes back with attempts 2)."""
    from adapters.amqp import AmqpConsumer, AmqpSourceConfig, AmqpSystemConfig
    from hub.protocols import get
    from hub.runtime.secrets import resolve_config

    monkeypatch.setenv("HUB_TEST_AMQP_PASSWORD", "guest")
    system = resolve_config(AmqpSystemConfig(url=f"amqp://guest:${{HUB_TEST_AMQP_PASSWORD}}@{HOST}:{PORT}/",
                                             prefetch=5), field="systems.erp.amqp")
    assert get("amqp").unit == "stream"
    exchange, queue_name = f"hub_test_x_{uuid.uuid4().hex[:8]}", f"hub_test_{uuid.uuid4().hex[:8]}"
    source = AmqpSourceConfig(queue=queue_name, exchange=exchange, binding_key="order.*", declare=True)

    async def scenario() -> None:
        consumer = AmqpConsumer(system, source, name="orders")
        try:
            async with consumer:
                await publish(URL, "order.created", [b'{"id": 1}'], exchange=exchange, message_ids=["m1"])
                await publish(URL, "invoice.created", [b'{"id": 2}'], exchange=exchange, message_ids=["m2"])
                first = await consumer.fetch(10, 2)
                assert [(m.id, m.key, m.attempts) for m in first] == [("m1", "order.created", 1)]
                await first[0].nak()  # not handled: redelivered
                again = await consumer.fetch(10, 2)
                assert [(m.id, m.attempts) for m in again] == [("m1", 2)]
                await again[0].ack()
                assert await consumer.fetch(10, 0.5) == []
                assert consumer.lag() == 0
        finally:
            conn = await aio_pika.connect(URL)
            async with conn:
                ch = await conn.channel()
                await ch.queue_delete(queue_name)
                await ch.exchange_delete(exchange)

    asyncio.run(scenario())
