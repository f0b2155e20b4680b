"""One MQTT message of a flow, published with QoS 1 and awaited until the broker's PUBACK (paho-mqtt 2.x).

Why a connection per message and no retransmission: MQTT has no message id the broker deduplicates on, so a
QoS 1 message sent again (paho resends unacknowledged messages after a reconnect, with DUP) may be delivered
twice. A flow's ledger decides whether to send again; this function sends once and says what it knows: no
connection (nothing sent), the broker's PUBACK (stored), a failure reason code (refused), or no PUBACK
(unknown). The idempotency key travels as the MQTT 5 user property ``message-id``, which the hub's own
consumers (:mod:`adapters.mqtt.consumer`) take as the message id, so a repeat lands once in an event store.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from adapters.mqtt.config import MqttSystemConfig
from hub.errors import DeliveryFailed, DeliveryUnknown
from hub.runtime.settings import TlsSettings


def publish_one(system: MqttSystemConfig, topic: str, payload: bytes, *, user_properties: dict[str, str] | None = None,
                retain: bool = False, timeout: float = 10.0) -> dict[str, Any]:
    """Publish *payload* to *topic* with QoS 1 on a clean session and wait for the PUBACK: the packet id and
    the broker's reason code. Raises :class:`~hub.errors.DeliveryFailed` when nothing was sent or the broker
    refused, :class:`~hub.errors.DeliveryUnknown` when the message went out and no PUBACK came."""
    v5 = system.version == "5"
    where = f"mqtt://{system.host}:{system.effective_port} topic {topic}"
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"hub-flow-{uuid.uuid4().hex[:12]}",
                         clean_session=None if v5 else True,
                         protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
                         reconnect_on_failure=False)
    client.connect_timeout = system.connect_timeout
    if system.username:
        client.username_pw_set(system.username, system.password)
    if system.tls is not None:
        client.tls_set_context((system.tls or TlsSettings()).context(field="tls"))
        client.tls_insecure_set(not system.tls.verify)
    connected, acked = threading.Event(), threading.Event()
    state: dict[str, Any] = {}

    def on_connect(c: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        state["connect"] = reason
        connected.set()

    def on_publish(c: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        state["puback"] = reason
        acked.set()

    def on_disconnect(c: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        state.setdefault("lost", reason)
        connected.set()
        acked.set()  # no PUBACK can come on this connection any more

    client.on_connect, client.on_publish, client.on_disconnect = on_connect, on_publish, on_disconnect
    try:
        client.connect(system.host, system.effective_port, keepalive=system.keepalive)
    except OSError as exc:
        raise DeliveryFailed(f"{where}: cannot connect ({type(exc).__name__}: {exc}); nothing was sent",
                             retryable=True) from None
    client.loop_start()
    try:
        if not connected.wait(system.connect_timeout) or "connect" not in state:
            raise DeliveryFailed(f"{where}: the broker did not accept the connection ({state.get('lost')}); "
                                 "nothing was sent", retryable=True)
        if state["connect"].is_failure:
            raise DeliveryFailed(f"{where}: the broker refused the connection ({state['connect']}); nothing was "
                                 "sent")
        props = None
        if v5 and user_properties:
            props = Properties(PacketTypes.PUBLISH)
            props.UserProperty = list(user_properties.items())
        info = client.publish(topic, payload, qos=1, retain=retain, properties=props)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise DeliveryFailed(f"{where}: not sent ({paho.error_string(info.rc)})", retryable=True)
        if not acked.wait(timeout) or "puback" not in state:
            raise DeliveryUnknown(f"{where}: no PUBACK within {timeout:g} s ({state.get('lost') or 'no answer'}); "
                                  "the broker may have the message")
        reason = state["puback"]
        if getattr(reason, "is_failure", False):
            raise DeliveryFailed(f"{where}: the broker refused the message ({reason})")
        return {"mid": info.mid, "reason": str(reason)}
    finally:
        client.disconnect()
        client.loop_stop()
