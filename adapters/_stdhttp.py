"""An httpx transport for HTTP/1.1 on plain sockets: the requests httpx would send, for less CPU.

httpx's own transport (httpcore and h11, pure Python event machinery) costs ~0.35 ms of CPU per small request, a
sixth of a flow's SOAP write; here a request is one ``sendall`` and the answer's head is read with the socket's
buffered ``readline`` (C) — neither h11's state machine nor :mod:`http.client`'s email-based header parser, which
cost as much again. Only the wire changes: the client above a transport — auth, redirects and the origin policy's
hooks that see each of them, cookies, default headers, proxies (mounted by the client), timeouts — is httpx's,
unchanged, and the request goes out as h11 writes it (the request line, ``Host`` first, then the other headers as
httpx built them, the body in the same ``sendall`` as the head, ``TCP_NODELAY``). Answers are framed as RFC 9112
says (no body for HEAD, 1xx, 204 and 304; chunked; ``Content-Length``; else until the connection closes; 1xx
interim answers skipped, as httpcore skips them). Failures are httpx's exceptions, mapped as httpcore maps them
(connect: ``ConnectError``/``ConnectTimeout``; sending: ``WriteError``/``WriteTimeout``; the answer:
``ReadError``/``ReadTimeout``, and ``RemoteProtocolError`` for a connection closed before a complete answer or a
malformed one), so callers classify them as before (a flow: nothing sent, or outcome unknown).

Connections are kept alive per origin (HTTP/1.1 answers without ``Connection: close``, read to their end; at most
``max_keepalive_connections`` idle, each for ``keepalive_expiry`` seconds) and an idle one is reused only while its
socket has nothing to read (a server that closed it); at most ``max_connections`` requests are open at once (else
``PoolTimeout`` after the pool timeout). HTTP/2, CONNECT and Unix sockets are not this transport's: :class:`Routed`
sends the requests that ask for it (``extensions={"hub.stdlib": True}``) here and every other one through httpx's
default transport.
"""

from __future__ import annotations

import contextlib
import re
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx

#: The request extension that routes a request through :class:`StdlibTransport` (see :class:`Routed`); its
#: answers carry it too (in ``response.extensions``), so a caller can tell which way a request went.
EXTENSION = "hub.stdlib"
#: A request extension: the most bytes one read of the body asks the socket for (default 64 KiB). A body
#: read in a thread of its own while the caller's thread parses takes larger reads: each one waits for the
#: GIL (up to ``sys.getswitchinterval()``, 5 ms), so 64 KiB reads would cap it at about 13 MB/s.
READ_SIZE = "hub.stdlib.read_size"
_DEFAULT_PORTS = {"http": 80, "https": 443}
#: Bytes no header name or value may hold (h11 refuses them: header injection).
_BAD_HEADER = re.compile(rb"[\r\n\x00]")
_MAX_LINE = 65536  # a status or header line (http.client's limit)
_MAX_HEADERS = 100
_CHUNK = 65536
_NO_BODY = frozenset({204, 304})


class _Connection:
    """One socket to an origin, with the buffered reader of its answers."""

    __slots__ = ("expires", "file", "key", "sock")

    def __init__(self, key: tuple[str, str, int], sock: socket.socket) -> None:
        self.key, self.sock, self.expires = key, sock, 0.0
        self.file = sock.makefile("rb")

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
            self.file.close()
            self.sock.close()


def _protocol_error(message: str) -> httpx.RemoteProtocolError:
    return httpx.RemoteProtocolError(message)


def _read_line(file: Any, what: str) -> bytes:
    line: bytes = file.readline(_MAX_LINE + 1)
    if len(line) > _MAX_LINE:
        raise _protocol_error(f"{what} line too long")
    return line


def _read_head(file: Any) -> tuple[int, bytes, bytes, list[tuple[bytes, bytes]]]:
    """(status, HTTP version, reason, headers) of the final answer; 1xx interim answers are skipped (101 is final:
    the connection is then not reused)."""
    while True:
        line = _read_line(file, "status")
        if not line:
            raise _protocol_error("Server disconnected without sending a response.")
        parts = line.rstrip(b"\r\n").split(None, 2)
        if len(parts) < 2 or parts[0] not in (b"HTTP/1.1", b"HTTP/1.0") or len(parts[1]) != 3 \
                or not parts[1].isdigit():
            raise _protocol_error(f"illegal status line: {line[:200]!r}")
        status = int(parts[1])
        headers: list[tuple[bytes, bytes]] = []
        while True:
            line = _read_line(file, "header")
            if not line:
                raise _protocol_error("peer closed connection without sending complete message headers")
            if line in (b"\r\n", b"\n"):
                break
            if line[0] in b" \t":  # obsolete line folding: part of the previous value
                if not headers:
                    raise _protocol_error(f"illegal header line: {line[:200]!r}")
                name, value = headers[-1]
                headers[-1] = (name, value + b" " + line.strip(b" \t\r\n"))
                continue
            name, colon, value = line.partition(b":")
            if not colon or not name or name != name.strip(b" \t"):
                raise _protocol_error(f"illegal header line: {line[:200]!r}")
            headers.append((name, value.strip(b" \t\r\n")))
            if len(headers) > _MAX_HEADERS:
                raise _protocol_error(f"more than {_MAX_HEADERS} headers")
        if 100 <= status < 200 and status != 101:
            continue
        return status, parts[0], parts[2] if len(parts) > 2 else b"", headers


class _Body(httpx.SyncByteStream):
    """The answer's body as its framing says; hands the connection back when read to its end."""

    def __init__(self, transport: StdlibTransport, conn: _Connection, framing: str, length: int,
                 reusable: bool, read_timeout: float | None, read_size: int = _CHUNK) -> None:
        self._transport, self._conn = transport, conn
        self._framing, self._length = framing, length  # framing: "none", "length", "chunked" or "close"
        self._reusable, self._timeout = reusable, read_timeout
        self._read_size = read_size
        self._complete = framing == "none"
        self._done = False

    def __iter__(self) -> Iterator[bytes]:
        if self._complete:
            return
        self._conn.sock.settimeout(self._timeout)
        try:
            if self._framing == "length":
                yield from self._fixed()
            elif self._framing == "chunked":
                yield from self._chunked()
            else:
                yield from self._until_close()
        except TimeoutError as exc:
            raise httpx.ReadTimeout(str(exc) or "timed out") from exc
        except OSError as exc:
            raise httpx.ReadError(str(exc) or type(exc).__name__) from exc
        self._complete = True

    def _fixed(self) -> Iterator[bytes]:
        file, left = self._conn.file, self._length
        while left:
            chunk = file.read1(min(left, self._read_size))
            if not chunk:
                raise _protocol_error(f"peer closed connection without sending complete message body (received "
                                      f"{self._length - left} bytes, expected {self._length})")
            left -= len(chunk)
            yield chunk

    def _chunked(self) -> Iterator[bytes]:
        file = self._conn.file
        while True:
            line = _read_line(file, "chunk size")
            if not line:
                raise _protocol_error("peer closed connection without sending complete message body (incomplete "
                                      "chunked read)")
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _protocol_error(f"illegal chunk size line: {line[:100]!r}") from None
            if size == 0:
                while True:  # trailers, up to the blank line
                    line = _read_line(file, "trailer")
                    if not line:
                        raise _protocol_error("peer closed connection without sending complete message body "
                                              "(incomplete chunked read)")
                    if line in (b"\r\n", b"\n"):
                        return
            while size:
                chunk = file.read1(min(size, self._read_size))
                if not chunk:
                    raise _protocol_error("peer closed connection without sending complete message body "
                                          "(incomplete chunked read)")
                size -= len(chunk)
                yield chunk
            if _read_line(file, "chunk end") not in (b"\r\n", b"\n"):
                raise _protocol_error("illegal chunk: no line end after its data")

    def _until_close(self) -> Iterator[bytes]:
        file = self._conn.file
        while chunk := file.read1(self._read_size):
            yield chunk

    def close(self) -> None:
        if self._done:
            return
        self._done = True
        self._transport._release(self._conn, self._reusable and self._complete)


class StdlibTransport(httpx.BaseTransport):
    """HTTP/1.1 on plain sockets, as an httpx transport (see the module docstring)."""

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
        if self._slots is not None and not self._slots.acquire(timeout=timeouts.get("pool")):
            raise httpx.PoolTimeout("timed out waiting for a connection")
        key = (scheme, url.host, url.port or _DEFAULT_PORTS[scheme])
        conn: _Connection | None = None
        try:
            conn = self._checkout(key) or self._connect(key, timeouts.get("connect"),
                                                         request.extensions.get("sni_hostname"))
            self._send(conn, request, head, timeouts.get("write"))
            read_timeout = timeouts.get("read")
            conn.sock.settimeout(read_timeout)
            try:
                status, version, reason, headers = _read_head(conn.file)
            except TimeoutError as exc:
                raise httpx.ReadTimeout(str(exc) or "timed out") from exc
            except OSError as exc:
                raise httpx.ReadError(str(exc) or type(exc).__name__) from exc
            body = self._body(conn, request.method, status, version, headers, read_timeout)
            body._read_size = request.extensions.get(READ_SIZE) or _CHUNK
        except BaseException:
            if conn is not None:
                conn.close()
            if self._slots is not None:
                self._slots.release()
            raise
        return httpx.Response(status, headers=headers, stream=body,
                              extensions={"http_version": version, "reason_phrase": reason, EXTENSION: True})

    def _body(self, conn: _Connection, method: str, status: int, version: bytes,
              headers: list[tuple[bytes, bytes]], read_timeout: float | None) -> _Body:
        """How the answer's body is framed (RFC 9112 section 6.3) and whether the connection outlives it."""
        lengths: list[bytes] = []
        codings: list[bytes] = []
        tokens: list[bytes] = []
        for name, value in headers:
            lname = name.lower()
            if lname == b"content-length":
                lengths.append(value)
            elif lname == b"transfer-encoding":
                codings.extend(c.strip().lower() for c in value.split(b","))
            elif lname == b"connection":
                tokens.extend(t.strip().lower() for t in value.split(b","))
        reusable = version == b"HTTP/1.1" and b"close" not in tokens and status != 101
        if method == "HEAD" or status in _NO_BODY or 100 <= status < 200:
            return _Body(self, conn, "none", 0, reusable, read_timeout)
        if codings:
            if codings[-1] == b"chunked":
                return _Body(self, conn, "chunked", 0, reusable, read_timeout)
            return _Body(self, conn, "close", 0, False, read_timeout)
        if lengths:
            values = {v.strip() for length in lengths for v in length.split(b",")}
            if len(values) != 1 or not next(iter(values)).isdigit():
                raise _protocol_error(f"illegal Content-Length: {b', '.join(lengths)[:100]!r}")
            length = int(next(iter(values)))
            return _Body(self, conn, "length" if length else "none", length, reusable, read_timeout)
        return _Body(self, conn, "close", 0, False, read_timeout)

    def _send(self, conn: _Connection, request: httpx.Request, head: bytes, timeout: float | None) -> None:
        """The request line, headers and body, the body in the same ``sendall`` as the head when it is one chunk
        (a second small write would wait for the first one's acknowledgement)."""
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
    if _BAD_HEADER.search(b"\t".join(k + b"\t" + v for k, v in raw)):
        raise httpx.LocalProtocolError("Illegal header: CR, LF or NUL in a header name or value")
    lines = [b"%s %s HTTP/1.1\r\n" % (request.method.encode("ascii"), request.url.raw_path)]
    lines.extend(b"%s: %s\r\n" % (k, v) for k, v in raw if k.lower() == b"host")
    lines.extend(b"%s: %s\r\n" % (k, v) for k, v in raw if k.lower() != b"host")
    lines.append(b"\r\n")
    return b"".join(lines)


class Routed(httpx.BaseTransport):
    """httpx's default transport (*default*, or one built like httpx builds it), except for requests with the
    :data:`EXTENSION` extension, which go through a :class:`StdlibTransport` (redirects keep their request's
    extensions, so they take the same way)."""

    def __init__(self, *, verify: ssl.SSLContext | str | bool = True, trust_env: bool = True,
                 limits: httpx.Limits | None = None, default: httpx.BaseTransport | None = None) -> None:
        kwargs: dict[str, Any] = {"verify": verify, "trust_env": trust_env}
        if limits is not None:
            kwargs["limits"] = limits
        self.default = default if default is not None else httpx.HTTPTransport(**kwargs)
        self.stdlib = StdlibTransport(**kwargs)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.extensions.get(EXTENSION):
            return self.stdlib.handle_request(request)
        return self.default.handle_request(request)

    def close(self) -> None:
        self.stdlib.close()
        self.default.close()


class QuietCookies(httpx.Cookies):
    """A client's cookie jar that skips answers setting no cookie. httpx hands every answer to
    :mod:`http.cookiejar` wrapped as a urllib request and an email message of its headers, only for the jar to find
    no ``Set-Cookie``: a tenth of the CPU of a SOAP write. Answers that do set cookies are stored as before. Set as
    the client's jar (``client._cookies``: the ``cookies`` setter would copy it into a plain :class:`httpx.Cookies`)."""

    def extract_cookies(self, response: httpx.Response) -> None:
        headers = response.headers
        if "set-cookie" in headers or "set-cookie2" in headers:
            super().extract_cookies(response)


def fast_writes(client: httpx.Client, *, verify: ssl.SSLContext | str | bool = True) -> httpx.Client:
    """*client* with requests that carry :data:`EXTENSION` sent by a :class:`StdlibTransport`, and a
    :class:`QuietCookies` jar; everything else as it was. Installed on the built client rather than passed as
    ``transport=``, which would make httpx ignore the proxies of the environment (``HTTPS_PROXY``...): those stay
    mounted by the client, ahead of its transport. Sets the two attributes the client keeps them in
    (``_transport``, ``_cookies``; tests/test_stdhttp.py checks that proxies, cookies and the default path hold)."""
    client._transport = Routed(verify=verify, trust_env=client.trust_env, default=client._transport)
    client._cookies = QuietCookies()
    return client
