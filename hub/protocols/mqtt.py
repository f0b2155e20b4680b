"""MQTT 3.1.1/5 (:mod:`adapters.mqtt`) as a hub protocol: stream sources on a persistent QoS 1 session."""

from __future__ import annotations

from typing import TYPE_CHECKING

from adapters.mqtt import MqttSourceConfig, MqttSystemConfig
from hub.protocols import Protocol, SourceCheck
from hub.protocols._streams import rooted_tls, stream_only

if TYPE_CHECKING:
    from adapters.mqtt import MqttConsumer
    from hub.spec.loader import Pipeline
    from hub.spec.models import ResolvedSource


class MqttProtocol(Protocol):
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
        if system.tls is not None and pipeline.root is not None:
            system = system.model_copy(update={"tls": rooted_tls(system.tls, pipeline.root)})
        from adapters.mqtt import MqttConsumer  # the client library, on first use

        return MqttConsumer(system, source.config, name=source.name)

    def endpoint(self, source: ResolvedSource) -> str | None:
        system: MqttSystemConfig = source.system.config
        scheme = "mqtts" if system.tls is not None else "mqtt"
        return f"{scheme}://{system.host}:{system.effective_port} {', '.join(source.config.topics)}"


PROTOCOL = MqttProtocol()
