"""What the broker adapters (NATS JetStream, MQTT, Kafka) share besides :mod:`adapters.messages`.

Reconnecting is the same decision everywhere: a consumer that lost its connection tries again with the
system's retry policy (``retries:`` of the system block, :class:`hub.runtime.settings.BrokerSettings`) and
raises :class:`hub.errors.TransportError` once the budget is spent. The event type of a message is read from
the headers the usual producers set (a ``type`` header, CloudEvents' ``ce-type`` / ``ce_type``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from hub.runtime.retry import RetryConfig, RetryPolicy

#: Header names that carry a message's event type, in the order they are looked up.
TYPE_HEADERS = ("type", "ce-type", "ce_type", "ce-Type")


def event_type(headers: Mapping[str, str]) -> str | None:
    """The event type a producer put in the headers (``type``, CloudEvents ``ce-type``), else None."""
    for name in TYPE_HEADERS:
        value = headers.get(name)
        if value:
            return value
    lowered = {k.lower(): v for k, v in headers.items()}
    for name in TYPE_HEADERS:
        value = lowered.get(name.lower())
        if value:
            return value
    return None


class Reconnects:
    """Counts consecutive failed connection attempts of one consumer and sleeps between them.

    :meth:`failed` returns False once the system's ``retries.max`` is spent (the caller then raises
    :class:`~hub.errors.TransportError` with the last error); :meth:`succeeded` starts the count again."""

    def __init__(self, config: RetryConfig) -> None:
        self.policy = RetryPolicy.from_config(config)
        self.attempt = 0
        self.connections = 0  # connections made over the consumer's life

    async def failed(self) -> bool:
        self.attempt += 1
        if self.attempt > self.policy.max_retries:
            return False
        await asyncio.sleep(self.policy.delay(self.attempt))
        return True

    def succeeded(self) -> None:
        self.connections += 1
        self.attempt = 0

    @property
    def total(self) -> int:
        """Connections made again after the first (for progress output and health)."""
        return max(self.connections - 1, 0)
