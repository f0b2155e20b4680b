"""Flow calls that publish to brokers and put files (``Protocol.send`` of nats, mqtt, amqp, sftp, kafka)
against the real peers on loopback: NATS JetStream :4222, MQTT :1883, RabbitMQ :5672, the embedded SFTP
server; Kafka only as far as no broker is needed. Each: a step per item, a re-run sends nothing, the content
arrives as sent, a dry run shows the request and sends nothing, and what the broker does with a repeat."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import duckdb
import pytest

from hub.flows.check import check_actions
from hub.flows.engine import run_flow
from hub.spec.loader import load
from tests.broker_proxy import port_open
from tests.flow_support import flow_spec, write_items

REPO = Path(__file__).resolve().parents[1]
ITEMS = [{"ref": "a1", "amount": 10.0}, {"ref": "a2", "amount": 250.0}, {"ref": "a3", "amount": 40.0}]
#: No partner REST API is called by these flows: its address only fills the spec helper's system.
NOWHERE = "http://127.0.0.1:9/api"


def _project(tmp_path: Path, system: str, flows: str) -> Path:
    spec = flow_spec(tmp_path, NOWHERE, flows, extra_sources=system)
    write_items(tmp_path / "warehouse.duckdb", ITEMS, "payments")
    return spec


def _rows(tmp_path: Path, sql: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _execute(tmp_path: Path, sql: str) -> None:
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    try:
        con.execute(sql)
    finally:
        con.close()


def _keys(tmp_path: Path, step: str) -> dict[str, str]:
    """item key -> the idempotency key the ledger recorded for *step*."""
    return dict(_rows(tmp_path, f"SELECT item_key, idempotency_key FROM _hub_deliveries WHERE step = '{step}'"))


def _dry_run(spec: Path, flow: str, requests: int = 3) -> str:
    out = subprocess.run([sys.executable, "-m", "hub.cli.main", "flow", "run", flow, "--spec", str(spec),
                          "--dry-run"], capture_output=True, text=True, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "250"}, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"{requests} request(s) would be sent, 0 skipped by the ledger; nothing was sent" in out.stdout
    return out.stdout


# --- NATS JetStream --------------------------------------------------------------------------------------

NATS_FLOW = """  announce:
    input: {{table: payments, key: ref}}
    steps:
      - name: paid
        call: bus.publish
        params:
          subject: {subject}
          type: order.paid
          body: {{ref: "{{{{ item.ref }}}}", amount: "{{{{ item.amount }}}}"}}
        idempotency: {{header: Nats-Msg-Id}}
        retry: {{attempts: 3, backoff: 0.2}}
"""


async def _stream(name: str, *, delete: bool = False) -> list[Any]:
    """Create the stream *name* on ``<name>.>`` (or read its messages and delete it)."""
    import nats

    nc = await nats.connect("nats://127.0.0.1:4222")
    try:
        js = nc.jetstream()
        if not delete:
            await js.add_stream(name=name, subjects=[f"{name}.>"], duplicate_window=120)
            return []
        info = await js.stream_info(name)
        msgs = [await js.get_msg(name, seq) for seq in range(1, info.state.last_seq + 1)]
        await js.delete_stream(name)
        return msgs
    finally:
        await nc.close()


@pytest.mark.skipif(not port_open(4222), reason="no NATS server on 127.0.0.1:4222")
def test_nats_publish_once_and_jetstream_drops_a_repeat(tmp_path: Path) -> None:
    name = "flows" + uuid.uuid4().hex[:10]
    spec = _project(tmp_path, '  bus:\n    nats: {servers: ["nats://127.0.0.1:4222"]}\n',
                    NATS_FLOW.format(subject=f"{name}.order.paid"))
    asyncio.run(_stream(name))
    try:
        pipeline = load(spec)
        assert check_actions(pipeline)[0] == []
        dry = _dry_run(spec, "announce")
        assert f'"subject": "{name}.order.paid"' in dry and '"body": {"amount": 250.0, "ref": "a2"}' in dry
        first = run_flow(pipeline, "announce")
        assert [i.status for i in first.items] == ["ok", "ok", "ok"] and first.sent == 3
        assert run_flow(pipeline, "announce").sent == 0
        # a run killed after sending a2 and before recording the answer: the ledger says `sent`; the next run
        # sends it again with the same Nats-Msg-Id and JetStream stores nothing new
        _execute(tmp_path, "UPDATE _hub_deliveries SET status = 'sent' WHERE item_key = 'ref=a2'")
        again = run_flow(pipeline, "announce")
        assert [i.status for i in again.items] == ["skipped", "ok", "skipped"]
        response = _rows(tmp_path, "SELECT response FROM _hub_deliveries WHERE item_key = 'ref=a2'")[0][0]
        assert json.loads(response)["duplicate"] is True
    finally:
        msgs = asyncio.run(_stream(name, delete=True))
    keys = _keys(tmp_path, "paid")
    assert [json.loads(m.data) for m in msgs] == [{"ref": "a1", "amount": 10.0}, {"ref": "a2", "amount": 250.0},
                                                  {"ref": "a3", "amount": 40.0}]
    assert [m.headers["Nats-Msg-Id"] for m in msgs] == [keys["ref=a1"], keys["ref=a2"], keys["ref=a3"]]
    assert all(m.headers["type"] == "order.paid" and m.headers["traceparent"].startswith("00-") for m in msgs)


@pytest.mark.skipif(not port_open(4222), reason="no NATS server on 127.0.0.1:4222")
def test_nats_subject_no_stream_captures_fails_the_item_and_sends_nothing(tmp_path: Path) -> None:
    subject = f"nostream{uuid.uuid4().hex[:10]}.x"
    spec = _project(tmp_path, '  bus:\n    nats: {servers: ["nats://127.0.0.1:4222"]}\n',
                    NATS_FLOW.format(subject=subject))
    report = run_flow(load(spec), "announce")
    assert [i.status for i in report.items] == ["failed"] * 3
    assert f"subject {subject}: no JetStream stream captures the subject" in str(report.items[0].error)
    assert {r[0] for r in _rows(tmp_path, "SELECT status FROM _hub_deliveries")} == {"failed"}


# --- MQTT ------------------------------------------------------------------------------------------------

@pytest.mark.skipif(not port_open(1883), reason="no MQTT broker on 127.0.0.1:1883")
def test_mqtt_publish_qos1_once_with_the_key_as_message_id(tmp_path: Path) -> None:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

    topic = f"hubtest/flows/{uuid.uuid4().hex[:10]}/paid"
    got: list[paho.MQTTMessage] = []
    subscribed = threading.Event()
    sub = paho.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    sub.on_message = lambda c, u, msg: got.append(msg)
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.connect("127.0.0.1", 1883)
    sub.loop_start()
    try:
        sub.subscribe(topic, qos=1)
        assert subscribed.wait(10)
        flows = f"""  announce:
    input: {{table: payments, key: ref}}
    steps:
      - name: paid
        call: bus.publish
        params:
          topic: {topic}
          type: order.paid
          body: {{ref: "{{{{ item.ref }}}}", amount: "{{{{ item.amount }}}}"}}
        idempotency: {{header: message-id}}
"""
        spec = _project(tmp_path, "  bus:\n    mqtt: {host: 127.0.0.1, port: 1883}\n", flows)
        pipeline = load(spec)
        assert check_actions(pipeline)[0] == []
        dry = _dry_run(spec, "announce")
        assert f'"topic": "{topic}"' in dry
        time.sleep(0.5)
        assert got == []  # the dry run sent nothing
        assert run_flow(pipeline, "announce").sent == 3
        assert run_flow(pipeline, "announce").sent == 0
        deadline = time.monotonic() + 10
        while len(got) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # a repeat would arrive now
    finally:
        sub.disconnect()
        sub.loop_stop()
    keys = _keys(tmp_path, "paid")
    assert sorted(json.loads(m.payload)["ref"] for m in got) == ["a1", "a2", "a3"]
    for m in got:
        props = dict(m.properties.UserProperty)
        ref = json.loads(m.payload)["ref"]
        assert m.qos == 1 and props["message-id"] == keys[f"ref={ref}"] and props["type"] == "order.paid"
        assert props["traceparent"].startswith("00-")


def test_mqtt_broker_not_listening_sends_nothing_and_the_next_run_sends(tmp_path: Path) -> None:
    from tests.sftp_servers import free_port

    port = free_port()  # nothing listens here
    flows = """  announce:
    input: {table: payments, key: ref}
    steps:
      - {name: paid, call: bus.publish, params: {topic: t/x, body: "{{ item.ref }}"}}
"""
    spec = _project(tmp_path, f"  bus:\n    mqtt: {{host: 127.0.0.1, port: {port}, connect_timeout: 2}}\n", flows)
    report = run_flow(load(spec), "announce")
    assert [i.status for i in report.items] == ["failed"] * 3
    assert "cannot connect" in str(report.items[0].error) and "nothing was sent" in str(report.items[0].error)
    assert {r[0] for r in _rows(tmp_path, "SELECT status FROM _hub_deliveries")} == {"failed"}


# --- SFTP ------------------------------------------------------------------------------------------------

def test_sftp_put_per_item_atomically_and_idempotent_by_name(tmp_path: Path) -> None:
    from tests.sftp_servers import start_embedded

    (tmp_path / "server").mkdir()
    drop, server = start_embedded(tmp_path / "server")
    try:
        flows = """  export:
    input: {table: payments, key: ref}
    steps:
      - name: doc
        call: drop.put
        params: {path: "outbox/paid-{{ item.ref }}.json", body: "{{ item }}"}
      - name: line
        call: drop.put
        params: {path: "outbox/csv/{{ item.ref }}.csv", body: "ref;amount\\n{{ item.ref }};{{ item.amount }}\\n"}
"""
        spec = _project(tmp_path, f"  drop:\n    sftp: {json.dumps(drop.system())}\n", flows)
        pipeline = load(spec)
        assert check_actions(pipeline)[0] == []
        dry = _dry_run(spec, "export", 6)
        assert '"path": "outbox/paid-a1.json"' in dry and '"body": "ref;amount\\na2;250.0"' in dry, dry
        assert not (drop.data / "outbox").exists()  # the dry run wrote nothing
        first = run_flow(pipeline, "export")
        assert [i.status for i in first.items] == ["ok"] * 3 and first.sent == 6
        outbox = drop.data / "outbox"
        assert json.loads((outbox / "paid-a2.json").read_text()) == {"ref": "a2", "amount": 250.0}
        assert (outbox / "csv" / "a3.csv").read_text() == "ref;amount\na3;40.0"  # templates drop a last newline
        stamps = {p: p.stat().st_mtime_ns for p in outbox.rglob("*") if p.is_file()}
        time.sleep(0.05)
        assert run_flow(pipeline, "export").sent == 0
        assert {p: p.stat().st_mtime_ns for p in outbox.rglob("*") if p.is_file()} == stamps  # nothing written
        # killed after the put of a1's document, before its answer was recorded: the put is idempotent by name,
        # so the next run writes it again (the same content under the same name) instead of parking it
        _execute(tmp_path, "UPDATE _hub_deliveries SET status = 'sent' WHERE item_key = 'ref=a1' AND step = 'doc'")
        again = run_flow(pipeline, "export")
        assert [i.status for i in again.items] == ["ok", "skipped", "skipped"] and again.sent == 1
        files = sorted(str(p.relative_to(outbox)) for p in outbox.rglob("*") if p.is_file())
        assert files == ["csv/a1.csv", "csv/a2.csv", "csv/a3.csv", "paid-a1.json", "paid-a2.json", "paid-a3.json"]
        assert json.loads((outbox / "paid-a1.json").read_text()) == {"ref": "a1", "amount": 10.0}
        response = json.loads(_rows(tmp_path, "SELECT response FROM _hub_deliveries WHERE item_key = 'ref=a1' "
                                              "AND step = 'doc'")[0][0])
        assert response["bytes"] == len((outbox / "paid-a1.json").read_bytes())
    finally:
        server.stop()


def test_sftp_put_to_a_server_that_is_not_there_writes_nothing(tmp_path: Path) -> None:
    from tests.sftp_servers import free_port

    system = {"host": "127.0.0.1", "port": free_port(), "username": "hub", "password": "x",
              "insecure_accept_any_host_key": True, "connect_timeout": 2, "retries": {"max": 0}}
    flows = """  export:
    input: {table: payments, key: ref}
    steps:
      - {name: doc, call: drop.put, params: {path: "out/{{ item.ref }}.json", body: "{{ item }}"}}
"""
    spec = _project(tmp_path, f"  drop:\n    sftp: {json.dumps(system)}\n", flows)
    report = run_flow(load(spec), "export")
    assert [i.status for i in report.items] == ["failed"] * 3
    assert "nothing was written" in str(report.items[0].error)


# --- RabbitMQ: a message no queue receives is not a delivery ---------------------------------------------

@pytest.mark.skipif(not port_open(5672), reason="RabbitMQ is not listening on 127.0.0.1:5672")
def test_amqp_publish_nobody_receives_is_failed_not_ok(tmp_path: Path) -> None:
    flows = f"""  announce:
    input: {{table: payments, key: ref}}
    steps:
      - name: paid
        call: bus.publish
        params:
          exchange: amq.topic
          routing_key: nobody.binds.{uuid.uuid4().hex[:10]}
          body: {{ref: "{{{{ item.ref }}}}"}}
        idempotency: {{param: body.message_id}}
"""
    spec = _project(tmp_path, '  bus:\n    amqp: {url: "amqp://guest:guest@127.0.0.1:5672/"}\n', flows)
    dry = _dry_run(spec, "announce")
    # the key goes into the body after the payload hash: the dry run shows it too
    keyed = [line for line in dry.splitlines() if '"message_id": "' in line]
    assert len(keyed) == 3
    report = run_flow(load(spec), "announce")
    assert [i.status for i in report.items] == ["failed"] * 3
    assert "no queue is bound to receive the message" in str(report.items[0].error)


@pytest.mark.skipif(not port_open(5672), reason="RabbitMQ is not listening on 127.0.0.1:5672")
def test_amqp_without_a_broker_is_skipped_and_published_by_a_later_run(tmp_path: Path) -> None:
    """What the demo's announce step relies on (on_error: skip): no broker, nothing sent and the items go on;
    the deliveries stay failed, so the first run with the broker publishes each message once."""
    import aio_pika

    from tests.sftp_servers import free_port

    queue = f"flows-later-{uuid.uuid4().hex[:8]}"
    flows = f"""  announce:
    input: {{table: payments, key: ref}}
    steps:
      - name: paid
        call: bus.publish
        params: {{routing_key: {queue}, type: order.paid, body: {{ref: "{{{{ item.ref }}}}"}}}}
        idempotency: {{param: body.message_id}}
        retry: {{attempts: 2, backoff: 0.1}}
        on_error: skip
      - {{name: after, map: {{published: "{{{{ steps.paid is not none }}}}"}}}}
"""
    down = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    spec = _project(tmp_path, f'  bus:\n    amqp: {{url: "{down}", connect_timeout: 2}}\n', flows)
    first = run_flow(load(spec), "announce")
    assert [i.status for i in first.items] == ["ok"] * 3 and first.sent == 0  # the step skipped, nothing sent
    assert [i.outputs["after"] for i in first.items] == [{"published": False}] * 3
    assert {r[0] for r in _rows(tmp_path, "SELECT status FROM _hub_deliveries")} == {"failed"}

    async def queue_op(drain: bool) -> list[Any]:
        async with await aio_pika.connect("amqp://guest:guest@127.0.0.1:5672/") as conn:
            channel = await conn.channel()
            q = await channel.declare_queue(queue, durable=True)
            got = []
            while drain and (msg := await q.get(fail=False, timeout=5)) is not None:
                await msg.ack()
                got.append(msg)
            if drain:
                await q.delete()
            return got

    asyncio.run(queue_op(drain=False))
    spec.write_text(spec.read_text().replace(down, "amqp://guest:guest@127.0.0.1:5672/"))
    pipeline = load(spec)
    assert run_flow(pipeline, "announce").sent == 3
    assert run_flow(pipeline, "announce").sent == 0
    messages = asyncio.run(queue_op(drain=True))
    keys = _keys(tmp_path, "paid")
    assert sorted(json.loads(m.body)["message_id"] for m in messages) == sorted(keys.values())
    assert sorted(m.message_id for m in messages) == sorted(keys.values())


# --- Kafka (no broker on this machine) -------------------------------------------------------------------

KAFKA = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
KAFKA_FLOW = """  announce:
    input: {{table: payments, key: ref}}
    steps:
      - name: paid
        call: bus.publish
        params: {{topic: {topic}, key: "{{{{ item.ref }}}}", type: order.paid, body: {{ref: "{{{{ item.ref }}}}"}}}}
        idempotency: {{header: message-id}}
"""


def test_kafka_publish_is_checked_planned_and_fails_cleanly_without_a_broker(tmp_path: Path) -> None:
    pytest.importorskip("aiokafka")
    from tests.sftp_servers import free_port

    port = free_port()  # nothing listens here
    spec = _project(tmp_path, f'  bus:\n    kafka: {{bootstrap_servers: ["127.0.0.1:{port}"], connect_timeout: 2}}\n',
                    KAFKA_FLOW.format(topic="orders.paid"))
    pipeline = load(spec)
    assert check_actions(pipeline)[0] == []
    dry = _dry_run(spec, "announce")
    assert '{"body": {"ref": "a1"}, "key": "a1", "topic": "orders.paid", "type": "order.paid"}' in dry
    report = run_flow(pipeline, "announce")
    assert [i.status for i in report.items] == ["failed"] * 3
    assert f"kafka 127.0.0.1:{port} topic orders.paid: cannot connect" in str(report.items[0].error)
    assert "nothing was sent" in str(report.items[0].error)


def test_kafka_action_refuses_an_unknown_parameter(tmp_path: Path) -> None:
    flows = KAFKA_FLOW.format(topic="orders.paid").replace("paid, key:", "paid, partition_key:")
    spec = _project(tmp_path, '  bus:\n    kafka: {bootstrap_servers: ["127.0.0.1:9"]}\n', flows)
    problems = check_actions(load(spec))[0]
    assert [(".".join(map(str, loc)), msg.split(" (")[0]) for loc, msg in problems] == [
        ("flows.announce.steps.0.params.partition_key", "'partition_key' is not a parameter of bus.publish")]


@pytest.mark.skipif(not KAFKA, reason="KAFKA_BOOTSTRAP_SERVERS is not set: no Kafka broker to test against (the "
                                      "action, the dry run and a broker that is not there are tested without one)")
def test_kafka_publish_once_with_the_key_as_message_id(tmp_path: Path) -> None:
    from aiokafka import AIOKafkaConsumer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    assert KAFKA is not None
    topic = f"hubtest-flows-{uuid.uuid4().hex[:10]}"

    async def create() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, 1, 1)])
        finally:
            await admin.close()

    async def consume() -> list[Any]:
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=KAFKA, auto_offset_reset="earliest",
                                    group_id=f"g-{topic}")
        await consumer.start()
        try:
            batches = await consumer.getmany(timeout_ms=5000)
            return [r for records in batches.values() for r in records]
        finally:
            await consumer.stop()

    asyncio.run(create())
    system = f'  bus:\n    kafka: {{bootstrap_servers: ["{KAFKA}"]}}\n'
    spec = _project(tmp_path, system, KAFKA_FLOW.format(topic=topic))
    pipeline = load(spec)
    assert run_flow(pipeline, "announce").sent == 3
    assert run_flow(pipeline, "announce").sent == 0
    records = asyncio.run(consume())
    keys = _keys(tmp_path, "paid")
    assert sorted(json.loads(r.value)["ref"] for r in records) == ["a1", "a2", "a3"]
    for r in records:
        assert dict(r.headers)["message-id"].decode() == keys[f"ref={r.key.decode()}"]
