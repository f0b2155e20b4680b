"""Kafka adapter (aiokafka): a consumer group whose offsets are committed only after the hub acknowledged
every message before them (:mod:`adapters.messages`)."""

from typing import TYPE_CHECKING

from adapters.kafka.config import KafkaSourceConfig, KafkaSystemConfig, SaslConfig
from hub.runtime.lazy import lazy

if TYPE_CHECKING:
    from adapters.kafka.consumer import KafkaConsumer, OffsetBook
    from adapters.kafka.producer import produce, producer_options

__all__ = ["KafkaConsumer", "KafkaSourceConfig", "KafkaSystemConfig", "OffsetBook", "SaslConfig", "produce",
           "producer_options"]


#: The client library loads on first use of these names (hub.runtime.lazy), not with the registry.
_LAZY = {"KafkaConsumer": "adapters.kafka.consumer", "OffsetBook": "adapters.kafka.consumer",
         "produce": "adapters.kafka.producer", "producer_options": "adapters.kafka.producer"}

__getattr__ = lazy(__name__, _LAZY)
