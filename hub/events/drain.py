"""One bounded drain of a stream source into the event store: what a Dagster sensor tick does.

Fetch up to *max_messages* (in batches), append each batch in one store transaction, then acknowledge it,
exactly as ``hub listen`` does, and close the consumer. Broker-neutral: the consumer comes from the
source's protocol (:meth:`hub.protocols.Protocol.stream`)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from adapters.messages import Message
from hub.errors import TransportError
from hub.events.payloads import PayloadReader
from hub.events.store import EventStore, open_store
from hub.spec.loader import Pipeline


@dataclass
class Drained:
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    dead: int = 0
    lag: int | None = None  # broker backlog after the drain, when the broker says


async def acknowledge(messages: list[Message], outcomes: list[str]) -> None:
    """Tell the broker each stored message is handled (``term`` for a dead letter, so it never comes back),
    after the store's commit. A :class:`~hub.errors.TransportError` (the connection that delivered them is
    gone) stops at the first failure: unacknowledged messages are redelivered and dropped as duplicates."""
    for message, outcome in zip(messages, outcomes, strict=True):
        await (message.term() if outcome == "dead" else message.ack())


async def drain(pipeline: Pipeline, name: str, *, max_messages: int = 5_000, batch: int = 500,
                timeout: float = 1.0, budget: float = 20.0, store: EventStore | None = None) -> Drained:
    """Drain at most *max_messages* within *budget* seconds; stops early when a fetch returns nothing."""
    source = pipeline.sources[name]
    assert source.stream is not None
    reader = PayloadReader(source.stream, f"sources.{name}")
    store = store or open_store(pipeline.warehouse_url, pipeline.root)
    out = Drained()
    started = time.monotonic()
    async with source.protocol.stream(pipeline, source) as consumer:
        while out.received < max_messages and time.monotonic() - started < budget:
            messages = await consumer.fetch(min(batch, max_messages - out.received), timeout)
            out.lag = consumer.lag()
            if not messages:
                break
            appended = await asyncio.to_thread(store.append, name, [reader.incoming(m) for m in messages])
            out.received += len(messages)
            out.stored += appended.count("stored")
            out.duplicates += appended.count("duplicate")
            out.dead += appended.count("dead")
            try:
                await acknowledge(messages, appended.outcomes)  # only after the commit
            except TransportError:
                break  # stored; the unacknowledged come back on the next tick and are dropped as duplicates
    return out
