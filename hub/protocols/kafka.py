"""Kafka (:mod:`adapters.kafka`) as a hub protocol: stream sources read by a consumer group that commits
offsets only after the hub acknowledged (stored) the messages."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from adapters.kafka import KafkaSourceConfig, KafkaSystemConfig
from hub.protocols import Sent, SourceCheck
from hub.protocols._streams import (
    BrokerProtocol,
    StreamContract,
    message_action,
    message_body,
    message_headers,
    stream_only,
)

if TYPE_CHECKING:
    from adapters.kafka import KafkaConsumer
    from hub.spec.loader import Pipeline
    from hub.spec.models import ResolvedSource


class KafkaProtocol(StreamContract, BrokerProtocol):
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
        from adapters.kafka import KafkaConsumer  # the client library, on first use

        return KafkaConsumer(system, source.config, name=source.name)

    # -- flows: one record, acknowledged by every in-sync replica -----------------------------------------------

    sends = True

    def actions(self, pipeline: Pipeline, system: str) -> list[Any]:
        """``<system>.publish``: one JSON record (``acks=all``), with an optional record key."""
        return [message_action(
            pipeline, system, self.name, target="topic", target_doc="The topic (it must exist).",
            description=f"Produce one JSON record on {system} (acknowledged by every in-sync replica; Kafka does "
            "not deduplicate across sends)",
            output={"topic": {"type": "string"}, "partition": {"type": "integer"}, "offset": {"type": "integer"}},
            extra={"key": {"type": "string", "description": "The record key (its partition: order per key)."}})]

    def spec_actions(self, pipeline: Pipeline, system: str) -> list[Any]:
        return self.actions(pipeline, system)

    def send(self, pipeline: Pipeline, action: Any, request: dict[str, Any], *, idempotency_key: str | None = None,
             key_header: str | None = None) -> Sent:
        """The record, sent once through an idempotent producer. The idempotency key is the header
        ``message-id``, for consumers to drop a repeat (Kafka itself stores a record sent again twice)."""
        from adapters.kafka import produce  # the client library, on first use
        from hub.runtime import tracing

        system: KafkaSystemConfig = self.resolve_system(action.system, pipeline.spec.systems[action.system],
                                                        root=pipeline.root)
        topic = str(request["topic"])
        key = request.get("key")
        with tracing.call(action.system, "publish", f"publish {topic}", protocol=self.name) as call:
            headers = message_headers(request, idempotency_key, key_header, "message-id")
            meta = asyncio.run(produce(system, topic, message_body(request["body"]), headers=headers,
                                       key=str(key).encode() if key is not None else None))
            call.rows = 1
        return Sent(meta, None, f"stored {meta['topic']}[{meta['partition']}]@{meta['offset']}")

    def endpoint(self, source: ResolvedSource) -> str | None:
        system: KafkaSystemConfig = source.system.config
        return f"kafka://{','.join(system.bootstrap_servers)} {', '.join(source.config.topics)} " \
               f"(group {source.config.group_id})"


PROTOCOL = KafkaProtocol()
