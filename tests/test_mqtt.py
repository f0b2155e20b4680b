"""MQTT adapter against the real Mosquitto on 127.0.0.1:1883: QoS 1 on a persistent session with manual acks.

Verified here against mosquitto (2.0): a QoS 1 message received but not acknowledged is redelivered, with
DUP set, when the same client id connects again to its persistent session (MQTT 3.1.1 and 5); nak makes the
consumer reconnect so the broker redelivers; a cut connection resumes and loses nothing.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from adapters.messages import Message
from adapters.mqtt import MqttConsumer, MqttSourceConfig, MqttSystemConfig
from hub.errors import TransportError
from tests.broker_proxy import TcpProxy, port_open

paho = pytest.importorskip("paho.mqtt.client")
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

PORT = 1883
pytestmark = pytest.mark.skipif(not port_open(PORT), reason=f"no MQTT broker (mosquitto) on 127.0.0.1:{PORT}")


def run(factory: Callable[[], Awaitable[Any]], limit: float = 90) -> Any:
    async def main() -> Any:
        return await asyncio.wait_for(factory(), limit)
    return asyncio.run(main())


def publish(topic: str, payloads: list[str], *, props: dict[str, str] | None = None) -> None:
    """Publish with QoS 1 and wait until the broker has each message (MQTT 5, user properties *props*)."""
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    client.connect("127.0.0.1", PORT)
    client.loop_start()
    try:
        for p in payloads:
            properties = None
            if props:
                properties = Properties(PacketTypes.PUBLISH)
                properties.UserProperty = list(props.items())
            client.publish(topic, p, qos=1, properties=properties).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def forget_session(client_id: str) -> None:
    """Remove a test's persistent session from the broker (a clean start that expires at once)."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 0
    client.connect("127.0.0.1", PORT, clean_start=True, properties=props)
    client.loop_start()
    time.sleep(0.2)
    client.disconnect()
    client.loop_stop()


@pytest.fixture
def names() -> Iterator[tuple[str, str]]:
    """A topic prefix and a client id of this test only; the session is removed afterwards."""
    suffix = uuid.uuid4().hex[:10]
    client_id = f"hubtest-{suffix}"
    yield f"hubtest/{suffix}", client_id
    forget_session(client_id)


def consumer(topic: str, client_id: str, version: str = "5", port: int = PORT) -> MqttConsumer:
    system = MqttSystemConfig(port=port, version=version, keepalive=5, connect_timeout=3,
                              retries={"max": 8, "backoff": 0.2, "max_backoff": 1.0})
    return MqttConsumer(system, MqttSourceConfig(topics=[f"{topic}/#"], client_id=client_id), name="devices")


async def drain(c: MqttConsumer, want: int, *, ack: bool = True, limit: float = 15) -> list[Message]:
    got: list[Message] = []
    deadline = time.monotonic() + limit
    while len(got) < want and time.monotonic() < deadline:
        batch = await c.fetch(want - len(got), 0.5)
        for m in batch:
            if ack:
                await m.ack()
        got.extend(batch)
    return got


@pytest.mark.parametrize("version", ["3.1.1", "5"])
def test_acked_messages_are_not_redelivered_and_offline_ones_are_queued(names: tuple[str, str],
                                                                        version: str) -> None:
    topic, client_id = names

    async def main() -> None:
        async with consumer(topic, client_id, version):
            pass  # the session and its subscription exist from now on
        await asyncio.to_thread(publish, f"{topic}/a", [str(i) for i in range(20)])  # while nobody listens
        async with consumer(topic, client_id, version) as c:
            got = await drain(c, 20)
            assert [m.payload for m in got] == [str(i).encode() for i in range(20)]
            assert got[0].stream == f"{topic}/a" and got[0].key == f"{topic}/a" and got[0].attempts == 1
            assert got[0].id is None and c.lag() is None
        async with consumer(topic, client_id, version) as c:
            assert await c.fetch(10, 1.5) == []
    run(main)


@pytest.mark.parametrize("version", ["3.1.1", "5"])
def test_received_but_unacked_is_redelivered_after_reconnect(names: tuple[str, str], version: str) -> None:
    topic, client_id = names

    async def main() -> None:
        async with consumer(topic, client_id, version):
            pass
        await asyncio.to_thread(publish, f"{topic}/a", ["0", "1", "2"])
        async with consumer(topic, client_id, version) as c:
            got = await drain(c, 3, ack=False)
            assert len(got) == 3
            await got[0].ack()  # 1 and 2 received, never acknowledged
        async with consumer(topic, client_id, version) as c:
            again = await drain(c, 2)
            assert [(m.payload, m.attempts) for m in again] == [(b"1", 2), (b"2", 2)]
            assert await c.fetch(5, 1.0) == []
    run(main)


def test_nak_redelivers_with_attempts_and_term_never_again(names: tuple[str, str]) -> None:
    topic, client_id = names

    async def main() -> None:
        async with consumer(topic, client_id) as c:
            await asyncio.to_thread(publish, f"{topic}/a", ["keep", "poison"])
            keep, poison = await drain(c, 2, ack=False)
            await keep.nak(0.1)
            await poison.term()
            back = await drain(c, 1, ack=False)
            assert [(m.payload, m.attempts) for m in back] == [(b"keep", 2)]
            await back[0].nak()
            third = await drain(c, 1, ack=False)
            assert [(m.payload, m.attempts) for m in third] == [(b"keep", 3)]
            await third[0].ack()
            assert c.reconnections == 2
        async with consumer(topic, client_id) as c:
            assert await c.fetch(5, 1.0) == []  # neither the acked nor the terminated one comes back
    run(main)


def test_mqtt5_message_id_and_type_from_user_properties(names: tuple[str, str]) -> None:
    topic, client_id = names

    async def main() -> None:
        async with consumer(topic, client_id) as c:
            await asyncio.to_thread(publish, f"{topic}/s", ["{}"], props={"message-id": "m-17", "type": "stock.moved"})
            (m,) = await drain(c, 1)
            assert (m.id, m.type, m.headers["message-id"]) == ("m-17", "stock.moved", "m-17")
    run(main)


def test_order_is_kept_per_topic(names: tuple[str, str]) -> None:
    topic, client_id = names

    async def main() -> None:
        async with consumer(topic, client_id) as c:
            await asyncio.to_thread(publish, f"{topic}/k0", [str(i) for i in range(0, 30, 2)])
            await asyncio.to_thread(publish, f"{topic}/k1", [str(i) for i in range(1, 30, 2)])
            got = await drain(c, 30)
        per_topic: dict[str, list[int]] = {}
        for m in got:
            per_topic.setdefault(m.stream, []).append(int(m.payload))
        assert sorted(per_topic) == [f"{topic}/k0", f"{topic}/k1"]
        assert all(v == sorted(v) and len(v) == 15 for v in per_topic.values())
    run(main)


def test_cut_connection_resumes_and_every_message_arrives(names: tuple[str, str]) -> None:
    topic, client_id = names

    async def main() -> None:
        async with TcpProxy(PORT) as proxy, consumer(topic, client_id, port=proxy.port) as c:
            await asyncio.to_thread(publish, f"{topic}/a", [str(i) for i in range(40)])
            seen = {m.payload for m in await drain(c, 15)}
            in_hand = await c.fetch(5, 1.0)
            await proxy.cut(refuse_for=1.0)
            for m in in_hand:  # its packet id means nothing on the next connection
                with pytest.raises(TransportError):
                    await m.ack()
            want = {str(i).encode() for i in range(40)}
            deadline = time.monotonic() + 30
            while seen != want and time.monotonic() < deadline:  # acks lost in the cut come back too
                seen |= {m.payload for m in await drain(c, 1)}
            assert seen == want
            assert proxy.cuts == 1 and c.reconnections >= 1
    run(main)
