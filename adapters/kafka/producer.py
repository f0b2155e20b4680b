"""One Kafka record of a flow, produced with ``acks=all`` and awaited until the partition's leader and its
in-sync replicas have it (aiokafka).

Why a producer per record and the idempotent producer: a flow's ledger records each record's outcome before
the next is sent, so there is nothing to batch; the idempotent producer (``enable_idempotence``) makes the
client's own retries of a request (a lost answer within the session) write once. It does not make a second
session's send of the same record write once: Kafka has no message id it deduplicates on across producers,
so a record sent again after a lost answer may be stored twice unless consumers drop repeats by the
``message-id`` header (the hub's idempotency key). Failures say whether anything left the host:
:class:`~hub.errors.DeliveryFailed` (no connection, the topic unknown, refused) or
:class:`~hub.errors.DeliveryUnknown` (sent, no acknowledgement).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from adapters.kafka.config import KafkaSystemConfig
from hub.errors import DeliveryFailed, DeliveryUnknown


def producer_options(system: KafkaSystemConfig, *, timeout: float) -> dict[str, Any]:
    """The AIOKafkaProducer settings of a flow's producer (acks from every in-sync replica, idempotent)."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": list(system.bootstrap_servers), "client_id": system.client_id, "acks": "all",
        "enable_idempotence": True, "request_timeout_ms": int(timeout * 1000),
        "security_protocol": system.security_protocol,
    }
    if system.tls is not None:
        kwargs["ssl_context"] = system.tls.context(field="tls")
    if system.sasl is not None:
        kwargs.update(sasl_mechanism=system.sasl.mechanism, sasl_plain_username=system.sasl.username,
                      sasl_plain_password=system.sasl.password)
    return kwargs


async def produce(system: KafkaSystemConfig, topic: str, value: bytes, *, key: bytes | None = None,
                  headers: dict[str, str] | None = None, timeout: float = 30.0) -> dict[str, Any]:
    """Produce one record to *topic*; its partition and offset once every in-sync replica has it."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaError, KafkaTimeoutError, RequestTimedOutError, UnknownTopicOrPartitionError

    where = f"kafka {', '.join(system.bootstrap_servers)} topic {topic}"
    producer = AIOKafkaProducer(**producer_options(system, timeout=timeout))
    try:
        await asyncio.wait_for(producer.start(), system.connect_timeout)
    except (KafkaError, OSError, TimeoutError) as exc:
        with contextlib.suppress(Exception):
            await producer.stop()
        raise DeliveryFailed(f"{where}: cannot connect ({type(exc).__name__}: {exc}); nothing was sent",
                             retryable=True) from None
    try:
        try:
            meta = await producer.send_and_wait(topic, value, key=key, headers=[
                (k, v.encode()) for k, v in (headers or {}).items()])
        except UnknownTopicOrPartitionError:
            raise DeliveryFailed(f"{where}: the topic does not exist; nothing was stored") from None
        except (KafkaTimeoutError, RequestTimedOutError, TimeoutError, OSError) as exc:
            raise DeliveryUnknown(f"{where}: no acknowledgement ({type(exc).__name__}: {exc}); the record may "
                                  "have been stored") from None
        except KafkaError as exc:
            if getattr(exc, "retriable", False):  # a broker's transient answer after the request went out
                raise DeliveryUnknown(f"{where}: {type(exc).__name__}: {exc}; the record may have been stored") \
                    from None
            raise DeliveryFailed(f"{where}: refused ({type(exc).__name__}: {exc})") from None
        return {"topic": meta.topic, "partition": meta.partition, "offset": meta.offset}
    finally:
        with contextlib.suppress(Exception):
            await producer.stop()
