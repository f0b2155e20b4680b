"""Tracing and the audit of external calls: OpenTelemetry spans per run, asset and system call, W3C
``traceparent`` on every REST and SOAP request, and one row per call in the warehouse table ``_hub_calls``.

Configuration is the OpenTelemetry one, read from the environment once per process (every Dagster step
process configures itself on first use):

* ``OTEL_TRACES_EXPORTER``: ``none`` (default), ``console`` (one JSON line per span on stderr, so command
  output stays clean), ``otlp`` (OTLP over HTTP/protobuf), or a comma-separated list;
* ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (full URL) or ``OTEL_EXPORTER_OTLP_ENDPOINT`` (base URL, ``/v1/traces``
  is appended), ``OTEL_EXPORTER_OTLP_HEADERS`` and the other ``OTEL_EXPORTER_OTLP_*`` settings, read by the
  exporter itself; ``OTEL_SERVICE_NAME`` (default ``hub``), ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``,
  ``OTEL_SDK_DISABLED=true``.

Off (the default), no SDK is loaded and a call costs two ``time`` reads and a random span id: calls are
still recorded in ``_hub_calls`` and still carry a ``traceparent`` (not sampled) whose trace id is the run's,
so a partner's logs can be matched to the audit rows even when nothing is exported.

**One trace per Dagster run.** Steps run in separate processes, so the trace id cannot travel from a parent
span: it is derived from the Dagster run id (SHA-256), and so is the id of the run span. Asset spans are
parented on that synthetic run span context in whatever process runs the step. The run span itself is
emitted by the process that sees the whole run: ``hub run`` (:func:`emit_run_span` in
:mod:`hub.dagster.run`) after each run, with the derived ids forced through the provider's id generator;
runs launched from the UI or a schedule get it from the ``hub_run_traces`` sensor when tracing is on.

Provider: our own ``TracerProvider`` (not the global one, which can be set only once per process and may
belong to an embedding application). The OTLP exporter sits behind a ``BatchSpanProcessor`` that is
flushed at the end of every asset and run (step processes may exit right after), the console one behind
a ``SimpleSpanProcessor``.
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
import os
import random
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import (
    INVALID_SPAN,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)

from hub.runtime.secrets import mask, mask_url

log = logging.getLogger("hub.tracing")

#: The warehouse table with one row per external call of every asset materialization.
CALLS_TABLE = "_hub_calls"
TRACER_NAME = "hub"
EXPORTERS = frozenset({"none", "console", "otlp"})

_lock = threading.RLock()
_state: _Tracing | None = None
_forced_ids: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar("hub_forced_ids", default=None)
_scope: contextvars.ContextVar[AssetScope | None] = contextvars.ContextVar("hub_asset_scope", default=None)
_random = random.SystemRandom()


@dataclass
class _Tracing:
    exporters: tuple[str, ...]
    provider: Any = None  # opentelemetry.sdk.trace.TracerProvider when exporting
    tracer: trace.Tracer | None = None
    paused_until: float = 0.0  # no forced flush before (monotonic): the last export failed

    def failed(self) -> None:
        self.paused_until = time.monotonic() + FLUSH_PAUSE_S

    @property
    def on(self) -> bool:
        return self.tracer is not None


# --- configuration ---------------------------------------------------------------------------------------


def _exporters_from_env() -> tuple[str, ...]:
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return ()
    names = [n.strip().lower() for n in os.environ.get("OTEL_TRACES_EXPORTER", "none").split(",") if n.strip()]
    unknown = [n for n in names if n not in EXPORTERS]
    if unknown:
        log.warning("OTEL_TRACES_EXPORTER: unsupported exporter(s) %s ignored (supported: console, otlp, none)",
                    ", ".join(unknown))
    return tuple(n for n in dict.fromkeys(names) if n in EXPORTERS and n != "none")


def configure(*, force: bool = False) -> tuple[str, ...]:
    """Set up tracing from the environment (once per process; again with *force*, e.g. in tests after
    changing the environment: the previous provider is flushed and shut down). Returns the exporters in use."""
    global _state
    with _lock:  # threads starting their first call at once set up one provider
        if _state is not None and not force:
            return _state.exporters
        previous = _state
        if previous is not None and previous.provider is not None:
            previous.provider.shutdown()
        exporters = _exporters_from_env()
        state = _Tracing(exporters)
        if exporters:
            state.provider = _provider(exporters, state)
            state.tracer = state.provider.get_tracer(TRACER_NAME)
        _state = state
        return exporters


def _provider(exporters: tuple[str, ...], state: _Tracing) -> Any:
    """An SDK TracerProvider with the requested exporters and the hub's id generator (imported only when
    tracing is on: the SDK is not worth loading otherwise)."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SimpleSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class _HubIds(RandomIdGenerator):
        """Random ids, except for a span started under :func:`_forcing` (the run span, whose ids are derived
        from the Dagster run id so that every step process agrees on them)."""

        def generate_trace_id(self) -> int:
            forced = _forced_ids.get()
            return forced[0] if forced else super().generate_trace_id()

        def generate_span_id(self) -> int:
            forced = _forced_ids.get()
            return forced[1] if forced else super().generate_span_id()

    class _Watched(SpanExporter):
        """The exporter, telling *state* when an export fails (see :func:`flush`)."""

        def __init__(self, inner: SpanExporter, state: _Tracing) -> None:
            self.inner, self.state = inner, state

        def export(self, spans: Any) -> SpanExportResult:
            result = self.inner.export(spans)
            if result is not SpanExportResult.SUCCESS:
                self.state.failed()
            return result

        def shutdown(self) -> None:
            self.inner.shutdown()

        def force_flush(self, timeout_millis: int = 30_000) -> bool:
            return self.inner.force_flush(timeout_millis)

    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME") or "hub"})
    provider = TracerProvider(resource=resource, id_generator=_HubIds())
    if "console" in exporters:
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(
            out=sys.stderr, formatter=lambda span: span.to_json(indent=None) + "\n")))
    if "otlp" in exporters:
        protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        if protocol and protocol != "http/protobuf":
            log.warning("OTLP protocol %s is not available; exporting with http/protobuf", protocol)
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(_Watched(OTLPSpanExporter(), state)))
    return provider


def _current() -> _Tracing:
    state = _state
    if state is None:
        configure()
        state = _state
    assert state is not None
    return state


def enabled() -> bool:
    """True when spans are exported (``OTEL_TRACES_EXPORTER`` names an exporter)."""
    return _current().on


#: After an export failed, forced flushes pause this long (the batch worker and the exit flush still try).
FLUSH_PAUSE_S = 60.0


def flush(timeout_ms: int = 3_000) -> None:
    """Export every finished span now: a Dagster step process may exit as soon as its asset is done.

    The SDK's flush blocks for the exporter's retries (seconds) when the collector is unreachable, and
    ignores its timeout; so it runs in a helper thread, waited for at most *timeout_ms*, and after a failed
    or slow export no forced flush is tried for ``FLUSH_PAUSE_S``: a collector that is down must not add
    seconds to every asset. Spans still go out with the batch worker, and at exit."""
    state = _state
    if state is None or state.provider is None or time.monotonic() < state.paused_until:
        return
    done = threading.Event()

    def run() -> None:
        state.provider.force_flush()
        done.set()

    threading.Thread(target=run, name="hub-trace-flush", daemon=True).start()
    if not done.wait(timeout_ms / 1000):
        state.paused_until = time.monotonic() + FLUSH_PAUSE_S


# --- ids and spans ---------------------------------------------------------------------------------------


def run_ids(run_id: str) -> tuple[int, int]:
    """(trace id, run span id) of a Dagster run: derived from its id, so every step process agrees."""
    digest = hashlib.sha256(f"hub-run:{run_id}".encode()).digest()
    return int.from_bytes(digest[:16], "big") or 1, int.from_bytes(digest[16:24], "big") or 1


def run_context(run_id: str) -> otel_context.Context:
    """A context whose (remote) parent is the run span of *run_id*: what asset spans hang from. It is sampled
    as the run span will be (the configured sampler decides on the trace id, the same in every process)."""
    trace_id, span_id = run_ids(run_id)
    sampled = True
    state = _current()
    if state.provider is not None:
        sampled = state.provider.sampler.should_sample(otel_context.Context(), trace_id, "run").decision.is_sampled()
    parent = SpanContext(trace_id, span_id, is_remote=True,
                         trace_flags=TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT))
    return trace.set_span_in_context(NonRecordingSpan(parent))


def _start(name: str, parent: otel_context.Context | None, attributes: dict[str, Any], kind: SpanKind) -> Span:
    """A recording span when exporting; otherwise a non-recording one that still has ids in the parent's trace
    (so the ``traceparent`` a partner receives and the audit row name the same call)."""
    state = _current()
    if state.tracer is not None:
        return state.tracer.start_span(name, context=parent, kind=kind, attributes=_clean(attributes))
    up = trace.get_current_span(parent).get_span_context()
    if not up.is_valid:
        return INVALID_SPAN
    return NonRecordingSpan(SpanContext(up.trace_id, _random.getrandbits(64) or 1, is_remote=False,
                                        trace_flags=TraceFlags(TraceFlags.DEFAULT)))


def _clean(attributes: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in attributes.items() if v is not None}


def emit_run_span(run_id: str, *, start_ns: int, end_ns: int, success: bool, error: str | None = None,
                  attributes: dict[str, Any] | None = None) -> None:
    """Emit the span of a whole Dagster run, with the ids its asset spans already point to (see the module
    notes). A no-op when tracing is off."""
    state = _current()
    if state.tracer is None:
        return
    token = _forced_ids.set(run_ids(run_id))
    try:
        span = state.tracer.start_span(f"run {run_id[:8]}", context=otel_context.Context(), kind=SpanKind.INTERNAL,
                                       attributes=_clean({"hub.run_id": run_id, **(attributes or {})}),
                                       start_time=start_ns)
    finally:
        _forced_ids.reset(token)
    span.set_attribute("hub.status", "ok" if success else "error")
    if not success:
        span.set_status(Status(StatusCode.ERROR, mask(error or "run failed")[:500]))
    span.end(end_time=end_ns)
    flush()


def annotate(**attributes: Any) -> None:
    """Add attributes to the current span (e.g. ``hub_cache="hit"`` → ``hub.cache``), when it records."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes(_clean({k.replace("_", ".", 1): v for k, v in attributes.items()}))


def inject(headers: MutableMapping[str, str] | None = None) -> MutableMapping[str, str]:
    """*headers* (a new dict when None) with ``traceparent`` / ``tracestate`` of the current span added."""
    carrier: MutableMapping[str, str] = {} if headers is None else headers
    propagate.inject(carrier)
    return carrier


# --- the audit of calls ----------------------------------------------------------------------------------


@dataclass
class CallRecord:
    """One external call as ``_hub_calls`` stores it."""

    call_id: str
    system: str
    protocol: str
    operation: str
    target: str
    status: str  # ok | error | cancelled (the caller stopped reading)
    attempts: int
    rows: int | None
    bytes: int | None
    started_at: datetime
    duration_ms: float
    trace_id: str | None
    span_id: str | None
    http_status: int | None = None
    error: str | None = None


@dataclass
class AssetScope:
    """The asset materialization in progress: its span, and the calls its adapters make."""

    asset: str
    run_id: str
    partition: str | None
    span: Span
    calls: list[CallRecord] = field(default_factory=list)
    rows: int | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, record: CallRecord) -> None:
        with self._lock:  # REST pages end on the adapter's loop thread, concurrently
            self.calls.append(record)


def current_scope() -> AssetScope | None:
    """The asset materialization this thread (or task) works for, if any."""
    return _scope.get()


class Call:
    """One call to an external system: a CLIENT span (recording when exporting) and its audit record.

    Use :func:`call` around code that does not yield, or :func:`start_call` and :meth:`end` where the call
    spans a generator's ``yield`` (a span must not be *current* across a yield: the consumer's context would
    change under it). Set :attr:`attempts`, :attr:`rows`, :attr:`bytes` and :attr:`http_status` as the call
    progresses."""

    def __init__(self, system: str, operation: str, target: str, *, protocol: str,
                 attributes: dict[str, Any] | None = None) -> None:
        self.system, self.operation, self.protocol = system, operation, protocol
        self.target = mask_target(target)
        self.scope = _scope.get()
        self.attempts = 1
        self.rows: int | None = None
        self.bytes: int | None = None
        self.http_status: int | None = None
        self.started_at = datetime.now(UTC)
        self._t0 = time.perf_counter()
        self._ended = False
        self.span = _start(f"{system} {operation}", None, {
            "hub.system": system, "hub.operation": operation, "hub.protocol": protocol, "hub.target": self.target,
            **(attributes or {})}, SpanKind.CLIENT)

    @contextmanager
    def active(self) -> Iterator[Call]:
        """Make the span current (what :func:`inject` reads) for a block that does not yield."""
        with trace.use_span(self.span, end_on_exit=False, record_exception=False, set_status_on_exception=False):
            yield self

    def end(self, error: BaseException | None = None, *, cancelled: bool = False) -> None:
        """Finish the span and record the call (once; later calls are ignored)."""
        if self._ended:
            return
        self._ended = True
        duration_ms = (time.perf_counter() - self._t0) * 1000
        status = "cancelled" if cancelled else ("error" if error is not None else "ok")
        text = None
        if error is not None:
            text = mask(f"{type(error).__name__}: {error}")[:2000]
        span = self.span
        if span.is_recording():
            span.set_attributes(_clean({
                "hub.status": status, "hub.rows": self.rows, "hub.bytes": self.bytes,
                "hub.retries": self.attempts - 1, "hub.attempts": self.attempts,
                "http.response.status_code": self.http_status}))
            if error is not None:
                span.set_attribute("error.type", type(error).__name__)
                span.set_status(Status(StatusCode.ERROR, text))
                span.add_event("exception", {"exception.type": type(error).__name__, "exception.message": text or ""})
            span.end()
        ctx = span.get_span_context()
        if self.scope is not None:
            self.scope.add(CallRecord(
                call_id=uuid.uuid4().hex, system=self.system, protocol=self.protocol, operation=self.operation,
                target=self.target, status=status, attempts=self.attempts, rows=self.rows, bytes=self.bytes,
                started_at=self.started_at, duration_ms=round(duration_ms, 3),
                trace_id=format(ctx.trace_id, "032x") if ctx.is_valid else None,
                span_id=format(ctx.span_id, "016x") if ctx.is_valid else None,
                http_status=self.http_status, error=text))


def start_call(system: str, operation: str, target: str, *, protocol: str,
               attributes: dict[str, Any] | None = None) -> Call:
    """A call whose span is a child of the current span (the asset's), not made current: end it yourself."""
    return Call(system, operation, target, protocol=protocol, attributes=attributes)


@contextmanager
def call(system: str, operation: str, target: str, *, protocol: str,
         attributes: dict[str, Any] | None = None) -> Iterator[Call]:
    """A call around a block that does not yield: its span is current inside (so HTTP requests carry it as
    ``traceparent``), an exception ends it as an error."""
    c = Call(system, operation, target, protocol=protocol, attributes=attributes)
    try:
        with c.active():
            yield c
    except BaseException as exc:
        c.end(None if isinstance(exc, GeneratorExit) else exc, cancelled=isinstance(exc, GeneratorExit))
        raise
    c.end()


def mask_target(text: str) -> str:
    """*text* (e.g. ``GET https://...`` or ``sftp://user@host:22 download /out/x``) with every URL in it masked
    (:func:`~hub.runtime.secrets.mask_url`) and every registered secret hidden."""
    return mask(" ".join(mask_url(word) if "://" in word else word for word in text.split(" ")))


def http_attributes(method: str, url: str) -> dict[str, Any]:
    """The standard HTTP client attributes of a request to *url* (masked)."""
    parts = urlsplit(url)
    return {"http.request.method": method, "url.full": mask_url(url), "server.address": parts.hostname,
            "server.port": parts.port}


def system_label(name: str | None, url: str) -> str:
    """The system a call goes to: its name in the spec, else the host it talks to."""
    return name or urlsplit(url).hostname or url


@contextmanager
def asset_scope(asset: str, *, run_id: str, partition: str | None = None, pipeline: str | None = None,
                sink: Callable[[AssetScope], None] | None = None, kind: str = "source") -> Iterator[AssetScope]:
    """One asset materialization: a span parented on the run's span (see the module notes), current inside;
    the calls made inside are handed to *sink* at the end, whether the load committed or rolled back
    (:func:`hub.warehouse.calls.calls_sink` writes them to ``_hub_calls``: the runtime layer never imports the
    warehouse). A scope inside a scope is the outer one."""
    outer = _scope.get()
    if outer is not None:
        yield outer
        return
    span = _start(f"asset {asset}", run_context(run_id), {
        "hub.asset": asset, "hub.partition": partition, "hub.run_id": run_id, "hub.pipeline": pipeline,
        "hub.asset_kind": kind}, SpanKind.INTERNAL)
    scope = AssetScope(asset, run_id, partition, span)
    token = _scope.set(scope)
    error: BaseException | None = None
    try:
        with trace.use_span(span, end_on_exit=False, record_exception=False, set_status_on_exception=False):
            yield scope
    except BaseException as exc:
        error = exc
        raise
    finally:
        _scope.reset(token)
        if span.is_recording():
            span.set_attributes(_clean({"hub.rows": scope.rows, "hub.calls": len(scope.calls),
                                        "hub.status": "error" if error is not None else "ok"}))
            if error is not None:
                span.set_status(Status(StatusCode.ERROR, mask(f"{type(error).__name__}: {error}")[:500]))
            span.end()
        if sink is not None and scope.calls:
            sink(scope)
        flush()

