"""One bounded drain of a stream source into the event store: what a Dagster sensor tick does.

Fetch up to *max_messages* (in batches), append each batch in one store transaction, then acknowledge it,
exactly as ``hub listen`` does, and close the consumer. Broker-neutral: the consumer comes from the
source's protocol (:meth:`hub.protocols.Protocol.stream`)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

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
            for message, outcome in zip(messages, appended.outcomes, strict=True):  # only after the commit
                await (message.term() if outcome == "dead" else message.ack())
            out.received += len(messages)
            out.stored += appended.count("stored")
            out.duplicates += appended.count("duplicate")
            out.dead += appended.count("dead")
    return out
