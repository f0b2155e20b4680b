"""AMQP 0-9-1 (RabbitMQ) consumers in the shape of :mod:`adapters.messages`: manual acks after the
hub's store commits, bounded prefetch, reconnect and re-subscribe inside ``fetch``."""

from adapters.amqp.client import AmqpConsumer, publish
from adapters.amqp.config import AmqpSourceConfig, AmqpSystemConfig

__all__ = ["AmqpConsumer", "AmqpSourceConfig", "AmqpSystemConfig", "publish"]
