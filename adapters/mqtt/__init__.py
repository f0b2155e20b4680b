"""MQTT 3.1.1/5 adapter (paho-mqtt 2.x): QoS 1 subscriptions on a persistent session with manual acks, so a
message is acknowledged only when the hub says (:mod:`adapters.messages`)."""

from typing import TYPE_CHECKING, Any

from adapters.mqtt.config import MqttSourceConfig, MqttSystemConfig

if TYPE_CHECKING:
    from adapters.mqtt.consumer import MqttConsumer

__all__ = ["MqttConsumer", "MqttSourceConfig", "MqttSystemConfig"]


#: The client library is imported on first use of these names, not when the registry loads the plugin
#: (every ``hub`` command loads the registry; most never consume messages).
_LAZY = {"MqttConsumer": "adapters.mqtt.consumer"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
