"""Kafka (:mod:`adapters.kafka`) as a hub protocol: stream sources read by a consumer group that commits
offsets only after the hub acknowledged (stored) the messages."""

from __future__ import annotations

from typing import TYPE_CHECKING

from adapters.kafka import KafkaSourceConfig, KafkaSystemConfig
from hub.protocols import Protocol, SourceCheck
from hub.protocols._streams import rooted_tls, stream_only

if TYPE_CHECKING:
    from adapters.kafka import KafkaConsumer
    from hub.spec.loader import Pipeline
    from hub.spec.models import ResolvedSource


class KafkaProtocol(Protocol):
    name = "kafka"
    system_model = KafkaSystemConfig
    source_model = KafkaSourceConfig
    unit = "stream"
    renders_templates = False
    order = 62
    prompt_keys = "topics, group_id"

    def time_partitioned(self, check: SourceCheck) -> bool:
        return stream_only(check)

    def stream(self, pipeline: Pipeline, source: ResolvedSource) -> KafkaConsumer:
        """The consumer group of *source*, secrets resolved (the caller opens it with ``async with``)."""
        system: KafkaSystemConfig = self.resolve_system(source.system_name, source.system, root=pipeline.root)
        if system.tls is not None and pipeline.root is not None:
            system = system.model_copy(update={"tls": rooted_tls(system.tls, pipeline.root)})
        from adapters.kafka import KafkaConsumer  # the client library, on first use

        return KafkaConsumer(system, source.config, name=source.name)

    def endpoint(self, source: ResolvedSource) -> str | None:
        system: KafkaSystemConfig = source.system.config
        return f"kafka://{','.join(system.bootstrap_servers)} {', '.join(source.config.topics)} " \
               f"(group {source.config.group_id})"


PROTOCOL = KafkaProtocol()
