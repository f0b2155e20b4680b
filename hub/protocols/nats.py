"""NATS JetStream (:mod:`adapters.nats`) as a hub protocol: stream sources read by durable pull consumers."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from adapters.nats import DEFAULT_MAX_DELIVER, NatsPublishTarget, NatsSourceConfig, NatsSystemConfig
from hub.protocols import Protocol, SourceCheck
from hub.protocols._streams import max_deliver, rooted_tls, stream_only
from hub.runtime.secrets import mask_url

if TYPE_CHECKING:
    from adapters.nats import NatsConsumer
    from hub.spec.loader import Pipeline
    from hub.spec.models import ResolvedSource


class NatsProtocol(Protocol):
    name = "nats"
    system_model = NatsSystemConfig
    source_model = NatsSourceConfig
    unit = "stream"
    publish_model = NatsPublishTarget
    renders_templates = False
    order = 60
    prompt_keys = "stream, consumer, subject, ack_wait"

    def time_partitioned(self, check: SourceCheck) -> bool:
        return stream_only(check)

    def stream(self, pipeline: Pipeline, source: ResolvedSource) -> NatsConsumer:
        """The durable pull consumer of *source*, secrets resolved (the caller opens it with ``async with``)."""
        system = self.resolve_system(source.system_name, source.system, root=pipeline.root)
        from adapters.nats import NatsConsumer  # the client library, on first use

        return NatsConsumer(_rooted(system, pipeline.root), source.config,
                            max_deliver=max_deliver(source, DEFAULT_MAX_DELIVER), name=source.name)

    def publish(self, pipeline: Pipeline, system_name: str, target: NatsPublishTarget,
                events: list[dict[str, Any]]) -> None:
        """Each event to <subject>.<event type> (JetStream when the target says; Nats-Msg-Id = the event id)."""
        system = _rooted(self.resolve_system(system_name, pipeline.spec.systems[system_name], root=pipeline.root),
                         pipeline.root)

        from adapters.nats import publish  # the client library, on first use

        async def send() -> None:
            for event in events:
                await publish(system, f"{target.subject}.{event['type']}", [orjson.dumps(event)],
                              jetstream=target.jetstream, message_ids=[event["id"]])

        asyncio.run(send())

    def endpoint(self, source: ResolvedSource) -> str | None:
        system: NatsSystemConfig = source.system.config
        cfg: NatsSourceConfig = source.config
        subject = f" {cfg.subject}" if cfg.subject else ""
        return f"{mask_url(system.servers[0])} {cfg.stream}/{cfg.consumer}{subject}"


def _rooted(system: NatsSystemConfig, root: Path | None) -> NatsSystemConfig:
    """Relative credential and TLS files are taken from the project root."""
    if root is None:
        return system
    update: dict[str, object] = {}
    for key in ("creds", "nkey_seed"):
        value = getattr(system, key)
        if value and not Path(value).is_absolute():
            update[key] = str(root / value)
    if system.tls is not None:
        update["tls"] = rooted_tls(system.tls, root)
    return system.model_copy(update=update) if update else system


PROTOCOL = NatsProtocol()
