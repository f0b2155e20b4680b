"""NATS JetStream adapter (nats-py): durable pull consumers whose configuration the spec owns, fetched in
batches and acknowledged only when the hub says (:mod:`adapters.messages`)."""

from typing import TYPE_CHECKING, Any

from adapters.nats.config import DEFAULT_MAX_DELIVER, NatsPublishTarget, NatsSourceConfig, NatsSystemConfig

if TYPE_CHECKING:
    from adapters.nats.consumer import NatsConsumer, connect, publish

__all__ = ["DEFAULT_MAX_DELIVER", "NatsConsumer", "NatsPublishTarget", "NatsSourceConfig", "NatsSystemConfig",
           "connect", "publish"]


#: The client library is imported on first use of these names, not when the registry loads the plugin
#: (every ``hub`` command loads the registry; most never consume messages).
_LAZY = {"NatsConsumer": "adapters.nats.consumer", "connect": "adapters.nats.consumer",
         "publish": "adapters.nats.consumer"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
