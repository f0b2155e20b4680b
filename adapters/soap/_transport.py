"""zeep's transport, on httpx: WSDL documents through a TTL cache, operation responses spooled to disk.

zeep reads WSDLs and imported XSDs through ``Transport.load`` (its documented extension point); there each
import is checked against the WSDL's origin (:mod:`adapters.soap._origins`) before anything is opened, and
all documents of one load count against one size cap. Every document loaded is also kept in
``documents`` so the schema facets zeep drops can be read back (see :mod:`adapters.soap._schema`).
Operation calls go through ``post_xml``: the response body is streamed to a temporary file (never held
in memory, bounded by ``max_bytes``) and returned as a :class:`Spooled` response for the streaming reader; a
source's reads (:meth:`HttpxTransport.streaming`) get it as soon as its head has come, the body written by a
thread of its own while the reader parses the file as it grows (the source hands batches over only once the body
is complete: ``adapters.soap.client``).
A caller that reads the whole answer into memory anyway (a flow's write, parsed by zeep) asks for the calls of
its thread to keep the body in memory (:meth:`HttpxTransport.in_memory`, the same ``max_bytes`` bound): no
temporary file is created, written, read back and deleted per call.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
from zeep.transports import Transport
from zeep.wsdl.utils import etree_to_string

from adapters._http import BrokenBody
from adapters._stdhttp import EXTENSION as STDLIB
from adapters._stdhttp import READ_SIZE
from adapters.soap._origins import ImportPolicy, local_path, origin_of
from hub.errors import HTTPStatusError, ResponseFormatError, TransportError, XMLSecurityError
from hub.runtime import tracing
from hub.runtime.growing import Growing
from hub.runtime.secrets import mask, mask_url

#: The most bytes one read of a body spooled by a :class:`_Pump` asks the socket for (plain sockets only:
#: adapters._stdhttp.READ_SIZE).
PUMP_READ_SIZE = 1 << 20


class _Pump:
    """The body of a response that is still arriving (:meth:`HttpxTransport.streaming`): a thread of its own
    writes it to the spool file while the caller reads the file as it grows (:meth:`Spooled.follow`)."""

    def __init__(self, path: Path) -> None:
        self.file = Growing(path)
        self.stop = False  # the caller discarded the response: stop writing

    def run(self, response: httpx.Response, fd: int, max_bytes: int, what: str) -> None:
        size, error = 0, None
        try:
            with os.fdopen(fd, "wb") as out:
                try:
                    for chunk in capped(response, max_bytes, what):
                        if self.stop:
                            return
                        out.write(chunk)
                        out.flush()
                        size += len(chunk)
                        self.file.written(size)
                except httpx.TransportError as exc:
                    raise BrokenBody(response.status_code, size, response.headers.get("Content-Length"),
                                     type(exc).__name__) from exc
        except BaseException as exc:  # handed to the reading thread by Spooled.wait()
            error = exc
        finally:
            response.close()
            self.file.finish(error)


@dataclass
class Spooled:
    """A response whose body is in a file, or in :attr:`body` when it was small and the caller asked for that
    (:meth:`HttpxTransport.in_memory`). Delete the file with :meth:`discard`. A response spooled while the
    caller reads (:meth:`HttpxTransport.streaming`) may still be arriving: :meth:`wait` for its end (and
    its :attr:`size`) before anything but :meth:`follow`."""

    url: str
    status: int
    reason: str
    headers: httpx.Headers
    path: Path | None  # None when the body is in memory
    size: int
    body: bytes | None = field(default=None, repr=False)
    _closed: bool = field(default=False, repr=False)
    _pump: _Pump | None = field(default=None, repr=False)
    _early: bool = field(default=False, repr=False)  # the body may be read while it arrives (see follows)

    @property
    def follows(self) -> bool:
        """The body is better read while it arrives: it is spooled by a thread that reads the socket in
        large steps (:data:`PUMP_READ_SIZE`). A body that came another way (a proxy: httpx's transport, 64 KiB
        per read) would crawl while the caller's thread parses; it is better awaited, then read."""
        return self._pump is not None and self._early

    @property
    def complete(self) -> bool:
        """The whole body is in the file (or it broke off: :meth:`wait` raises why)."""
        return self._pump is None or self._pump.file.done

    def wait(self) -> None:
        """Until the whole body is in the file; raises what stopped it (:class:`BrokenBody` when the
        connection broke, :class:`ResponseFormatError` past ``max_bytes``), as spooling it whole did."""
        if self._pump is not None:
            self.size = self._pump.file.wait()

    def follow(self) -> IO[bytes]:
        """The body's file, read as it arrives (a file object with ``read``, ``tell``, ``seek``, ``close``)."""
        if self._pump is not None:
            return self._pump.file.open(PUMP_READ_SIZE)
        complete = Growing(self.file)
        complete.written(self.size)
        complete.finish()
        return complete.open(PUMP_READ_SIZE)

    @property
    def is_xml(self) -> bool:
        ctype = self.headers.get("Content-Type", "").lower()
        return "xml" in ctype or (not ctype and self.size > 0)

    @property
    def file(self) -> Path:
        """The spooled body's file (responses read as a stream are always spooled)."""
        if self.path is None:
            raise ValueError(f"the response of {self.url} was kept in memory, not spooled")
        return self.path

    def content(self) -> bytes:
        """The whole body."""
        return self.body if self.body is not None else self.file.read_bytes()

    def head(self, n: int = 300) -> str:
        if self.body is not None:
            return mask(self.body[:n].decode("utf-8", "replace")).strip()
        with self.file.open("rb") as fh:
            return mask(fh.read(n).decode("utf-8", "replace")).strip()

    def discard(self) -> None:
        if not self._closed:
            self._closed = True
            if self._pump is not None:
                self._pump.stop = True
            if self.path is not None:
                self.path.unlink(missing_ok=True)


def capped(response: httpx.Response, max_bytes: int, what: str, context: str = "",
           limit: int | None = None) -> Iterator[bytes]:
    """The body of a streamed *response*, 1 MiB at a time, never more than *max_bytes* of it: a larger declared
    ``Content-Length`` is refused before reading, a body that grows past the cap as soon as it does. The one
    bound for WSDL documents and operation responses alike (the error: "*what* exceeds max_response_bytes=N
    *context*"); a connection that breaks mid-body raises httpx's error for the caller to classify. *limit*: the
    configured cap named in the error when *max_bytes* is what is left of it."""
    shown = max_bytes if limit is None else limit
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise ResponseFormatError(f"{what} of {declared} bytes exceeds max_response_bytes={shown}{context}")
    size = 0
    for chunk in response.iter_bytes(1 << 20):
        size += len(chunk)
        if size > max_bytes:
            raise ResponseFormatError(f"{what} exceeds max_response_bytes={shown}{context}")
        yield chunk


#: Redirects followed for one WSDL document.
MAX_REDIRECTS = 5


class HttpxTransport(Transport):
    """zeep's transport on httpx. The first document it loads is the WSDL; every later one is an import,
    checked against the WSDL's :class:`~adapters.soap._origins.ImportPolicy` before it is opened or
    requested. All documents of one load share one byte budget, *max_bytes*: zeep keeps every document and
    its tree in memory at the same time, so it is the total that must be bounded — a per-document cap would
    let a WSDL with many imports multiply it."""

    def __init__(self, http: httpx.Client, *, cache: Any = None, spool_dir: Path | None = None,
                 max_bytes: int = 4 * 1024**3, system_name: str | None = None,
                 allowed_origins: Sequence[str] = (), base_dir: Path | None = None) -> None:
        super().__init__(cache=cache)
        self.system_name = system_name  # of the traced calls fetching documents
        self.session.close()  # zeep's requests session is never used
        self.http = http
        self.spool_dir = spool_dir
        self.max_bytes = max_bytes
        self.allowed_origins, self.base_dir = tuple(allowed_origins), base_dir
        self.policy: ImportPolicy | None = None
        self.documents: list[tuple[str, bytes]] = []
        self.loaded = 0  # bytes of all documents so far
        self._local = threading.local()  # in_memory: the thread's call bodies are kept in memory
        self._urls: dict[str, httpx.URL] = {}  # in_memory calls' addresses, parsed once (httpx parses a str per call)

    def streaming(self) -> AbstractContextManager[None]:
        """Inside: the responses of this thread's calls are spooled by a thread of their own, and returned as
        soon as their head has arrived (:class:`Spooled` with :meth:`Spooled.follow` and
        :meth:`Spooled.wait`), so that the caller parses the body while it is downloaded."""
        return self._for_this_thread("streaming")

    def in_memory(self) -> AbstractContextManager[None]:
        """Inside: the responses of this thread's calls are kept in memory (:attr:`Spooled.body`) instead of a
        file, within the same ``max_bytes``: for callers that read the whole body anyway."""
        return self._for_this_thread("in_memory")

    @contextmanager
    def _for_this_thread(self, flag: str) -> Iterator[None]:
        """*flag* set for this thread's calls inside the block (restored after it: blocks may nest)."""
        before = getattr(self._local, flag, False)
        setattr(self._local, flag, True)
        try:
            yield
        finally:
            setattr(self._local, flag, before)

    def load(self, url: str) -> bytes:
        """The document at *url*: the WSDL (which sets the policy) or an import the policy allows. zeep
        calls this for every document (the WSDL, wsdl:import, xs:import, xs:include) - the one place to
        check them all."""
        if not url:
            raise ValueError("No url given to load")
        if self.policy is None:
            self.policy = ImportPolicy.for_wsdl(url, self.allowed_origins, self.base_dir)
            local = local_path(url) if origin_of(url) is None else None
        else:
            local = self.policy.check(url)
        left = self.max_bytes - self.loaded
        if local is not None:
            content = self._read_file(local, url, left)
        else:
            cached = self.cache.get(url) if self.cache else None
            if cached:
                content = bytes(cached)
                if len(content) > left:
                    raise ResponseFormatError(self._over(url, f"{len(content)} bytes (cached)"))
            else:
                content = self._load_remote_data(url, left)
                if self.cache:
                    self.cache.add(url, content)
        self.loaded += len(content)
        self.documents.append((url, content))
        return content

    def _over(self, url: str, size: str = "", verb: str = "GET") -> str:
        earlier = f" after {self.loaded} bytes of earlier documents" if self.documents else ""
        return (f"{verb} {mask_url(url)}: document {size + ' ' if size else ''}exceeds max_response_bytes="
                f"{self.max_bytes} while loading the WSDL (the cap holds for the WSDL and all its imports "
                f"together{earlier})")

    def _read_file(self, path: Path, url: str, left: int) -> bytes:
        """A local document, never more than *left* bytes of it."""
        with path.open("rb") as fh:
            content = fh.read(left + 1)
        if len(content) > left:
            raise ResponseFormatError(self._over(url, verb="read"))
        return content

    def _load_remote_data(self, url: str, left: int | None = None) -> bytes:
        with tracing.call(tracing.system_label(self.system_name, url), "wsdl", f"GET {mask_url(url)}",
                          protocol="soap", attributes=tracing.http_attributes("GET", url)) as call:
            content = self._fetch_document(url, call, self.max_bytes - self.loaded if left is None else left)
            call.bytes = len(content)
            return content

    def _fetch_document(self, url: str, call: tracing.Call, left: int) -> bytes:
        """GET one document, following at most :data:`MAX_REDIRECTS` redirects, each of which must stay
        where the policy allows (a server must not bounce an import to a host the WSDL may not name)."""
        target = url
        for _ in range(MAX_REDIRECTS + 1):
            with self.http.stream("GET", target, headers=tracing.inject(), follow_redirects=False) as response:
                call.http_status = response.status_code
                if response.is_redirect:
                    location = str(response.url.join(response.headers["Location"]))
                    if self.policy is not None and not self.policy.allows_redirect(target, location):
                        raise XMLSecurityError(f"WSDL {self.policy.wsdl}: GET {mask_url(target)} redirects to "
                                               f"{mask_url(location)}, refused: {self.policy.rule}")
                    target = location
                    continue
                content = b"".join(capped(response, left, f"GET {mask_url(url)}: document",
                                          " while loading the WSDL (the cap holds for the WSDL and all its "
                                          "imports together)", limit=self.max_bytes))
            if response.status_code >= 400:
                raise HTTPStatusError(f"GET {mask_url(url)}: HTTP {response.status_code} {response.reason_phrase} "
                                      f"while loading the WSDL: {mask(content[:200].decode('utf-8', 'replace'))}",
                                      url=mask_url(url), status=response.status_code)
            return content
        raise TransportError(f"GET {mask_url(url)}: more than {MAX_REDIRECTS} redirects while loading the WSDL")

    def post_xml(self, address: str, envelope: Any, headers: dict[str, str]) -> Spooled:
        return self.spool("POST", address, etree_to_string(envelope), headers)

    def spool(self, method: str, url: str, body: bytes, headers: dict[str, str]) -> Spooled:
        """Send a request and stream the answer into a temporary file (or memory, see :meth:`in_memory`). The
        current span (the operation call's) goes along as W3C ``traceparent``, so the partner can correlate."""
        headers = dict(tracing.inject(dict(headers)))
        if getattr(self._local, "in_memory", False):  # a write: on plain sockets (adapters._stdhttp)
            target = self._urls.get(url)
            if target is None:
                if len(self._urls) > 64:
                    self._urls.clear()
                target = self._urls[url] = httpx.URL(url)
            with self.http.stream(method, target, content=body, headers=headers, extensions={STDLIB: True}) as resp:
                kept: list[bytes] = []
                try:
                    for chunk in capped(resp, self.max_bytes, f"{method} {mask_url(url)}: response"):
                        kept.append(chunk)
                except httpx.TransportError as exc:
                    raise BrokenBody(resp.status_code, sum(map(len, kept)), resp.headers.get("Content-Length"),
                                     type(exc).__name__) from exc
                content = b"".join(kept)
                return Spooled(url=url, status=resp.status_code, reason=resp.reason_phrase, headers=resp.headers,
                               path=None, size=len(content), body=content)
        if self.spool_dir is not None:
            self.spool_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="hub-soap-", suffix=".xml", dir=self.spool_dir)
        path = Path(name)
        if getattr(self._local, "streaming", False):
            return self._start_spool(method, url, body, headers, fd, path)
        try:
            with os.fdopen(fd, "wb") as out, self.http.stream(method, url, content=body, headers=headers) as resp:
                size = 0
                try:
                    for chunk in capped(resp, self.max_bytes, f"{method} {mask_url(url)}: response"):
                        size += len(chunk)
                        out.write(chunk)
                except httpx.TransportError as exc:
                    raise BrokenBody(resp.status_code, size, resp.headers.get("Content-Length"),
                                     type(exc).__name__) from exc
                return Spooled(url=url, status=resp.status_code, reason=resp.reason_phrase, headers=resp.headers,
                               path=path, size=size)
        except BaseException:
            path.unlink(missing_ok=True)
            raise

    def _start_spool(self, method: str, url: str, body: bytes, headers: dict[str, str], fd: int,
                     path: Path) -> Spooled:
        """Send the request here (the caller's thread: its span, its errors) and write the body to *fd* in a
        thread of its own (:class:`_Pump`); the request is the one ``http.stream`` sends."""
        try:
            request = self.http.build_request(method, url, content=body, headers=headers,
                                              extensions={STDLIB: True, READ_SIZE: PUMP_READ_SIZE})
            response = self.http.send(request, stream=True)
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        pump = _Pump(path)
        spooled = Spooled(url=url, status=response.status_code, reason=response.reason_phrase,
                          headers=response.headers, path=path, size=0, _pump=pump,
                          _early=bool(response.extensions.get(STDLIB)))
        threading.Thread(target=pump.run, args=(response, fd, self.max_bytes, f"{method} {mask_url(url)}: response"),
                         name="hub-soap-spool", daemon=True).start()
        return spooled
