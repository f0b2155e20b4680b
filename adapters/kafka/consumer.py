"""A Kafka consumer group in the hub's batch shape (:class:`adapters.messages.Consumer`), on aiokafka.

Why the offsets are kept here: Kafka acknowledges by committing an offset per partition, and an offset
commits *everything before it*. Committing what was fetched (auto-commit, or the community Dagster sensor's
commit before the run exists) loses messages on a crash. :class:`OffsetBook` records every offset handed
out, in order, per partition; :meth:`Message.ack` marks one; the committable offset of a partition is the one
after the longest run of acknowledged offsets from its start (offsets are not contiguous: compaction and
transaction markers leave gaps, so the run is over the offsets received, not over integers). Commits happen
at the next :meth:`KafkaConsumer.fetch`, on a rebalance (for the partitions leaving) and on close.

Kafka redelivers nothing by itself: :meth:`Message.nak` rewinds its partition to the message (after the
delay), so it and everything after it in that partition come again; :meth:`Message.term` counts as handled
(the hub dead-lettered it). ``id`` is ``topic/partition/offset``, ``key`` the record key (UTF-8, else hex),
``attempts`` the deliveries this consumer has seen of the offset, ``timestamp`` the record's timestamp.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from adapters._brokers import Reconnects, event_type
from adapters.kafka.config import KafkaSourceConfig, KafkaSystemConfig
from adapters.messages import Message
from hub.errors import TransportError

log = logging.getLogger(__name__)

#: (topic, partition)
Partition = tuple[str, int]
_ATTEMPTS_LIMIT = 100_000


@dataclass
class _Track:
    """The offsets of one partition handed out and not yet committed, in order, and which are acked."""

    pending: deque[int] = field(default_factory=deque)
    acked: set[int] = field(default_factory=set)
    committed: int | None = None  # the next offset to read according to the last commit


class OffsetBook:
    """Which offset of each partition may be committed: the one after the longest run of acknowledged
    offsets, counted over the offsets actually received (without a broker: unit-tested on its own)."""

    def __init__(self) -> None:
        self._tracks: dict[Partition, _Track] = {}
        self._retry: dict[Partition, int] = {}

    def received(self, tp: Partition, offset: int) -> None:
        track = self._tracks.setdefault(tp, _Track())
        if track.pending and offset <= track.pending[-1]:  # the partition was rewound: it is read again
            self.forget_from(tp, offset)
        track.pending.append(offset)

    def ack(self, tp: Partition, offset: int) -> bool:
        """Mark *offset* handled; False when the book no longer tracks it (revoked, rewound, committed)."""
        track = self._tracks.get(tp)
        if track is None or offset not in track.pending:
            return False
        track.acked.add(offset)
        return True

    def committable(self) -> dict[Partition, int]:
        """Per partition, the offset to commit (last acked of the leading run + 1) where it moved on."""
        out: dict[Partition, int] = {}
        for tp, track in self._tracks.items():
            last = None
            while track.pending and track.pending[0] in track.acked:
                last = track.pending.popleft()
                track.acked.discard(last)
            if last is not None:
                track.committed = last + 1
                out[tp] = last + 1
        return out

    def uncommit(self, offsets: dict[Partition, int]) -> None:
        """A commit of *offsets* (from :meth:`committable`) failed: it is retried with the next one (a later
        commit covers it, since a partition's commit includes everything before)."""
        for tp, offset in offsets.items():
            self._retry[tp] = max(offset, self._retry.get(tp, offset))

    def take_retry(self) -> dict[Partition, int]:
        """The offsets of failed commits, to send again (and forgets them)."""
        retry, self._retry = self._retry, {}
        return retry

    def forget_from(self, tp: Partition, offset: int) -> None:
        """The partition is rewound to *offset*: what was handed out from there on comes again."""
        track = self._tracks.get(tp)
        if track is None:
            return
        while track.pending and track.pending[-1] >= offset:
            track.acked.discard(track.pending.pop())

    def forget(self, tps: Iterable[Partition]) -> None:
        """The partitions left this consumer (rebalance): their unacked messages go to the new owner."""
        for tp in tps:
            self._tracks.pop(tp, None)

    def outstanding(self) -> int:
        """Messages handed out and not yet committable."""
        return sum(len(t.pending) for t in self._tracks.values())


class KafkaConsumer:
    """``async with KafkaConsumer(system, source) as c: msgs = await c.fetch(500, 1.0)``; *name* names the
    source in messages."""

    def __init__(self, system: KafkaSystemConfig, source: KafkaSourceConfig, *, name: str = "kafka") -> None:
        self.system, self.source, self.name = system, source, name
        self.book = OffsetBook()
        self._consumer: Any = None
        self._rewind: dict[Partition, tuple[int, float]] = {}
        self._attempts: OrderedDict[tuple[Partition, int], int] = OrderedDict()
        self._reconnects = Reconnects(system.retries)
        self._assigned: set[Partition] = set()
        self._positions: dict[Partition, int] = {}  # the next offset to read, from the last fetch

    @property
    def where(self) -> str:
        return f"kafka {', '.join(self.system.bootstrap_servers)} group {self.source.group_id}"

    def _build(self) -> Any:
        from aiokafka import AIOKafkaConsumer

        sys, src = self.system, self.source
        kwargs: dict[str, Any] = {
            "bootstrap_servers": list(sys.bootstrap_servers), "client_id": sys.client_id, "group_id": src.group_id,
            "enable_auto_commit": False, "auto_offset_reset": src.auto_offset_reset,
            "max_poll_records": src.max_poll_records, "session_timeout_ms": int(src.session_timeout * 1000),
            "heartbeat_interval_ms": max(int(src.session_timeout * 1000 / 3), 100),
            "request_timeout_ms": int(max(sys.connect_timeout, src.session_timeout + 5) * 1000),
            "isolation_level": src.isolation_level, "security_protocol": sys.security_protocol,
        }
        if sys.tls is not None:
            kwargs["ssl_context"] = sys.tls.context(field="tls")
        if sys.sasl is not None:
            kwargs.update(sasl_mechanism=sys.sasl.mechanism, sasl_plain_username=sys.sasl.username,
                          sasl_plain_password=sys.sasl.password)
        return AIOKafkaConsumer(**kwargs)

    async def _open(self) -> None:
        from aiokafka import ConsumerRebalanceListener
        from aiokafka.errors import KafkaError

        book, owner = self.book, self

        class Listener(ConsumerRebalanceListener):
            async def on_partitions_revoked(self, revoked: Any) -> None:
                await owner._commit()  # what is already acknowledged stays done
                gone = [(tp.topic, tp.partition) for tp in revoked]
                book.forget(gone)
                for tp in gone:
                    owner._positions.pop(tp, None)
                owner._assigned.difference_update(gone)

            async def on_partitions_assigned(self, assigned: Any) -> None:
                owner._assigned.update((tp.topic, tp.partition) for tp in assigned)

        while True:
            consumer = self._build()
            try:
                await asyncio.wait_for(consumer.start(), self.system.connect_timeout)
                consumer.subscribe(list(self.source.topics), listener=Listener())
                self._consumer = consumer
                self._reconnects.succeeded()
                return
            except (KafkaError, OSError, TimeoutError) as exc:
                with contextlib.suppress(Exception):
                    await consumer.stop()
                log.info("kafka %s: cannot reach %s (%s); retrying", self.name, self.where, exc)
                if not await self._reconnects.failed():
                    raise TransportError(f"sources.{self.name}: cannot reach {self.where} after "
                                         f"{self._reconnects.policy.max_retries} retries: {exc}") from None

    async def __aenter__(self) -> KafkaConsumer:
        await self._open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Commit what was acknowledged, then leave the group (its partitions go to the others)."""
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self._commit()
            with contextlib.suppress(Exception):
                await self._consumer.stop()
            self._consumer = None

    async def _commit(self) -> None:
        from aiokafka.structs import OffsetAndMetadata, TopicPartition

        offsets = {**self.book.take_retry(), **self.book.committable()}
        if not offsets or self._consumer is None:
            return
        try:
            await self._consumer.commit({TopicPartition(t, p): OffsetAndMetadata(o, "")
                                         for (t, p), o in offsets.items()})
        except Exception as exc:  # the next commit covers these offsets; nothing is lost, some may come again
            self.book.uncommit({tp: o for tp, o in offsets.items() if tp in self._assigned})
            log.warning("kafka %s: offset commit failed (%s); retried with the next batch", self.name, exc)

    async def fetch(self, max_messages: int, timeout: float) -> list[Message]:
        """Commit what is acknowledged, apply rewinds (naks) that are due, then up to *max_messages* records
        within *timeout* seconds."""
        from aiokafka.errors import KafkaError
        from aiokafka.structs import TopicPartition

        if self._consumer is None:
            await self._open()
        await self._commit()
        now = asyncio.get_running_loop().time()
        for tp, (offset, due) in list(self._rewind.items()):
            if due <= now and tp in self._assigned:
                self._consumer.seek(TopicPartition(*tp), offset)
                self._positions[tp] = offset
                del self._rewind[tp]
        try:
            batches = await self._consumer.getmany(timeout_ms=int(timeout * 1000), max_records=max_messages)
        except KafkaError as exc:
            raise TransportError(f"sources.{self.name}: {self.where}: {type(exc).__name__}: {exc}") from None
        out: list[Message] = []
        for tp, records in batches.items():
            key = (tp.topic, tp.partition)
            if key in self._rewind:  # fetched before the rewind is applied: they come again after it
                continue
            for record in records:
                self.book.received(key, record.offset)
                self._positions[key] = record.offset + 1
                out.append(self._wrap(key, record))
        return out

    def lag(self) -> int | None:
        """Records in the assigned partitions past this consumer's position (from the last fetch)."""
        if self._consumer is None:
            return None
        from aiokafka.structs import TopicPartition

        total, known = 0, False
        for t, p in self._assigned:
            high, pos = self._consumer.highwater(TopicPartition(t, p)), self._positions.get((t, p))
            if high is not None and pos is not None:
                total, known = total + max(high - pos, 0), True
        return total if known else None

    def _wrap(self, tp: Partition, record: Any) -> Message:
        headers = {k: v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                   for k, v in (record.headers or ())}
        key = record.key
        if isinstance(key, bytes):
            try:
                key = key.decode("utf-8")
            except UnicodeDecodeError:
                key = key.hex()
        slot = (tp, record.offset)
        attempts = self._attempts.pop(slot, 0) + 1
        self._attempts[slot] = attempts
        if len(self._attempts) > _ATTEMPTS_LIMIT:
            self._attempts.popitem(last=False)
        offset = record.offset
        stamp = datetime.fromtimestamp(record.timestamp / 1000, UTC) if record.timestamp is not None else None

        async def ack() -> None:
            self.book.ack(tp, offset)  # False: the partition moved to another consumer, which reads it again

        async def nak(delay: float | None = None) -> None:
            due = asyncio.get_running_loop().time() + (delay or 0.0)
            current = self._rewind.get(tp)
            if current is None or offset < current[0]:
                self._rewind[tp] = (offset, due if current is None else min(due, current[1]))
            self.book.forget_from(tp, offset)

        return Message(payload=record.value or b"", stream=record.topic, id=f"{tp[0]}/{tp[1]}/{offset}", key=key,
                       type=event_type(headers), headers=headers, timestamp=stamp, attempts=attempts,
                       _ack=ack, _nak=nak, _term=ack)
