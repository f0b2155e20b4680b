"""The write calls of flows, per protocol: what the plugins' :meth:`hub.protocols.Protocol.send` hooks call
(kept here, above the spec layer, like the agent's ``rest_call`` / ``soap_call``).

Each sends exactly once: no retries (the flow's ledger and ``retry:`` decide), the system's rate limit and
circuit breaker apply, the call is traced (a ``_hub_calls`` row, ``traceparent`` on the request). Failures
are classified for the ledger: :class:`~hub.errors.DeliveryFailed` when the partner answered no (or nothing
left the host), :class:`~hub.errors.DeliveryUnknown` when the request went out and no answer came back.
"""

from __future__ import annotations

from typing import Any

from hub.errors import DeliveryFailed, DeliveryUnknown
from hub.protocols import Sent
from hub.runtime import tracing
from hub.runtime.secrets import mask
from hub.spec.loader import Pipeline

#: HTTP statuses after which the same request may succeed (when it is safe to send again at all).
RETRYABLE = frozenset({408, 425, 429, 500, 502, 503, 504})


def graphql_send(pipeline: Pipeline, action: Any, request: dict[str, Any], *, idempotency_key: str | None,
                 key_header: str | None) -> Sent:
    """One GraphQL mutation (the action's document, *request* as its variables), never retried."""
    from adapters.graphql import GraphQLEndpoint
    from hub.errors import GraphQLError, HTTPStatusError, ResponseFormatError, TransportError
    from hub.materialize import state_dir
    from hub.runtime.retry import RetryConfig

    block = pipeline.spec.systems[action.system]
    system = block.protocol.resolve_system(action.system, block).model_copy(update={"retries": RetryConfig(max=0)})
    if idempotency_key is not None and key_header:
        system = system.model_copy(update={"headers": {**system.headers, key_header: idempotency_key}})
    endpoint = GraphQLEndpoint(system, system_name=action.system, name=action.name,
                               state_dir=state_dir(pipeline.root))
    try:
        data = endpoint.execute_sync(str(action.binding["document"]), request, action.binding.get("operation_name"),
                                     label=action.name)
    except HTTPStatusError as exc:
        raise DeliveryFailed(str(exc), status=exc.status, retryable=exc.status in RETRYABLE) from None
    except GraphQLError as exc:  # the server answered with errors: the mutation was refused
        raise DeliveryFailed(str(exc)) from None
    except TransportError as exc:
        if exc.not_sent:
            raise DeliveryFailed(f"{exc}; nothing was sent", retryable=True) from None
        raise DeliveryUnknown(f"{exc}; the mutation may have taken effect") from None
    except ResponseFormatError as exc:  # the answer broke off or cannot be read: the mutation may have run
        raise DeliveryUnknown(f"{exc}; the mutation may have taken effect") from None
    return Sent(data, 200, "HTTP 200")


def publish_action(pipeline: Pipeline, system: str, protocol: str) -> Any:
    """The one action of a broker system for flows: publish a JSON message (``body``) to an exchange with a
    routing key; the delivery's idempotency key is the message id, so consumers can drop a repeat."""
    from hub.agent.catalog import Action

    return Action(
        name=f"{system}.publish", system=system, protocol=protocol,
        description=f"Publish one persistent JSON message on {system} (publisher confirms)",
        input_schema={"type": "object", "required": ["routing_key", "body"], "properties": {
            "exchange": {"type": "string", "description": "The exchange (default: the default exchange)."},
            "routing_key": {"type": "string", "minLength": 1},
            "body": {"description": "The message, sent as JSON."},
            "type": {"type": "string", "description": "The message type (e.g. order.paid)."},
            "headers": {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}}}},
        output_schema={"type": "object", "properties": {"message_id": {"type": "string"}}},
        side_effect="write", binding={"kind": "publish"}, pipeline=pipeline.name)


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
