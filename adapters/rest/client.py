"""The REST source: requests, retries, pagination and records as Arrow batches.

All HTTP work runs on one asyncio event loop in a background thread (``httpx.AsyncClient``): page
fetching is I/O-bound, and one loop thread parsing pages one after another beats a pool of threads
fighting over the GIL. Each page is converted to Arrow on that loop as soon as it is parsed, so at most
one page exists as Python objects at a time; converted pages are grouped into batches of up to
``batch_size`` rows and wait in a small bounded queue for the caller, which gives back-pressure when
the warehouse side is slower than the API.

Pages whose count is known after the first response are fetched **concurrently** (at most
``concurrency`` requests at once) and handed over **in page order** through a sliding window of
``2 * concurrency`` pages, so the output is deterministic and memory is bounded.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urljoin

import httpx
import orjson
import pyarrow as pa

from adapters._http import BrokenBody, gave_up
from adapters._stream import run_sync, stream_batches
from adapters.rest._auth import build_auth, origin_policy
from adapters.rest._cache import HttpCache
from adapters.rest._jsonpath import StreamedDoc, compile_path, streaming_prefix
from adapters.rest._paginate import PageRequest, Paginator
from adapters.rest.config import RestSourceConfig, RestSystemConfig, TimeoutConfig
from hub.errors import AdapterError, HTTPStatusError, LimitExceededError, ResponseFormatError, TransportError
from hub.runtime import jsonsafe, tracing
from hub.runtime.breaker import breaker_for
from hub.runtime.checkpoint import DONE, Token
from hub.runtime.ratelimit import limiter_for, system_key
from hub.runtime.records import records_to_batch
from hub.runtime.retry import RetryPolicy
from hub.runtime.secrets import mask, mask_url

#: Status codes worth retrying: rate limiting and server-side trouble. 501 means "never going to work".
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})

Emit = Callable[[list[pa.RecordBatch], Token | None], Awaitable[None]]


@dataclass
class RestStats:
    """What one extraction did; surfaced as Dagster metadata."""

    url: str = ""
    pages: int = 0
    records: int = 0
    bytes: int = 0
    retries: int = 0
    concurrent: bool = False
    cache_hits: int = 0  # served from the HTTP cache without a request
    not_modified: int = 0  # revalidated: 304, the stored body served
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, *, pages: int = 0, records: int = 0, nbytes: int = 0, retries: int = 0, cache_hits: int = 0,
            not_modified: int = 0) -> None:
        with self._lock:
            self.pages += pages
            self.records += records
            self.bytes += nbytes
            self.retries += retries
            self.cache_hits += cache_hits
            self.not_modified += not_modified


@dataclass
class Page:
    """One response. A page above :data:`~hub.runtime.jsonsafe.STREAM_ABOVE` bytes is streamed: its records
    arrive already as *batches* (never a list of Python objects) and *doc* answers pagination paths by
    scanning the body (:class:`~adapters.rest._jsonpath.StreamedDoc`)."""

    request: PageRequest
    response: httpx.Response
    doc: Any
    records: list[Any]
    size: int = 0  # bytes of the body
    batches: list[pa.RecordBatch] | None = None

    @property
    def count(self) -> int:
        return len(self.records) if self.batches is None else sum(b.num_rows for b in self.batches)


class SpooledBody:
    """A response body larger than :data:`~hub.runtime.jsonsafe.STREAM_ABOVE`, kept in an anonymous temporary
    file (removed when it is closed or the process dies) instead of memory; it is parsed by streaming."""

    def __init__(self, file: IO[bytes], size: int) -> None:
        self.file, self.size = file, size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, part: slice) -> bytes:  # body[:300] for messages
        self.file.seek(0)
        return self.file.read(part.stop or self.size)[part]

    def open(self) -> IO[bytes]:
        """The body from its start."""
        self.file.seek(0)
        return self.file


Body = bytes | SpooledBody


class RestSource:
    """Extract records from one REST endpoint.

    *system* and *source* must already have secrets resolved and partition templates rendered (the
    hub does that per run, see :func:`hub.materialize.build_rest`).
    """

    def __init__(self, system: RestSystemConfig, source: RestSourceConfig, *, name: str = "rest",
                 batch_size: int = 10_000, system_name: str | None = None, state_dir: Path | None = None,
                 cache_dir: Path | None = None, max_duration: float | None = None) -> None:
        self.system = system
        self.max_duration = max_duration  # seconds an extraction may take (the source's time budget)
        self.source = source
        self.name = name
        self.batch_size = batch_size
        self.policy = RetryPolicy.from_config(system.retries)
        self._select = compile_path(source.records)
        base = system.base_url.rstrip("/") + "/"
        self.url = urljoin(base, source.request.path.lstrip("/")) if source.request.path else system.base_url
        self.stats = RestStats(url=mask_url(self.url))
        self.origins = origin_policy(system, system_name or name, self.url)
        self.system_label = tracing.system_label(system_name, system.base_url)  # spans and _hub_calls
        # Shared with every process talking to the system (hub.runtime.ratelimit / breaker).
        key = system_key(system_name, system.base_url)
        self.limiter = limiter_for(key, system.rate_limit, state_dir)
        self.breaker = breaker_for(key, system.circuit_breaker, state_dir)
        self.cache = None
        if system.cache is not None:
            identity = {"auth": system.auth.model_dump() if system.auth else None, "headers": system.headers,
                        "source_headers": source.request.headers}
            where = cache_dir or (state_dir or Path(".hub")) / "cache" / "http"
            self.cache = HttpCache(where, system.cache.ttl, identity)

    # --- HTTP ------------------------------------------------------------------------------------------

    def _client(self) -> httpx.AsyncClient:
        t = self.system.timeout
        timeout = (httpx.Timeout(t) if isinstance(t, float | int)
                   else httpx.Timeout(t.read, connect=t.connect) if isinstance(t, TimeoutConfig) else None)
        limits = httpx.Limits(max_connections=self.system.concurrency,
                              max_keepalive_connections=self.system.concurrency)
        return httpx.AsyncClient(
            auth=build_auth(self.system.auth),
            headers={"Accept": "application/json", "User-Agent": "hub/0.1", **self.system.headers,
                     **self.source.request.headers},
            timeout=timeout, limits=limits, verify=self.system.verify, follow_redirects=True,
            event_hooks=self.origins.async_hooks(),  # every request and redirect stays with the system
        )

    def _describe(self, req: PageRequest) -> str:
        shown = httpx.URL(req.url).copy_merge_params(req.params) if req.params else httpx.URL(req.url)
        return f"{self.source.request.method} {mask_url(str(shown))}"

    async def fetch(self, client: httpx.AsyncClient, req: PageRequest) -> Page:
        """One page, with retries on transport faults, truncated bodies, 429 and 5xx; through the system's
        circuit breaker when it has one (a failure is what is left after the retries). One traced call
        (:mod:`hub.runtime.tracing`): its span is current while the requests go out, as their ``traceparent``."""
        method = self.source.request.method
        shown = str(httpx.URL(req.url).copy_merge_params(req.params)) if req.params else req.url
        with tracing.call(self.system_label, method, f"{method} {mask_url(shown)}", protocol="rest",
                          attributes=tracing.http_attributes(method, shown)) as call:
            page = await self._breaker_fetch(client, req, call)
            call.rows, call.bytes = page.count, page.size
            return page

    async def _breaker_fetch(self, client: httpx.AsyncClient, req: PageRequest, call: tracing.Call) -> Page:
        if self.breaker is None:
            return await self._fetch(client, req, call)
        await asyncio.to_thread(self.breaker.before_call)
        try:
            page = await self._fetch(client, req, call)
        except AdapterError as exc:
            down = isinstance(exc, TransportError) or (isinstance(exc, HTTPStatusError) and exc.status >= 500)
            if down or (isinstance(exc, ResponseFormatError) and "body truncated" in str(exc)):
                await asyncio.to_thread(self.breaker.failure, type(exc).__name__)
            else:
                await asyncio.to_thread(self.breaker.success)  # it answered (4xx, a bad body): the system is up
            raise
        await asyncio.to_thread(self.breaker.success)
        return page

    async def _fetch(self, client: httpx.AsyncClient, req: PageRequest, call: tracing.Call | None = None) -> Page:
        attempt = 0
        while True:
            attempt += 1
            if call is not None:
                call.attempts = attempt
            try:
                response, body = await self._request(client, req)
            except (BrokenBody, httpx.TransportError) as exc:
                if attempt <= self.policy.max_retries:
                    await self._backoff(attempt)
                    continue
                raise gave_up(self._describe(req), exc, attempt) from None
            status = response.status_code
            if call is not None:
                call.http_status = status
            if status in RETRY_STATUS and attempt <= self.policy.max_retries:
                await self._backoff(attempt, response.headers.get("Retry-After"))
                continue
            if status >= 400:
                snippet = mask(body[:300].decode("utf-8", "replace")).strip()
                tried = f" (gave up after {attempt} attempts)" if status in RETRY_STATUS else ""
                raise HTTPStatusError(
                    f"{self._describe(req)}: HTTP {status} {response.reason_phrase}{tried}: {snippet}",
                    url=mask_url(str(response.request.url)), status=status,
                )
            if isinstance(body, SpooledBody):
                page = self._streamed(req, response, body)
            else:
                doc = self._parse(req, response, body)
                records = self._select(doc)
                if len(records) == 1 and isinstance(records[0], list):  # "$.data" pointing at the array itself
                    records = records[0]
                page = Page(req, response, doc, records, len(body))
            self.stats.add(pages=1, records=page.count, nbytes=len(body))
            return page

    def _streamed(self, req: PageRequest, response: httpx.Response, body: SpooledBody) -> Page:
        """A large page, its records converted batch by batch as the body is scanned (bounded memory)."""
        prefix = streaming_prefix(self.source.records)
        if prefix is None:
            raise LimitExceededError(
                f"{self._describe(req)}: a {len(body)}-byte page is too large to parse whole "
                f"(over {jsonsafe.STREAM_ABOVE} bytes) and records '{self.source.records}' is not a simple path "
                "($.name[*]) that can be streamed; ask the API for smaller pages")
        try:
            batches = [records_to_batch(chunk)
                       for chunk in jsonsafe.stream_records(body.open(), prefix, self.batch_size)]
        except Exception as exc:  # ijson's errors (IncompleteJSONError, ...) are not one class
            raise ResponseFormatError(f"{self._describe(req)}: HTTP {response.status_code} body is not valid "
                                      f"JSON ({len(body)} bytes): {mask(str(exc))[:200]}") from None
        return Page(req, response, StreamedDoc(body.open), [], len(body), batches)

    async def _backoff(self, attempt: int, retry_after: str | None = None) -> None:
        self.stats.add(retries=1)
        await asyncio.sleep(self.policy.delay(attempt, retry_after))

    async def _request(self, client: httpx.AsyncClient, req: PageRequest) -> tuple[httpx.Response, Body]:
        """One HTTP exchange: from the cache when a stored GET response is fresh (or revalidated with a
        304), else under the system's rate limit."""
        cache = self.cache if self.source.request.method == "GET" else None
        entry = key = None
        if cache is not None:
            key = cache.key(req.url, req.params)
            entry = cache.lookup(key)
            if entry is not None and cache.fresh(entry):
                self.stats.add(cache_hits=1)
                tracing.annotate(hub_cache="hit")  # no request went out
                request = client.build_request("GET", req.url, params=req.params or None)
                return cache.response(entry, request), entry.body
        if self.limiter is not None:
            await self.limiter.acquire_async()
        resp, body = await self._send(client, req, entry.validators() if entry else None)
        if cache is not None and key is not None:
            if resp.status_code == 304 and entry is not None:
                cache.touch(entry, resp.headers)
                self.stats.add(not_modified=1)
                tracing.annotate(hub_cache="revalidated")
                return cache.response(entry, resp.request), entry.body
            if resp.status_code == 200 and isinstance(body, bytes):  # a spooled (huge) body is not cached
                cache.store(key, resp.headers, body)
        return resp, body

    async def _send(self, client: httpx.AsyncClient, req: PageRequest,
                    headers: dict[str, str] | None) -> tuple[httpx.Response, Body]:
        """The response and its body: in memory, or past :data:`~hub.runtime.jsonsafe.STREAM_ABOVE` bytes in a
        temporary file (a page under the size cap must not need ten times its size in memory)."""
        limit = self.system.max_response_bytes
        body = self.source.request.json_body
        async with client.stream(self.source.request.method, req.url, params=req.params or None,
                                 json=body, headers=tracing.inject(dict(headers or {}))) as resp:
            declared = resp.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > limit:
                raise ResponseFormatError(
                    f"{self._describe(req)}: response of {declared} bytes exceeds max_response_bytes={limit}")
            chunks: list[bytes] = []
            size, spool = 0, None
            try:
                async for chunk in resp.aiter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise ResponseFormatError(
                            f"{self._describe(req)}: response exceeds max_response_bytes={limit}")
                    if spool is not None:
                        spool.write(chunk)
                        continue
                    chunks.append(chunk)
                    if size > jsonsafe.STREAM_ABOVE:
                        spool = tempfile.TemporaryFile(prefix="hub-rest-page-")  # noqa: SIM115 - outlives the block
                        spool.writelines(chunks)
                        chunks.clear()
            except BaseException as exc:
                if spool is not None:
                    spool.close()
                if isinstance(exc, httpx.TransportError):  # headers arrived, the body did not: say so
                    raise BrokenBody(resp.status_code, size, declared, type(exc).__name__) from exc
                raise
        return resp, (SpooledBody(spool, size) if spool is not None else b"".join(chunks))

    def _parse(self, req: PageRequest, response: httpx.Response, body: bytes) -> Any:
        try:
            return jsonsafe.loads(body)
        except orjson.JSONDecodeError as exc:
            ctype = response.headers.get("Content-Type", "no content type")
            preview = mask(body[:120].decode("utf-8", "replace"))
            raise ResponseFormatError(
                f"{self._describe(req)}: HTTP {response.status_code} body is not valid JSON ({ctype}, "
                f"{len(body)} bytes): {exc}; body starts {preview!r}"
            ) from None

    # --- pages -----------------------------------------------------------------------------------------

    def _to_batches(self, page: Page) -> list[pa.RecordBatch]:
        if page.batches is not None:
            return page.batches
        records = page.records
        return [records_to_batch(records[i:i + self.batch_size]) for i in range(0, len(records), self.batch_size)]

    async def _walk(self, emit: Emit, resume: Token | None = None) -> None:
        """Fetch every page and hand each page's batches to *emit*, in page order, with the token that
        continues after that page; from the start, or from a checkpoint's *resume* token."""
        cfg = self.source
        paginator = Paginator(cfg.paginate, self.url, {**self.system.params, **cfg.request.params})
        max_pages = cfg.paginate.max_pages if cfg.paginate else None
        async with self._client() as client:
            if resume is not None:
                if resume.get("kind") == "done":
                    return
                req, known = paginator.resume(resume)
                if known is not None:
                    self.stats.concurrent = len(known) > 1
                    await self._concurrent(client, known, emit, paginator.known_tokens(known))
                    return
                assert req is not None
                page = await self.fetch(client, req)
            else:
                req = paginator.first_request()
                page = await self.fetch(client, req)
                known = paginator.remaining_known(req, page.doc)
                if known is not None:
                    if max_pages and len(known) + 1 > max_pages:
                        raise ResponseFormatError(
                            f"{self.stats.url}: {len(known) + 1} pages exceed paginate.max_pages={max_pages}"
                            f"{self._raise_max_pages()}")
                    tokens = paginator.known_tokens([req, *known]) if cfg.paginate else [DONE]
                    await emit(self._to_batches(page), tokens[0])
                    self.stats.concurrent = len(known) > 0
                    await self._concurrent(client, known, emit, tokens[1:])
                    return
            count = 1
            while True:
                nxt = paginator.next_request(page.request, page.response, page.doc, page.count)
                await emit(self._to_batches(page), paginator.token_for(nxt))
                if nxt is None:
                    return
                count += 1
                if max_pages and count > max_pages:
                    raise ResponseFormatError(
                        f"{self.stats.url}: more than paginate.max_pages={max_pages} pages; stopping "
                        f"(the API kept handing out a next page){self._raise_max_pages()}")
                page = await self.fetch(client, nxt)

    def _raise_max_pages(self) -> str:
        return f". If the source really has more pages, raise `paginate.max_pages` on sources.{self.name}"

    async def _concurrent(self, client: httpx.AsyncClient, requests: list[PageRequest], emit: Emit,
                          tokens: list[Token]) -> None:
        """Fetch *requests* with at most ``concurrency`` in flight; emit results in request order, each with
        its token from *tokens* (the pages after it)."""
        slots = asyncio.Semaphore(self.system.concurrency)

        async def one(req: PageRequest) -> list[pa.RecordBatch]:
            async with slots:
                page = await self.fetch(client, req)
            return self._to_batches(page)  # the parsed document is dropped here

        todo = iter(requests)
        after = iter(tokens)
        window: deque[asyncio.Task[list[pa.RecordBatch]]] = deque()
        try:
            for req in todo:
                window.append(asyncio.create_task(one(req)))
                if len(window) >= 2 * self.system.concurrency:
                    break
            while window:
                batches = await window.popleft()
                nxt = next(todo, None)
                if nxt is not None:
                    window.append(asyncio.create_task(one(nxt)))
                await emit(batches, next(after))
        finally:
            for task in window:
                task.cancel()
            await asyncio.gather(*window, return_exceptions=True)

    def resume_blocker(self, window_closed: bool) -> str | None:
        """Why this source cannot resume from a checkpoint (None: it can). Cursors, next URLs and Link
        headers are positions the API hands out; page numbers and offsets are only trusted for a partition
        whose window is over (data of the past), as a page may otherwise shift while the run is retried."""
        if self.source.paginate is None:
            return "a single request: nothing to resume"
        paginator = Paginator(self.source.paginate, self.url, {})
        if paginator.stable() or window_closed:
            return None
        return ("page-number/offset paging of data that may still change (not a partition in the past): "
                "a retry starts over, as pages could have shifted")

    def details(self) -> dict[str, Any]:
        """What the extraction did, for run metadata (the URL is masked)."""
        st = self.stats
        out: dict[str, Any] = {"url": st.url, "pages": st.pages, "records": st.records, "bytes": st.bytes,
                               "retries": st.retries, "concurrent_pages": st.concurrent}
        if self.cache is not None:
            out["cache"] = {"hits": st.cache_hits, "not_modified": st.not_modified}
        if self.limiter is not None:
            out["rate_limit_wait_s"] = round(self.limiter.waited, 3)
        if self.breaker is not None:
            out["circuit"] = self.breaker.details()
        return out

    def first_page(self) -> Page:
        """Only the first page, as the pagination starts it (auth, retries and size limits apply): a sample of
        the endpoint's responses for contract snapshots. Runs its own event loop in a worker thread."""
        paginator = Paginator(self.source.paginate, self.url, {**self.system.params, **self.source.request.params})

        async def main() -> Page:
            async with self._client() as client:
                return await self.fetch(client, paginator.first_request())

        page: Page = run_sync(main, f"rest-{self.name}-sample")
        if page.batches is not None:
            raise LimitExceededError(f"{self.stats.url}: the first page ({page.size} bytes) is too large to sample "
                                     f"whole (over {jsonsafe.STREAM_ABOVE} bytes); ask the API for smaller pages")
        return page

    # --- records -----------------------------------------------------------------------------------------

    def batches(self) -> Iterator[pa.RecordBatch]:
        """Records as Arrow batches of at most ``batch_size`` rows (one or more per page), in page order."""
        for batch, _ in self.resumable_batches(None):
            yield batch

    def resumable_batches(self, resume: Token | None) -> Iterator[tuple[pa.RecordBatch, Token | None]]:
        """The batches of :meth:`batches`, each with the checkpoint token that continues after it (None when
        the batch ends inside a page); from the start, or from *resume* (see :mod:`hub.runtime.checkpoint`).

        The HTTP side runs in a background thread; if the caller stops iterating (or fails), the
        thread is told to stop and is joined before this generator returns.
        """
        st = self.stats
        return stream_batches(lambda emit: self._walk(emit, resume), name=self.name,
                              batch_size=self.batch_size, max_duration=self.max_duration,
                              progress=lambda: f"{st.pages} pages, {st.records} records read")


__all__ = ["AdapterError", "RestSource", "RestStats"]
