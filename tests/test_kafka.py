"""Kafka adapter: the offset bookkeeping without a broker, and a real consumer group when
``KAFKA_BOOTSTRAP_SERVERS`` names a broker (there is none on this machine; those tests skip)."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from adapters.kafka import KafkaConsumer, KafkaSourceConfig, KafkaSystemConfig, OffsetBook
from adapters.messages import Message

BOOTSTRAP = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
needs_broker = pytest.mark.skipif(not BOOTSTRAP, reason="KAFKA_BOOTSTRAP_SERVERS is not set: no Kafka broker to "
                                                        "test against (the offset bookkeeping is tested without one)")
TP = ("orders", 0)


def test_commit_waits_for_the_leading_run_of_acks() -> None:
    book = OffsetBook()
    for offset in (10, 11, 12, 13):
        book.received(TP, offset)
    assert book.committable() == {}  # nothing acked: nothing committed, a crash re-reads from 10
    book.ack(TP, 11)
    book.ack(TP, 13)
    assert book.committable() == {}  # 10 is not stored yet: committing 12 or 14 would skip it
    book.ack(TP, 10)
    assert book.committable() == {TP: 12}  # 10 and 11; 12 is still open
    assert book.committable() == {}  # nothing moved since
    book.ack(TP, 12)
    assert book.committable() == {TP: 14}
    assert book.outstanding() == 0


def test_offsets_with_gaps_count_what_was_received() -> None:
    """Compaction and transaction markers leave holes: the run is over received offsets, not integers."""
    book = OffsetBook()
    for offset in (3, 7, 8, 20):
        book.received(TP, offset)
    for offset in (3, 7, 8):
        book.ack(TP, offset)
    assert book.committable() == {TP: 9}
    book.ack(TP, 20)
    assert book.committable() == {TP: 21}


def test_partitions_are_independent() -> None:
    book = OffsetBook()
    other = ("orders", 1)
    book.received(TP, 0)
    book.received(other, 0)
    book.received(other, 1)
    book.ack(other, 0)
    book.ack(other, 1)
    assert book.committable() == {other: 2}
    book.ack(TP, 0)
    assert book.committable() == {TP: 1}


def test_rewind_and_revoke_drop_what_comes_again() -> None:
    book = OffsetBook()
    for offset in range(5):
        book.received(TP, offset)
    book.ack(TP, 0)
    book.ack(TP, 3)
    book.forget_from(TP, 2)  # a nak of offset 2: 2, 3, 4 are read again
    assert book.ack(TP, 4) is False  # an ack of a message that comes again is ignored
    book.ack(TP, 1)
    assert book.committable() == {TP: 2}
    for offset in (2, 3, 4):  # re-read after the seek
        book.received(TP, offset)
    book.ack(TP, 2)
    assert book.committable() == {TP: 3}  # 3 was acked before the rewind: that ack was dropped with it
    book.forget([TP])  # a rebalance took the partition away
    assert book.ack(TP, 3) is False and book.committable() == {} and book.outstanding() == 0


def test_failed_commit_is_sent_again() -> None:
    book = OffsetBook()
    book.received(TP, 0)
    book.ack(TP, 0)
    first = book.committable()
    book.uncommit(first)
    assert book.take_retry() == {TP: 1} and book.take_retry() == {}


def test_rewound_offsets_received_again_without_forget() -> None:
    book = OffsetBook()
    for offset in range(3):
        book.received(TP, offset)
    book.received(TP, 1)  # the consumer re-read from 1 (a seek the book was not told about)
    book.ack(TP, 0)
    book.ack(TP, 1)
    assert book.committable() == {TP: 2}


def test_security_protocol_follows_tls_and_sasl() -> None:
    plain = KafkaSystemConfig(bootstrap_servers=["k:9092"])
    sasl = KafkaSystemConfig(bootstrap_servers=["k:9093"], tls={}, sasl={"username": "u", "password": "p"})
    assert (plain.security_protocol, sasl.security_protocol) == ("PLAINTEXT", "SASL_SSL")
    with pytest.raises(ValueError, match="bootstrap_servers"):
        KafkaSystemConfig(bootstrap_servers=[])


# --- a real broker ---------------------------------------------------------------------------------------

def run(factory: Callable[[], Awaitable[Any]], limit: float = 120) -> Any:
    async def main() -> Any:
        return await asyncio.wait_for(factory(), limit)
    return asyncio.run(main())


def consumer(topic: str, group: str) -> KafkaConsumer:
    assert BOOTSTRAP
    return KafkaConsumer(KafkaSystemConfig(bootstrap_servers=BOOTSTRAP.split(","), connect_timeout=20),
                         KafkaSourceConfig(topics=[topic], group_id=group, session_timeout=10), name="events")


async def drain(c: KafkaConsumer, want: int, *, ack: bool = True, limit: float = 30) -> list[Message]:
    got: list[Message] = []
    deadline = time.monotonic() + limit
    while len(got) < want and time.monotonic() < deadline:
        for m in await c.fetch(want - len(got), 1.0):
            if ack:
                await m.ack()
            got.append(m)
    return got


async def produce(topic: str, items: list[tuple[str, str]]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP)
    await producer.start()
    try:
        for key, value in items:
            await producer.send_and_wait(topic, value.encode(), key=key.encode(), headers=[("type", b"order")])
    finally:
        await producer.stop()


@needs_broker
def test_real_broker_commits_only_acked_and_redelivers_the_rest() -> None:
    topic, group = f"hubtest-{uuid.uuid4().hex[:8]}", f"hubtest-{uuid.uuid4().hex[:8]}"

    async def main() -> None:
        await produce(topic, [(f"k{i % 3}", str(i)) for i in range(12)])
        async with consumer(topic, group) as c:
            got = await drain(c, 12, ack=False)
            assert len(got) == 12
            first = got[0]
            assert first.id is not None and first.id.startswith(f"{topic}/") and first.id.endswith("/0")
            assert first.type == "order" and first.key in {"k0", "k1", "k2"} and first.timestamp is not None
            for m in got[:6]:
                await m.ack()
        async with consumer(topic, group) as c:  # the 6 unacked come again; the acked ones do not
            again = await drain(c, 6)
            assert sorted(int(m.payload) for m in again) == sorted(int(m.payload) for m in got[6:])
        async with consumer(topic, group) as c:
            assert await drain(c, 1, limit=5) == []
        per_key: dict[str, list[int]] = {}
        for m in got:
            per_key.setdefault(m.key or "", []).append(int(m.payload))
        assert all(v == sorted(v) for v in per_key.values())
    run(main)


@needs_broker
def test_real_broker_nak_rewinds_with_attempts() -> None:
    topic, group = f"hubtest-{uuid.uuid4().hex[:8]}", f"hubtest-{uuid.uuid4().hex[:8]}"

    async def main() -> None:
        await produce(topic, [("k", "0"), ("k", "1")])
        async with consumer(topic, group) as c:
            a, _b = await drain(c, 2, ack=False)
            await a.nak(0.1)
            again = await drain(c, 2, ack=False)
            assert [(m.payload, m.attempts) for m in again] == [(b"0", 2), (b"1", 2)]
            for m in again:
                await m.ack()
            assert await drain(c, 1, limit=3) == []
    run(main)
