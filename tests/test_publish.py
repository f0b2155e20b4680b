"""Choreography: the hub publishes its own events (asset materialized, threshold exceeded, contract broken) to
RabbitMQ and NATS JetStream on loopback, and a broker that is down never fails a load."""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aio_pika
import nats
import pytest

from hub.errors import SpecError, ThresholdExceeded
from hub.events import publish as hub_publish
from hub.materialize import materialize_source
from hub.spec import load

AMQP = "amqp://guest:guest@127.0.0.1:5672/"


def _up(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


needs_rabbit = pytest.mark.skipif(not _up(5672), reason="RabbitMQ is not listening on 127.0.0.1:5672")
needs_nats = pytest.mark.skipif(not _up(4222), reason="NATS is not listening on 127.0.0.1:4222")


def _project(tmp_path: Path, publish: str, systems: str = "", extra: str = "") -> Path:
    (tmp_path / "workspace.yaml").write_text("load_from: []\n")
    db = tmp_path / "items.sqlite"
    con = sqlite3.connect(db)
    con.execute("DROP TABLE IF EXISTS items")
    con.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, qty INTEGER)")
    con.executemany("INSERT INTO items VALUES (?, ?)", [(1, 5), (2, 7), (3, -1)])
    con.commit()
    con.close()
    spec = tmp_path / "pub.yaml"
    spec.write_text(f"""\
pipeline: pub
partitions: none
warehouse: duckdb:///wh/hub.duckdb
systems:
  db: {{sql: {{url: "sqlite:///{db}"}}}}
{systems}
publish: {publish}
sources:
  items: {{system: db, table: items, primary_key: id{extra}}}
""")
    return spec


@pytest.fixture
def queue() -> Iterator[str]:
    name = f"hub_events_{uuid.uuid4().hex[:10]}"

    async def run(delete: bool) -> None:
        conn = await aio_pika.connect(AMQP)
        async with conn:
            ch = await conn.channel()
            if delete:
                await ch.queue_delete(name)
            else:
                await ch.declare_queue(name, durable=True)

    asyncio.run(run(False))
    yield name
    asyncio.run(run(True))


def _received(queue: str, timeout: float = 10) -> list[dict[str, Any]]:
    async def get() -> list[dict[str, Any]]:
        conn = await aio_pika.connect(AMQP)
        out: list[dict[str, Any]] = []
        async with conn:
            q = await (await conn.channel()).declare_queue(queue, durable=True, passive=True)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                message = await q.get(fail=False)
                if message is None:
                    if out:
                        break
                    await asyncio.sleep(0.1)
                    continue
                await message.ack()
                assert message.type == json.loads(message.body)["type"]
                out.append(json.loads(message.body))
        return out

    return asyncio.run(get())


@needs_rabbit
def test_materialization_publishes_to_rabbitmq(tmp_path: Path, queue: str) -> None:
    spec = _project(tmp_path, f"{{system: mq, routing_key: {queue}}}",
                    systems=f'  mq: {{amqp: {{url: "{AMQP}"}}}}')
    pipeline = load(spec)
    outcome = materialize_source(pipeline, "items", window=None, run_id="run-1")
    events = _received(queue)
    assert len(events) == 1
    event = events[0]
    assert event["type"] == "asset.materialized" and event["pipeline"] == "pub" and event["asset"] == "items"
    assert event["run_id"] == "run-1" and event["rows_loaded"] == outcome.load.rows_loaded == 3
    assert event["table_rows"] == 3 and len(event["id"]) == 32 and event["time"].endswith("+00:00")


@needs_rabbit
def test_threshold_exceeded_is_published_and_the_load_still_fails(tmp_path: Path, queue: str) -> None:
    spec = _project(tmp_path, f"{{system: mq, routing_key: {queue}, events: [quarantine.threshold_exceeded]}}",
                    systems=f'  mq: {{amqp: {{url: "{AMQP}"}}}}',
                    extra=", rules: {qty: {min: 0}}, max_bad_rows: 0")
    with pytest.raises(ThresholdExceeded):
        materialize_source(load(spec), "items", window=None, run_id="run-2")
    events = _received(queue)
    assert [e["type"] for e in events] == ["quarantine.threshold_exceeded"]
    assert events[0]["asset"] == "items" and "max_bad_rows" in events[0]["error"]


def test_broker_down_never_fails_the_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    monkeypatch.setenv("HUB_PUBLISH_TIMEOUT", "5")
    spec = _project(tmp_path, "{system: mq}", systems=f'  mq: {{amqp: {{url: "amqp://guest:guest@127.0.0.1:{port}/", '
                                                      "connect_timeout: 2}}")
    failed = hub_publish.STATS["failed"]
    started = time.monotonic()
    outcome = materialize_source(load(spec), "items", window=None, run_id="run-3")
    assert outcome.load.rows_loaded == 3
    assert hub_publish.STATS["failed"] == failed + 1
    assert time.monotonic() - started < 30


def test_publish_block_is_checked(tmp_path: Path) -> None:
    spec = _project(tmp_path, "{system: db, routing_key: x}")
    with pytest.raises(SpecError, match=r"publish\.system: system 'db' is sql, which cannot publish events"):
        load(spec)
    spec = _project(tmp_path, "{system: mq, events: [asset.exploded]}", systems=f'  mq: {{amqp: {{url: "{AMQP}"}}}}')
    with pytest.raises(SpecError, match=r"line 7: publish.events.0: .*\(got 'asset.exploded'\)"):
        load(spec)
    spec = _project(tmp_path, "{system: mq, subject: x}", systems=f'  mq: {{amqp: {{url: "{AMQP}"}}}}')
    with pytest.raises(SpecError, match=r"publish\.subject"):
        load(spec)


@needs_nats
def test_materialization_publishes_to_nats_jetstream(tmp_path: Path) -> None:
    name = f"HUBEV_{uuid.uuid4().hex[:8]}"
    prefix = f"hubev.{name.lower()}"

    async def create() -> None:
        nc = await nats.connect("nats://127.0.0.1:4222")
        await nc.jetstream().add_stream(name=name, subjects=[f"{prefix}.>"])
        await nc.close()

    async def read() -> tuple[str, dict[str, Any], str | None]:
        nc = await nats.connect("nats://127.0.0.1:4222")
        try:
            js = nc.jetstream()
            msg = await js.get_msg(name, 1)
            await js.delete_stream(name)
            return msg.subject, json.loads(msg.data), (msg.headers or {}).get("Nats-Msg-Id")
        finally:
            await nc.close()

    asyncio.run(create())
    spec = _project(tmp_path, f"{{system: bus, subject: {prefix}, jetstream: true}}",
                    systems='  bus: {nats: {servers: ["nats://127.0.0.1:4222"]}}')
    materialize_source(load(spec), "items", window=None, run_id="run-4")
    subject, event, msg_id = asyncio.run(read())
    assert subject == f"{prefix}.asset.materialized"
    assert event["asset"] == "items" and event["rows_loaded"] == 3 and msg_id == event["id"]
