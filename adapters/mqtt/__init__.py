"""MQTT 3.1.1/5 adapter (paho-mqtt 2.x): QoS 1 subscriptions on a persistent session with manual acks, so a
message is acknowledged only when the hub says (:mod:`adapters.messages`)."""

from typing import TYPE_CHECKING

from adapters.mqtt.config import MqttSourceConfig, MqttSystemConfig
from hub.runtime.lazy import lazy

if TYPE_CHECKING:
    from adapters.mqtt.consumer import MqttConsumer
    from adapters.mqtt.publisher import publish_one

__all__ = ["MqttConsumer", "MqttSourceConfig", "MqttSystemConfig", "publish_one"]


#: The client library loads on first use of these names (hub.runtime.lazy), not with the registry.
_LAZY = {"MqttConsumer": "adapters.mqtt.consumer", "publish_one": "adapters.mqtt.publisher"}

__getattr__ = lazy(__name__, _LAZY)
