"""Choreography: the hub publishes its own events to a broker, so other services react without polling.

A spec's ``publish:`` block names a broker system and its target (``hub.spec.models.PublishSpec``); the
places where things happen call :func:`emit` — materialization (``asset.materialized``, and
``quarantine.threshold_exceeded`` when a load is refused for too many bad rows), file ingestion
(``file.loaded``), the contract runner (``contract.broken``). The system's protocol publishes
(:meth:`hub.protocols.Protocol.publish`: AMQP with publisher confirms, NATS core or JetStream).

**Publishing never fails a load.** The event is built after the commit (or with the refused load's error);
the call runs in a thread of its own with a deadline (``$HUB_PUBLISH_TIMEOUT``, default 10 s), and any error
or timeout is logged and counted (:data:`STATS`), never raised. Delivery is at most once per emission: a
consumer that must not miss an event reconciles from the warehouse (the event carries the run id, partition
and row counts), which is what choreography over a best-effort channel requires anyway.

An event is a JSON document: ``id`` (unique; the broker message id), ``type``, ``time`` (UTC, ISO),
``pipeline`` and the event's own fields.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hub.spec.loader import Pipeline

log = logging.getLogger("hub.events.publish")
#: Events published and publishing failures (timeouts included) in this process.
STATS: Counter[str] = Counter()
_lock = threading.Lock()


def _count(key: str) -> None:
    with _lock:
        STATS[key] += 1


def event(pipeline: Pipeline, kind: str, **fields: Any) -> dict[str, Any]:
    """The JSON document of a hub event."""
    return {"id": uuid.uuid4().hex, "type": kind, "time": datetime.now(UTC).isoformat(),
            "pipeline": pipeline.name, **{k: v for k, v in fields.items() if v is not None}}


def emit(pipeline: Pipeline, kind: str, **fields: Any) -> bool:
    """Publish one event of *kind* when the pipeline's ``publish:`` asks for it. True when the broker confirmed
    it; False when it was not asked for, or failed (logged and counted, never raised)."""
    spec = pipeline.spec.publish
    if spec is None or kind not in spec.events:
        return False
    doc = event(pipeline, kind, **fields)
    failure: list[BaseException] = []

    def send() -> None:
        try:
            system = pipeline.spec.systems[spec.system]
            protocol = system.protocol
            assert protocol.publish_model is not None  # checked by the loader
            protocol.publish(pipeline, spec.system, protocol.publish_model.model_validate(spec.target), [doc])
        except BaseException as exc:
            failure.append(exc)

    timeout = float(os.environ.get("HUB_PUBLISH_TIMEOUT", "10"))
    worker = threading.Thread(target=send, name=f"hub-publish-{kind}", daemon=True)
    worker.start()  # a thread of its own: no event loop of the caller's is in the way, and a deadline holds
    worker.join(timeout)
    if worker.is_alive():
        failure.append(TimeoutError(f"no confirmation within {timeout:g}s"))
    if failure:
        _count("failed")
        from hub.runtime.secrets import mask

        log.warning("publishing %s of %s to %s failed (the load is not affected): %s", kind, pipeline.name,
                    spec.system, mask(f"{type(failure[0]).__name__}: {failure[0]}"))
        return False
    _count("published")
    return True
