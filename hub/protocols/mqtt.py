"""MQTT 3.1.1/5 (:mod:`adapters.mqtt`) as a hub protocol: stream sources on a persistent QoS 1 session."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from adapters.mqtt import MqttSourceConfig, MqttSystemConfig
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
    from adapters.mqtt import MqttConsumer
    from hub.spec.loader import Pipeline
    from hub.spec.models import ResolvedSource


class MqttProtocol(StreamContract, BrokerProtocol):
    name = "mqtt"
    system_model = MqttSystemConfig
    source_model = MqttSourceConfig
    unit = "stream"
    renders_templates = False
    order = 61
    prompt_keys = "topics: [filter], client_id"

    def time_partitioned(self, check: SourceCheck) -> bool:
        return stream_only(check)

    def check_source(self, check: SourceCheck) -> None:
        """Two sources sharing a client id would take each other's session over, turn by turn."""
        mine = check.config.client_id
        name = check.loc[-1]
        for other, spec in check.spec.sources.items():
            if other != name and (spec.model_extra or {}).get("client_id") == mine:
                check.problem(("client_id",), f"sources.{other} uses the same client id: each source needs its own "
                                              "(the broker keeps one session per client id)")

    def stream(self, pipeline: Pipeline, source: ResolvedSource) -> MqttConsumer:
        """The subscription of *source*, secrets resolved (the caller opens it with ``async with``)."""
        system: MqttSystemConfig = self.resolve_system(source.system_name, source.system, root=pipeline.root)
        from adapters.mqtt import MqttConsumer  # the client library, on first use

        return MqttConsumer(system, source.config, name=source.name)

    # -- flows: one QoS 1 message ----------------------------------------------------------------------------

    sends = True

    def actions(self, pipeline: Pipeline, system: str) -> list[Any]:
        """``<system>.publish``: one JSON message with QoS 1, acknowledged by the broker (PUBACK)."""
        return [message_action(
            pipeline, system, self.name, target="topic", target_doc="The topic (no wildcards).",
            description=f"Publish one JSON message with QoS 1 on {system} (the broker's PUBACK awaited; MQTT "
            "does not deduplicate)", output={"mid": {"type": "integer"}, "reason": {"type": "string"}},
            extra={"retain": {"type": "boolean", "description": "Keep it as the topic's retained message."}})]

    def spec_actions(self, pipeline: Pipeline, system: str) -> list[Any]:
        return self.actions(pipeline, system)

    def send(self, pipeline: Pipeline, action: Any, request: dict[str, Any], *, idempotency_key: str | None = None,
             key_header: str | None = None) -> Sent:
        """The message with QoS 1, sent once. MQTT brokers never deduplicate: the idempotency key travels as
        the MQTT 5 user property ``message-id`` (with ``type``, the step's headers and ``traceparent``) for
        consumers to drop a repeat; exactly once towards the broker holds only through the flow's ledger."""
        from adapters.mqtt import publish_one  # the client library, on first use
        from hub.errors import DeliveryFailed
        from hub.runtime import tracing

        system: MqttSystemConfig = self.resolve_system(action.system, pipeline.spec.systems[action.system],
                                                       root=pipeline.root)
        topic = str(request["topic"])
        if "+" in topic or "#" in topic:
            raise DeliveryFailed(f"{action.name}: topic {topic!r}: wildcards (+, #) are for subscriptions; nothing "
                                 "was sent")
        with tracing.call(action.system, "publish", f"publish {topic}", protocol=self.name) as call:
            props = message_headers(request, idempotency_key, key_header, "message-id")
            ack = publish_one(system, topic, message_body(request["body"]), user_properties=props,
                              retain=bool(request.get("retain")))
            call.rows = 1
        return Sent(ack, None, f"PUBACK {ack['reason']}")

    def endpoint(self, source: ResolvedSource) -> str | None:
        system: MqttSystemConfig = source.system.config
        scheme = "mqtts" if system.tls is not None else "mqtt"
        return f"{scheme}://{system.host}:{system.effective_port} {', '.join(source.config.topics)}"


PROTOCOL = MqttProtocol()
