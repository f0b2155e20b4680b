"""AMQP 0-9-1 (RabbitMQ, :mod:`adapters.amqp`) as a hub protocol: stream sources (``unit = "stream"``).

A source names a queue (or an exchange and binding key); the hub's stream keys (format, id, records, keep,
max_deliver: :mod:`hub.spec.stream`) sit next to these in the block. ``hub listen`` and the sensor of
:mod:`hub.dagster.streams` consume it through :meth:`stream`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from adapters.amqp import AmqpConsumer, AmqpSourceConfig, AmqpSystemConfig
from hub.protocols import Protocol, SourceCheck
from hub.runtime.secrets import mask_url

if TYPE_CHECKING:
    from hub.spec.loader import Pipeline
    from hub.spec.models import ResolvedSource


class AmqpProtocol(Protocol):
    name = "amqp"
    system_model = AmqpSystemConfig
    source_model = AmqpSourceConfig
    order = 60
    renders_templates = False  # queue names are literal
    unit = "stream"

    def time_partitioned(self, check: SourceCheck) -> bool:
        return False  # the loader reports `partitioned: true` for every stream source

    def stream(self, pipeline: Pipeline, source: ResolvedSource) -> AmqpConsumer:
        """A consumer of the source's queue, secrets resolved; opened with ``async with`` by the caller."""
        return AmqpConsumer(self.resolve_system(source.system_name, source.system), source.config,
                            name=source.name, system_name=source.system_name)

    def endpoint(self, source: ResolvedSource) -> str | None:
        cfg = source.config
        where = cfg.queue or f"hub.{source.name}"
        if cfg.exchange:
            where += f" <- {cfg.exchange} ({cfg.binding_key})"
        return f"{mask_url(source.system.config.url)} {where}"


PROTOCOL = AmqpProtocol()
