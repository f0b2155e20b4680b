"""MQTT 3.1.1/5 adapter (paho-mqtt 2.x): QoS 1 subscriptions on a persistent session with manual acks, so a
message is acknowledged only when the hub says (:mod:`adapters.messages`)."""

from adapters.mqtt.config import MqttSourceConfig, MqttSystemConfig
from adapters.mqtt.consumer import MqttConsumer

__all__ = ["MqttConsumer", "MqttSourceConfig", "MqttSystemConfig"]
