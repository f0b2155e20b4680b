"""NATS JetStream (:mod:`adapters.nats`) as a hub protocol: stream sources read by durable pull consumers."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from adapters.nats import DEFAULT_MAX_DELIVER, NatsConsumer, NatsSourceConfig, NatsSystemConfig
from hub.protocols import Protocol, SourceCheck
from hub.protocols._streams import max_deliver, rooted_tls, stream_only
from hub.runtime.secrets import mask_url

if TYPE_CHECKING:
    from hub.spec.loader import Pipeline
    from hub.spec.models import ResolvedSource


class NatsProtocol(Protocol):
    name = "nats"
    system_model = NatsSystemConfig
    source_model = NatsSourceConfig
    unit = "stream"
    renders_templates = False
    order = 60
    prompt_keys = "stream, consumer, subject, ack_wait"

    def time_partitioned(self, check: SourceCheck) -> bool:
        return stream_only(check)

    def stream(self, pipeline: Pipeline, source: ResolvedSource) -> NatsConsumer:
        """The durable pull consumer of *source*, secrets resolved (the caller opens it with ``async with``)."""
        system = self.resolve_system(source.system_name, source.system, root=pipeline.root)
        return NatsConsumer(_rooted(system, pipeline.root), source.config,
                            max_deliver=max_deliver(source, DEFAULT_MAX_DELIVER), name=source.name)

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
