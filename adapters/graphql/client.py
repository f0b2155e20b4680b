"""The GraphQL source: one query, paged by Relay cursors or offset/limit variables, as Arrow batches.

**Client choice: plain httpx, not gql.** A GraphQL request is one JSON POST; everything that makes it
reliable is HTTP work the hub already does for REST on httpx: the auth flows (``adapters.rest._auth``,
OAuth2 token refresh included), the origin policy on every request and redirect (``adapters._http``),
streamed bodies with a size cap, retries with ``Retry-After``, shared rate limits and circuit breakers, and
``traceparent`` propagation. gql would add a second HTTP stack (its httpx transport hides the response
status, headers and body size, and raises its own exceptions for ``errors``), so those guarantees would
have to be rebuilt around it. graphql-core (a dependency of gql and of Dagster) is used for what it is
good at: parsing and validating the query, introspection and schemas (:mod:`adapters.graphql.catalog`).

**Errors are failures.** A 200 response that carries ``errors`` raises :class:`~adapters.graphql.GraphQLError`
naming each error's path and message; the partial ``data`` next to them is never loaded, so a field the
server could not resolve never arrives as a silent null. HTTP errors read like REST's (status, masked URL).

A response whose every error is a rate-limit code (``RATE_LIMITED``, ``THROTTLED``) is retried like a 429.

**Paging.** Relay: each page reads ``pageInfo { hasNextPage endCursor }`` (by default next to the records'
``nodes``/``edges``) and sends ``endCursor`` as the cursor variable; a cursor handed out twice is a loop and
an error. Offset: the offset variable grows by ``limit`` until a short page. Each page is converted to
Arrow on the loop as soon as it is parsed and handed over with its checkpoint token (the next cursor or
offset), through the bounded queue of :mod:`adapters._stream`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pyarrow as pa

from adapters._http import BrokenBody, OriginPolicy, gave_up
from adapters._stream import Emit, Item, run_sync, stream_batches
from adapters.graphql.config import GraphQLSourceConfig, GraphQLSystemConfig
from adapters.graphql.errors import GraphQLError
from adapters.rest import build_auth, compile_path, first
from adapters.rest.config import TimeoutConfig
from hub.errors import (
    AdapterError,
    HTTPStatusError,
    ResponseFormatError,
    TransportError,
)
from hub.runtime import jsonsafe, tracing
from hub.runtime.breaker import breaker_for
from hub.runtime.checkpoint import DONE, Token
from hub.runtime.ratelimit import limiter_for, system_key
from hub.runtime.records import records_to_batch
from hub.runtime.retry import RetryPolicy
from hub.runtime.secrets import mask, mask_url

#: Status codes worth retrying: rate limiting and server-side trouble (as for REST).
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
#: Error codes (``extensions.code``, or GitHub's ``type``) that say "slow down" inside a 200 response: retried
#: like a 429 when every error of the response has one (GitHub RATE_LIMITED, Shopify THROTTLED).
RETRY_ERROR_CODES = frozenset({"RATE_LIMITED", "THROTTLED", "TOO_MANY_REQUESTS"})
#: GraphQL errors shown in one message; the rest are counted.
SHOWN_ERRORS = 10


@dataclass
class GraphQLStats:
    """What one extraction did; surfaced as run metadata."""

    url: str = ""
    pages: int = 0
    records: int = 0
    bytes: int = 0
    retries: int = 0


@dataclass
class GraphQLPage:
    """One response: the variables it was asked with, its ``data`` and the records selected from it."""

    variables: dict[str, Any]
    data: Any
    records: list[Any]
    size: int = 0  # bytes of the body
    label: str = "first page"


def origin_policy(cfg: GraphQLSystemConfig, system: str) -> OriginPolicy:
    """Where requests of the GraphQL system *cfg* may go: its endpoint's origin and its OAuth2 token URL's
    carry credentials; ``allowed_origins`` are called without them; nothing else is called at all."""
    auth = cfg.auth
    token_url = auth.oauth2.token_url if auth is not None and auth.oauth2 is not None else None
    key_param = auth.api_key.name if auth is not None and auth.api_key is not None else None
    return OriginPolicy.of(system, (cfg.endpoint, token_url), cfg.allowed_origins, [key_param] if key_param else [])


def error_path(error: Any) -> str:
    """The dotted path of one GraphQL error (``repository.issues.nodes.3.title``), "" when it names none."""
    path = error.get("path") if isinstance(error, dict) else None
    return ".".join(str(p) for p in path) if isinstance(path, list) else ""


def error_message(error: Any) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error)


def describe_errors(errors: list[Any]) -> tuple[str, list[tuple[str, str]]]:
    """The errors of a response as one line each (``path: message``, masked) and as pairs."""
    pairs = [(error_path(e), mask(error_message(e))) for e in errors]
    shown = "; ".join(f"{p}: {m}" if p else m for p, m in pairs[:SHOWN_ERRORS])
    more = f"; and {len(pairs) - SHOWN_ERRORS} more" if len(pairs) > SHOWN_ERRORS else ""
    return shown + more, pairs


def error_code(error: Any) -> str | None:
    """The machine-readable code of one GraphQL error: ``extensions.code``, else a top-level ``type``."""
    if not isinstance(error, dict):
        return None
    ext = error.get("extensions")
    code = ext.get("code") if isinstance(ext, dict) else None
    code = code or error.get("type")
    return str(code) if code else None


def _system_down(exc: AdapterError) -> bool:
    """Whether *exc* (after the retries) says the system is down, for its circuit breaker."""
    return (isinstance(exc, TransportError) or (isinstance(exc, HTTPStatusError) and exc.status >= 500)
            or (isinstance(exc, ResponseFormatError) and "body truncated" in str(exc)))


class _Throttled(GraphQLError):
    """Every error of a 200 response says the client is rate limited: retried, then reported."""


class GraphQLEndpoint:
    """The HTTP side of one GraphQL system: POSTs an operation with auth, retries, the size cap, the shared
    rate limit and circuit breaker, tracing and the origin policy, and returns ``data`` or raises.

    *system* must already have its secrets resolved."""

    def __init__(self, system: GraphQLSystemConfig, *, system_name: str | None = None, name: str = "graphql",
                 state_dir: Path | None = None, stats: GraphQLStats | None = None) -> None:
        self.system = system
        self.name = name
        self.url = system.endpoint
        self.policy = RetryPolicy.from_config(system.retries)
        self.stats = stats or GraphQLStats(url=mask_url(system.endpoint))
        self.origins = origin_policy(system, system_name or name)
        self.system_label = tracing.system_label(system_name, system.endpoint)
        key = system_key(system_name, system.endpoint)
        self.limiter = limiter_for(key, system.rate_limit, state_dir)
        self.breaker = breaker_for(key, system.circuit_breaker, state_dir)

    def client(self) -> httpx.AsyncClient:
        """An httpx client for this system (one per extraction; close it with ``async with``)."""
        t = self.system.timeout
        timeout = httpx.Timeout(t.read, connect=t.connect) if isinstance(t, TimeoutConfig) else httpx.Timeout(t)
        return httpx.AsyncClient(
            auth=build_auth(self.system.auth),
            headers={"Accept": "application/graphql-response+json, application/json", "User-Agent": "hub/0.1",
                     **self.system.headers},
            timeout=timeout, verify=self.system.verify, follow_redirects=True,
            event_hooks=self.origins.async_hooks(),  # every request and redirect stays with the system
        )

    def _what(self, operation: str | None, label: str) -> str:
        return f"POST {mask_url(self.url)} ({operation or 'anonymous operation'}, {label})"

    async def execute(self, client: httpx.AsyncClient, query: str, variables: dict[str, Any] | None = None,
                      operation_name: str | None = None, *, label: str = "first page",
                      count: Callable[[Any], int] | None = None) -> tuple[Any, int]:
        """``data`` of one operation and the body's size. One traced call (*count* tells it how many records
        the data holds); the breaker sees what is left after the retries (a GraphQL error means the system
        answered: it is up)."""
        what = self._what(operation_name, label)
        with tracing.call(self.system_label, "POST", what, protocol="graphql",
                          attributes=tracing.http_attributes("POST", self.url)) as call:
            if self.breaker is not None:
                await asyncio.to_thread(self.breaker.before_call)
            try:
                data, size = await self._execute(client, query, variables, operation_name, what, call)
            except AdapterError as exc:
                if self.breaker is not None and _system_down(exc):
                    await asyncio.to_thread(self.breaker.failure, type(exc).__name__)
                elif self.breaker is not None:  # it answered (4xx, GraphQL errors, a bad body): the system is up
                    await asyncio.to_thread(self.breaker.success)
                raise
            if self.breaker is not None:
                await asyncio.to_thread(self.breaker.success)
            call.bytes = size
            call.rows = count(data) if count is not None else 0
            return data, size

    async def _execute(self, client: httpx.AsyncClient, query: str, variables: dict[str, Any] | None,
                       operation_name: str | None, what: str, call: tracing.Call) -> tuple[Any, int]:
        payload: dict[str, Any] = {"query": query, "variables": variables or {}}
        if operation_name:
            payload["operationName"] = operation_name
        attempt = 0
        while True:
            attempt += 1
            call.attempts = attempt
            try:
                if self.limiter is not None:
                    await self.limiter.acquire_async()
                response, body = await self._send(client, payload, what)
            except (BrokenBody, httpx.TransportError) as exc:
                if attempt <= self.policy.max_retries:
                    await self._backoff(attempt)
                    continue
                raise gave_up(what, exc, attempt) from None
            status = response.status_code
            call.http_status = status
            if status in RETRY_STATUS and attempt <= self.policy.max_retries:
                await self._backoff(attempt, response.headers.get("Retry-After"))
                continue
            if status >= 400:
                raise self._status_error(what, response, body, attempt)
            try:
                data = self._data(what, response, body)
            except _Throttled as exc:
                if attempt <= self.policy.max_retries:
                    await self._backoff(attempt, response.headers.get("Retry-After"))
                    continue
                raise GraphQLError(f"{exc} (gave up after {attempt} attempts)", errors=exc.errors) from None
            self.stats.pages += 1
            self.stats.bytes += len(body)
            return data, len(body)

    async def _backoff(self, attempt: int, retry_after: str | None = None) -> None:
        self.stats.retries += 1
        await asyncio.sleep(self.policy.delay(attempt, retry_after))

    async def _send(self, client: httpx.AsyncClient, payload: dict[str, Any],
                    what: str) -> tuple[httpx.Response, bytes]:
        limit = self.system.max_response_bytes
        async with client.stream("POST", self.url, content=orjson.dumps(payload),
                                 headers=tracing.inject({"Content-Type": "application/json"})) as resp:
            declared = resp.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > limit:
                raise ResponseFormatError(f"{what}: response of {declared} bytes exceeds max_response_bytes={limit}")
            chunks, size = [], 0
            try:
                async for chunk in resp.aiter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise ResponseFormatError(f"{what}: response exceeds max_response_bytes={limit}")
                    chunks.append(chunk)
            except httpx.TransportError as exc:  # headers arrived, the body did not
                raise BrokenBody(resp.status_code, size, declared, type(exc).__name__) from exc
        return resp, b"".join(chunks)

    def _status_error(self, what: str, response: httpx.Response, body: bytes, attempts: int) -> HTTPStatusError:
        """An HTTP error status; GraphQL-over-HTTP servers put ``errors`` in 4xx bodies: they are named."""
        status = response.status_code
        tried = f" (gave up after {attempts} attempts)" if status in RETRY_STATUS else ""
        detail = mask(body[:300].decode("utf-8", "replace")).strip()
        try:
            doc = jsonsafe.loads(body) if len(body) < 1024 * 1024 else None
        except orjson.JSONDecodeError:
            doc = None
        if isinstance(doc, dict) and isinstance(doc.get("errors"), list) and doc["errors"]:
            detail = "GraphQL errors: " + describe_errors(doc["errors"])[0]
        return HTTPStatusError(f"{what}: HTTP {status} {response.reason_phrase}{tried}: {detail}",
                               url=mask_url(str(response.request.url)), status=status)

    def _data(self, what: str, response: httpx.Response, body: bytes) -> Any:
        try:
            doc = jsonsafe.loads(body)
        except orjson.JSONDecodeError as exc:
            ctype = response.headers.get("Content-Type", "no content type")
            preview = mask(body[:120].decode("utf-8", "replace"))
            raise ResponseFormatError(f"{what}: HTTP {response.status_code} body is not valid JSON ({ctype}, "
                                      f"{len(body)} bytes): {exc}; body starts {preview!r}") from None
        if not isinstance(doc, dict):
            raise ResponseFormatError(f"{what}: the response is a JSON {type(doc).__name__}, not a GraphQL "
                                      "response object with data/errors")
        errors = doc.get("errors")
        if errors:
            errs = errors if isinstance(errors, list) else [errors]
            shown, pairs = describe_errors(errs)
            partial = " The partial data in the response was not loaded." if doc.get("data") is not None else ""
            throttled = all(error_code(e) in RETRY_ERROR_CODES for e in errs)
            kind = _Throttled if throttled else GraphQLError
            raise kind(f"{what}: the server answered with {len(errs)} GraphQL error{'s' if len(errs) != 1 else ''}: "
                       f"{shown}.{partial}", errors=pairs)
        data = doc.get("data")
        if data is None:
            raise ResponseFormatError(f"{what}: the response has neither data nor errors")
        return data

    def execute_sync(self, query: str, variables: dict[str, Any] | None = None,
                     operation_name: str | None = None, *, label: str = "request") -> Any:
        """``data`` of one operation, from synchronous code (its own event loop in a worker thread)."""

        async def main() -> Any:
            async with self.client() as client:
                data, _ = await self.execute(client, query, variables, operation_name, label=label)
                return data

        return run_sync(main, f"{self.name}-call")


class GraphQLSource:
    """Extract records from one GraphQL query.

    *system* and *source* must already have secrets resolved and the variables' partition templates
    rendered (the query text itself is never templated)."""

    def __init__(self, system: GraphQLSystemConfig, source: GraphQLSourceConfig, *, name: str = "graphql",
                 batch_size: int = 10_000, system_name: str | None = None, state_dir: Path | None = None,
                 max_duration: float | None = None) -> None:
        self.system, self.source, self.name = system, source, name
        self.batch_size = batch_size
        self.max_duration = max_duration
        op = source.operation()
        self.operation_name = source.operation_name or (op.name.value if op.name else None)  # sent, and traced
        self.operation_type = op.operation.value
        self.endpoint = GraphQLEndpoint(system, system_name=system_name, name=name, state_dir=state_dir)
        self.stats = self.endpoint.stats
        self._select = compile_path(source.records)
        self._page_info = source.page_info_path()
        self._seen: set[str] = set()

    # --- pages -----------------------------------------------------------------------------------------

    async def _page(self, client: httpx.AsyncClient, variables: dict[str, Any], label: str) -> GraphQLPage:
        selected: list[list[Any]] = []

        def count(data: Any) -> int:
            selected.append(self.records_of(data))
            return len(selected[0])

        data, size = await self.endpoint.execute(client, self.source.query, variables, self.operation_name,
                                                 label=label, count=count)
        records = selected[0]
        self.stats.records += len(records)
        return GraphQLPage(dict(variables), data, records, size, label)

    def records_of(self, data: Any) -> list[Any]:
        """The records the ``records`` path selects in *data* (a path naming the list itself gives its items;
        null nodes, which Relay servers return for items deleted or not visible, are left out)."""
        records = self._select(data)
        if len(records) == 1 and isinstance(records[0], list):  # "repository.issues.nodes": the list itself
            records = records[0]
        return [r for r in records if r is not None]

    def _first_variables(self) -> dict[str, Any]:
        variables = dict(self.source.variables)
        p = self.source.paginate
        if p is not None and p.offset is not None:
            variables[p.offset.offset_variable] = p.offset.start
            variables[p.offset.limit_variable] = p.offset.limit
        return variables

    def _next(self, page: GraphQLPage) -> dict[str, Any] | None:
        """The variables of the page after *page*, or None when it was the last."""
        p = self.source.paginate
        if p is None:
            return None
        if p.offset is not None:
            o = p.offset
            if len(page.records) < o.limit:
                return None
            return {**page.variables, o.offset_variable: int(page.variables[o.offset_variable]) + o.limit}
        assert p.relay is not None and self._page_info is not None
        info = first(self._page_info, page.data)
        where = f"{mask_url(self.endpoint.url)} ({page.label})"
        if not isinstance(info, dict) or not isinstance(info.get("hasNextPage"), bool):
            raise ResponseFormatError(f"{where}: no pageInfo {{ hasNextPage endCursor }} at data.{self._page_info}; "
                                      "select it in the query next to the records (or set paginate.relay.page_info)")
        if not info["hasNextPage"]:
            return None
        cursor = info.get("endCursor")
        if cursor in (None, ""):
            raise ResponseFormatError(f"{where}: pageInfo.hasNextPage is true but endCursor is empty at "
                                      f"data.{self._page_info}; select endCursor in the query")
        cursor = str(cursor)
        if cursor in self._seen:
            raise ResponseFormatError(f"{where}: endCursor '{mask(cursor)}' was already returned; the API is "
                                      "looping, stopping instead of fetching forever")
        self._seen.add(cursor)
        return {**page.variables, p.relay.cursor_variable: cursor}

    def _token(self, nxt: dict[str, Any] | None) -> Token | None:
        """The resume token for continuing with variables *nxt* (None: no safe token). Only the position is
        kept, never the other variables; a cursor that holds a registered secret is not written to disk."""
        if nxt is None:
            return DONE
        p = self.source.paginate
        assert p is not None
        var = p.position_variable
        value = nxt[var]
        if isinstance(value, str) and mask(value) != value:
            return None
        return {"kind": p.kind, "variable": var, "value": value, "at": f"{var}={value}"}

    def _resume_variables(self, token: Token) -> dict[str, Any]:
        p = self.source.paginate
        var = p.position_variable if p is not None else None
        if p is None or token.get("kind") != p.kind or token.get("variable") != var:
            raise ResponseFormatError(f"{mask_url(self.endpoint.url)}: the checkpoint continues with "
                                      f"{token.get('kind')} {token.get('variable')!r}, which this source's paging "
                                      "does not use")
        if p.relay is not None:
            self._seen.add(str(token["value"]))
        return {**self._first_variables(), str(var): token["value"]}

    def _to_batches(self, page: GraphQLPage) -> list[pa.RecordBatch]:
        records = page.records
        return [records_to_batch(records[i:i + self.batch_size]) for i in range(0, len(records), self.batch_size)]

    async def _walk(self, emit: Emit, resume: Token | None = None) -> None:
        """Fetch every page and hand each page's batches to *emit* with the token that continues after it."""
        p = self.source.paginate
        max_pages = p.max_pages if p is not None else None
        if resume is not None and resume.get("kind") == "done":
            return
        variables = self._resume_variables(resume) if resume is not None else self._first_variables()
        label = "first page" if resume is None else f"resumed at {resume.get('at')}"
        async with self.endpoint.client() as client:
            count = 0
            while True:
                count += 1
                if max_pages and count > max_pages:
                    raise ResponseFormatError(
                        f"{mask_url(self.endpoint.url)}: more than paginate.max_pages={max_pages} pages; stopping "
                        "(the API kept handing out a next page). If the source really has more pages, raise "
                        f"`paginate.max_pages` on sources.{self.name}")
                page = await self._page(client, variables, label)
                nxt = self._next(page)
                await emit(self._to_batches(page), self._token(nxt))
                if nxt is None:
                    return
                variables = nxt
                label = f"page {count + 1}"

    # --- the adapter interface ---------------------------------------------------------------------------

    def batches(self) -> Generator[pa.RecordBatch, None, None]:
        """Records as Arrow batches of at most ``batch_size`` rows, in page order."""
        for batch, _ in self.resumable_batches(None):
            yield batch

    def resumable_batches(self, resume: Token | None) -> Generator[Item, None, None]:
        """The batches of :meth:`batches`, each with the checkpoint token that continues after it (None when
        the batch ends inside a page); from the start, or from *resume* (see :mod:`hub.runtime.checkpoint`)."""
        self._seen.clear()
        st = self.stats
        return stream_batches(lambda emit: self._walk(emit, resume), name=f"graphql-{self.name}",
                              batch_size=self.batch_size, max_duration=self.max_duration,
                              progress=lambda: f"{st.pages} pages, {st.records} records read")

    def resume_blocker(self, window_closed: bool) -> str | None:
        """Why this source cannot resume from a checkpoint (None: it can). A Relay cursor is a position the
        API hands out; an offset is only trusted for a partition whose window is over (data of the past)."""
        p = self.source.paginate
        if p is None:
            return "a single request: nothing to resume"
        if p.relay is not None or window_closed:
            return None
        return ("offset paging of data that may still change (not a partition in the past): a retry starts "
                "over, as pages could have shifted")

    def details(self) -> dict[str, Any]:
        """What the extraction did, for run metadata (the URL is masked)."""
        st = self.stats
        out: dict[str, Any] = {"url": st.url, "operation": self.operation_name or self.operation_type,
                               "pages": st.pages, "records": st.records, "bytes": st.bytes, "retries": st.retries}
        if self.endpoint.limiter is not None:
            out["rate_limit_wait_s"] = round(self.endpoint.limiter.waited, 3)
        if self.endpoint.breaker is not None:
            out["circuit"] = self.endpoint.breaker.details()
        return out

    def first_page(self) -> GraphQLPage:
        """Only the first page (auth, retries and size limits apply): a sample of the query's responses for
        contract snapshots. Runs its own event loop in a worker thread."""

        async def main() -> GraphQLPage:
            async with self.endpoint.client() as client:
                return await self._page(client, self._first_variables(), "sample")

        page: GraphQLPage = run_sync(main, f"graphql-{self.name}-sample")
        return page


__all__ = ["GraphQLEndpoint", "GraphQLError", "GraphQLPage", "GraphQLSource", "GraphQLStats", "origin_policy"]
