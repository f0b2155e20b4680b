"""A TCP proxy on loopback that injects network faults between the hub and a demo service.

It runs an asyncio server in a background thread and forwards bytes both ways. Faults apply to
*connections*: :meth:`FaultProxy.inject` arms a fault for the next ``times`` new connections (after letting
``skip`` connections through clean; ``times=None``: every connection until :meth:`clear`). Each faulty
connection injects once, in the response direction (server → hub), once ``after`` response bytes have
been forwarded:

* ``latency``  — every forwarded chunk of the response is delayed by ``seconds`` (set with :meth:`latency`;
  applies to all connections, not counted);
* ``reset``    — the connection is aborted with a TCP RST after ``after`` bytes (mid-response);
* ``truncate`` — exactly ``after`` bytes are forwarded, then both sides are closed cleanly (FIN): a short body;
* ``stall``    — forwarding stops for ``seconds`` after ``after`` bytes, then resumes;
* ``http_503`` — (HTTP only) the request is read and answered ``503 Service Unavailable`` by the proxy
  without being forwarded, and the connection is closed.

With ``request=N`` the trigger point is ``after`` bytes into the response to the client's *N*-th request on
the connection instead (a request: client bytes sent after the server last answered — the turns of HTTP/1.1
keep-alive): a stall then holds page *N* while the server has already received its request.

Protocol-agnostic apart from ``http_503``, so the same proxy sits in front of HTTP (REST, SOAP), SSH
(SFTP) and the PostgreSQL wire protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

FAULTS = ("reset", "truncate", "stall", "http_503")


@dataclass
class _Plan:
    kind: str
    after: int
    seconds: float
    skip: int
    times: int | None
    request: int | None = None


@dataclass
class _Turns:
    """Request/response turns of one connection (for ``request=N`` triggers)."""

    requests: int = 0
    answered: bool = True  # the server has answered since the client last sent
    start: int | None = None  # response bytes forwarded before the triggering request's response began


class FaultProxy:
    """``with FaultProxy(port) as proxy:`` forwards ``127.0.0.1:proxy.port`` to ``host:port``."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.delay = 0.0
        self.connections = 0
        self.injected = 0
        self.downstream: list[int] = []  # response bytes forwarded, per finished connection
        self._plan: _Plan | None = None
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # --- control ---------------------------------------------------------------------------------------

    def inject(self, kind: str, *, after: int = 0, seconds: float = 0.0, skip: int = 0, times: int | None = 1,
               request: int | None = None) -> None:
        """Arm fault *kind* for the next *times* connections after *skip* clean ones; with *request*, *after*
        counts from the start of the response to the connection's *request*-th request (see the module notes)."""
        if kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r} (one of {', '.join(FAULTS)})")
        if request is not None and (request < 1 or kind == "http_503"):
            raise ValueError("request= counts from 1 and does not apply to http_503")
        with self._lock:
            self._plan = _Plan(kind, after, seconds, skip, times, request)

    def latency(self, seconds: float) -> None:
        self.delay = seconds

    def clear(self) -> None:
        with self._lock:
            self._plan = None
        self.delay = 0.0

    @property
    def armed(self) -> bool:
        """True while injections are still pending."""
        with self._lock:
            return self._plan is not None and self._plan.times != 0

    def _take(self) -> _Plan | None:
        """The plan a new connection follows (None: clean). Skipped connections stay clean."""
        with self._lock:
            self.connections += 1
            plan = self._plan
            if plan is None or plan.times == 0:
                return None
            if plan.skip > 0:
                plan.skip -= 1
                return None
            return plan

    def _fire(self, plan: _Plan) -> bool:
        """Whether a connection that reached its trigger point injects (a fault counts only when it fires)."""
        with self._lock:
            if plan is not self._plan or plan.times == 0:
                return False
            if plan.times is not None:
                plan.times -= 1
            self.injected += 1
            return True

    # --- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(asyncio.start_server(self._serve, "127.0.0.1", 0), self._loop)
        self._server = fut.result(timeout=10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- forwarding ------------------------------------------------------------------------------------

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        plan = self._take()
        try:
            if plan is not None and plan.kind == "http_503" and self._fire(plan):
                await self._answer_503(client_r, client_w)
                return
            try:
                up_r, up_w = await asyncio.open_connection(*self.target)
            except OSError:
                _abort(client_w)
                return
            turns = _Turns()
            upstream = asyncio.ensure_future(self._pipe(client_r, up_w, None, False, turns))
            downstream = asyncio.ensure_future(self._pipe(up_r, client_w, plan, True, turns))
            done, _ = await asyncio.wait({upstream, downstream}, return_when=asyncio.FIRST_COMPLETED)
            if downstream not in done:  # the hub closed its side: let the reply drain briefly
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(downstream), 5)
            for t in (upstream, downstream):
                t.cancel()
            await asyncio.gather(upstream, downstream, return_exceptions=True)
            for w in (up_w, client_w):
                with contextlib.suppress(Exception):
                    w.close()
        except asyncio.CancelledError:
            _abort(client_w)
        finally:
            self._tasks.discard(task)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, plan: _Plan | None,
                    downstream: bool, turns: _Turns) -> None:
        sent = 0
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    if downstream:
                        self.downstream.append(sent)
                    with contextlib.suppress(Exception):
                        writer.write_eof()
                    return
                if not downstream:
                    if turns.answered:
                        turns.requests, turns.answered = turns.requests + 1, False
                else:
                    turns.answered = True
                    if plan is not None and plan.request is not None and turns.start is None \
                            and turns.requests >= plan.request:
                        turns.start = sent
                if downstream and self.delay:
                    await asyncio.sleep(self.delay)
                base = 0 if plan is None or plan.request is None else turns.start
                if plan is not None and base is not None and sent + len(data) > base + plan.after:
                    active, plan = plan, None  # one trigger point per connection
                    if self._fire(active):
                        cut = base + active.after - sent
                        head, data = data[:cut], data[cut:]
                        if head:
                            writer.write(head)
                            await writer.drain()
                            sent += len(head)
                        if active.kind == "reset":
                            _abort(writer)
                            return
                        if active.kind == "truncate":
                            writer.close()
                            return
                        await asyncio.sleep(active.seconds)  # stall
                sent += len(data)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            _abort(writer)

    async def _answer_503(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read one HTTP request (head and Content-Length body) and answer 503 without forwarding it."""
        with contextlib.suppress(asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip() or 0)
            if length:
                await reader.readexactly(length)
            body = b"fault proxy: service unavailable\n"
            writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nRetry-After: 0\r\n"
                         b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            await writer.drain()
        with contextlib.suppress(Exception):
            writer.close()


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0), as a crashed peer or a middlebox would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def sigkill_when(proc: subprocess.Popen[bytes], ready: Callable[[], bool], what: str, *,
                 timeout_s: float = 60.0, settle_s: float = 0.0) -> None:
    """Kill *proc* with SIGKILL as soon as *ready()* holds (polled every 50 ms), the way a crash or an OOM kill
    ends a run mid-load. Fails with the process's output if it ended on its own first, and with *what* if
    *ready* never held; the process is reaped and its pipe closed whatever happens. *settle_s* lets a run
    that the fault holds settle where it waits before the kill."""
    try:
        deadline = time.monotonic() + timeout_s
        while not ready():
            assert proc.poll() is None, proc.communicate()[0].decode(errors="replace")
            assert time.monotonic() < deadline, what
            time.sleep(0.05)
        time.sleep(settle_s)
        assert proc.poll() is None, proc.communicate()[0].decode(errors="replace")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL, f"the run ended with {proc.returncode}, not by SIGKILL"
