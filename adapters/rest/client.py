"""The REST source: requests, retries, pagination and records as Arrow batches.

Pages whose count is known after the first response are fetched concurrently by a bounded thread pool
over one shared httpx connection pool, and yielded **in page order** through a sliding window, so the
output is deterministic and at most ``2 * concurrency`` pages are held in memory at once.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

import httpx
import pyarrow as pa

from adapters.rest._auth import build_auth
from adapters.rest._jsonpath import compile_path
from adapters.rest._paginate import PageRequest, Paginator
from adapters.rest.config import RestSourceConfig, RestSystemConfig, TimeoutConfig
from hub.errors import AdapterError, HTTPStatusError, ResponseFormatError, TransportError
from hub.runtime.records import records_to_batch
from hub.runtime.retry import RetryPolicy
from hub.runtime.secrets import mask, mask_url

#: Status codes worth retrying: rate limiting and server-side trouble. 501 means "never going to work".
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass
class RestStats:
    """What one extraction did; surfaced as Dagster metadata."""

    url: str = ""
    pages: int = 0
    records: int = 0
    bytes: int = 0
    retries: int = 0
    concurrent: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, *, pages: int = 0, records: int = 0, nbytes: int = 0, retries: int = 0) -> None:
        with self._lock:
            self.pages += pages
            self.records += records
            self.bytes += nbytes
            self.retries += retries


@dataclass
class Page:
    request: PageRequest
    response: httpx.Response
    doc: Any
    records: list[Any]


class RestSource:
    """Extract records from one REST endpoint.

    *system* and *source* must already have secrets resolved and partition templates rendered (the
    hub does that per run, see :func:`hub.sources.build_source`).
    """

    def __init__(self, system: RestSystemConfig, source: RestSourceConfig, *, name: str = "rest",
                 batch_size: int = 10_000) -> None:
        self.system = system
        self.source = source
        self.name = name
        self.batch_size = batch_size
        self.policy = RetryPolicy.from_config(system.retries)
        self._select = compile_path(source.records)
        base = system.base_url.rstrip("/") + "/"
        self.url = urljoin(base, source.request.path.lstrip("/")) if source.request.path else system.base_url
        self.stats = RestStats(url=mask_url(self.url))

    # --- HTTP ------------------------------------------------------------------------------------------

    def _client(self) -> httpx.Client:
        t = self.system.timeout
        timeout = (httpx.Timeout(t) if isinstance(t, float | int)
                   else httpx.Timeout(t.read, connect=t.connect) if isinstance(t, TimeoutConfig) else None)
        limits = httpx.Limits(max_connections=self.system.concurrency,
                              max_keepalive_connections=self.system.concurrency)
        return httpx.Client(
            auth=build_auth(self.system.auth),
            headers={"Accept": "application/json", "User-Agent": "hub/0.1", **self.system.headers,
                     **self.source.request.headers},
            timeout=timeout, limits=limits, verify=self.system.verify, follow_redirects=True,
        )

    def _describe(self, req: PageRequest) -> str:
        shown = httpx.URL(req.url).copy_merge_params(req.params) if req.params else httpx.URL(req.url)
        return f"{self.source.request.method} {mask_url(str(shown))}"

    def fetch(self, client: httpx.Client, req: PageRequest) -> Page:
        """One page, with retries on transport faults, 429 and 5xx."""
        attempt = 0
        while True:
            attempt += 1
            try:
                response, body = self._request(client, req)
            except httpx.TransportError as exc:
                if attempt <= self.policy.max_retries:
                    self.stats.add(retries=1)
                    self.policy.sleep(attempt)
                    continue
                raise TransportError(
                    f"{self._describe(req)}: {type(exc).__name__}: {mask(str(exc)) or 'connection failed'} "
                    f"(gave up after {attempt} attempts)"
                ) from None
            status = response.status_code
            if status in RETRY_STATUS and attempt <= self.policy.max_retries:
                self.stats.add(retries=1)
                self.policy.sleep(attempt, response.headers.get("Retry-After"))
                continue
            if status >= 400:
                snippet = mask(body[:300].decode("utf-8", "replace")).strip()
                tried = f" (gave up after {attempt} attempts)" if status in RETRY_STATUS else ""
                raise HTTPStatusError(
                    f"{self._describe(req)}: HTTP {status} {response.reason_phrase}{tried}: {snippet}",
                    url=mask_url(str(response.request.url)), status=status,
                )
            doc = self._parse(req, response, body)
            records = self._select(doc)
            if len(records) == 1 and isinstance(records[0], list):  # "$.data" pointing at the array itself
                records = records[0]
            self.stats.add(pages=1, records=len(records), nbytes=len(body))
            return Page(req, response, doc, records)

    def _request(self, client: httpx.Client, req: PageRequest) -> tuple[httpx.Response, bytes]:
        limit = self.system.max_response_bytes
        body = self.source.request.json_body
        with client.stream(self.source.request.method, req.url, params=req.params or None, json=body) as resp:
            declared = resp.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > limit:
                raise ResponseFormatError(
                    f"{self._describe(req)}: response of {declared} bytes exceeds max_response_bytes={limit}")
            chunks, size = [], 0
            for chunk in resp.iter_bytes():
                size += len(chunk)
                if size > limit:
                    raise ResponseFormatError(
                        f"{self._describe(req)}: response exceeds max_response_bytes={limit}")
                chunks.append(chunk)
        return resp, b"".join(chunks)

    def _parse(self, req: PageRequest, response: httpx.Response, body: bytes) -> Any:
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            ctype = response.headers.get("Content-Type", "no content type")
            preview = mask(body[:120].decode("utf-8", "replace"))
            raise ResponseFormatError(
                f"{self._describe(req)}: HTTP {response.status_code} body is not valid JSON ({ctype}, "
                f"{len(body)} bytes): {exc}; body starts {preview!r}"
            ) from None

    # --- pages -----------------------------------------------------------------------------------------

    def pages(self) -> Iterator[Page]:
        """Every page, in order."""
        cfg = self.source
        paginator = Paginator(cfg.paginate, self.url, {**self.system.params, **cfg.request.params})
        max_pages = cfg.paginate.max_pages if cfg.paginate else None
        with self._client() as client:
            req: PageRequest | None = paginator.first_request()
            assert req is not None
            page = self.fetch(client, req)
            yield page
            count = 1
            known = paginator.remaining_known(req, page.doc)
            if known is not None:
                if max_pages and len(known) + 1 > max_pages:
                    raise ResponseFormatError(
                        f"{self.stats.url}: {len(known) + 1} pages exceed paginate.max_pages={max_pages}")
                self.stats.concurrent = len(known) > 0
                yield from self._concurrent(client, known)
                return
            while True:
                req = paginator.next_request(page.request, page.response, page.doc, len(page.records))
                if req is None:
                    return
                count += 1
                if max_pages and count > max_pages:
                    raise ResponseFormatError(
                        f"{self.stats.url}: more than paginate.max_pages={max_pages} pages; stopping")
                page = self.fetch(client, req)
                yield page

    def _concurrent(self, client: httpx.Client, requests: list[PageRequest]) -> Iterator[Page]:
        window = self.system.concurrency * 2
        todo = iter(requests)
        with ThreadPoolExecutor(max_workers=self.system.concurrency, thread_name_prefix="hub-rest") as pool:
            inflight: deque[Future[Page]] = deque()
            try:
                for req in todo:
                    inflight.append(pool.submit(self.fetch, client, req))
                    if len(inflight) >= window:
                        break
                while inflight:
                    page = inflight.popleft().result()
                    nxt = next(todo, None)
                    if nxt is not None:
                        inflight.append(pool.submit(self.fetch, client, nxt))
                    yield page
            finally:
                for fut in inflight:
                    fut.cancel()

    # --- records -----------------------------------------------------------------------------------------

    def batches(self) -> Iterator[pa.RecordBatch]:
        """Records as Arrow batches of at most ``batch_size`` rows."""
        started = time.monotonic()
        buf: list[Any] = []
        for page in self.pages():
            buf.extend(page.records)
            while len(buf) >= self.batch_size:
                chunk, buf = buf[: self.batch_size], buf[self.batch_size:]
                yield records_to_batch(chunk)
        if buf:
            yield records_to_batch(buf)
        self.elapsed = time.monotonic() - started


__all__ = ["AdapterError", "RestSource", "RestStats"]
