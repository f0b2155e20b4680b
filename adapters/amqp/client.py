"""An AMQP 0-9-1 consumer (aio-pika) in the pull-batch shape of :class:`adapters.messages.Consumer`.

* **Manual acks**: a delivery is acknowledged only when the hub calls :meth:`Message.ack` (after its
  store committed); ``nak`` requeues, ``term`` rejects without requeue (to the queue's dead-letter
  exchange, if it has one).
* **Bounded prefetch**: ``basic.qos(prefetch)``; nothing beyond it arrives until the hub acknowledges.
* **Reconnect and re-subscribe**: aio-pika's robust connection reconnects but does not restore consumers
  by itself, and acks of deliveries from a dead channel fail. So the consumer keeps a plain connection and
  rebuilds everything (connection, channel, qos, declarations, ``basic.consume``) inside :meth:`fetch`
  when the connection was lost. Deliveries received on the old channel are dropped from the inbox and
  their acks become no-ops: the broker redelivers them (flagged ``redelivered`` / ``x-delivery-count``),
  and the store drops what it already has by message id.
* **Delivery counts**: a quorum queue says how often a message was delivered (``x-delivery-count``);
  ``attempts`` is that plus one. A classic queue only says "redelivered" (attempts 2).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from datetime import UTC, datetime
from typing import Any

import aio_pika
import pamqp.commands
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue

from adapters.amqp.config import AmqpSourceConfig, AmqpSystemConfig, Unroutable
from adapters.messages import Message
from hub.errors import TransportError
from hub.runtime.retry import RetryPolicy
from hub.runtime.secrets import mask_url

log = logging.getLogger("adapters.amqp")
#: Seconds between two refreshes of the queue's backlog (a passive declare).
LAG_EVERY = 5.0
_Inbox = asyncio.Queue[tuple[int, AbstractIncomingMessage]]


def _ssl_context(system: AmqpSystemConfig) -> ssl.SSLContext | None:
    if not system.url.startswith("amqps://"):
        return None
    if system.verify is False:
        raise TransportError("amqps: TLS verification cannot be turned off (give a CA bundle path in verify)")
    ctx = ssl.create_default_context(cafile=system.verify if isinstance(system.verify, str) else None)
    if system.cert and system.key:
        ctx.load_cert_chain(system.cert, system.key)
    return ctx


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


class AmqpConsumer:
    """One queue of one broker, consumed with manual acknowledgements. Open with ``async with``."""

    def __init__(self, system: AmqpSystemConfig, source: AmqpSourceConfig, *, name: str,
                 system_name: str = "amqp") -> None:
        self.system, self.source, self.name, self.system_name = system, source, name, system_name
        self.queue_name = source.queue or f"hub.{name}"
        self.url = mask_url(system.url)
        self.connected = False
        self.reconnects = 0
        self._conn: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._inbox: _Inbox = asyncio.Queue()
        self._generation = 0
        self._lost: BaseException | None = None
        self._lag: int | None = None
        self._lag_at = 0.0
        self._failures = 0
        self._policy = RetryPolicy.from_config(system.retries)

    async def __aenter__(self) -> AmqpConsumer:
        try:
            await self._subscribe()
        except Exception as exc:
            await self._drop()
            raise TransportError(f"{self.system_name}: cannot consume {self.queue_name} on {self.url}: "
                                 f"{_describe(exc)}") from None
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._drop()

    # -- the Consumer shape ---------------------------------------------------------------------------

    async def fetch(self, max_messages: int, timeout: float) -> list[Message]:
        """Up to *max_messages* deliveries, waiting at most *timeout* seconds for the first. After a lost
        connection, reconnects and re-subscribes first (one attempt per call, paced by the system's
        ``retries`` backoff), returning nothing while the broker cannot be reached."""
        if (not self.connected or self._lost is not None) and not await self._reconnect(timeout):
            return []
        out: list[Message] = []
        deadline = time.monotonic() + timeout
        while len(out) < max_messages:
            try:
                if out:
                    generation, incoming = self._inbox.get_nowait()
                else:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    generation, incoming = await asyncio.wait_for(self._inbox.get(), left)
            except (asyncio.QueueEmpty, TimeoutError):
                break
            if generation == self._generation:  # deliveries of a dead channel are redelivered by the broker
                out.append(self._message(incoming, generation))
        await self._refresh_lag(force=not out)  # idle: the backlog is worth knowing now
        return out

    def lag(self) -> int | None:
        """Ready messages in the queue at the last check (at most :data:`LAG_EVERY` seconds old, and fresh
        after a fetch that found nothing)."""
        return self._lag

    # -- connection -----------------------------------------------------------------------------------

    async def _subscribe(self) -> None:
        self._lost = None
        self._conn = await aio_pika.connect(self.system.url, ssl_context=_ssl_context(self.system),
                                            timeout=self.system.connect_timeout,
                                            client_properties={"connection_name": f"hub {self.name}"},
                                            heartbeat=self.system.heartbeat)
        self._conn.close_callbacks.add(self._on_close)
        self._channel = await self._conn.channel(publisher_confirms=False)
        self._channel.close_callbacks.add(self._on_close)
        await self._channel.set_qos(prefetch_count=self.system.prefetch)
        self._queue = await self._declare(self._channel)
        self._generation += 1
        self._inbox = asyncio.Queue()
        generation = self._generation

        async def on_message(incoming: AbstractIncomingMessage) -> None:
            await self._inbox.put((generation, incoming))

        await self._queue.consume(on_message, no_ack=False)
        self.connected = True
        self._failures = 0
        self._lag_at = 0.0

    async def _declare(self, channel: AbstractChannel) -> AbstractQueue:
        src = self.source
        if not src.declare:
            return await channel.get_queue(self.queue_name, ensure=True)
        args: dict[str, Any] = {"x-queue-type": src.queue_type}
        if src.delivery_limit is not None:
            args["x-delivery-limit"] = src.delivery_limit
        queue = await channel.declare_queue(self.queue_name, durable=True, arguments=args)
        if src.exchange:
            exchange = await channel.declare_exchange(src.exchange, src.exchange_type, durable=True)
            await queue.bind(exchange, routing_key=src.binding_key)
        return queue

    def _on_close(self, sender: Any, exc: BaseException | None = None) -> None:
        if self.connected:
            log.warning("%s: connection to %s lost (%s); reconnecting", self.name, self.url, _describe(exc))
        self.connected = False
        self._lost = exc or ConnectionError("closed")

    async def _reconnect(self, timeout: float) -> bool:
        await self._drop()
        try:
            await self._subscribe()
        except Exception as exc:
            self._failures += 1
            await self._drop()
            wait = min(self._policy.delay(self._failures), max(timeout, 0.1))
            log.warning("%s: cannot reconnect to %s (%s); next try in %.1fs", self.name, self.url,
                        _describe(exc), wait)
            await asyncio.sleep(wait)
            return False
        self.reconnects += 1
        log.info("%s: re-subscribed to %s on %s", self.name, self.queue_name, self.url)
        return True

    async def _drop(self) -> None:
        self.connected = False
        self._generation += 1  # whatever the old channel delivered is redelivered by the broker
        conn, self._conn, self._channel, self._queue = self._conn, None, None, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close_callbacks.discard(self._on_close)
                await asyncio.wait_for(conn.close(), 5)

    async def _refresh_lag(self, force: bool = False) -> None:
        if self._channel is None or (not force and time.monotonic() - self._lag_at < LAG_EVERY):
            return
        self._lag_at = time.monotonic()
        try:
            queue = await self._channel.declare_queue(self.queue_name, passive=True)
            self._lag = queue.declaration_result.message_count
        except Exception as exc:  # a lost connection shows in the next fetch
            log.debug("%s: backlog unknown: %s", self.name, _describe(exc))

    # -- messages -------------------------------------------------------------------------------------

    def _message(self, incoming: AbstractIncomingMessage, generation: int) -> Message:
        raw = dict(incoming.headers or {})
        headers = {str(k): _text(v) for k, v in raw.items()}
        count = raw.get("x-delivery-count")
        attempts = int(count) + 1 if isinstance(count, int) else (2 if incoming.redelivered else 1)
        key = headers.get(self.source.key_header) if self.source.key_header else incoming.routing_key
        stamp = incoming.timestamp
        if stamp is not None and stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=UTC)

        async def settle(action: str, requeue: bool = True) -> None:
            if generation != self._generation:
                return  # the channel it came on is gone: the broker redelivers it
            try:
                if action == "ack":
                    await incoming.ack()
                elif action == "ack_multiple":  # every delivery of this channel up to this one
                    await incoming.ack(multiple=True)
                elif action == "nack":
                    await incoming.nack(requeue=requeue)
                else:
                    await incoming.reject(requeue=False)
            except Exception as exc:  # a dead channel: redelivered, and the store drops the duplicate
                log.debug("%s: %s of delivery %s failed: %s", self.name, action, incoming.delivery_tag,
                          _describe(exc))

        async def ack() -> None:
            await settle("ack")

        async def ack_through() -> None:
            await settle("ack_multiple")

        async def nak(delay: float | None = None) -> None:
            await settle("nack")

        async def term() -> None:
            await settle("reject", requeue=False)

        return Message(payload=incoming.body, stream=self.queue_name, id=incoming.message_id or None, key=key,
                       type=incoming.type or None, headers=headers, timestamp=stamp, attempts=attempts,
                       _ack=ack, _nak=nak, _term=term, _ack_through=ack_through)


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "closed"
    text = str(exc) or type(exc).__name__
    return mask_url(text) if "://" in text else text


async def publish(url: str, routing_key: str, bodies: list[bytes], *, exchange: str = "",
                  message_ids: list[str | None] | None = None, headers: dict[str, Any] | None = None,
                  type: str | None = None, system: AmqpSystemConfig | None = None, mandatory: bool = False) -> None:
    """Publish *bodies* persistently with publisher confirms (the hub's own events, tests, the demo, flows):
    each ``await`` returns once the broker has the message. *system* gives TLS settings and timeouts.

    With *mandatory* a message no queue is bound to receive raises :class:`Unroutable`: the broker confirms
    such a message (it "has" it) and drops it, which a flow must not record as delivered. The hub's own
    events keep the broker's default (an exchange nobody listens to yet is not an error)."""
    conn = await (aio_pika.connect(url) if system is None else
                  aio_pika.connect(url, ssl_context=_ssl_context(system), timeout=system.connect_timeout))
    async with conn:
        channel = await conn.channel(publisher_confirms=True)
        target = await channel.get_exchange(exchange) if exchange else channel.default_exchange
        ids = message_ids or [None] * len(bodies)
        for body, mid in zip(bodies, ids, strict=True):
            answer = await target.publish(aio_pika.Message(body, message_id=mid, headers=headers, type=type,
                                                           timestamp=datetime.now(UTC),
                                                           delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                                          routing_key=routing_key, mandatory=mandatory)
            if mandatory and isinstance(getattr(answer, "delivery", None), pamqp.commands.Basic.Return):
                raise Unroutable(f"exchange {exchange or '(default)'} routing key {routing_key}: no queue is bound "
                                 "to receive the message; the broker returned it (nothing was delivered)")
