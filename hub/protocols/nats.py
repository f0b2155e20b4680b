"""NATS JetStream (:mod:`adapters.nats`) as a hub protocol: stream sources read by durable pull consumers."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import orjson

from adapters.nats import DEFAULT_MAX_DELIVER, NatsPublishTarget, NatsSourceConfig, NatsSystemConfig
from hub.protocols import Sent, SourceCheck
from hub.protocols._streams import (
    BrokerProtocol,
    StreamContract,
    max_deliver,
    message_action,
    message_body,
    message_headers,
    stream_only,
)
from hub.runtime.secrets import mask_url

if TYPE_CHECKING:
    from adapters.nats import NatsConsumer
    from hub.spec.loader import Pipeline
    from hub.spec.models import ResolvedSource


class NatsProtocol(StreamContract, BrokerProtocol):
    rooted_files = ("creds", "nkey_seed")
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

        return NatsConsumer(system, source.config,
                            max_deliver=max_deliver(source, DEFAULT_MAX_DELIVER), name=source.name)

    def publish(self, pipeline: Pipeline, system_name: str, target: NatsPublishTarget,
                events: list[dict[str, Any]]) -> None:
        """Each event to <subject>.<event type> (JetStream when the target says; Nats-Msg-Id = the event id)."""
        system = self.resolve_system(system_name, pipeline.spec.systems[system_name], root=pipeline.root)

        from adapters.nats import publish  # the client library, on first use

        async def send() -> None:
            for event in events:
                await publish(system, f"{target.subject}.{event['type']}", [orjson.dumps(event)],
                              jetstream=target.jetstream, message_ids=[event["id"]])

        asyncio.run(send())

    # -- flows: one message through JetStream --------------------------------------------------------------

    sends = True

    def actions(self, pipeline: Pipeline, system: str) -> list[Any]:
        """``<system>.publish``: one JSON message stored by the JetStream stream that captures its subject."""
        return [message_action(
            pipeline, system, self.name, target="subject", target_doc="The subject; a JetStream stream must "
            "capture it.", description=f"Publish one JSON message through JetStream on {system} (stored by a "
            "stream; Nats-Msg-Id deduplicates within the stream's window)",
            output={"stream": {"type": "string"}, "seq": {"type": "integer"}, "duplicate": {"type": "boolean"}})]

    def spec_actions(self, pipeline: Pipeline, system: str) -> list[Any]:
        return self.actions(pipeline, system)

    def send(self, pipeline: Pipeline, action: Any, request: dict[str, Any], *, idempotency_key: str | None = None,
             key_header: str | None = None) -> Sent:
        """The message through JetStream, awaited until a stream stored it. The idempotency key is the
        ``Nats-Msg-Id``: within the stream's duplicate window (2 min by default) JetStream stores a repeat
        once and acknowledges it as a duplicate, so a lost acknowledgement can be retried safely."""
        from adapters.nats import send  # the client library, on first use
        from hub.runtime import tracing

        system = self.resolve_system(action.system, pipeline.spec.systems[action.system], root=pipeline.root)
        subject = str(request["subject"])
        with tracing.call(action.system, "publish", f"publish {subject}", protocol=self.name) as call:
            headers = message_headers(request, idempotency_key, key_header, "Nats-Msg-Id")
            ack = asyncio.run(send(system, subject, message_body(request["body"]),
                                   message_id=headers.pop("Nats-Msg-Id", None), headers=headers))
            call.rows = 1
        return Sent(ack, None, f"{'duplicate of ' if ack['duplicate'] else 'stored as '}{ack['stream']}#{ack['seq']}")

    def endpoint(self, source: ResolvedSource) -> str | None:
        system: NatsSystemConfig = source.system.config
        cfg: NatsSourceConfig = source.config
        subject = f" {cfg.subject}" if cfg.subject else ""
        return f"{mask_url(system.servers[0])} {cfg.stream}/{cfg.consumer}{subject}"


PROTOCOL = NatsProtocol()
