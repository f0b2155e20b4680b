"""Kafka adapter (aiokafka): a consumer group whose offsets are committed only after the hub acknowledged
every message before them (:mod:`adapters.messages`)."""

from typing import TYPE_CHECKING, Any

from adapters.kafka.config import KafkaSourceConfig, KafkaSystemConfig, SaslConfig

if TYPE_CHECKING:
    from adapters.kafka.consumer import KafkaConsumer, OffsetBook

__all__ = ["KafkaConsumer", "KafkaSourceConfig", "KafkaSystemConfig", "OffsetBook", "SaslConfig"]


#: The client library is imported on first use of these names, not when the registry loads the plugin
#: (every ``hub`` command loads the registry; most never consume messages).
_LAZY = {"KafkaConsumer": "adapters.kafka.consumer", "OffsetBook": "adapters.kafka.consumer"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
