"""AMQP 0-9-1 (RabbitMQ, :mod:`adapters.amqp`) as a hub protocol: stream sources (``unit = "stream"``).

A source names a queue (or an exchange and binding key); the hub's stream keys (format, id, records, keep,
max_deliver: :mod:`hub.spec.stream`) sit next to these in the block. ``hub listen`` and the sensor of
:mod:`hub.dagster.streams` consume it through :meth:`stream`. The plugin is this module; the flows' publish
action and send (:mod:`~hub.protocols.amqp.actions`, :mod:`~hub.protocols.amqp.send`) are imported by its hooks
on first use."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import orjson

from adapters.amqp import AmqpPublishTarget, AmqpSourceConfig, AmqpSystemConfig
from hub.protocols import Protocol, SourceCheck
from hub.protocols._streams import StreamContract
from hub.runtime.secrets import mask_url

if TYPE_CHECKING:
    from adapters.amqp import AmqpConsumer
    from hub.spec.loader import Pipeline
    from hub.spec.models import ResolvedSource


class AmqpProtocol(StreamContract, Protocol):
    name = "amqp"
    system_model = AmqpSystemConfig
    source_model = AmqpSourceConfig
    order = 60
    renders_templates = False  # queue names are literal
    unit = "stream"
    publish_model = AmqpPublishTarget

    def time_partitioned(self, check: SourceCheck) -> bool:
        return False  # the loader reports `partitioned: true` for every stream source

    def stream(self, pipeline: Pipeline, source: ResolvedSource) -> AmqpConsumer:
        """A consumer of the source's queue, secrets resolved; opened with ``async with`` by the caller."""
        from adapters.amqp import AmqpConsumer  # the client library, on first use

        return AmqpConsumer(self.resolve_system(source.system_name, source.system), source.config,
                            name=source.name, system_name=source.system_name)

    def publish(self, pipeline: Pipeline, system_name: str, target: AmqpPublishTarget,
                events: list[dict[str, Any]]) -> None:
        """Each event persistently, with publisher confirms, to the exchange (routing key: the target's, else
        hub.<event type>)."""
        system: AmqpSystemConfig = self.resolve_system(system_name, pipeline.spec.systems[system_name])

        from adapters.amqp import publish  # the client library, on first use

        async def send() -> None:
            for event in events:
                await publish(system.url, target.routing_key or f"hub.{event['type']}", [orjson.dumps(event)],
                              exchange=target.exchange, message_ids=[event["id"]], type=event["type"],
                              system=system)

        asyncio.run(send())

    sends = True

    def actions(self, pipeline: Pipeline, system: str) -> list[Any]:
        """``<system>.publish``: one persistent message with publisher confirms, for flows (docs/flows.md)."""
        from hub.protocols.amqp.actions import publish_action

        return [publish_action(pipeline, system, self.name)]

    def send(self, pipeline: Pipeline, action: Any, request: dict[str, Any], *, idempotency_key: str | None = None,
             key_header: str | None = None) -> Any:
        """A flow's message, published once (:func:`hub.protocols.amqp.send.amqp_send`)."""
        from hub.protocols.amqp.send import amqp_send

        return amqp_send(pipeline, action, request, idempotency_key=idempotency_key, key_header=key_header)

    def endpoint(self, source: ResolvedSource) -> str | None:
        cfg = source.config
        where = cfg.queue or f"hub.{source.name}"
        if cfg.exchange:
            where += f" <- {cfg.exchange} ({cfg.binding_key})"
        return f"{mask_url(source.system.config.url)} {where}"


PROTOCOL = AmqpProtocol()
