"""The http.client transport of flows' SOAP writes (adapters/_stdhttp.py) against real loopback servers: the
bytes httpx's own transport would send, keep-alive and a server's close of an idle connection, chunked and
close-delimited bodies, redirects through the client, TLS, the pool's limit, and every failure mapped to the
httpx exception httpcore raises for it."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import trustme

from adapters._stdhttp import EXTENSION, Routed, StdlibTransport, fast_writes


@contextmanager
def raw_server(answer: Callable[[socket.socket, bytes], None]) -> Iterator[tuple[str, list[bytes]]]:
    """A TCP server that reads one request head (and a Content-Length body) per connection and lets *answer*
    reply on the socket; yields its URL and the raw requests received."""
    listener = socket.create_server(("127.0.0.1", 0))
    got: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(body) < length:
                    body += conn.recv(65536)
                got.append(data[: len(head) + 4] + body)
                answer(conn, data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", got
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def ok(conn: socket.socket, _: bytes) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    connections: list[int] = []

    def log_message(self, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        self.connections.append(1)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/redirect":
            self.send_response(307)
            self.send_header("Location", "/echo")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b"hello ", b"chunked ", b"world"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
            return
        if self.path == "/cookie":
            out = (self.headers.get("Cookie") or "-").encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)
            return
        if self.path == "/slow":
            time.sleep(0.5)
        out = b"echo:" + body
        self.send_response(200)
        self.send_header("Content-Length", str(len(out)))
        self.send_header("Set-Cookie", "session=abc; Path=/")
        self.end_headers()
        self.wfile.write(out)


@pytest.fixture
def http_server() -> Iterator[tuple[str, list[int]]]:
    Handler.connections = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", Handler.connections
    finally:
        server.shutdown()
        server.server_close()


def client(**kw: Any) -> httpx.Client:
    """A client as the SOAP adapter builds one (adapters.soap.client._http_client)."""
    return fast_writes(httpx.Client(headers={"User-Agent": "hub/0.1", "X-Tenant": "t1"}, follow_redirects=True,
                                    **{"timeout": 5, **kw}))


FAST = {EXTENSION: True}


def test_the_request_bytes_are_the_ones_httpx_sends() -> None:
    with raw_server(ok) as (url, got), client(auth=httpx.BasicAuth("u", "p")) as c:
        for extensions in ({}, FAST):
            r = c.post(f"{url}/soap/x?a=1&b=%20", content=b"<x>\xc3\xa9</x>", extensions=extensions,
                       headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '"X"', "traceparent": "00-1"})
            assert (r.status_code, r.text, r.reason_phrase, r.http_version) == (200, "ok", "OK", "HTTP/1.1")
    assert len(got) == 2 and got[0] == got[1]
    assert got[1].startswith(b"POST /soap/x?a=1&b=%20 HTTP/1.1\r\nHost: 127.0.0.1:")
    assert got[1].endswith(b"\r\n\r\n<x>\xc3\xa9</x>") and b"Authorization: Basic dTpw\r\n" in got[1]


def test_keep_alive_reuse_and_a_server_closing_an_idle_connection(http_server: tuple[str, list[int]]) -> None:
    url, connections = http_server
    with client() as c:
        for i in range(3):
            r = c.post(f"{url}/echo", content=f"n{i}".encode(), extensions=FAST)
            assert r.text == f"echo:n{i}"
        assert len(connections) == 1  # one connection, kept alive
        assert c.cookies.get("session") == "abc"  # cookies are the client's, as ever
        assert c.post(f"{url}/cookie", content=b"", extensions=FAST).text == "session=abc"
        transport = c._transport
        assert isinstance(transport, Routed)
        for conns in transport.stdlib._idle.values():  # the server side closes it, as servers do when idle
            for conn in conns:
                conn.sock.shutdown(socket.SHUT_RDWR)
        r = c.post(f"{url}/echo", content=b"again", extensions=FAST)
        assert r.text == "echo:again" and len(connections) == 2


def test_chunked_and_close_delimited_bodies(http_server: tuple[str, list[int]]) -> None:
    url, _ = http_server
    with client() as c:
        assert c.post(f"{url}/chunked", content=b"", extensions=FAST).content == b"hello chunked world"

    def http10(conn: socket.socket, _: bytes) -> None:
        conn.sendall(b"HTTP/1.0 201 Created\r\nX-A: 1\r\nX-A: 2\r\n\r\nno length, ends with the connection")

    with raw_server(http10) as (raw, _), client() as c:
        r = c.post(raw, content=b"x", extensions=FAST)
        assert (r.status_code, r.http_version, r.text) == (201, "HTTP/1.0", "no length, ends with the connection")
        assert r.headers.get_list("x-a") == ["1", "2"]


ANSWERS = {
    "length": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    "empty": b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    "no-content": b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n",
    "no-reason": b"HTTP/1.1 500\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbad",
    "interim": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
    "chunked+trailer": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                       b"5;ext=1\r\nhello\r\n1\r\n!\r\n0\r\nX-Trailer: t\r\n\r\n",
    "chunked-cut": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
    "gzip": b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 25\r\nConnection: close\r\n\r\n"
            b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff\xcbH\xcd\xc9\xc9\x07\x00\x86\xa6\x106\x05\x00\x00\x00",
    "two-lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "status-only": b"HTTP/1.1 200 OK\r\n",
}


@pytest.mark.parametrize("name", sorted(ANSWERS))
def test_answers_read_as_httpx_reads_them(name: str) -> None:
    """Each raw answer through httpx's transport and through this one: the same status, reason, version, headers
    and (decoded) body, or the same class of error."""
    outcomes = []
    for extensions in ({}, FAST):
        def answer(conn: socket.socket, _: bytes) -> None:
            conn.sendall(ANSWERS[name])

        with raw_server(answer) as (url, _), client(timeout=httpx.Timeout(1)) as c:
            try:
                r = c.post(url, content=b"x", extensions=extensions)
                outcomes.append((r.status_code, r.reason_phrase, r.http_version, list(r.headers.multi_items()),
                                 r.content))
            except httpx.HTTPError as exc:
                outcomes.append(type(exc))
    assert outcomes[0] == outcomes[1]


def test_redirects_are_the_clients_and_stay_on_the_transport(http_server: tuple[str, list[int]]) -> None:
    url, _ = http_server
    seen: list[str] = []
    with client(event_hooks={"request": [lambda req: seen.append(f"{req.method} {req.url.path} "
                                                                 f"{req.extensions.get(EXTENSION)}")]}) as c:
        r = c.post(f"{url}/redirect", content=b"body", extensions=FAST)
    assert r.text == "echo:body" and seen == ["POST /redirect True", "POST /echo True"]


def test_failures_map_to_the_httpx_errors_httpcore_raises() -> None:
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    with client() as c, pytest.raises(httpx.ConnectError):
        c.post(f"http://127.0.0.1:{port}/", content=b"x", extensions=FAST)

    def hang_up(conn: socket.socket, _: bytes) -> None:
        pass  # closes without an answer

    def short(conn: socket.socket, _: bytes) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part of it")

    def cut(conn: socket.socket, _: bytes) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Ty")  # http.client alone would take this for a complete head

    def garbage(conn: socket.socket, _: bytes) -> None:
        conn.sendall(b"NOT HTTP AT ALL\r\n\r\n")

    def late(conn: socket.socket, _: bytes) -> None:
        time.sleep(1.0)
        ok(conn, _)

    for answer, error in ((hang_up, httpx.RemoteProtocolError), (short, httpx.RemoteProtocolError),
                          (cut, httpx.RemoteProtocolError),
                          (garbage, httpx.RemoteProtocolError), (late, httpx.ReadTimeout)):
        for extensions in ({}, FAST):  # the same class of error as httpx's own transport
            with raw_server(answer) as (url, _), client(timeout=httpx.Timeout(0.3)) as c, pytest.raises(error):
                c.post(url, content=b"x", extensions=extensions)
    with client() as c, pytest.raises(httpx.LocalProtocolError):
        c.post(f"http://127.0.0.1:{port}/", content=b"x", headers={"X-Bad": "a\r\nInjected: 1"}, extensions=FAST)


def test_tls_with_the_clients_verification(tmp_path: Any) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    server.socket = server_ctx.wrap_socket(server.socket, server_side=True)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"https://127.0.0.1:{server.server_address[1]}"
    try:
        trusted = ssl.create_default_context()
        ca.configure_trust(trusted)
        with httpx.Client(transport=Routed(verify=trusted), timeout=5) as c:
            assert c.post(f"{url}/echo", content=b"tls", extensions=FAST).text == "echo:tls"
        with httpx.Client(transport=Routed(verify=True), timeout=5) as c, pytest.raises(httpx.ConnectError):
            c.post(f"{url}/echo", content=b"tls", extensions=FAST)  # not a CA the system trusts
    finally:
        server.shutdown()
        server.server_close()


def test_the_pool_limit_waits_then_times_out(http_server: tuple[str, list[int]]) -> None:
    url, _ = http_server
    transport = StdlibTransport(limits=httpx.Limits(max_connections=1))
    with httpx.Client(transport=transport, timeout=httpx.Timeout(5, pool=0.2)) as c:
        with c.stream("POST", f"{url}/echo", content=b"held"), pytest.raises(httpx.PoolTimeout):
            c.post(f"{url}/echo", content=b"second")
        assert c.post(f"{url}/echo", content=b"third").text == "echo:third"  # the slot came back


def test_proxies_of_the_environment_still_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    """The transport is installed on the built client: httpx still mounts the proxy HTTP_PROXY names (passing
    ``transport=`` would have dropped it), and a request through the proxy goes out in absolute form."""
    def proxy_ok(conn: socket.socket, _: bytes) -> None:
        ok(conn, _)

    with raw_server(proxy_ok) as (proxy, got):
        monkeypatch.setenv("HTTP_PROXY", proxy)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        with client() as c:
            for extensions in ({}, FAST):
                assert c.post("http://partner.invalid/soap", content=b"x", extensions=extensions).text == "ok"
    assert len(got) == 2 and all(r.startswith(b"POST http://partner.invalid/soap HTTP/1.1\r\n") for r in got)
