"""NATS JetStream adapter (nats-py): durable pull consumers whose configuration the spec owns, fetched in
batches and acknowledged only when the hub says (:mod:`adapters.messages`)."""

from typing import TYPE_CHECKING

from adapters.nats.config import DEFAULT_MAX_DELIVER, NatsPublishTarget, NatsSourceConfig, NatsSystemConfig
from hub.runtime.lazy import lazy

if TYPE_CHECKING:
    from adapters.nats.consumer import NatsConsumer, connect, publish, send

__all__ = ["DEFAULT_MAX_DELIVER", "NatsConsumer", "NatsPublishTarget", "NatsSourceConfig", "NatsSystemConfig",
           "connect", "publish", "send"]


#: The client library loads on first use of these names (hub.runtime.lazy), not with the registry.
_LAZY = {"NatsConsumer": "adapters.nats.consumer", "connect": "adapters.nats.consumer",
         "publish": "adapters.nats.consumer", "send": "adapters.nats.consumer"}

__getattr__ = lazy(__name__, _LAZY)
