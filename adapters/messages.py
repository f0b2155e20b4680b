"""What every message-broker adapter hands the hub: received messages and a pull-batch consumer.

The hub's event store must commit a message before the broker is told it was handled (ack after commit),
so adapters never acknowledge on their own. Every broker client (AMQP, NATS JetStream, MQTT, Kafka) is
wrapped to the same shape: :meth:`Consumer.fetch` returns up to *max_messages* received messages (waiting
at most *timeout* seconds for the first), the caller appends them to the store and commits, then calls
:meth:`Message.ack` (or :meth:`Message.nak` / :meth:`Message.term`) on each. An adapter reconnects and
re-subscribes by itself inside :meth:`Consumer.fetch` after a broker restart or a cut connection; messages
received before the cut and not acknowledged are redelivered by the broker, and the store drops them by
``(source, message id)``. Flow control is the adapter's prefetch bound: nothing beyond it is received until
the caller acknowledges.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


async def _noop(delay: float | None = None) -> None:
    return None


@dataclass
class Message:
    """One received message, before it is acknowledged.

    *id* is the broker's message id when it has one (AMQP ``message_id``, NATS ``Nats-Msg-Id``, the MQTT 5
    correlation data or user property, Kafka ``topic/partition/offset``); the hub may instead read the id
    from a path in the payload. *attempts* counts deliveries of this message (1 on the first) where the
    broker says (AMQP quorum ``x-delivery-count`` + 1, JetStream ``num_delivered``, MQTT's dup flag gives
    only "at least 2"); *stream* is where it came from (queue, subject, topic)."""

    payload: bytes
    stream: str
    id: str | None = None
    key: str | None = None
    type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    timestamp: datetime | None = None
    attempts: int = 1
    _ack: Callable[[], Awaitable[None]] = field(default=_noop, repr=False)
    _nak: Callable[[float | None], Awaitable[None]] = field(default=_noop, repr=False)
    _term: Callable[[], Awaitable[None]] = field(default=_noop, repr=False)

    async def ack(self) -> None:
        """The message is durably handled: the broker may forget it."""
        await self._ack()

    async def nak(self, delay: float | None = None) -> None:
        """Not handled: redeliver (after *delay* seconds where the broker supports it)."""
        await self._nak(delay)

    async def term(self) -> None:
        """Never redeliver (the hub has dead-lettered it)."""
        await self._term()


class Consumer(Protocol):
    """A broker subscription, opened with ``async with`` and pulled in batches."""

    async def __aenter__(self) -> Consumer: ...

    async def __aexit__(self, *exc: object) -> None: ...

    async def fetch(self, max_messages: int, timeout: float) -> list[Message]:
        """Up to *max_messages* messages; an empty list when none arrived within *timeout* seconds."""
        ...

    def lag(self) -> int | None:
        """Messages waiting on the broker for this consumer, when the broker says (None: unknown)."""
        ...
