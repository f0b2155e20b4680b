"""A NATS JetStream durable pull consumer in the hub's batch shape (:class:`adapters.messages.Consumer`).

Why the connection is handled here rather than by nats.py's automatic reconnect: nats.py re-sends a
subscription after it reconnects, but not the pull request the server was holding, so a pull subscription
can go silent after a server restart (nats-io/nats.py#504). This consumer therefore turns nats.py's own
reconnect off and, whenever the connection is gone, connects again with the system's retry policy,
applies the consumer configuration again (a restarted server may have lost it, an operator may have edited
it) and binds a fresh pull subscription. Pull requests live on one connection, so no request is ever left
parked on a server that went away.

Why the pull requests are sent here rather than through nats.py's ``PullSubscription.fetch``: that ``fetch``
waits for every message with ``next_msg``, which makes two asyncio tasks and a ``uuid4`` per message — most
of the event loop's time at tens of thousands of messages per second (docs/benchmarks.md). :class:`_Pull`
sends the same JetStream pull requests (``$JS.API.CONSUMER.MSG.NEXT``, first ``no_wait`` for what is
there, then one that waits) to an inbox with a callback subscription, which queues each message with no
task of its own, and wakes the waiting fetch once per request answered. A request is never sent while one
is still open, so at most one batch is on its way besides what the caller holds (``max_ack_pending`` bounds
both anyway).

Message ids: the ``Nats-Msg-Id`` header when the publisher set one (JetStream deduplicates on it too), else
``<stream>/<stream sequence>``, which is the same on every redelivery of the message. ``key`` is the subject
(NATS orders per subject), ``attempts`` JetStream's delivery count, ``timestamp`` the time the stream stored
the message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import api

from adapters._brokers import Reconnects, event_type
from adapters.messages import Message
from adapters.nats.config import DEFAULT_MAX_DELIVER, NatsSourceConfig, NatsSystemConfig
from hub.errors import AdapterError, DeliveryFailed, DeliveryUnknown, TransportError
from hub.runtime.secrets import mask_url
from hub.runtime.settings import TlsSettings

log = logging.getLogger(__name__)

#: Deliveries of one message before JetStream stops (the server's default, -1, redelivers forever).

#: Errors after which the connection is dropped and made again.
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    nats.errors.ConnectionClosedError, nats.errors.NoServersError, nats.errors.StaleConnectionError,
    nats.errors.NoRespondersError, nats.errors.OutboundBufferLimitError, nats.errors.ConnectionReconnectingError,
    nats.errors.FlushTimeoutError, nats.js.errors.ServiceUnavailableError, nats.js.errors.ServerError,
    ConnectionError, OSError, asyncio.TimeoutError,
)

#: JetStream status codes on a pull request's inbox: 100 heartbeat, 404 no messages (``no_wait``), 408 the
#: request expired, 409 a limit (max ack pending, max waiting, batch size) or the consumer went away.
_HEARTBEAT, _ENDS_REQUEST = "100", ("404", "408", "409")
#: 409 descriptions after which the consumer must be applied again (a fresh connection does that).
_GONE = ("consumer deleted", "leadership change", "consumer is push based")

#: Seconds a waiting pull request lives at most: also what closing the consumer may wait for it to end.
_WAIT_REQUEST = 0.5

_DELIVER = {"all": api.DeliverPolicy.ALL, "new": api.DeliverPolicy.NEW, "last": api.DeliverPolicy.LAST,
            "last_per_subject": api.DeliverPolicy.LAST_PER_SUBJECT}


class NatsConsumer:
    """``async with NatsConsumer(system, source) as c: msgs = await c.fetch(100, 1.0)``.

    *max_deliver* is the source's delivery limit (a key every stream source has); *name* names the source
    in messages."""

    def __init__(self, system: NatsSystemConfig, source: NatsSourceConfig, *,
                 max_deliver: int = DEFAULT_MAX_DELIVER, name: str = "nats") -> None:
        if max_deliver < 1:
            raise AdapterError(f"sources.{name}.max_deliver: must be at least 1 (JetStream's -1, forever, is "
                               "what a poison message must not do)")
        if source.backoff and len(source.backoff) >= max_deliver:
            raise AdapterError(f"sources.{name}.backoff: JetStream needs max_deliver ({max_deliver}) greater "
                               f"than the number of backoff steps ({len(source.backoff)})")
        self.system, self.source, self.max_deliver, self.name = system, source, max_deliver, name
        self._nc: Client | None = None
        self._sub: _Pull | None = None
        self._lag: int | None = None
        self._pending_after: int | None = None
        self._reconnects = Reconnects(system.retries)
        self._closing = False

    @property
    def where(self) -> str:
        servers = ", ".join(mask_url(s) for s in self.system.servers)
        return f"{servers} stream {self.source.stream} consumer {self.source.consumer}"

    @property
    def reconnections(self) -> int:
        """Connections made again after a loss, over this consumer's life (for progress output)."""
        return self._reconnects.total

    # --- the consumer's configuration ------------------------------------------------------------------

    def consumer_config(self) -> api.ConsumerConfig:
        """The durable pull consumer the spec describes, explicit in every key the hub relies on."""
        src = self.source
        return api.ConsumerConfig(
            name=src.consumer, durable_name=src.consumer, ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=src.ack_wait, max_deliver=self.max_deliver, backoff=list(src.backoff) if src.backoff else None,
            filter_subject=src.subject, deliver_policy=_DELIVER[src.deliver_policy],
            max_ack_pending=src.max_ack_pending, replay_policy=api.ReplayPolicy.INSTANT)

    async def _apply_config(self, nc: Client) -> api.ConsumerInfo:
        """Create the consumer, or update it when the server's copy differs from the spec."""
        jsm = nc.jsm()
        src, want = self.source, self.consumer_config()
        try:
            await jsm.stream_info(src.stream)
        except nats.js.errors.NotFoundError:
            raise AdapterError(f"sources.{self.name}.stream: no JetStream stream {src.stream} on {self.where} "
                               "(create it with the subjects the publishers use)") from None
        try:
            info = await jsm.consumer_info(src.stream, src.consumer)
        except nats.js.errors.NotFoundError:
            info = None
        if info is not None and not _differs(info.config, want):
            return info
        try:
            return await jsm.add_consumer(src.stream, config=want)
        except nats.js.errors.BadRequestError as exc:
            action = "update" if info is not None else "create"
            raise AdapterError(f"sources.{self.name}: the server refused to {action} consumer {src.consumer} on "
                               f"stream {src.stream}: {exc.description} (a consumer's deliver_policy is fixed once "
                               "it exists: delete the consumer or give the source a new consumer name)") from None

    # --- connection ------------------------------------------------------------------------------------

    async def _connect(self) -> Client:
        return await connect(self.system, self.name, error_cb=self._on_error)

    async def _on_error(self, exc: Exception) -> None:
        if not self._closing:
            log.debug("nats %s: %s", self.name, exc)

    async def _open(self) -> None:
        """Connect, apply the consumer's configuration and bind a pull subscription; retried with the
        system's policy while the server cannot be reached."""
        while True:
            await self._drop()
            try:
                nc = await self._connect()
                self._nc = nc
                info = await self._apply_config(nc)
                self._lag = info.num_pending
                self._sub = await _Pull.start(nc, self.source.stream, self.source.consumer, self.name)
                self._reconnects.succeeded()
                return
            except _CONNECTION_ERRORS as exc:
                log.info("nats %s: cannot reach %s (%s); retrying", self.name, self.where, exc)
                if not await self._reconnects.failed():
                    await self._drop()
                    raise TransportError(f"sources.{self.name}: cannot reach NATS at {self.where} after "
                                         f"{self._reconnects.policy.max_retries} retries: "
                                         f"{type(exc).__name__}: {exc}") from None
            except nats.errors.Error as exc:  # authorization, TLS, a refused request: retrying will not help
                await self._drop()
                raise TransportError(f"sources.{self.name}: NATS at {self.where}: {type(exc).__name__}: "
                                     f"{exc}") from None

    async def _drop(self) -> None:
        nc, self._nc, self._sub = self._nc, None, None
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), 5)

    async def __aenter__(self) -> NatsConsumer:
        await self._open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Acks already sent are flushed before the connection closes; unacked messages are redelivered
        (those received but never returned by :meth:`fetch` are nak'ed, so at once)."""
        self._closing = True
        nc = self._nc
        if nc is not None and nc.is_connected:
            if self._sub is not None:  # delivered but never handed out: back to the stream at once
                await self._sub.settle()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.flush(), 5)
        await self._drop()
        self._closing = False

    # --- the batch shape -------------------------------------------------------------------------------

    async def fetch(self, max_messages: int, timeout: float) -> list[Message]:
        """Up to *max_messages* messages within *timeout* seconds (an empty list when none came). A lost
        connection is made again here, the consumer re-applied and the subscription bound afresh."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self._nc is None or not self._nc.is_connected or self._sub is None or self._sub.gone:
                await self._open()
            assert self._sub is not None
            try:
                msgs = await self._sub.fetch(max_messages, deadline)
            except _CONNECTION_ERRORS as exc:
                log.info("nats %s: connection lost (%s); reconnecting", self.name, exc)
                await self._drop()
                continue
            if msgs:
                out = [self._wrap(m) for m in msgs]
                self._lag = self._pending_after
                return out
            if self._nc is not None and self._nc.is_connected and not self._sub.gone:
                await self._refresh_lag()
                return []
            if loop.time() >= deadline:
                return []
            # the connection went while waiting: connect again within the time left

    async def _refresh_lag(self) -> None:
        with contextlib.suppress(Exception):
            info = await self.info()
            self._lag = info.num_pending

    def lag(self) -> int | None:
        """Messages in the stream that match the consumer and were not delivered yet (num_pending)."""
        return self._lag

    async def info(self) -> api.ConsumerInfo:
        """The consumer as the server has it (its configuration, pending and redelivered counts)."""
        if self._nc is None:
            await self._open()
        assert self._nc is not None
        result: api.ConsumerInfo = await self._nc.jsm().consumer_info(self.source.stream, self.source.consumer)
        return result

    def _wrap(self, msg: Msg) -> Message:
        """The hub's message for a JetStream one, its metadata read straight from the ack subject (nats.py's
        ``Msg.metadata`` builds two dataclasses per message)."""
        tokens = msg.reply.split(".")
        if len(tokens) == 9:  # $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<ns>.<pending>
            stream, delivered, seq, ns, pending = tokens[2], tokens[4], tokens[5], tokens[7], tokens[8]
        elif len(tokens) >= 11 and tokens[0] == "$JS" and tokens[1] == "ACK":  # with domain and account hash
            stream, delivered, seq, ns, pending = (tokens[4], tokens[6], tokens[7], tokens[9], tokens[10])
        else:
            raise AdapterError(f"sources.{self.name}: message on {msg.subject} is not a JetStream delivery "
                               f"(reply subject {msg.reply!r})")
        self._pending_after = int(pending)
        headers = dict(msg.headers) if msg.headers else {}
        msg_id = headers.get("Nats-Msg-Id") or f"{stream}/{seq}"
        name = self.name

        async def ack() -> None:
            await _settle(msg.ack(), name, "ack")

        async def nak(delay: float | None = None) -> None:
            await _settle(msg.nak(delay=delay), name, "nak")

        async def term() -> None:
            await _settle(msg.term(), name, "term")

        return Message(payload=msg.data, stream=msg.subject, id=msg_id, key=msg.subject,
                       type=event_type(headers) if headers else None, headers=headers,
                       timestamp=datetime.fromtimestamp(int(ns) / 1e9, UTC), attempts=int(delivered),
                       _ack=ack, _nak=nak, _term=term)


class _Pull:
    """Pull requests of one durable consumer and the messages they bring, on one connection.

    The replies of every request come to ``<inbox>.<n>`` (a callback subscription on ``<inbox>.*``);
    messages are queued as they arrive, status replies close the request they answer (the subject tells
    which, so a late status of an earlier request is ignored)."""

    def __init__(self, nc: Client, stream: str, consumer: str, name: str) -> None:
        self.nc, self.name = nc, name
        self.subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self.inbox = nc.new_inbox()
        self.queue: deque[Msg] = deque()
        self.wake = asyncio.Event()
        self.open: str | None = None  # the reply subject of the request still open
        self.owed = 0  # messages it may still bring
        self.no_wait = False
        self.until = 0.0  # loop time after which it has surely expired
        self.requests = 0
        self.gone = False  # the consumer went away (deleted, leader changed): connect and apply it again
        self._sub: Any = None

    @classmethod
    async def start(cls, nc: Client, stream: str, consumer: str, name: str) -> _Pull:
        pull = cls(nc, stream, consumer, name)
        pull._sub = await nc.subscribe(pull.inbox + ".*", cb=pull._on_msg)
        return pull

    async def _on_msg(self, msg: Msg) -> None:
        status = msg.headers.get("Status") if msg.headers else None
        if status is None:
            self.queue.append(msg)
            if self.open is not None:
                self.owed -= 1
                if self.owed <= 0:
                    self.open = None
                    self.wake.set()
                elif not self.no_wait:
                    self.wake.set()
            return
        if status == _HEARTBEAT or msg.subject != self.open:
            return
        assert msg.headers is not None
        description = msg.headers.get("Description", "").lower()
        if status not in _ENDS_REQUEST or any(g in description for g in _GONE):
            log.info("nats %s: pull request answered %s %s; binding the consumer again", self.name, status,
                     description)
            self.gone = True
        self.open = None
        self.wake.set()

    async def _request(self, batch: int, *, expires: float | None) -> None:
        self.requests += 1
        reply = f"{self.inbox}.{self.requests}"
        body: dict[str, Any] = {"batch": batch}
        loop = asyncio.get_running_loop()
        if expires is None:
            body["no_wait"] = True
            self.until = loop.time() + 5.0  # answered at once; a safety bound only
        else:
            body["expires"] = int(expires * 1e9)
            self.until = loop.time() + expires + 0.2  # the server's 408 closes it sooner
        self.open, self.owed, self.no_wait = reply, batch, expires is None
        await self.nc.publish(self.subject, json.dumps(body).encode(), reply=reply)

    async def fetch(self, batch: int, deadline: float) -> list[Msg]:
        """Up to *batch* messages, waiting until the loop time *deadline* at most: those already queued, else
        what a ``no_wait`` request brings, else the first of a waiting request (which stays open, at most
        ``_WAIT_REQUEST`` seconds: the next call waits for the rest of it rather than asking again)."""
        loop = asyncio.get_running_loop()
        asked = False
        while True:
            if self.open is not None and loop.time() > self.until:
                self.open = None  # expired without a word (a server restart): ask again
            if self.queue and (self.open is None or not self.no_wait):
                return self._take(batch)
            self.wake.clear()  # no await since the checks above: a message arriving from here on wakes us
            if self.open is None:
                left = deadline - loop.time()
                if asked and left < 0.02:
                    return []
                await self._request(batch, expires=None if not asked else min(left, _WAIT_REQUEST))
                asked = True
            left = min(deadline, self.until) - loop.time()
            if left <= 0:
                return self._take(batch)
            try:
                await asyncio.wait_for(self.wake.wait(), left)
            except TimeoutError:
                if loop.time() >= deadline:
                    return self._take(batch)
            if not self.nc.is_connected or self.gone:
                return self._take(batch)

    def _take(self, batch: int) -> list[Msg]:
        queue = self.queue
        if len(queue) <= batch:
            out = list(queue)
            queue.clear()
            return out
        return [queue.popleft() for _ in range(batch)]

    async def settle(self) -> None:
        """Before the connection closes: let a waiting request run out (the server would otherwise keep it
        after the connection is gone and hand it messages nobody receives, back only after ack_wait), then
        nak what was received and never handed out, so it is redelivered now rather than after ack_wait."""
        loop = asyncio.get_running_loop()
        while self.open is not None and self.nc.is_connected and (left := self.until - loop.time()) > 0:
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), left)
        while self.queue:
            with contextlib.suppress(Exception):
                await self.queue.popleft().nak()


async def _settle(call: Any, source: str, what: str) -> None:
    """Send an ack/nak/term; a lost connection is a TransportError (the server redelivers the message)."""
    try:
        await call
    except nats.errors.MsgAlreadyAckdError:
        return
    except _CONNECTION_ERRORS as exc:
        raise TransportError(f"sources.{source}: {what} not sent, the NATS connection is gone ({exc}); the server "
                             "redelivers the message after ack_wait") from None


def _differs(have: api.ConsumerConfig, want: api.ConsumerConfig) -> bool:
    """Whether the server's consumer differs from the spec in a key the hub sets."""
    keys = ("ack_policy", "ack_wait", "max_deliver", "backoff", "filter_subject", "deliver_policy",
            "max_ack_pending", "replay_policy")
    for key in keys:
        a, b = getattr(have, key), getattr(want, key)
        if key == "ack_wait" and a is not None and b is not None:
            if not want.backoff and abs(a - b) > 1e-6:  # with backoff the server sets ack_wait = backoff[0]
                return True
        elif key == "backoff":
            if list(a or []) != list(b or []):
                return True
        elif (a or None) != (b or None):
            return True
    return False


async def connect(system: NatsSystemConfig, name: str, *, error_cb: Any = None) -> Client:
    """A connection to the system's servers with its credentials and TLS, reconnection off (the caller
    rebuilds the connection itself)."""
    kwargs: dict[str, Any] = {
        "servers": list(system.servers), "connect_timeout": system.connect_timeout, "allow_reconnect": False,
        "name": f"hub:{name}", "max_reconnect_attempts": 0,
    }
    if error_cb is not None:
        kwargs["error_cb"] = error_cb
    if system.tls is not None or any(s.startswith("tls://") for s in system.servers):
        kwargs["tls"] = (system.tls or TlsSettings()).context(field="tls")
    if system.user:
        kwargs["user"], kwargs["password"] = system.user, system.password
    if system.token:
        kwargs["token"] = system.token
    if system.creds:
        kwargs["user_credentials"] = system.creds
    if system.nkey_seed:
        if not Path(system.nkey_seed).is_file():
            raise AdapterError(f"nkey_seed: no such file {system.nkey_seed}")
        kwargs["nkeys_seed"] = system.nkey_seed
    return await nats.connect(**kwargs)


async def publish(system: NatsSystemConfig, subject: str, bodies: list[bytes], *, jetstream: bool = False,
                  message_ids: list[str | None] | None = None, headers: dict[str, str] | None = None) -> None:
    """Publish *bodies* to *subject*: through JetStream when *jetstream* (each awaited until a stream stored
    it; ``Nats-Msg-Id`` deduplicates), else on core NATS (flushed before returning)."""
    nc = await connect(system, "publisher")
    try:
        ids = message_ids or [None] * len(bodies)
        js = nc.jetstream() if jetstream else None
        for body, mid in zip(bodies, ids, strict=True):
            hdrs = dict(headers or {})
            if mid:
                hdrs["Nats-Msg-Id"] = mid
            if js is not None:
                await js.publish(subject, body, headers=hdrs or None)
            else:
                await nc.publish(subject, body, headers=hdrs or None)
        await nc.flush()
    finally:
        await nc.close()


async def send(system: NatsSystemConfig, subject: str, body: bytes, *, message_id: str | None = None,
               headers: dict[str, str] | None = None, timeout: float = 5.0) -> dict[str, Any]:
    """One message of a flow through JetStream, awaited until a stream stored it: the stream, its sequence
    number and whether JetStream dropped it as a duplicate (the same *message_id* — ``Nats-Msg-Id`` — within
    the stream's duplicate window, 2 minutes by default). Failures say whether anything left the host:
    :class:`~hub.errors.DeliveryFailed` (no connection, no stream captures the subject, refused) or
    :class:`~hub.errors.DeliveryUnknown` (sent and no acknowledgement came)."""
    where = f"nats {', '.join(mask_url(s) for s in system.servers)} subject {subject}"
    try:
        nc = await connect(system, "flow")
    except (OSError, nats.errors.Error) as exc:
        raise DeliveryFailed(f"{where}: cannot connect ({type(exc).__name__}: {exc}); nothing was sent",
                             retryable=True) from None
    try:
        hdrs = dict(headers or {})
        if message_id:
            hdrs["Nats-Msg-Id"] = message_id
        try:
            ack = await nc.jetstream(timeout=timeout).publish(subject, body, headers=hdrs or None)
        except (nats.errors.NoRespondersError, nats.js.errors.NoStreamResponseError):
            raise DeliveryFailed(f"{where}: no JetStream stream captures the subject; nothing was stored "
                                 "(add the subject to a stream)") from None
        except nats.js.errors.APIError as exc:  # the stream answered no (full, sealed, wrong sequence ...)
            raise DeliveryFailed(f"{where}: JetStream refused the message: {exc}") from None
        except (OSError, nats.errors.Error) as exc:  # timeouts included: it may have been stored
            raise DeliveryUnknown(f"{where}: no acknowledgement ({type(exc).__name__}: {exc}); the message may "
                                  "have been stored") from None
        return {"stream": ack.stream, "seq": ack.seq, "duplicate": bool(ack.duplicate)}
    finally:
        with contextlib.suppress(Exception):
            await nc.close()
