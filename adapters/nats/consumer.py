"""A NATS JetStream durable pull consumer in the hub's batch shape (:class:`adapters.messages.Consumer`).

Why the connection is handled here rather than by nats.py's automatic reconnect: nats.py re-sends a
subscription after it reconnects, but not the pull request the server was holding, so a pull subscription
can go silent after a server restart (nats-io/nats.py#504). This consumer therefore turns nats.py's own
reconnect off and, whenever the connection is gone, connects again with the system's retry policy,
applies the consumer configuration again (a restarted server may have lost it, an operator may have edited
it) and binds a fresh pull subscription. Every :meth:`NatsConsumer.fetch` sends a new pull request, so no
request is ever left parked on a server that went away.

Message ids: the ``Nats-Msg-Id`` header when the publisher set one (JetStream deduplicates on it too), else
``<stream>/<stream sequence>``, which is the same on every redelivery of the message. ``key`` is the subject
(NATS orders per subject), ``attempts`` JetStream's delivery count, ``timestamp`` the time the stream stored
the message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
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
from hub.errors import AdapterError, TransportError
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
        self._sub: Any = None
        self._lag: int | None = None
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
                self._sub = await nc.jetstream().pull_subscribe_bind(
                    self.source.consumer, stream=self.source.stream,
                    pending_msgs_limit=max(self.source.max_ack_pending * 2, 1000))
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
        """Acks already sent are flushed before the connection closes; unacked messages are redelivered."""
        self._closing = True
        nc = self._nc
        if nc is not None and nc.is_connected:
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
            if self._nc is None or not self._nc.is_connected or self._sub is None:
                await self._open()
            remaining = deadline - loop.time()
            try:
                msgs = await self._sub.fetch(max_messages, timeout=max(remaining, 0.05))
            except nats.errors.TimeoutError:
                if self._nc is not None and self._nc.is_connected:
                    await self._refresh_lag()
                    return []
                if loop.time() >= deadline:
                    return []
                continue  # the connection went while waiting: connect again within the time left
            except _CONNECTION_ERRORS as exc:
                log.info("nats %s: connection lost (%s); reconnecting", self.name, exc)
                await self._drop()
                continue
            out = [self._wrap(m) for m in msgs]
            if msgs:
                with contextlib.suppress(Exception):
                    self._lag = msgs[-1].metadata.num_pending
            return out

    async def _refresh_lag(self) -> None:
        with contextlib.suppress(Exception):
            info = await self._sub.consumer_info()
            self._lag = info.num_pending

    def lag(self) -> int | None:
        """Messages in the stream that match the consumer and were not delivered yet (num_pending)."""
        return self._lag

    async def info(self) -> api.ConsumerInfo:
        """The consumer as the server has it (its configuration, pending and redelivered counts)."""
        if self._sub is None:
            await self._open()
        result: api.ConsumerInfo = await self._sub.consumer_info()
        return result

    def _wrap(self, msg: Msg) -> Message:
        meta = msg.metadata
        headers = {k: v for k, v in (msg.headers or {}).items()}
        msg_id = headers.get("Nats-Msg-Id") or f"{meta.stream}/{meta.sequence.stream}"

        async def ack() -> None:
            await _settle(msg.ack(), self.name, "ack")

        async def nak(delay: float | None = None) -> None:
            await _settle(msg.nak(delay=delay), self.name, "nak")

        async def term() -> None:
            await _settle(msg.term(), self.name, "term")

        return Message(payload=msg.data, stream=msg.subject, id=msg_id, key=msg.subject, type=event_type(headers),
                       headers=headers, timestamp=meta.timestamp, attempts=meta.num_delivered,
                       _ack=ack, _nak=nak, _term=term)


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
