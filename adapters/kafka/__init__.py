"""Kafka adapter (aiokafka): a consumer group whose offsets are committed only after the hub acknowledged
every message before them (:mod:`adapters.messages`)."""

from adapters.kafka.config import KafkaSourceConfig, KafkaSystemConfig, SaslConfig
from adapters.kafka.consumer import KafkaConsumer, OffsetBook

__all__ = ["KafkaConsumer", "KafkaSourceConfig", "KafkaSystemConfig", "OffsetBook", "SaslConfig"]
