"""AMQP's action for the catalog: ``<system>.publish``, for flows (docs/flows.md).

Imported by the plugin's hook on first use (it needs :mod:`hub.agent`, above the spec layer).
"""

from __future__ import annotations

from typing import Any

from hub.spec.loader import Pipeline


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
