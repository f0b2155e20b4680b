"""GraphQL's flow writes (:meth:`hub.protocols.graphql.GraphQLProtocol.send`): one mutation sent exactly once,
as :mod:`hub.flows.senders` describes.

Imported by the plugin's hook on first use.
"""

from __future__ import annotations

from typing import Any

from hub.errors import DeliveryFailed, DeliveryUnknown
from hub.flows.senders import RETRYABLE
from hub.protocols import Sent
from hub.spec.loader import Pipeline


def graphql_send(pipeline: Pipeline, action: Any, request: dict[str, Any], *, idempotency_key: str | None,
                 key_header: str | None) -> Sent:
    """One GraphQL mutation (the action's document, *request* as its variables), never retried."""
    from adapters.graphql import GraphQLEndpoint, GraphQLError
    from hub.errors import HTTPStatusError, ResponseFormatError, TransportError
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
