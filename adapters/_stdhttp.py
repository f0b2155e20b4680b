"""An httpx transport for HTTP/1.1 on the standard library: the requests httpx would send, for less CPU.

httpx's own transport (httpcore and h11, pure Python) costs ~0.35 ms of CPU per small request, a sixth of a flow's
SOAP write; :mod:`http.client` reads a response's status line and headers in C-backed buffered reads for a third of
that. Only the wire changes: the client above a transport — auth, redirects and the origin policy's hooks that see
each of them, cookies, default headers, proxies (mounted by the client), timeouts — is httpx's, unchanged, and the
request goes out as h11 would write it (the request line, ``Host`` first, then the other headers as httpx built
them, the body in the same ``send`` as the headers, ``TCP_NODELAY``). Failures are httpx's exceptions, mapped as
httpcore maps them (connect: ``ConnectError``/``ConnectTimeout``; sending: ``WriteError``/``WriteTimeout``; the
answer: ``ReadError``/``ReadTimeout``, ``RemoteProtocolError`` for a connection closed before a complete answer),
so callers classify them as before (a flow: nothing sent, or outcome unknown).

Connections are kept alive per origin (at most ``max_keepalive_connections`` idle, each for
``keepalive_expiry`` seconds) and an idle one is reused only while its socket has nothing to read (a server that
closed it); at most ``max_connections`` requests are open at once (else ``PoolTimeout`` after the pool timeout).
HTTP/2, CONNECT and Unix sockets are not this transport's: :class:`Routed` sends the requests that ask for it
(``extensions={"hub.stdlib": True}``) here and every other request through httpx's default transport.
"""

from __future__ import annotations

import contextlib
import http.client
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx

#: The request extension that routes a request through :class:`StdlibTransport` (see :class:`Routed`).
EXTENSION = "hub.stdlib"
_DEFAULT_PORTS = {"http": 80, "https": 443}
_BAD_HEADER_BYTES = (b"\r", b"\n", b"\x00")


class _Connection:
    """One socket to an origin, with the buffered reader of its answers."""

    __slots__ = ("expires", "key", "sock")

    def __init__(self, key: tuple[str, str, int], sock: socket.socket) -> None:
        self.key, self.sock, self.expires = key, sock, 0.0

    def usable(self, now: float) -> bool:
        """Idle and neither expired nor readable (a readable idle socket is a server's close, or garbage)."""
        if now > self.expires:
            return False
        try:
            poller = select.poll()
            poller.register(self.sock, select.POLLIN)
            return not poller.poll(0)
        except (OSError, ValueError):
            return False

    def close(self) -> None:
        with contextlib.suppress(OSError):  # closing a broken socket
            self.sock.close()


class _Reader:
    """The socket's buffered reader for http.client, noting an end of file met by ``readline``: http.client takes
    the end of the connection for the end of the headers, where h11 (httpx's transport) reports a connection closed
    mid-answer; this tells the two apart."""

    __slots__ = ("eof", "file")

    def __init__(self, file: Any) -> None:
        self.file, self.eof = file, False

    def readline(self, limit: int = -1) -> bytes:
        line: bytes = self.file.readline(limit)
        if not line:
            self.eof = True
        return line

    def __getattr__(self, name: str) -> Any:
        return getattr(self.file, name)


class _Socket:
    """What :class:`http.client.HTTPResponse` takes as its socket: only ``makefile`` is asked for."""

    __slots__ = ("reader", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader: _Reader | None = None

    def makefile(self, mode: str) -> _Reader:
        self.reader = _Reader(self.sock.makefile("rb"))
        return self.reader


class _Body(httpx.SyncByteStream):
    """The answer's body, read from http.client's response; hands the connection back when read to the end."""

    def __init__(self, transport: StdlibTransport, conn: _Connection, response: http.client.HTTPResponse,
                 read_timeout: float | None) -> None:
        self._transport, self._conn, self._response = transport, conn, response
        self._timeout = read_timeout
        self._done = False

    def __iter__(self) -> Iterator[bytes]:
        response = self._response
        expected = response.length
        received = 0
        self._conn.sock.settimeout(self._timeout)
        while True:
            try:
                chunk = response.read1(65536)
            except http.client.IncompleteRead as exc:
                raise httpx.RemoteProtocolError(f"peer closed connection without sending complete message body "
                                                f"({exc})") from exc
            except TimeoutError as exc:
                raise httpx.ReadTimeout(str(exc) or "timed out") from exc
            except http.client.HTTPException as exc:
                raise httpx.RemoteProtocolError(str(exc) or type(exc).__name__) from exc
            except OSError as exc:
                raise httpx.ReadError(str(exc) or type(exc).__name__) from exc
            if not chunk:
                if response.length:  # read1 ends quietly where the connection closed: the body is short
                    raise httpx.RemoteProtocolError(f"peer closed connection without sending complete message body "
                                                    f"(received {received} bytes, expected {expected})")
                return
            received += len(chunk)
            yield chunk

    def close(self) -> None:
        if self._done:
            return
        self._done = True
        response = self._response
        # kept alive, and read to its end (http.client leaves a Content-Length body "open" at length 0)
        reusable = not response.will_close and (response.isclosed() or response.length == 0)
        response.close()
        self._transport._release(self._conn, reusable)


class StdlibTransport(httpx.BaseTransport):
    """HTTP/1.1 over :mod:`http.client` sockets, as an httpx transport (see the module docstring)."""

    def __init__(self, *, verify: ssl.SSLContext | str | bool = True, trust_env: bool = True,
                 limits: httpx.Limits | None = None) -> None:
        limits = limits or httpx.Limits(max_connections=100, max_keepalive_connections=20)
        self._verify, self._trust_env = verify, trust_env
        self._ssl: ssl.SSLContext | None = None
        self._lock = threading.Lock()
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._idle_count = 0
        self._max_idle = limits.max_keepalive_connections if limits.max_keepalive_connections is not None else 1 << 30
        self._expiry = limits.keepalive_expiry if limits.keepalive_expiry is not None else float("inf")
        self._slots = threading.BoundedSemaphore(limits.max_connections) if limits.max_connections else None
        self._closed = False

    # --- connections ---------------------------------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            ctx = self._verify if isinstance(self._verify, ssl.SSLContext) else \
                httpx.create_ssl_context(verify=self._verify, trust_env=self._trust_env)
            ctx.set_alpn_protocols(["http/1.1"])  # as httpcore does for an HTTP/1.1 connection
            self._ssl = ctx
        return self._ssl

    def _checkout(self, key: tuple[str, str, int]) -> _Connection | None:
        now = time.monotonic()
        with self._lock:
            idle = self._idle.get(key)
            while idle:
                conn = idle.pop()
                self._idle_count -= 1
                if conn.usable(now):
                    return conn
                conn.close()
        return None

    def _connect(self, key: tuple[str, str, int], timeout: float | None, sni: str | None) -> _Connection:
        scheme, host, port = key
        try:
            sock = socket.create_connection((host, port), timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(str(exc) or "timed out") from exc
        except OSError as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
        if scheme == "https":
            try:
                sock.settimeout(timeout)
                sock = self._ssl_context().wrap_socket(sock, server_hostname=sni or host)
            except TimeoutError as exc:
                sock.close()
                raise httpx.ConnectTimeout(str(exc) or "timed out") from exc
            except OSError as exc:  # ssl.SSLError among them
                sock.close()
                raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
        return _Connection(key, sock)

    def _release(self, conn: _Connection, reusable: bool) -> None:
        """Keep *conn* for the next request to its origin (when *reusable* and there is room), else close it; free
        the request's slot."""
        try:
            if reusable and not self._closed:
                with self._lock:
                    if self._idle_count < self._max_idle:
                        conn.expires = time.monotonic() + self._expiry
                        self._idle.setdefault(conn.key, []).append(conn)
                        self._idle_count += 1
                        return
            conn.close()
        finally:
            if self._slots is not None:
                self._slots.release()

    # --- requests ------------------------------------------------------------------------------------------

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme = url.scheme
        if scheme not in _DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"Request URL has an unsupported protocol '{scheme}://'.")
        if not url.host:
            raise httpx.UnsupportedProtocol("Request URL is missing an 'http://' or 'https://' protocol.")
        head = _head(request)
        timeouts = request.extensions.get("timeout", {})
        pool_timeout = timeouts.get("pool")
        if self._slots is not None and not self._slots.acquire(timeout=pool_timeout):
            raise httpx.PoolTimeout("timed out waiting for a connection")
        key = (scheme, url.host, url.port or _DEFAULT_PORTS[scheme])
        conn: _Connection | None = None
        try:
            conn = self._checkout(key) or self._connect(key, timeouts.get("connect"),
                                                         request.extensions.get("sni_hostname"))
            self._send(conn, request, head, timeouts.get("write"))
            response = self._receive(conn, request, timeouts.get("read"))
        except BaseException:
            if conn is not None:
                conn.close()
            if self._slots is not None:
                self._slots.release()
            raise
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.msg.items()]
        version = b"HTTP/1.0" if response.version == 10 else b"HTTP/1.1"
        return httpx.Response(response.status, headers=headers,
                              stream=_Body(self, conn, response, timeouts.get("read")),
                              extensions={"http_version": version,
                                          "reason_phrase": response.reason.encode("ascii", "replace")})

    def _send(self, conn: _Connection, request: httpx.Request, head: bytes, timeout: float | None) -> None:
        """The request line, headers and body, the body in the same ``sendall`` as the headers when it is one
        chunk (a second small write would wait for the first one's acknowledgement)."""
        sock = conn.sock
        chunked = any(k.lower() == b"transfer-encoding" and b"chunked" in v.lower() for k, v in request.headers.raw)
        try:
            sock.settimeout(timeout)
            pending = head
            for chunk in request.stream:  # type: ignore[union-attr]
                if not chunk:
                    continue
                data = b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk
                if pending:
                    sock.sendall(pending + data)
                    pending = b""
                else:
                    sock.sendall(data)
            if chunked:
                pending += b"0\r\n\r\n"
            if pending:
                sock.sendall(pending)
        except TimeoutError as exc:
            raise httpx.WriteTimeout(str(exc) or "timed out") from exc
        except OSError as exc:
            raise httpx.WriteError(str(exc) or type(exc).__name__) from exc

    def _receive(self, conn: _Connection, request: httpx.Request, timeout: float | None) -> http.client.HTTPResponse:
        conn.sock.settimeout(timeout)
        shim = _Socket(conn.sock)
        response = http.client.HTTPResponse(shim, method=request.method)  # type: ignore[arg-type]
        try:
            response.begin()
            if shim.reader is not None and shim.reader.eof:
                raise httpx.RemoteProtocolError("peer closed connection without sending complete message headers")
        except http.client.RemoteDisconnected as exc:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.") from exc
        except TimeoutError as exc:
            raise httpx.ReadTimeout(str(exc) or "timed out") from exc
        except http.client.HTTPException as exc:
            raise httpx.RemoteProtocolError(f"{type(exc).__name__}: {exc}") from exc
        except OSError as exc:
            raise httpx.ReadError(str(exc) or type(exc).__name__) from exc
        return response

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle, self._idle_count = self._idle, {}, 0
        for conns in idle.values():
            for conn in conns:
                conn.close()


def _head(request: httpx.Request) -> bytes:
    """The request line and headers as h11 writes them: ``Host`` first, then the others in order."""
    raw = request.headers.raw
    for name, value in raw:
        if any(b in name or b in value for b in _BAD_HEADER_BYTES):
            raise httpx.LocalProtocolError(f"Illegal header {name!r}")
    lines = [b"%s %s HTTP/1.1\r\n" % (request.method.encode("ascii"), request.url.raw_path)]
    lines.extend(b"%s: %s\r\n" % (k, v) for k, v in raw if k.lower() == b"host")
    lines.extend(b"%s: %s\r\n" % (k, v) for k, v in raw if k.lower() != b"host")
    lines.append(b"\r\n")
    return b"".join(lines)


class Routed(httpx.BaseTransport):
    """httpx's default transport, except for requests with the :data:`EXTENSION` extension, which go through a
    :class:`StdlibTransport` (redirects keep their request's extensions, so they take the same way)."""

    def __init__(self, *, verify: ssl.SSLContext | str | bool = True, trust_env: bool = True,
                 limits: httpx.Limits | None = None) -> None:
        kwargs: dict[str, Any] = {"verify": verify, "trust_env": trust_env}
        if limits is not None:
            kwargs["limits"] = limits
        self.default = httpx.HTTPTransport(**kwargs)
        self.stdlib = StdlibTransport(**kwargs)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.extensions.get(EXTENSION):
            return self.stdlib.handle_request(request)
        return self.default.handle_request(request)

    def close(self) -> None:
        self.stdlib.close()
        self.default.close()
