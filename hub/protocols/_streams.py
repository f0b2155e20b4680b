"""What the stream protocols' plugins (amqp, nats, mqtt, kafka, webhook) share: spec checks, paths, contracts."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from hub.protocols import Protocol, SourceCheck
from hub.runtime.settings import TlsSettings

if TYPE_CHECKING:
    from hub.spec.loader import Pipeline
    from hub.spec.models import ResolvedSource, SystemConfig


class StreamContract:
    """The contract hooks every stream protocol shares (mixed in before :class:`hub.protocols.Protocol`): the
    payload schema observed in the event store, and its drift classified as for REST
    (:mod:`hub.events.contract`; never read from the broker, which would consume messages)."""

    def collect(self, pipeline: Pipeline, system: str) -> dict[str, Any] | None:
        """Per stream source, the JSON Schema of the records of its latest stored events."""
        from hub.events.contract import collect_streams

        return collect_streams(pipeline, system)

    def compare(self, pipeline: Pipeline, system: str, before: dict[str, Any], after: dict[str, Any]) -> list[Any]:
        """Fields the sources' ``columns:`` use that disappeared or changed type: breaking; the rest: drift."""
        from hub.events.contract import compare_streams

        return compare_streams(pipeline, system, before, after)


def stream_only(check: SourceCheck) -> bool:
    """Stream sources are never partitioned by time (messages are batched as they come)."""
    if check.source.partitioned:
        check.problem(("partitioned",), "a stream source takes messages as they come; it is not partitioned by time")
    return False


def max_deliver(source: ResolvedSource, default: int) -> int:
    """The source's delivery limit (``max_deliver``, a key every stream source has), else *default*."""
    keys = source.stream  # the hub's keys of a stream source (hub.spec.stream.StreamKeys)
    return int(keys.max_deliver) if keys is not None and keys.max_deliver else default


def rooted_tls(tls: TlsSettings, root: Path) -> TlsSettings:
    """*tls* with its relative file paths taken from the project root."""
    update = {k: str(root / v) for k in ("ca_file", "cert", "key")
              if (v := getattr(tls, k)) and not Path(v).is_absolute()}
    return tls.model_copy(update=update) if update else tls


class BrokerProtocol(Protocol):
    """A broker protocol whose system block names files (``tls:`` certificates and keys, and the fields in
    :attr:`rooted_files`): :meth:`resolve_system` takes relative ones from the project root, for every caller
    (consumers, publishing, flow sends), instead of each hook doing it."""

    #: The block's own file fields besides ``tls`` (NATS: ``creds``, ``nkey_seed``).
    rooted_files: ClassVar[tuple[str, ...]] = ()

    def resolve_system(self, system_name: str, system: SystemConfig, *, root: Path | None = None) -> Any:
        resolved = super().resolve_system(system_name, system, root=root)
        if root is None:
            return resolved
        update: dict[str, object] = {k: str(root / v) for k in self.rooted_files
                                     if (v := getattr(resolved, k, None)) and not Path(v).is_absolute()}
        tls = getattr(resolved, "tls", None)
        if tls is not None:
            update["tls"] = rooted_tls(tls, root)
        return resolved.model_copy(update=update) if update else resolved



# --- flows: publishing one message (Protocol.send of the brokers) -------------------------------------------

def message_action(pipeline: Pipeline, system: str, protocol: str, *, target: str, target_doc: str,
                   description: str, output: dict[str, Any], extra: dict[str, Any] | None = None,
                   name: str = "publish") -> Any:
    """``<system>.publish`` of a broker for flows (:class:`hub.agent.catalog.Action`): a JSON ``body`` to the
    *target* parameter (subject, topic) with optional ``headers`` and ``type``; *extra* adds parameters."""
    from hub.agent.catalog import Action

    props: dict[str, Any] = {
        target: {"type": "string", "minLength": 1, "description": target_doc},
        "body": {"description": "The message, sent as JSON."},
        "type": {"type": "string", "description": "The message type (e.g. order.paid), sent as the header `type`."},
        "headers": {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}},
        **(extra or {})}
    return Action(name=f"{system}.{name}", system=system, protocol=protocol, description=description,
                  input_schema={"type": "object", "required": [target, "body"], "properties": props},
                  output_schema={"type": "object", "properties": output}, side_effect="write",
                  binding={"kind": "publish"}, pipeline=pipeline.name)


def message_headers(request: dict[str, Any], idempotency_key: str | None, key_header: str | None,
                    id_header: str) -> dict[str, str]:
    """A flow message's headers: the step's ``headers``, ``type``, the idempotency key under *id_header* (the
    broker's or its consumers' message id) and under the step's *key_header* when it names another one, and
    the W3C ``traceparent`` of the current call."""
    from hub.runtime import tracing

    headers = {str(k): str(v) for k, v in (request.get("headers") or {}).items()}
    if request.get("type"):
        headers["type"] = str(request["type"])
    if idempotency_key is not None:
        headers[id_header] = idempotency_key
        if key_header and key_header != id_header:
            headers[key_header] = idempotency_key
    return dict(tracing.inject(headers))


def message_body(value: Any) -> bytes:
    """A flow message's body as JSON (a string is sent as a JSON string, like every other value)."""
    import orjson

    return orjson.dumps(value)
