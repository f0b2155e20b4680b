"""NATS JetStream adapter (nats-py): durable pull consumers whose configuration the spec owns, fetched in
batches and acknowledged only when the hub says (:mod:`adapters.messages`)."""

from adapters.nats.config import NatsSourceConfig, NatsSystemConfig
from adapters.nats.consumer import DEFAULT_MAX_DELIVER, NatsConsumer

__all__ = ["DEFAULT_MAX_DELIVER", "NatsConsumer", "NatsSourceConfig", "NatsSystemConfig"]
