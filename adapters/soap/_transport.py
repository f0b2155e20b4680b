"""zeep's transport, on httpx: WSDL documents through a TTL cache, operation responses spooled to disk.

zeep reads WSDLs and imported XSDs through ``Transport.load``; every document loaded is also kept in
``documents`` so the schema facets zeep drops can be read back (see :mod:`adapters.soap._schema`).
Operation calls go through ``post_xml``: the response body is streamed to a temporary file (never held
in memory, bounded by ``max_bytes``) and returned as a :class:`Spooled` response for the streaming reader.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from zeep.transports import Transport
from zeep.wsdl.utils import etree_to_string

from adapters._http import BrokenBody
from hub.errors import HTTPStatusError, ResponseFormatError
from hub.runtime import tracing
from hub.runtime.secrets import mask, mask_url


@dataclass
class Spooled:
    """A response whose body is in a file. Delete it with :meth:`discard`."""

    url: str
    status: int
    reason: str
    headers: httpx.Headers
    path: Path
    size: int
    _closed: bool = field(default=False, repr=False)

    @property
    def is_xml(self) -> bool:
        ctype = self.headers.get("Content-Type", "").lower()
        return "xml" in ctype or (not ctype and self.size > 0)

    def head(self, n: int = 300) -> str:
        with self.path.open("rb") as fh:
            return mask(fh.read(n).decode("utf-8", "replace")).strip()

    def discard(self) -> None:
        if not self._closed:
            self._closed = True
            self.path.unlink(missing_ok=True)


def capped(response: httpx.Response, max_bytes: int, what: str, context: str = "") -> Iterator[bytes]:
    """The body of a streamed *response*, 1 MiB at a time, never more than *max_bytes* of it: a larger declared
    ``Content-Length`` is refused before reading, a body that grows past the cap as soon as it does. The one
    bound for WSDL documents and operation responses alike (the error: "*what* exceeds max_response_bytes=N
    *context*"); a connection that breaks mid-body raises httpx's error for the caller to classify."""
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise ResponseFormatError(f"{what} of {declared} bytes exceeds max_response_bytes={max_bytes}{context}")
    size = 0
    for chunk in response.iter_bytes(1 << 20):
        size += len(chunk)
        if size > max_bytes:
            raise ResponseFormatError(f"{what} exceeds max_response_bytes={max_bytes}{context}")
        yield chunk


class HttpxTransport(Transport):
    def __init__(self, http: httpx.Client, *, cache: Any = None, spool_dir: Path | None = None,
                 max_bytes: int = 4 * 1024**3, system_name: str | None = None) -> None:
        super().__init__(cache=cache)
        self.system_name = system_name  # of the traced calls fetching documents
        self.session.close()  # zeep's requests session is never used
        self.http = http
        self.spool_dir = spool_dir
        self.max_bytes = max_bytes
        self.documents: list[tuple[str, bytes]] = []

    def load(self, url: str) -> bytes:
        content: bytes = super().load(url)
        self.documents.append((url, content))
        return content

    def _load_remote_data(self, url: str) -> bytes:
        if urlsplit(url).scheme == "file":
            return Path(urlsplit(url).path).read_bytes()
        with tracing.call(tracing.system_label(self.system_name, url), "wsdl", f"GET {mask_url(url)}",
                          protocol="soap", attributes=tracing.http_attributes("GET", url)) as call:
            content = self._fetch_document(url, call)
            call.bytes = len(content)
            return content

    def _fetch_document(self, url: str, call: tracing.Call) -> bytes:
        with self.http.stream("GET", url, headers=tracing.inject()) as response:  # bounded like responses
            call.http_status = response.status_code
            content = b"".join(capped(response, self.max_bytes, f"GET {mask_url(url)}: document",
                                      " while loading the WSDL"))
        if response.status_code >= 400:
            raise HTTPStatusError(f"GET {mask_url(url)}: HTTP {response.status_code} {response.reason_phrase} "
                                  f"while loading the WSDL: {mask(content[:200].decode('utf-8', 'replace'))}",
                                  url=mask_url(url), status=response.status_code)
        return content

    def post_xml(self, address: str, envelope: Any, headers: dict[str, str]) -> Spooled:
        return self.spool("POST", address, etree_to_string(envelope), headers)

    def spool(self, method: str, url: str, body: bytes, headers: dict[str, str]) -> Spooled:
        """Send a request and stream the answer into a temporary file. The current span (the operation call's)
        goes along as W3C ``traceparent``, so the partner can correlate."""
        headers = dict(tracing.inject(dict(headers)))
        if self.spool_dir is not None:
            self.spool_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="hub-soap-", suffix=".xml", dir=self.spool_dir)
        path = Path(name)
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
