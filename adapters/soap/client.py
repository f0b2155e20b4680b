"""The SOAP source: WSDL via zeep, requests with retries and paging, responses streamed into Arrow.

zeep does what it is good at — reading the WSDL, choosing the service and port, building the request
envelope with its parameters, SOAP headers and WS-Security — and is asked for the raw response. The
response body goes to disk and is read by :class:`adapters.soap._records.ResponseReader`, typed by the
WSDL's schema, so a response of hundreds of MB never becomes a zeep object tree.
"""

from __future__ import annotations

import contextlib
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import zeep
from lxml import etree
from zeep.cache import SqliteCache
from zeep.exceptions import DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden, LookupError, XMLSyntaxError
from zeep.proxy import ServiceProxy

from adapters._http import BrokenBody, OriginPolicy, gave_up
from adapters._stdhttp import fast_writes
from adapters.soap._compiled import Fallback, ReplyPlan, RequestPlan
from adapters.soap._origins import origin_of
from adapters.soap._records import Columns, ResponseReader
from adapters.soap._schema import FacetIndex, PlanBuilder, find_element_path, qname_of, tags_of
from adapters.soap._transport import HttpxTransport, Spooled
from adapters.soap._wsse import UsernameTokenWithTimestamp
from adapters.soap.config import SoapSourceConfig, SoapSystemConfig, SoapTimeouts
from hub.errors import (
    AdapterError,
    DeliveryFailed,
    DeliveryUnknown,
    ForeignOriginError,
    HTTPStatusError,
    ResponseFormatError,
    SoapFault,
    TransportError,
    XMLSecurityError,
)
from hub.runtime import tracing
from hub.runtime.breaker import breaker_for
from hub.runtime.checkpoint import DONE, Token
from hub.runtime.duration import over_budget
from hub.runtime.ratelimit import limiter_for, system_key
from hub.runtime.retry import RetryPolicy
from hub.runtime.secrets import mask, mask_url, register

#: HTTP statuses worth retrying when the body is not a SOAP Fault.
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
#: Batches a response's reader may make while the body is still arriving (they are handed over once it is
#: complete); then the reader waits for the body's end.
HELD_BATCHES = 4


@dataclass
class SoapStats:
    url: str = ""
    operation: str = ""
    pages: int = 0
    records: int = 0
    bytes: int = 0
    retries: int = 0


@dataclass
class Wsdl:
    """A loaded WSDL: the zeep client, its transport and the schema facets."""

    client: zeep.Client
    transport: HttpxTransport
    facets: FacetIndex
    location: str


def _http_client(system: SoapSystemConfig) -> httpx.Client:
    t = system.timeout
    timeout = httpx.Timeout(t, connect=min(t, 10.0)) if isinstance(t, float | int) else \
        httpx.Timeout(t.read, connect=t.connect) if isinstance(t, SoapTimeouts) else None
    auth = None
    if system.basic is not None:
        register(system.basic.password)
        auth = httpx.BasicAuth(system.basic.username, system.basic.password)
    verify: Any = system.verify
    if system.client_cert is not None:  # httpx takes client certificates through an SSL context
        verify = ssl.create_default_context(cafile=system.verify if isinstance(system.verify, str) else None)
        if system.verify is False:
            verify.check_hostname, verify.verify_mode = False, ssl.CERT_NONE
        verify.load_cert_chain(system.client_cert.cert, system.client_cert.key)
    client = httpx.Client(auth=auth, verify=verify, timeout=timeout, follow_redirects=True,
                          headers={"User-Agent": "hub/0.1", **system.headers})
    return fast_writes(client, verify=verify)  # flows' writes (adapters.soap._transport: in_memory) on plain sockets


#: WSDLs loaded by this process with a document cache (*cache_dir* and ``wsdl_cache_ttl``): key -> (expiry
#: on the monotonic clock, the loaded WSDL). See :func:`load_wsdl`.
_loaded: dict[tuple[str, ...], tuple[float, Wsdl]] = {}
_loading: dict[tuple[str, ...], threading.Lock] = {}
_loaded_lock = threading.Lock()


def load_wsdl(system: SoapSystemConfig, *, cache_dir: Path | None = None, base_dir: Path | None = None,
              spool_dir: Path | None = None, system_name: str | None = None) -> Wsdl:
    """Load the system's WSDL (and its imports) safely: DTDs and entities refused, imports only from the
    WSDL's own origin or folder and the system's ``allowed_origins`` (:mod:`adapters.soap._origins`), all
    documents together within ``max_response_bytes``. Each document fetched is a traced call of
    *system_name* (:mod:`hub.runtime.tracing`).

    With a document cache (*cache_dir*, ``wsdl_cache_ttl`` > 0) the parsed WSDL is also kept in this process for
    the same TTL, per system configuration and arguments: parsing it again from the cached documents cost
    ~40-70 ms, which a flow paid twice per run (its catalog, then its sender). ``wsdl_cache_ttl: 0`` loads the
    live WSDL every time."""
    if not system.wsdl_cache_ttl or cache_dir is None:
        return _load_wsdl(system, cache_dir=cache_dir, base_dir=base_dir, spool_dir=spool_dir,
                          system_name=system_name)
    key = (system.model_dump_json(), str(cache_dir), str(base_dir), str(spool_dir), str(system_name))
    with _loaded_lock:
        lock = _loading.setdefault(key, threading.Lock())
    with lock:  # threads wanting the same WSDL load it once
        found = _loaded.get(key)
        if found is not None and time.monotonic() < found[0]:
            return found[1]
        wsdl = _load_wsdl(system, cache_dir=cache_dir, base_dir=base_dir, spool_dir=spool_dir,
                          system_name=system_name)
        _loaded[key] = (time.monotonic() + system.wsdl_cache_ttl, wsdl)
        return wsdl


def _load_wsdl(system: SoapSystemConfig, *, cache_dir: Path | None, base_dir: Path | None,
               spool_dir: Path | None, system_name: str | None) -> Wsdl:
    location = system.wsdl
    if "://" not in location:
        path = Path(location)
        location = str(path if path.is_absolute() or base_dir is None else (base_dir / path))
    cache = None
    if system.wsdl_cache_ttl and cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        cache = SqliteCache(path=str(cache_dir / "wsdl-cache.sqlite"), timeout=system.wsdl_cache_ttl)
    transport = HttpxTransport(_http_client(system), cache=cache, spool_dir=spool_dir,
                               max_bytes=system.max_response_bytes, allowed_origins=system.allowed_origins,
                               base_dir=base_dir,
                               system_name=tracing.system_label(system_name, system.address or system.wsdl))
    # forbid_external would refuse every http(s) import, the WSDL's own server too, and let file: imports
    # through: the transport enforces the same-origin rule instead (adapters.soap._origins), for all of them.
    # Without xml_huge_tree libxml2 refuses documents nested deeper than 256 levels.
    settings = zeep.Settings(strict=True, forbid_dtd=True, forbid_entities=True, forbid_external=False,
                             xml_huge_tree=False)
    wsse = None
    if system.username_token is not None:
        ut = system.username_token
        wsse = UsernameTokenWithTimestamp(ut.username, ut.password, digest=ut.digest,
                                          timestamp_ttl=ut.timestamp_ttl if ut.timestamp else None)
    shown = mask_url(location)
    try:
        client = zeep.Client(location, transport=transport, settings=settings, wsse=wsse)
    except (DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden) as exc:
        raise XMLSecurityError(f"WSDL {shown}: {exc}; DTDs and entity declarations are refused") from None
    except XMLSyntaxError as exc:
        raise ResponseFormatError(f"WSDL {shown} is not well-formed XML: {exc}") from None
    except httpx.TransportError as exc:
        raise TransportError(f"cannot load WSDL {shown}: {type(exc).__name__}: {mask(str(exc))}") from None
    except OSError as exc:
        raise AdapterError(f"cannot read WSDL {shown}: {exc.strerror or exc}") from None
    except (LookupError, ValueError, KeyError) as exc:
        raise AdapterError(f"WSDL {shown} could not be understood: {exc}") from None
    return Wsdl(client, transport, FacetIndex(transport.documents), location)


def soap_version(binding: Any) -> str:
    return "1.2" if type(binding).__name__ == "Soap12Binding" else "1.1"


def select_port(wsdl: Wsdl, system: SoapSystemConfig) -> tuple[Any, Any]:
    """The (service, port) the system names, with a clear error listing what exists."""
    services = wsdl.client.wsdl.services
    if not services:
        raise AdapterError(f"WSDL {mask_url(wsdl.location)} defines no service")
    if system.service:
        service = services.get(system.service)
        if service is None:
            raise AdapterError(f"WSDL {mask_url(wsdl.location)}: no service '{system.service}' "
                               f"(services: {', '.join(services)})")
    else:
        service = next(iter(services.values()))
    ports = {name: p for name, p in service.ports.items() if hasattr(p.binding, "_operations")}
    if system.port:
        port = ports.get(system.port)
        if port is None:
            raise AdapterError(f"WSDL {mask_url(wsdl.location)}: service {service.name} has no SOAP port "
                               f"'{system.port}' (ports: {', '.join(ports) or 'none'})")
        return service, port
    candidates = [p for p in ports.values()
                  if system.soap_version is None or soap_version(p.binding) == system.soap_version]
    if not candidates:
        raise AdapterError(f"WSDL {mask_url(wsdl.location)}: service {service.name} has no SOAP "
                           f"{system.soap_version or ''} port (ports: {', '.join(ports) or 'none'})")
    return service, candidates[0]


class SoapSource:
    """Extract the records of one operation.

    *system* and *source* must already have secrets resolved and partition templates rendered.
    *lists*: dotted paths (relative to the record) of repeated children kept as ``list<struct>`` columns
    (the hub turns them into child tables); every other repeated child becomes a JSON text column.
    """

    def __init__(self, system: SoapSystemConfig, source: SoapSourceConfig, *, name: str = "soap",
                 batch_size: int = 10_000, cache_dir: Path | None = None, base_dir: Path | None = None,
                 spool_dir: Path | None = None, lists: set[str] | frozenset[str] = frozenset(),
                 system_name: str | None = None, state_dir: Path | None = None,
                 max_duration: float | None = None) -> None:
        self.system, self.source, self.name = system, source, name
        self.max_duration = max_duration  # seconds an extraction may take (the source's time budget)
        self.batch_size = batch_size
        self.cache_dir, self.base_dir, self.spool_dir = cache_dir, base_dir, spool_dir
        self.lists = set(lists)
        self.policy = RetryPolicy.from_config(system.retries)
        self.stats = SoapStats(url=mask_url(system.address or system.wsdl), operation=source.operation)
        self.system_label = tracing.system_label(system_name, system.address or system.wsdl)  # spans, _hub_calls
        self._wsdl: Wsdl | None = None
        self._headers: Any = None
        self._sending: tuple[Wsdl, Any, Any, Any] | None = None  # send()'s binding, made once
        self._plans: tuple[RequestPlan | None, ReplyPlan | None] = (None, None)  # send()'s compiled envelope/reply
        self._sending_lock = threading.Lock()
        self._send_attributes: dict[str, Any] = {}  # the span attributes of send(), made with its binding
        # Shared with every process calling the system (hub.runtime.ratelimit / breaker).
        key = system_key(system_name, system.address or system.wsdl)
        self.limiter = limiter_for(key, system.rate_limit, state_dir)
        self.breaker = breaker_for(key, system.circuit_breaker, state_dir)

    # --- setup ---------------------------------------------------------------------------------------

    def _pin_endpoint(self, wsdl: Wsdl, address: str) -> None:
        """Calls (and their redirects) go only to the endpoint the spec trusts, with the credentials.

        A remote WSDL's ``soap:address`` is an address taken from a response: it must share the WSDL's
        origin or be listed in ``allowed_origins``, or the spec must name the endpoint itself (``address:``).
        A local WSDL file is the spec author's, and so is its address."""
        label = self.system_label
        wsdl_origin = origin_of(wsdl.location)
        allowed = [o for o in self.system.allowed_origins if origin_of(o) is not None]
        if not self.system.address and wsdl_origin is not None and origin_of(address) != wsdl_origin \
                and origin_of(address) not in {origin_of(o) for o in allowed}:
            raise ForeignOriginError(
                f"{label}: the WSDL {mask_url(wsdl.location)} sends calls to {mask_url(address)}, another origin; "
                "credentials are never sent to an address taken from a partner's document. Name the endpoint "
                "with the system's address:, or list its origin under allowed_origins")
        trusted = [address, wsdl.location if wsdl_origin is not None else None, *allowed]
        wsdl.transport.http.event_hooks = OriginPolicy.of(label, trusted).hooks()

    def _bind(self) -> tuple[Wsdl, Any, Any, Any]:
        """(the loaded WSDL, the chosen port's binding, a service proxy at the pinned address, the source's
        operation): what reading and sending both start from."""
        wsdl = self._wsdl or load_wsdl(self.system, cache_dir=self.cache_dir, base_dir=self.base_dir,
                                       spool_dir=self.spool_dir, system_name=self.system_label)
        self._wsdl = wsdl
        service, port = select_port(wsdl, self.system)
        binding = port.binding
        # the port's own binding object: client.create_service looks bindings up in the root document only,
        # which misses those of an imported WSDL (the usual vendor layout)
        proxy = ServiceProxy(wsdl.client, binding, address=self.system.address) if self.system.address \
            else wsdl.client.bind(service.name, port.name)
        address = self.system.address or port.binding_options.get("address", "")
        self.stats.url = mask_url(address)
        self._pin_endpoint(wsdl, address)
        op = self.source.operation
        operation = binding._operations.get(op)
        if operation is None:
            raise AdapterError(f"operation {op} is not in port {port.name} of service {service.name} "
                               f"(operations: {', '.join(sorted(binding._operations))})")
        return wsdl, binding, proxy, operation

    def _open(self) -> tuple[Wsdl, Any, Any, ResponseReader]:
        wsdl, binding, proxy, operation = self._bind()
        op_name = self.source.operation
        body = getattr(operation.output, "body", None)
        if body is None:
            raise AdapterError(f"operation {op_name} has no output body to read records from")
        chain = find_element_path(body, self.source.records)
        if chain is None or len(chain) < 2:
            raise AdapterError(f"operation {op_name}: its response has no element named '{self.source.records}' "
                               f"to use as records (look at `hub catalog soap {self.system.wsdl}`)")
        record_el = chain[-1]
        space = PlanBuilder(wsdl.facets).space(record_el.type)
        token_tag = None
        if self.source.paginate and self.source.paginate.token:
            token_chain = find_element_path(body, self.source.paginate.token.element)
            if token_chain is None:
                raise AdapterError(f"operation {op_name}: its response has no element named "
                                   f"'{self.source.paginate.token.element}' for the continuation token")
            token_tag = qname_of(token_chain[-1])
        self._headers = self._soap_headers(operation, getattr(binding.name, "namespace", None))
        reader = ResponseReader(
            operation=op_name, url=self.stats.url,
            chain=[(qname_of(el), tags_of(el.type)) for el in chain[:-1]],
            record_tag=qname_of(record_el), space=space, columns=Columns(self.lists), token_tag=token_tag,
            batch_size=self.batch_size, max_depth=self.system.max_xml_depth)
        return wsdl, proxy, operation, reader

    # --- calls ---------------------------------------------------------------------------------------

    def _soap_headers(self, operation: Any, tns: str | None) -> Any:
        """The source's SOAP headers in the form zeep takes: a dict when the WSDL declares the operation's
        header elements, else elements built by name ({namespace}Name, or Name in the service's target
        namespace) - services often expect headers their WSDL never declared (session ids, tenants)."""
        headers = self.source.soap_headers
        if not headers:
            return None
        declared = getattr(getattr(operation.input, "header", None), "type", None)
        if declared is not None and getattr(declared, "elements", None):
            return headers
        elements = []
        for name, value in headers.items():
            el = etree.Element(name if name.startswith("{") else (f"{{{tns}}}{name}" if tns else name))
            el.text = "" if value is None else str(value)
            elements.append(el)
        return elements

    def _call(self, wsdl: Wsdl, proxy: Any, params: dict[str, Any], plan: RequestPlan | None = None) -> Spooled:
        """Send the operation's request with *params*; the envelope is built by *plan* when it covers them
        (:mod:`adapters.soap._compiled`), else by zeep."""
        if self.limiter is not None:  # before the envelope: its WS-Security timestamp must not age in the wait
            self.limiter.acquire()
        request = None
        if plan is not None and self._headers is None:
            with contextlib.suppress(Fallback):  # not covered: zeep builds it below
                request = plan.envelope(params)
        if request is not None:
            spooled: Spooled = wsdl.transport.post_xml(plan.address, *request)  # type: ignore[union-attr]
            return spooled
        kwargs = dict(params)
        if self._headers is not None:
            kwargs["_soapheaders"] = self._headers
        op = self.source.operation
        try:
            with wsdl.client.settings(raw_response=True):
                response: Spooled = proxy[op](**kwargs)
        except (TypeError, ValueError) as exc:  # zeep checks parameters against the WSDL
            raise AdapterError(f"operation {op}: parameters {sorted(params)} do not fit the WSDL: {exc}") from None
        return response

    def _page(self, wsdl: Wsdl, proxy: Any, reader: ResponseReader, params: dict[str, Any]) -> Iterator[pa.RecordBatch]:
        """One request (with retries) and its records, as one traced call (:mod:`hub.runtime.tracing`): the
        span spans the reading of the records too, but is current only while a request goes out (a generator
        must not leave its span current across a ``yield``)."""
        op = self.source.operation
        call = tracing.start_call(self.system_label, op, f"{op} at {self.stats.url}", protocol="soap",
                                  attributes={**tracing.http_attributes("POST", self.stats.url),
                                              "rpc.system": "soap", "rpc.method": op})
        try:
            yield from self._breaker_page(wsdl, proxy, reader, params, call)
        except GeneratorExit:
            call.end(cancelled=True)
            raise
        except BaseException as exc:
            call.end(exc)
            raise
        call.rows = reader.records
        call.end()

    def _breaker_page(self, wsdl: Wsdl, proxy: Any, reader: ResponseReader, params: dict[str, Any],
                      call: tracing.Call | None = None) -> Iterator[pa.RecordBatch]:
        """One request (with retries) and its records, through the system's circuit breaker if it has one:
        what is left after the retries counts as a failure when the service is down (transport errors,
        5xx, server faults); any answer that shows it up (client faults, 4xx) as a success."""
        if self.breaker is None:
            yield from self._attempts(wsdl, proxy, reader, params, call)
            return
        self.breaker.before_call()
        try:
            yield from self._attempts(wsdl, proxy, reader, params, call)
        except (TransportError, HTTPStatusError, SoapFault) as exc:
            down = (isinstance(exc, TransportError) or (isinstance(exc, HTTPStatusError) and exc.status >= 500)
                    or (isinstance(exc, SoapFault) and not exc.is_client_fault))
            if down:
                self.breaker.failure(type(exc).__name__)
            else:
                self.breaker.success()
            raise
        self.breaker.success()

    def _attempts(self, wsdl: Wsdl, proxy: Any, reader: ResponseReader,
                  params: dict[str, Any], call: tracing.Call | None = None) -> Iterator[pa.RecordBatch]:
        op = self.source.operation
        attempt = 0
        while True:
            attempt += 1
            retry_after: str | None = None
            response: Spooled | None = None
            try:
                with wsdl.transport.streaming():  # the body is read while it arrives (see _streamed)
                    if call is None:
                        response = self._call(wsdl, proxy, params)
                    else:
                        call.attempts = attempt
                        with call.active():  # the request carries the call's span as traceparent
                            response = self._call(wsdl, proxy, params)
                        call.http_status = response.status
                if response.status >= 400:
                    response.wait()  # an error's body is read whole
            except (BrokenBody, httpx.TransportError) as exc:
                if response is not None:
                    response.discard()
                if attempt <= self.policy.max_retries:
                    self._backoff(attempt)
                    continue
                raise gave_up(f"{op} at {self.stats.url}", exc, attempt) from None
            except BaseException:
                if response is not None:
                    response.discard()
                raise
            try:
                if response.status >= 400:
                    self._count_bytes(response, call)
                    if response.is_xml:
                        try:
                            for _ in reader.read(response.file):
                                pass
                        except SoapFault as fault:
                            if fault.is_client_fault or attempt > self.policy.max_retries:
                                raise
                            self._backoff(attempt)
                            continue
                        except ResponseFormatError:
                            pass  # not a fault after all: an HTTP error with an XML body
                    retry_after = response.headers.get("Retry-After")
                    if response.status in RETRY_STATUS and attempt <= self.policy.max_retries:
                        self._backoff(attempt, retry_after)
                        continue
                    tried = f" (gave up after {attempt} attempts)" if response.status in RETRY_STATUS else ""
                    raise HTTPStatusError(f"{op}: POST {self.stats.url}: HTTP {response.status} {response.reason}"
                                          f"{tried}: {response.head()}", url=self.stats.url, status=response.status)
                records, token = reader.records, reader.token
                try:
                    yield from self._streamed(reader, response, call)
                except BrokenBody as exc:  # before any batch was handed over: tried again, as before
                    reader.records, reader.token = records, token
                    if attempt <= self.policy.max_retries:
                        self._backoff(attempt)
                        continue
                    raise gave_up(f"{op} at {self.stats.url}", exc, attempt) from None
                self.stats.pages += 1
                self.stats.records += reader.records
                return
            finally:
                response.discard()

    def _count_bytes(self, response: Spooled, call: tracing.Call | None) -> None:
        self.stats.bytes += response.size
        if call is not None:
            call.bytes = response.size

    def _streamed(self, reader: ResponseReader, response: Spooled,
                  call: tracing.Call | None) -> Iterator[pa.RecordBatch]:
        """The records of a response read while its body arrives, with the outcome of reading it whole
        first: no batch is handed over before the body is complete (a connection that breaks off is tried
        again, having delivered nothing), and a body that broke off or grew past ``max_bytes`` raises that
        rather than what the parser made of it. The batches read before the end wait, at most
        :data:`HELD_BATCHES` of them (then the reader waits for the body)."""
        held: list[pa.RecordBatch] = []
        counted = False  # the body is complete and its bytes counted
        if not response.follows:
            response.wait()
            self._count_bytes(response, call)
            counted = True
        try:
            with response.follow() as body:
                for batch in reader.read(body):
                    held.append(batch)
                    if response.complete or len(held) >= HELD_BATCHES:
                        if not counted:
                            response.wait()
                            self._count_bytes(response, call)
                            counted = True
                        while held:
                            yield held.pop(0)
        except Exception:
            if not counted:
                response.wait()  # the body's own failure comes first
                self._count_bytes(response, call)
            raise
        if not counted:
            response.wait()
            self._count_bytes(response, call)
        while held:
            yield held.pop(0)

    def _backoff(self, attempt: int, retry_after: str | None = None) -> None:
        self.stats.retries += 1
        self.policy.sleep(attempt, retry_after)

    # --- writes (flows) -------------------------------------------------------------------------------

    def send(self, params: dict[str, Any]) -> tuple[int, Any]:
        """Call the operation once with *params*, for a write: never retried here (the caller's ledger decides),
        through the system's rate limit and circuit breaker, as one traced call; the HTTP status and the
        response as plain dicts and lists (zeep's ``serialize_object``). A fault or an HTTP error raises
        :class:`~hub.errors.DeliveryFailed` (retryable for 502/503/504/429); a request that went out without
        an answer :class:`~hub.errors.DeliveryUnknown`; a connection that could not be opened
        :class:`~hub.errors.DeliveryFailed` (retryable: nothing was sent)."""
        from types import SimpleNamespace

        from zeep.exceptions import Fault
        from zeep.helpers import serialize_object

        wsdl, binding, proxy, operation = self._send_binding()
        request_plan, reply_plan = self._plans
        op = self.source.operation
        breaker = self.breaker
        if breaker is not None:
            breaker.before_call()
        where = f"{op} at {self.stats.url}"
        with tracing.call(self.system_label, op, where, protocol="soap", attributes=self._send_attributes) as call:
            try:
                with wsdl.transport.in_memory():  # read whole below: no temporary file per call
                    response = self._call(wsdl, proxy, params, request_plan)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                if breaker is not None:
                    breaker.failure(type(exc).__name__)
                raise DeliveryFailed(f"{where}: cannot connect ({type(exc).__name__}: {mask(str(exc))}); nothing "
                                     "was sent", retryable=True) from None
            except (BrokenBody, httpx.TransportError) as exc:
                if breaker is not None:
                    breaker.failure(type(exc).__name__)
                raise DeliveryUnknown(f"{where}: the request was sent and no complete answer came "
                                      f"({type(exc).__name__}: {mask(str(exc))}); it may have taken effect") from None
            try:
                call.http_status, call.bytes = response.status, response.size
                body = response.content()
            finally:
                response.discard()
            try:
                try:
                    if reply_plan is None:
                        raise Fallback
                    result = reply_plan.read(response.status, body, response.headers.get("Content-Type"))
                except Fallback:  # not covered by the plan (a fault among others): zeep reads it
                    reply = SimpleNamespace(status_code=response.status, content=body, headers=response.headers,
                                            encoding="utf-8")
                    result = serialize_object(binding.process_reply(wsdl.client, operation, reply), dict)
            except Fault as fault:
                if breaker is not None:
                    breaker.success()  # the service is up: it answered
                raise DeliveryFailed(f"{where}: SOAP fault {fault.code}: {mask(str(fault.message))}",
                                     status=response.status) from None
            except Exception as exc:  # an HTTP error without a fault, or a body zeep cannot read
                if breaker is not None:
                    if response.status >= 500:
                        breaker.failure(type(exc).__name__)
                    else:
                        breaker.success()
                text = mask(body[:300].decode("utf-8", "replace"))
                raise DeliveryFailed(f"{where}: HTTP {response.status}: {text}", status=response.status,
                                     retryable=response.status in (429, 502, 503, 504)) from None
        if breaker is not None:
            breaker.success()
        return response.status, result

    def _send_binding(self) -> tuple[Wsdl, Any, Any, Any]:
        """:meth:`_bind` and the SOAP headers, once for every :meth:`send` of this source (a flow sends through
        one source per operation from several threads; binding per call cost half a millisecond)."""
        with self._sending_lock:
            if self._sending is None:
                wsdl, binding, proxy, operation = self._bind()
                self._headers = self._soap_headers(operation, getattr(binding.name, "namespace", None))
                self._send_attributes = {**tracing.http_attributes("POST", self.stats.url), "rpc.system": "soap",
                                         "rpc.method": self.source.operation}
                self._plans = (RequestPlan.compile(wsdl.client, binding, operation, proxy._binding_options["address"]),
                               ReplyPlan.compile(wsdl.client, operation))
                self._sending = (wsdl, binding, proxy, operation)
            return self._sending

    # --- paging --------------------------------------------------------------------------------------

    def batches(self) -> Iterator[pa.RecordBatch]:
        """Every record of every page as Arrow batches of at most ``batch_size`` rows."""
        for batch, _ in self.resumable_batches(None):
            yield batch

    def resume_blocker(self, window_closed: bool) -> str | None:
        """Why this source cannot resume from a checkpoint (None: it can). A continuation token is a position
        the service hands out; page numbers and offsets are only trusted for a partition whose window is over
        (data of the past), as pages could otherwise shift between the attempts."""
        paging = self.source.paginate
        if paging is None:
            return "a single request: nothing to resume"
        if paging.token or window_closed:
            return None
        return ("page-number/offset paging of data that may still change (not a partition in the past): "
                "a retry starts over, as pages could have shifted")

    def resumable_batches(self, resume: Token | None) -> Iterator[tuple[pa.RecordBatch, Token | None]]:
        """The batches of :meth:`batches`, the last one of each page with the checkpoint token that continues
        after that page; from the start, or from *resume* (see :mod:`hub.runtime.checkpoint`)."""
        if resume is not None and resume.get("kind") == "done":
            return
        deadline = time.monotonic() + self.max_duration if self.max_duration is not None else None
        wsdl, proxy, _, reader = self._open()
        paging = self.source.paginate
        params = dict(self.source.params)
        if paging and paging.page_number:
            params[paging.page_number.param] = paging.page_number.start
            if paging.page_number.size_param and paging.page_number.size:
                params[paging.page_number.size_param] = paging.page_number.size
        elif paging and paging.offset:
            params[paging.offset.param] = paging.offset.start
            if paging.offset.limit_param:
                params[paging.offset.limit_param] = paging.offset.limit
        moving = (paging.token.param if paging.token else paging.page_number.param if paging.page_number
                  else paging.offset.param if paging.offset else None) if paging else None
        pages = 0
        if resume is not None:
            if resume.get("param") != moving or moving is None:
                raise AdapterError(f"{self.source.operation}: the checkpoint continues with "
                                   f"{resume.get('param')!r}, which this source's paging does not use")
            params[moving] = resume["value"]
            pages = int(resume.get("pages", 0))
        seen_tokens: set[str] = set()
        while True:
            pages += 1
            if paging and paging.max_pages and pages > paging.max_pages:
                raise ResponseFormatError(f"{self.source.operation}: more than paginate.max_pages="
                                          f"{paging.max_pages} pages; stopping. If the source really has more "
                                          f"pages, raise `paginate.max_pages` on sources.{self.name}")
            self._check_budget(deadline)
            reader.records, reader.token = 0, None
            held: pa.RecordBatch | None = None  # the page's last batch is handed over with the token
            for batch in self._page(wsdl, proxy, reader, params):
                self._check_budget(deadline)
                if held is not None:
                    yield held, None
                held = batch
            n = reader.records
            done = paging is None
            if paging is None:
                pass
            elif paging.token:
                token = reader.token
                if not token:
                    done = True
                elif token in seen_tokens:
                    raise ResponseFormatError(f"{self.source.operation}: continuation token {token!r} was "
                                              "already returned; the service is looping")
                else:
                    seen_tokens.add(token)
                    params[paging.token.param] = token
            # Page and offset paging end on an empty page, not a short one: services often cap the page
            # size below what was asked, and a short page would then silently end the extraction.
            elif paging.page_number:
                done = n == 0
                params[paging.page_number.param] += 0 if done else 1
            elif paging.offset:
                done = n == 0
                params[paging.offset.param] += n
            if held is not None:
                yield held, (dict(DONE) if done or moving is None else
                             {"kind": "param", "param": moving, "value": params[moving], "pages": pages,
                              "at": f"{moving}={params[moving]}"})
            if done:
                return

    def _check_budget(self, deadline: float | None) -> None:
        """Stop an extraction that has run past its ``max_duration`` (checked per page and per batch)."""
        if deadline is not None and self.max_duration is not None and time.monotonic() > deadline:
            st = self.stats
            raise over_budget(self.name, self.max_duration, f"{st.pages} pages, {st.records} records read")

    def details(self) -> dict[str, Any]:
        """What the extraction did, for run metadata (the URL is masked)."""
        st = self.stats
        out: dict[str, Any] = {"url": st.url, "operation": st.operation, "pages": st.pages, "records": st.records,
                               "bytes": st.bytes, "retries": st.retries}
        if self.limiter is not None:
            out["rate_limit_wait_s"] = round(self.limiter.waited, 3)
        if self.breaker is not None:
            out["circuit"] = self.breaker.details()
        return out
