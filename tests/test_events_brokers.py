"""``hub listen`` end to end with the other brokers on loopback: NATS JetStream (127.0.0.1:4222) and Mosquitto
(127.0.0.1:1883). The broker plugins plug into the same listener, store and absorb as AMQP
(tests/test_events_amqp.py): messages land once in the table, a redelivered batch is dropped as duplicates,
and a SIGKILL between the store's commit and the acknowledgement loses nothing."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import pytest

from hub.events.store import open_store
from hub.spec import load

REPO = Path(__file__).resolve().parents[1]


def _up(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


# --- brokers -----------------------------------------------------------------------------------------------

@pytest.fixture
def nats_stream() -> Iterator[str]:
    """A fresh JetStream stream (subjects ``<name>.>``), deleted afterwards."""
    if not _up(4222):
        pytest.skip("NATS is not listening on 127.0.0.1:4222")
    import nats

    name = f"HUBT{uuid.uuid4().hex[:8].upper()}"

    async def run(create: bool) -> None:
        nc = await nats.connect("nats://127.0.0.1:4222")
        try:
            js = nc.jetstream()
            if create:
                await js.add_stream(name=name, subjects=[f"{name}.>"])
            else:
                await js.delete_stream(name)
        finally:
            await nc.close()

    asyncio.run(run(True))
    yield name
    asyncio.run(run(False))


def _nats_publish(stream: str, records: list[dict]) -> None:
    import nats

    async def run() -> None:
        nc = await nats.connect("nats://127.0.0.1:4222")
        try:
            js = nc.jetstream()
            for r in records:
                await js.publish(f"{stream}.orders", json.dumps(r).encode(), headers={"Nats-Msg-Id": str(r["id"])})
        finally:
            await nc.close()

    asyncio.run(run())


@pytest.fixture
def mqtt_topic() -> str:
    if not _up(1883):
        pytest.skip("Mosquitto is not listening on 127.0.0.1:1883")
    return f"hubtest/{uuid.uuid4().hex[:10]}/stock"


def _mqtt_publish(topic: str, records: list[dict]) -> None:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:8]}")
    client.connect("127.0.0.1", 1883)
    client.loop_start()
    try:
        for r in records:
            client.publish(topic, json.dumps(r).encode(), qos=1).wait_for_publish(10)
    finally:
        client.loop_stop()
        client.disconnect()


# --- the listener --------------------------------------------------------------------------------------------

def _spec(tmp_path: Path, system: str, source: str) -> Path:
    (tmp_path / "workspace.yaml").write_text("load_from: []\n")
    spec = tmp_path / "ev.yaml"
    spec.write_text(f"""\
pipeline: ev_{uuid.uuid4().hex[:8]}
partitions: none
warehouse: duckdb:///wh/hub.duckdb
systems:
  bus: {system}
sources:
  orders:
    system: bus
{source}    id: "$.id"
    primary_key: [id]
    columns: {{id: {{type: int64}}, qty: {{type: int64}}}}
""")
    return spec


def _listen(spec: Path, crash: str | None = None) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("HUB_TEST_CRASH_AT", None)
    if crash:
        env["HUB_TEST_CRASH_AT"] = crash
    return subprocess.Popen([sys.executable, "-m", "hub.cli.main", "listen", str(spec), "--batch", "50",
                             "--progress-every", "1"], cwd=spec.parent, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait(cond: Callable[[], bool], what: str, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"listener exited ({proc.returncode}) before {what}:\n{out}\n{err}")
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _absorbed(spec: Path, n: int) -> Callable[[], bool]:
    def check() -> bool:
        p = load(spec)
        store = open_store(p.warehouse_url, p.root)
        st = store.status(["orders"])[0]
        return st.events >= n and st.absorbed >= store.last_position("orders")
    return check


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, f"listener exited {proc.returncode}:\n{out}\n{err}"
    return out + err


def _rows(tmp_path: Path) -> list[tuple]:
    con = duckdb.connect(str(tmp_path / "wh" / "hub.duckdb"), read_only=True)
    try:
        return con.execute("select count(*), count(distinct id), sum(qty) from orders").fetchall()
    finally:
        con.close()


def _crash_then_restart(tmp_path: Path, spec: Path, n: int) -> None:
    """A listener killed between the store's commit and the ack, then a new one: every message once."""
    first = _listen(spec, crash="after_commit")
    first.wait(timeout=60)
    assert first.returncode == -signal.SIGKILL, first.communicate()
    second = _listen(spec)
    p = load(spec)

    def redelivered() -> bool:  # the stored, unacknowledged batch comes back (JetStream: after ack_wait)
        return open_store(p.warehouse_url, p.root).status(["orders"])[0].duplicates >= 1

    _wait(lambda: _absorbed(spec, n)() and redelivered(), f"{n} messages absorbed and the batch redelivered",
          second)
    _stop(second)
    assert _rows(tmp_path) == [(n, n, sum(range(n)))]
    assert open_store(p.warehouse_url, p.root).status(["orders"])[0].events == n  # dropped, not stored twice


@pytest.mark.slow
def test_nats_jetstream_through_hub_listen_once_despite_a_crash(tmp_path: Path, nats_stream: str) -> None:
    spec = _spec(tmp_path, '{nats: {servers: ["nats://127.0.0.1:4222"]}}',
                 f"    stream: {nats_stream}\n    consumer: hub_{nats_stream.lower()}\n"
                 f"    subject: {nats_stream}.>\n    ack_wait: 5s\n")
    _nats_publish(nats_stream, [{"id": i, "qty": i} for i in range(120)])
    _crash_then_restart(tmp_path, spec, 120)


@pytest.mark.slow
def test_mqtt_through_hub_listen_once_despite_a_crash(tmp_path: Path, mqtt_topic: str) -> None:
    client_id = f"hub-{uuid.uuid4().hex[:8]}"
    spec = _spec(tmp_path, '{mqtt: {host: 127.0.0.1, port: 1883}}',
                 f'    topics: ["{mqtt_topic}"]\n    client_id: {client_id}\n')
    # the persistent session must exist before publishing: a first listener subscribes, then stops
    warm = _listen(spec)
    _wait(lambda: "consuming" in (warm.stdout.readline() if warm.stdout else ""), "the subscription", warm)
    _stop(warm)
    _mqtt_publish(mqtt_topic, [{"id": i, "qty": i} for i in range(120)])  # queued by the broker meanwhile
    _crash_then_restart(tmp_path, spec, 120)
