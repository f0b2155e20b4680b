"""AMQP 0-9-1 (RabbitMQ) consumers in the shape of :mod:`adapters.messages`: manual acks after the
hub's store commits, bounded prefetch, reconnect and re-subscribe inside ``fetch``."""

from typing import TYPE_CHECKING

from adapters.amqp.config import AmqpPublishTarget, AmqpSourceConfig, AmqpSystemConfig, Unroutable
from hub.runtime.lazy import lazy

if TYPE_CHECKING:
    from adapters.amqp.client import AmqpConsumer, publish

__all__ = ["AmqpConsumer", "AmqpPublishTarget", "AmqpSourceConfig", "AmqpSystemConfig", "Unroutable", "publish"]


#: The client library loads on first use of these names (hub.runtime.lazy), not with the registry.
_LAZY = {"AmqpConsumer": "adapters.amqp.client", "publish": "adapters.amqp.client"}

__getattr__ = lazy(__name__, _LAZY)
