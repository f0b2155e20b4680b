"""The NATS, MQTT and Kafka plugins through the registry: spec blocks, endpoints, and stream() building the
consumer from the resolved system (opened against the real NATS and Mosquitto when they run)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from adapters.kafka import KafkaConsumer
from adapters.mqtt import MqttConsumer
from adapters.nats import DEFAULT_MAX_DELIVER, NatsConsumer
from hub import protocols
from hub.errors import SpecError
from hub.spec.loader import load
from tests.broker_proxy import port_open

SPEC = """\
pipeline: events
systems:
  bus:
    nats: {{servers: ["nats://127.0.0.1:4222"], retries: {{max: 2, backoff: 0.1}}}}
  devices:
    mqtt: {{host: 127.0.0.1, username: hub, password: "${{HUB_TEST_MQTT_PASSWORD}}", version: "3.1.1"}}
  log:
    kafka: {{bootstrap_servers: ["127.0.0.1:9092"], tls: {{ca_file: certs/ca.pem}}}}
sources:
  orders: {{system: bus, stream: {stream}, consumer: hub_orders, subject: "{stream}.>", ack_wait: 30s}}
  stock: {{system: devices, topics: ["stock/#"], client_id: hub-stock{extra}}}
  clicks: {{system: log, topics: [clicks], group_id: hub}}
"""


def write(tmp_path: Path, stream: str = "ORDERS", extra: str = "") -> Path:
    path = tmp_path / "events.yaml"
    path.write_text(SPEC.format(stream=stream, extra=extra))
    return path


def test_plugins_register_as_stream_protocols(tmp_path: Path) -> None:
    for name in ("nats", "mqtt", "kafka"):
        assert protocols.get(name).unit == "stream"
    pipeline = load(write(tmp_path))
    shown = {n: s.protocol.endpoint(s) for n, s in pipeline.sources.items()}
    assert shown == {"orders": "nats://127.0.0.1:4222 ORDERS/hub_orders ORDERS.>",
                     "stock": "mqtt://127.0.0.1:1883 stock/#",
                     "clicks": "kafka://127.0.0.1:9092 clicks (group hub)"}
    assert pipeline.sources["orders"].config.ack_wait == 30.0


def test_stream_sources_refuse_partitions_and_bad_keys(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"sources\.stock\.qos"):
        load(write(tmp_path, extra=", qos: 2"))
    with pytest.raises(SpecError, match=r"sources\.stock\.partitioned: a stream source .* not partitioned by time"):
        load(write(tmp_path, extra=", partitioned: true"))
    with pytest.raises(SpecError, match="not a JetStream name"):
        load(write(tmp_path, stream="bad.name"))


def test_stream_builds_consumers_with_resolved_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUB_TEST_MQTT_PASSWORD", "s3cret-mqtt")
    pipeline = load(write(tmp_path))
    src = pipeline.sources
    nats_c = src["orders"].protocol.stream(pipeline, src["orders"])
    mqtt_c = src["stock"].protocol.stream(pipeline, src["stock"])
    kafka_c = src["clicks"].protocol.stream(pipeline, src["clicks"])
    assert isinstance(nats_c, NatsConsumer) and nats_c.max_deliver == DEFAULT_MAX_DELIVER
    assert isinstance(mqtt_c, MqttConsumer) and mqtt_c.system.password == "s3cret-mqtt"
    assert isinstance(kafka_c, KafkaConsumer)
    assert kafka_c.system.tls is not None and kafka_c.system.tls.ca_file == str(tmp_path / "certs/ca.pem")


@pytest.mark.skipif(not port_open(4222), reason="no NATS server on 127.0.0.1:4222")
def test_nats_stream_from_the_spec_applies_the_consumer(tmp_path: Path) -> None:
    import nats

    stream = "hubtest" + uuid.uuid4().hex[:10]
    pipeline = load(write(tmp_path, stream=stream))
    source = pipeline.sources["orders"]

    async def main() -> None:
        nc = await nats.connect("nats://127.0.0.1:4222")
        js = nc.jetstream()
        await js.add_stream(name=stream, subjects=[f"{stream}.>"])
        try:
            await js.publish(f"{stream}.created", b'{"id": 1}')
            async with source.protocol.stream(pipeline, source) as consumer:
                (msg,) = await consumer.fetch(10, 2.0)
                await msg.ack()
                cfg = (await consumer.info()).config
                assert (cfg.durable_name, cfg.ack_wait, cfg.max_deliver) == ("hub_orders", 30.0, DEFAULT_MAX_DELIVER)
                assert cfg.filter_subject == f"{stream}.>" and msg.payload == b'{"id": 1}'
        finally:
            await js.delete_stream(stream)
            await nc.close()
    asyncio.run(asyncio.wait_for(main(), 60))
