"""AMQP's flow writes (:meth:`hub.protocols.amqp.AmqpProtocol.send`): one message published exactly once, as
:mod:`hub.flows.senders` describes.

Imported by the plugin's hook on first use.
"""

from __future__ import annotations

from typing import Any

from hub.errors import DeliveryFailed, DeliveryUnknown
from hub.protocols import Sent
from hub.runtime import tracing
from hub.runtime.secrets import mask
from hub.spec.loader import Pipeline


def amqp_send(pipeline: Pipeline, action: Any, request: dict[str, Any], *, idempotency_key: str | None,
              key_header: str | None) -> Sent:
    """One message published with publisher confirms; the idempotency key (when the step declares one) is
    the message id. A connection refused sent nothing (retryable); a broker that does not confirm may or may
    not have the message (unknown)."""
    import asyncio
    import uuid

    import orjson

    from adapters.amqp import Unroutable, publish

    block = pipeline.spec.systems[action.system]
    system = block.protocol.resolve_system(action.system, block)
    message_id = idempotency_key or uuid.uuid4().hex
    exchange = str(request.get("exchange") or "")
    key = str(request["routing_key"])
    where = f"publish {exchange or '(default exchange)'} {key}"
    with tracing.call(action.system, "publish", where, protocol=action.protocol) as call:
        headers = tracing.inject({k: str(v) for k, v in (request.get("headers") or {}).items()})
        try:
            asyncio.run(publish(system.url, key, [orjson.dumps(request["body"])], exchange=exchange,
                                message_ids=[message_id], headers=dict(headers), type=request.get("type"),
                                system=system, mandatory=True))
        except Unroutable as exc:  # confirmed and dropped: no queue receives it
            raise DeliveryFailed(f"{action.name}: {exc}") from None
        except (ConnectionError, OSError) as exc:
            raise DeliveryFailed(f"{action.name}: {where}: cannot connect ({type(exc).__name__}: "
                                 f"{mask(str(exc))}); nothing was sent", retryable=True) from None
        except Exception as exc:  # no confirm (a timeout, a closed channel): the broker may have it
            name = type(exc).__name__
            if "NotFound" in name or "Nack" in name or "Refused" in name:
                raise DeliveryFailed(f"{action.name}: {where}: refused ({name}: {mask(str(exc))})") from None
            raise DeliveryUnknown(f"{action.name}: {where}: no confirm ({name}: {mask(str(exc))}); the message "
                                  "may have been published") from None
        call.rows = 1
    return Sent({"message_id": message_id}, None, "confirmed")
