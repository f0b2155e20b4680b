"""An MQTT subscription in the hub's batch shape (:class:`adapters.messages.Consumer`), on paho-mqtt 2.x.

Why paho and how: paho-mqtt acknowledges a QoS 1 message as soon as its ``on_message`` returns, before the
hub has stored it, unless the client is built with ``manual_ack=True`` — which this consumer always does;
:meth:`Message.ack` then sends the PUBACK. aiomqtt has no manual acks (empicano/aiomqtt#345), so paho's
network loop runs in its own thread and hands messages to the caller's event loop.

One paho client is one connection (a *generation*): a message can be acknowledged only on the connection it
came on, because its packet id means nothing on the next one (the broker may reuse it for another message).
After a reconnect the broker redelivers every unacknowledged message of the persistent session with the
DUP flag, so an ack of a message from a lost connection is refused with :class:`TransportError` instead of
acknowledging a stranger, and messages still queued from that connection are dropped: their redelivery
arrives on the new one. MQTT has no negative acknowledgement: :meth:`Message.nak` leaves the message
unacknowledged and makes the next :meth:`MqttConsumer.fetch` (after the delay) reconnect, which makes the
broker redeliver it; :meth:`Message.term` acknowledges it (the hub has dead-lettered it).

Message ids: MQTT has none that survive a redelivery (the packet id is per connection), so ``id`` is the
MQTT 5 user property ``message-id`` (or ``message_id``), else the correlation data as text, else None and
the hub takes the id from a payload path or a content hash. ``attempts`` counts the deliveries this
consumer has seen of the same topic and payload (at least 2 when the broker set DUP); ``key`` is the topic
(MQTT orders per topic); ``type`` the user property ``type`` (or CloudEvents ``ce-type``), else the MQTT 5
content type; there is no broker timestamp (``timestamp`` is None).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections import OrderedDict
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from adapters._brokers import Reconnects, event_type
from adapters.messages import Message
from adapters.mqtt.config import MqttSourceConfig, MqttSystemConfig
from hub.errors import AdapterError, TransportError
from hub.runtime.settings import TlsSettings

log = logging.getLogger(__name__)
#: paho's own log: its network thread reports "Client is not connected" at ERROR while it winds down after a
#: disconnect the consumer made on purpose; that line is dropped, the rest kept.
paho_log = logging.getLogger(f"{__name__}.paho")
paho_log.addFilter(lambda record: not str(record.msg).startswith("Client is not connected"))

#: Deliveries remembered for ``attempts`` (topic + payload digests), oldest forgotten first.
_SEEN_LIMIT = 100_000
#: Seconds a batch waits for the next message once it has one.
_LINGER = 0.02
_ID_PROPERTIES = ("message-id", "message_id", "Message-Id")


class _Connection:
    """One paho client and what its thread reports (a generation: its messages ack only on it)."""

    def __init__(self, client: paho.Client) -> None:
        self.client = client
        self.connected = asyncio.Event()
        self.disconnected = asyncio.Event()
        self.lost = False
        self.refused: str | None = None
        self.session_present = False
        self.suback = asyncio.Event()
        self.suback_codes: list[Any] = []


class MqttConsumer:
    """``async with MqttConsumer(system, source) as c: msgs = await c.fetch(100, 1.0)``; *name* names the
    source in messages."""

    def __init__(self, system: MqttSystemConfig, source: MqttSourceConfig, *, name: str = "mqtt") -> None:
        self.system, self.source, self.name = system, source, name
        self._conn: _Connection | None = None
        self._queue: asyncio.Queue[tuple[_Connection, paho.MQTTMessage]] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reconnects = Reconnects(system.retries)
        self._subscribed_once = False
        self._nak_due: float | None = None
        self._seen: OrderedDict[bytes, int] = OrderedDict()

    @property
    def where(self) -> str:
        return f"mqtt://{self.system.host}:{self.system.effective_port} client id {self.source.client_id}"

    @property
    def reconnections(self) -> int:
        return self._reconnects.total

    # --- connection ------------------------------------------------------------------------------------

    def _client(self) -> paho.Client:
        sys, v5 = self.system, self.system.version == "5"
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.source.client_id,
                             clean_session=None if v5 else False,
                             protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
                             reconnect_on_failure=False, manual_ack=True)
        client.connect_timeout = sys.connect_timeout
        client.enable_logger(paho_log)
        if sys.username:
            client.username_pw_set(sys.username, sys.password)
        if sys.tls is not None:
            client.tls_set_context((sys.tls or TlsSettings()).context(field="tls"))
            client.tls_insecure_set(not sys.tls.verify)
        return client

    async def _open(self) -> None:
        """Connect (persistent session), subscribe when the broker does not hold the session yet; retried with
        the system's policy while the broker cannot be reached."""
        while True:
            await self._drop()
            try:
                await self._connect_once()
                self._reconnects.succeeded()
                return
            except (OSError, TimeoutError, _Lost) as exc:
                await self._drop()
                log.info("mqtt %s: cannot reach %s (%s); retrying", self.name, self.where, exc)
                if not await self._reconnects.failed():
                    raise TransportError(f"sources.{self.name}: cannot reach the MQTT broker at {self.where} after "
                                         f"{self._reconnects.policy.max_retries} retries: {exc}") from None

    async def _connect_once(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        client = self._client()
        conn = _Connection(client)
        self._conn = conn
        sys, src, v5 = self.system, self.source, self.system.version == "5"

        def on_connect(c: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
            if reason.is_failure:
                conn.refused = str(reason)
            conn.session_present = bool(flags.session_present)
            loop.call_soon_threadsafe(conn.connected.set)

        def on_disconnect(c: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
            conn.lost = True
            loop.call_soon_threadsafe(conn.connected.set)  # wake a waiter: the connection is gone
            loop.call_soon_threadsafe(conn.disconnected.set)

        def on_subscribe(c: Any, userdata: Any, mid: int, codes: list[Any], props: Any) -> None:
            conn.suback_codes = list(codes)
            loop.call_soon_threadsafe(conn.suback.set)

        def on_message(c: Any, userdata: Any, msg: paho.MQTTMessage) -> None:
            loop.call_soon_threadsafe(self._queue.put_nowait, (conn, msg))

        client.on_connect, client.on_disconnect = on_connect, on_disconnect
        client.on_subscribe, client.on_message = on_subscribe, on_message
        props = None
        if v5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = min(int(src.session_expiry), 0xFFFFFFFF)
            props.ReceiveMaximum = src.receive_maximum
        kwargs: dict[str, Any] = {"keepalive": sys.keepalive}
        if v5:
            kwargs.update(clean_start=False, properties=props)
        await asyncio.wait_for(asyncio.to_thread(client.connect, sys.host, sys.effective_port, **kwargs),
                               sys.connect_timeout)
        client.loop_start()
        await asyncio.wait_for(conn.connected.wait(), sys.connect_timeout)
        if conn.refused:
            raise TransportError(f"sources.{self.name}: the MQTT broker at {self.where} refused the connection: "
                                 f"{conn.refused}")
        if conn.lost:
            raise _Lost("connection closed during the handshake")
        if not conn.session_present or not self._subscribed_once:
            await self._subscribe(conn)

    async def _subscribe(self, conn: _Connection) -> None:
        v5 = self.system.version == "5"
        # MQTT 5: retained messages only on a new subscription, not again on every reconnect.
        qos: Any = SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB) if v5 else 1
        rc, _ = conn.client.subscribe([(t, qos) for t in self.source.topics])
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise _Lost(f"subscribe not sent ({paho.error_string(rc)})")
        await asyncio.wait_for(conn.suback.wait(), self.system.connect_timeout)
        refused = [t for t, code in zip(self.source.topics, conn.suback_codes, strict=False)
                   if (getattr(code, "is_failure", False) or getattr(code, "value", code) == 0x80)]
        if refused:
            raise AdapterError(f"sources.{self.name}.topics: the broker refused the subscription to "
                               f"{', '.join(refused)} (not authorized, or an invalid filter)")
        self._subscribed_once = True

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        client = conn.client
        if not conn.lost:  # PUBACKs still queued go out first, then a clean DISCONNECT (the session stays)
            deadline = asyncio.get_running_loop().time() + 2
            while client.want_write() and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.01)
            conn.lost = True
            with contextlib.suppress(Exception):
                client.disconnect()
                await asyncio.wait_for(conn.disconnected.wait(), 2)
        conn.lost = True
        with contextlib.suppress(Exception):
            await asyncio.to_thread(client.loop_stop)

    async def __aenter__(self) -> MqttConsumer:
        await self._open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Disconnect cleanly; the broker keeps the session and redelivers what was not acknowledged."""
        await self._drop()

    # --- the batch shape -------------------------------------------------------------------------------

    async def fetch(self, max_messages: int, timeout: float) -> list[Message]:
        """Up to *max_messages* messages within *timeout* seconds (empty when none came); reconnects (and
        resubscribes when the broker lost the session) after a lost connection or a nak."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if self._nak_due is not None:
            await asyncio.sleep(max(self._nak_due - loop.time(), 0))
            self._nak_due = None
            await self._open()  # the broker redelivers what is unacknowledged
        out: list[Message] = []
        while not out:
            if self._conn is None or self._conn.lost:
                await self._open()
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            try:
                conn, msg = await asyncio.wait_for(self._queue.get(), min(remaining, 0.5))
            except TimeoutError:
                continue
            self._take(conn, msg, out)
            while len(out) < max_messages:  # what follows within a moment joins the batch
                try:
                    self._take(*await asyncio.wait_for(self._queue.get(), _LINGER), out)
                except TimeoutError:
                    break
        return out

    def _take(self, conn: _Connection, msg: paho.MQTTMessage, out: list[Message]) -> None:
        digest = hashlib.blake2b(msg.topic.encode() + b"\0" + msg.payload, digest_size=16).digest()
        seen = self._seen.pop(digest, 0) + 1  # every delivery counts, the dropped ones too
        self._seen[digest] = seen
        if len(self._seen) > _SEEN_LIMIT:
            self._seen.popitem(last=False)
        if conn is self._conn:  # messages of a lost connection are redelivered on the new one
            out.append(self._wrap(conn, msg, max(seen, 2 if msg.dup else 1)))

    def lag(self) -> int | None:
        """MQTT does not say how many messages the broker holds for the session."""
        return None

    def _wrap(self, conn: _Connection, msg: paho.MQTTMessage, attempts: int) -> Message:
        headers: dict[str, str] = {}
        msg_id: str | None = None
        props = getattr(msg, "properties", None)
        if props is not None:
            for key, value in getattr(props, "UserProperty", None) or []:
                headers[str(key)] = str(value)
            content_type = getattr(props, "ContentType", None)
            if content_type:
                headers["content-type"] = str(content_type)
            correlation = getattr(props, "CorrelationData", None)
            msg_id = next((headers[k] for k in _ID_PROPERTIES if headers.get(k)), None)
            if msg_id is None and correlation:
                msg_id = correlation.decode("utf-8", "replace") if isinstance(correlation, bytes) else str(correlation)
        mid, qos = msg.mid, msg.qos

        async def ack() -> None:
            if conn is not self._conn or conn.lost:
                raise TransportError(f"sources.{self.name}: not acknowledged, the MQTT connection it came on is gone; "
                                     "the broker redelivers it on the new one")
            if qos > 0:
                rc = conn.client.ack(mid, qos)
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    raise TransportError(f"sources.{self.name}: PUBACK not sent ({paho.error_string(rc)}); the broker "
                                         "redelivers the message")

        async def nak(delay: float | None = None) -> None:
            due = asyncio.get_running_loop().time() + (delay or 0.0)
            self._nak_due = due if self._nak_due is None else min(self._nak_due, due)

        return Message(payload=bytes(msg.payload), stream=msg.topic, id=msg_id, key=msg.topic,
                       type=event_type(headers) or headers.get("content-type"), headers=headers, timestamp=None,
                       attempts=attempts, _ack=ack, _nak=nak, _term=ack)


class _Lost(Exception):
    """The connection went while it was being set up (retried)."""
