"""AMQP 0-9-1 (RabbitMQ) consumers in the shape of :mod:`adapters.messages`: manual acks after the
hub's store commits, bounded prefetch, reconnect and re-subscribe inside ``fetch``."""

from typing import TYPE_CHECKING, Any

from adapters.amqp.config import AmqpPublishTarget, AmqpSourceConfig, AmqpSystemConfig

if TYPE_CHECKING:
    from adapters.amqp.client import AmqpConsumer, publish

__all__ = ["AmqpConsumer", "AmqpPublishTarget", "AmqpSourceConfig", "AmqpSystemConfig", "publish"]


#: The client library is imported on first use of these names, not when the registry loads the plugin
#: (every ``hub`` command loads the registry; most never consume messages).
_LAZY = {"AmqpConsumer": "adapters.amqp.client", "publish": "adapters.amqp.client"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
