"""A small, real HTTP/1.1 server on loopback for testing HTTP adapters without mocks.

Built on the standard library only (``http.server.ThreadingHTTPServer``): every request is served by
a daemon thread, the port is chosen by the OS, and the server runs in a background thread::

    with RestTestServer() as server:
        httpx.get(server.url + "/pages?n=25&size=10")
        server.requests("/pages")        # thread-safe log: method, path, query, headers, body, times

Endpoints (all JSON unless noted; ``n`` = number of records in the data set, ``size`` = page size):

* pagination over records ``{"id": i, "name": "item-i"}`` (i = 1..n):
  ``/pages`` (``page``/``per_page``; ``totals=0`` omits ``total_pages``/``total`` so the client must stop
  on an empty page; ``base`` = first page number; ``delay``/``reverse`` slow pages down),
  ``/offset`` (``offset``/``limit``, ``totals=0`` omits ``total``), ``/cursor`` (``cursor``; next token at
  ``$.meta.next_cursor``; ``loop_at``/``end``), ``/next`` (``$.links.next``; ``mode`` = root | relative |
  absolute; ``loop``), ``/link`` (RFC 8288 ``Link`` header with rel next/prev/last);
* auth, each serving ``/pages``-style pages once the credential is right, else 401:
  ``/auth/header-key``, ``/auth/query-key``, ``/auth/basic``, ``/auth/bearer``, ``/auth/oauth``, and the
  OAuth2 client-credentials token endpoint ``POST /oauth/token``;
* faults: ``/status/<code>`` (``echo=1`` echoes the request's query and headers in the body),
  ``/html``, ``/truncated``, ``/big`` (``bytes``, ``chunked=1``), ``/slow`` (``delay``), ``/echo``;
* programmable: :meth:`RestTestServer.add_json` serves a fixed document, :meth:`RestTestServer.add_fault`
  makes the next N matching requests fail (status + headers, or a truncated body).

Every request is counted while in flight, per path, so tests can read the peak concurrency.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit


@dataclass
class LoggedRequest:
    """One request as the server saw it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names lower-cased
    body: bytes
    started: float  # time.monotonic() when the request line and headers had been read
    status: int | None = None  # the status answered (None if the handler never answered)
    finished: float | None = None  # time.monotonic() once the response had been written
    response_bytes: int = 0  # body bytes actually sent

    def param(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)

    @property
    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode(), keep_blank_values=True).items()}

    @property
    def params(self) -> dict[str, str]:
        """The query as single values (first value of each parameter)."""
        return {k: v[0] for k, v in self.query.items()}


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # bytes are sent as is; anything else as JSON
    headers: dict[str, str] = field(default_factory=dict)
    mode: str = "normal"  # normal | truncate | chunked
    delay: float = 0.0


@dataclass
class Fault:
    path: str
    status: int
    times: int | None  # None: forever
    headers: dict[str, str]
    body: Any
    match: dict[str, str]
    truncate: bool
    hits: int = 0


@dataclass
class Credentials:
    api_key: str = "key-5ecret-7741"
    api_key_header: str = "X-API-Key"
    api_key_param: str = "api_key"
    username: str = "svc-user"
    password: str = "pa55-w0rd-!"
    bearer: str = "bearer-t0ken-9921"
    client_id: str = "client-abc"
    client_secret: str = "client-5ecret-xyz"


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    app: RestTestServer

    def handle_error(self, request: Any, client_address: Any) -> None:  # quiet on client hang-ups
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer
    timeout = 30  # idle keep-alive connections end eventually

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _dispatch(self) -> None:
        self.server.app._handle(self)

    do_GET = do_POST = do_PUT = do_DELETE = _dispatch


def _items(n: int) -> list[dict[str, Any]]:
    return [{"id": i, "name": f"item-{i}"} for i in range(1, n + 1)]


def _int(req: LoggedRequest, name: str, default: int) -> int:
    value = req.param(name)
    return int(value) if value not in (None, "") else default


class RestTestServer:
    """The server; use as a context manager or call :meth:`start` / :meth:`stop`."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._httpd = _HTTPServer((host, 0), _Handler)
        self._httpd.app = self
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._log: list[LoggedRequest] = []
        self._in_flight: dict[str, int] = {}
        self._peak: dict[str, int] = {}
        self._faults: list[Fault] = []
        self._json: dict[str, tuple[Any, dict[str, str]]] = {}
        self.credentials = Credentials()
        # OAuth2 behaviour, changeable by tests.
        self.oauth_client_auth: str | None = None  # "basic" / "body" to require one; None accepts both
        self.oauth_expires_in: int | None = 3600
        self.oauth_revoke_after: int | None = None  # revoke every token after this many authorised calls
        self._tokens: set[str] = set()
        self._authorised_calls = 0
        self._routes: dict[str, Callable[[LoggedRequest], Reply]] = {
            "/pages": self._pages, "/offset": self._offset, "/cursor": self._cursor, "/next": self._next,
            "/link": self._link, "/echo": self._echo, "/html": self._html, "/truncated": self._truncated,
            "/big": self._big, "/slow": self._slow, "/oauth/token": self._oauth_token,
            "/auth/header-key": self._auth_header_key, "/auth/query-key": self._auth_query_key,
            "/auth/basic": self._auth_basic, "/auth/bearer": self._auth_bearer, "/auth/oauth": self._auth_oauth,
        }

    # --- lifecycle ------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RestTestServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="rest-test-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> RestTestServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # --- test API -------------------------------------------------------------------------------------

    def requests(self, path: str | None = None, method: str | None = None) -> list[LoggedRequest]:
        """A snapshot of the request log, oldest first, optionally filtered by path and method."""
        with self._lock:
            log = list(self._log)
        return [r for r in log if (path is None or r.path == path) and (method is None or r.method == method)]

    def max_in_flight(self, path: str) -> int:
        """The most requests to *path* that were being served at the same moment."""
        with self._lock:
            return self._peak.get(path, 0)

    def add_json(self, path: str, doc: Any, headers: dict[str, str] | None = None) -> None:
        """Serve *doc* as JSON at *path* (any method)."""
        with self._lock:
            self._json[path] = (doc, dict(headers or {}))

    def add_fault(self, path: str, status: int = 503, *, times: int | None = 1,
                  headers: dict[str, str] | None = None, body: Any = None,
                  match: dict[str, str] | None = None, truncate: bool = False) -> Fault:
        """Answer the next *times* requests to *path* (whose query contains *match*) with *status*.

        ``truncate=True`` instead declares a longer Content-Length than it sends and closes the connection.
        ``times=None`` fails forever.
        """
        fault = Fault(path, status, times, dict(headers or {}), body, dict(match or {}), truncate)
        with self._lock:
            self._faults.append(fault)
        return fault

    def issue_token(self) -> str:
        token = "at-" + secrets.token_hex(8)
        with self._lock:
            self._tokens.add(token)
        return token

    def revoke_tokens(self) -> None:
        """Invalidate every access token issued so far; the API answers 401 to them from now on."""
        with self._lock:
            self._tokens.clear()

    # --- request handling -----------------------------------------------------------------------------

    def _handle(self, h: _Handler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        parts = urlsplit(h.path)
        req = LoggedRequest(
            method=h.command, path=parts.path, query=parse_qs(parts.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in h.headers.items()}, body=body, started=time.monotonic(),
        )
        with self._lock:
            self._log.append(req)
            n = self._in_flight.get(req.path, 0) + 1
            self._in_flight[req.path] = n
            self._peak[req.path] = max(self._peak.get(req.path, 0), n)
        try:
            reply = self._fault_for(req) or self._route(req)
            if reply.delay:
                time.sleep(reply.delay)
            self._send(h, req, reply)
        finally:
            req.finished = time.monotonic()
            with self._lock:
                self._in_flight[req.path] -= 1

    def _fault_for(self, req: LoggedRequest) -> Reply | None:
        with self._lock:
            for f in self._faults:
                if f.path != req.path or (f.times is not None and f.hits >= f.times):
                    continue
                if any(req.param(k) != v for k, v in f.match.items()):
                    continue
                f.hits += 1
                if f.truncate:
                    return Reply(200, b'{"data": [', mode="truncate")
                body = f.body if f.body is not None else {"error": f"injected fault {f.status}"}
                return Reply(f.status, body, dict(f.headers))
        return None

    def _route(self, req: LoggedRequest) -> Reply:
        with self._lock:
            fixed = self._json.get(req.path)
        if fixed is not None:
            return Reply(200, fixed[0], dict(fixed[1]))
        if req.path.startswith("/status/"):
            return self._status(req)
        handler = self._routes.get(req.path)
        if handler is None:
            return Reply(404, {"error": f"no route {req.path}"})
        return handler(req)

    def _send(self, h: _Handler, req: LoggedRequest, reply: Reply) -> None:
        if isinstance(reply.body, bytes):
            payload, ctype = reply.body, "application/octet-stream"
        else:
            payload, ctype = json.dumps(reply.body).encode(), "application/json"
        headers = {"Content-Type": ctype, **reply.headers}
        req.status = reply.status
        try:
            h.send_response(reply.status)
            for k, v in headers.items():
                h.send_header(k, v)
            if reply.mode == "chunked":
                h.send_header("Transfer-Encoding", "chunked")
                h.end_headers()
                for i in range(0, len(payload), 1024):
                    piece = payload[i:i + 1024]
                    h.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                    req.response_bytes += len(piece)
                h.wfile.write(b"0\r\n\r\n")
            elif reply.mode == "truncate":
                h.send_header("Content-Length", str(len(payload) + 1000))
                h.end_headers()
                h.wfile.write(payload)
                req.response_bytes = len(payload)
                h.wfile.flush()
                h.close_connection = True
            else:
                h.send_header("Content-Length", str(len(payload)))
                h.end_headers()
                h.wfile.write(payload)
                req.response_bytes = len(payload)
            h.wfile.flush()
        except (ConnectionError, TimeoutError):
            h.close_connection = True

    # --- pagination endpoints -------------------------------------------------------------------------

    def _pages(self, req: LoggedRequest) -> Reply:
        n, size, base = _int(req, "n", 25), _int(req, "per_page", _int(req, "size", 10)), _int(req, "base", 1)
        page = _int(req, "page", base)
        total_pages = -(-n // size)
        index = page - base
        doc: dict[str, Any] = {"data": _items(n)[index * size:(index + 1) * size] if index >= 0 else [],
                               "page": page}
        if req.param("totals", "1") != "0":
            doc.update(total_pages=total_pages, total=n)
        delay = float(req.param("delay") or 0)
        if req.param("reverse") == "1":  # earlier pages are slower: finishes out of order
            delay *= max(total_pages - index, 1)
        return Reply(200, doc, delay=delay)

    def _offset(self, req: LoggedRequest) -> Reply:
        n, offset, limit = _int(req, "n", 25), _int(req, "offset", 0), _int(req, "limit", 10)
        doc: dict[str, Any] = {"items": _items(n)[offset:offset + limit]}
        if req.param("totals", "1") != "0":
            doc["total"] = n
        return Reply(200, doc, delay=float(req.param("delay") or 0))

    @staticmethod
    def _token(offset: int) -> str:
        return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode().rstrip("=")

    def _cursor(self, req: LoggedRequest) -> Reply:
        n, size = _int(req, "n", 25), _int(req, "size", 10)
        cursor = req.param("cursor")
        offset = 0
        if cursor:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
            offset = int(raw.split(":")[1])
        nxt_off = offset + size
        loop_at = req.param("loop_at")
        nxt: str | None
        if loop_at is not None and nxt_off >= int(loop_at):
            nxt = self._token(size)  # a cursor we already handed out
        elif nxt_off < n:
            nxt = self._token(nxt_off)
        else:
            nxt = "" if req.param("end") == "empty" else None
        return Reply(200, {"data": _items(n)[offset:nxt_off], "meta": {"next_cursor": nxt}})

    def _next(self, req: LoggedRequest) -> Reply:
        n, size, page = _int(req, "n", 25), _int(req, "size", 10), _int(req, "page", 1)
        mode = req.param("mode", "root")
        data = _items(n)[(page - 1) * size:page * size]
        nxt_page = page + 1
        if req.param("loop") == "1" and page == 3:
            nxt_page = 2
        nxt: str | None = None
        if (page * size < n) or req.param("loop") == "1":
            query = urlencode({"page": nxt_page, "n": n, "size": size, "mode": mode,
                               **({"loop": "1"} if req.param("loop") == "1" else {})})
            host = req.header("host")
            nxt = {"root": f"/next?{query}", "relative": f"next?{query}",
                   "absolute": f"http://{host}/next?{query}"}[str(mode)]
        return Reply(200, {"results": data, "links": {"next": nxt}})

    def _link(self, req: LoggedRequest) -> Reply:
        n, size, page = _int(req, "n", 25), _int(req, "size", 10), _int(req, "page", 1)
        last = -(-n // size)
        host = req.header("host")

        def url(p: int) -> str:
            return f"http://{host}/link?{urlencode({'page': p, 'n': n, 'size': size})}"

        links = [f'<{url(1)}>; rel="first"', f'<{url(last)}>; rel="last"']
        if page > 1:
            links.append(f'<{url(page - 1)}>; rel="prev"')
        if page < last:
            links.append(f'<{url(page + 1)}>; rel="next"')
        return Reply(200, _items(n)[(page - 1) * size:page * size], {"Link": ", ".join(links)})

    # --- fault endpoints ------------------------------------------------------------------------------

    def _status(self, req: LoggedRequest) -> Reply:
        code = int(req.path.rsplit("/", 1)[1])
        body: dict[str, Any] = {"error": f"status {code}"}
        if req.param("echo") == "1":  # a (badly behaved) server that echoes what it received
            body.update(query=req.params, headers=req.headers)
        return Reply(code, body)

    def _html(self, req: LoggedRequest) -> Reply:
        page = b"<!DOCTYPE html><html><body><h1>Maintenance</h1><p>Back soon.</p></body></html>"
        return Reply(200, page, {"Content-Type": "text/html; charset=utf-8"})

    def _truncated(self, req: LoggedRequest) -> Reply:
        return Reply(200, b'{"data": [{"id": 1}, {"id"', mode="truncate")

    def _big(self, req: LoggedRequest) -> Reply:
        size = _int(req, "bytes", 10_000)
        head, tail = b'{"data": [{"pad": "', b'"}]}'
        payload = head + b"x" * max(size - len(head) - len(tail), 0) + tail
        return Reply(200, payload, {"Content-Type": "application/json"},
                     mode="chunked" if req.param("chunked") == "1" else "normal")

    def _slow(self, req: LoggedRequest) -> Reply:
        return Reply(200, {"data": [{"id": 1}]}, delay=float(req.param("delay") or 1))

    def _echo(self, req: LoggedRequest) -> Reply:
        parsed: Any = None
        if req.body:
            try:
                parsed = json.loads(req.body)
            except ValueError:
                parsed = req.body.decode("utf-8", "replace")
        return Reply(200, {"method": req.method, "path": req.path, "query": req.params,
                           "headers": req.headers, "json": parsed})

    # --- auth endpoints -------------------------------------------------------------------------------

    @staticmethod
    def _unauthorised(scheme: str) -> Reply:
        return Reply(401, {"error": "unauthorised"}, {"WWW-Authenticate": scheme})

    def _auth_header_key(self, req: LoggedRequest) -> Reply:
        c = self.credentials
        return self._pages(req) if req.header(c.api_key_header) == c.api_key else self._unauthorised("ApiKey")

    def _auth_query_key(self, req: LoggedRequest) -> Reply:
        c = self.credentials
        return self._pages(req) if req.param(c.api_key_param) == c.api_key else self._unauthorised("ApiKey")

    def _auth_basic(self, req: LoggedRequest) -> Reply:
        c = self.credentials
        expected = "Basic " + base64.b64encode(f"{c.username}:{c.password}".encode()).decode()
        return self._pages(req) if req.header("authorization") == expected else self._unauthorised("Basic")

    def _auth_bearer(self, req: LoggedRequest) -> Reply:
        ok = req.header("authorization") == f"Bearer {self.credentials.bearer}"
        return self._pages(req) if ok else self._unauthorised("Bearer")

    def _auth_oauth(self, req: LoggedRequest) -> Reply:
        auth = req.header("authorization") or ""
        token = auth[len("Bearer "):] if auth.startswith("Bearer ") else ""
        with self._lock:
            ok = token in self._tokens
            if ok:
                self._authorised_calls += 1
                if self.oauth_revoke_after is not None and self._authorised_calls >= self.oauth_revoke_after:
                    self._tokens.clear()
                    self.oauth_revoke_after = None
        return self._pages(req) if ok else self._unauthorised('Bearer error="invalid_token"')

    def _oauth_token(self, req: LoggedRequest) -> Reply:
        if req.method != "POST":
            return Reply(405, {"error": "invalid_request"}, {"Allow": "POST"})
        form = req.form
        if form.get("grant_type") != "client_credentials":
            return Reply(400, {"error": "unsupported_grant_type"})
        c = self.credentials
        via_basic = via_body = False
        auth = req.header("authorization") or ""
        if auth.startswith("Basic "):
            user, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
            via_basic = (user, pw) == (c.client_id, c.client_secret)
        if "client_id" in form:
            via_body = (form.get("client_id"), form.get("client_secret")) == (c.client_id, c.client_secret)
        allowed = {"basic": via_basic, "body": via_body, None: via_basic or via_body}[self.oauth_client_auth]
        if not allowed:
            return Reply(401, {"error": "invalid_client", "received": form}, {"WWW-Authenticate": "Basic"})
        doc: dict[str, Any] = {"access_token": self.issue_token(), "token_type": "Bearer"}
        if self.oauth_expires_in is not None:
            doc["expires_in"] = self.oauth_expires_in
        return Reply(200, doc, {"Cache-Control": "no-store"})


__all__ = ["Credentials", "Fault", "LoggedRequest", "RestTestServer"]
