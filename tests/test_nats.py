"""NATS JetStream adapter against the real server on 127.0.0.1:4222 (and a private nats-server for the
restart test): ack, redelivery, nak/term, max_deliver applied from the spec, order, a cut connection."""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from adapters.messages import Message
from adapters.nats import NatsConsumer, NatsSourceConfig, NatsSystemConfig
from hub.errors import AdapterError, TransportError
from tests.broker_proxy import TcpProxy, port_open

nats = pytest.importorskip("nats")

PORT = 4222
pytestmark = pytest.mark.skipif(not port_open(PORT), reason=f"no NATS server on 127.0.0.1:{PORT}")


def run(factory: Callable[[], Awaitable[Any]], limit: float = 90) -> Any:
    async def main() -> Any:
        return await asyncio.wait_for(factory(), limit)
    return asyncio.run(main())


@asynccontextmanager
async def jetstream(port: int = PORT) -> AsyncIterator[tuple[Any, str]]:
    """A connection and a fresh stream ``<name>`` on subjects ``<name>.>``, deleted afterwards."""
    nc = await nats.connect(f"nats://127.0.0.1:{port}")
    name = "hubtest" + uuid.uuid4().hex[:10]
    js = nc.jetstream()
    await js.add_stream(name=name, subjects=[f"{name}.>"])
    try:
        yield js, name
    finally:
        try:
            await js.delete_stream(name)
        finally:
            await nc.close()


def consumer(stream: str, port: int = PORT, *, max_deliver: int = 5, **keys: Any) -> NatsConsumer:
    system = NatsSystemConfig(servers=[f"nats://127.0.0.1:{port}"],
                              retries={"max": 8, "backoff": 0.2, "max_backoff": 1.0}, connect_timeout=2)
    keys.setdefault("ack_wait", 1)
    return NatsConsumer(system, NatsSourceConfig(stream=stream, consumer=keys.pop("consumer", "c"), **keys),
                        max_deliver=max_deliver, name="events")


async def drain(c: NatsConsumer, want: int, *, ack: bool = True, limit: float = 20) -> list[Message]:
    """Fetch until *want* messages arrived (acked unless told otherwise) or *limit* seconds passed."""
    got: list[Message] = []
    deadline = time.monotonic() + limit
    while len(got) < want and time.monotonic() < deadline:
        batch = await c.fetch(want - len(got), 0.5)
        for m in batch:
            if ack:
                await m.ack()
        got.extend(batch)
    return got


async def publish(js: Any, subject: str, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        await js.publish(subject, str(i).encode(), headers={"type": "order.created"})


def test_fetch_and_ack_then_nothing_is_redelivered() -> None:
    async def main() -> None:
        async with jetstream() as (js, s):
            await publish(js, f"{s}.orders", 25)
            async with consumer(s) as c:
                got = await drain(c, 25)
                assert [m.payload for m in got] == [str(i).encode() for i in range(25)]
                first = got[0]
                assert first.id == f"{s}/1" and first.key == f"{s}.orders" and first.stream == f"{s}.orders"
                assert first.type == "order.created" and first.attempts == 1 and first.timestamp is not None
                await asyncio.sleep(1.6)  # past ack_wait: an unacked message would be back
                assert await c.fetch(10, 0.5) == []
                assert c.lag() == 0
                info = await c.info()
                assert info.num_ack_pending == 0 and info.num_redelivered == 0
    run(main)


def test_unacked_message_is_redelivered_after_reopen() -> None:
    async def main() -> None:
        async with jetstream() as (js, s):
            await publish(js, f"{s}.x", 3)
            async with consumer(s) as c:
                got = await drain(c, 3, ack=False)
                assert len(got) == 3
                await got[0].ack()  # 1 and 2 are received but never acknowledged
            async with consumer(s) as c:
                again = await drain(c, 2, limit=10)
                assert sorted(m.payload for m in again) == [b"1", b"2"]
                assert all(m.attempts == 2 for m in again)
                assert await c.fetch(5, 1.5) == []
    run(main)


def test_nak_redelivers_with_attempts_and_term_never_again() -> None:
    async def main() -> None:
        async with jetstream() as (js, s):
            await publish(js, f"{s}.x", 2)
            async with consumer(s, ack_wait=1) as c:
                a, b = await drain(c, 2, ack=False)
                await a.nak(0.2)
                await b.term()
                back = await drain(c, 1, ack=False, limit=5)
                assert [(m.payload, m.attempts) for m in back] == [(b"0", 2)]
                await back[0].nak()
                third = await drain(c, 1, ack=False, limit=5)
                assert [(m.payload, m.attempts) for m in third] == [(b"0", 3)]
                await third[0].ack()
                assert await c.fetch(5, 2.0) == []  # the terminated one stays away past ack_wait
    run(main)


def test_max_deliver_and_consumer_config_come_from_the_spec() -> None:
    async def main() -> None:
        async with jetstream() as (js, s):
            await publish(js, f"{s}.poison", 1)
            async with consumer(s, max_deliver=3, ack_wait=1, backoff=["200ms", "300ms"],
                                subject=f"{s}.poison", max_ack_pending=50) as c:
                cfg = (await c.info()).config
                assert (cfg.max_deliver, cfg.ack_wait, cfg.backoff) == (3, 0.2, [0.2, 0.3])  # ack_wait: backoff[0]
                assert (cfg.filter_subject, cfg.max_ack_pending, cfg.ack_policy) == (f"{s}.poison", 50, "explicit")
                attempts = []
                deadline = time.monotonic() + 8
                while time.monotonic() < deadline:
                    for m in await c.fetch(1, 0.5):
                        attempts.append(m.attempts)
                        await m.nak()
                assert attempts == [1, 2, 3]  # and never a fourth
            # An operator edits the consumer on the server; opening from the spec puts it back.
            jsm = js._nc.jsm()
            edited = (await jsm.consumer_info(s, "c")).config
            edited.max_deliver, edited.ack_wait, edited.backoff = -1, 60.0, None
            await jsm.add_consumer(s, config=edited)
            assert (await jsm.consumer_info(s, "c")).config.max_deliver == -1
            async with consumer(s, max_deliver=3, ack_wait=1, backoff=["200ms", "300ms"],
                                subject=f"{s}.poison", max_ack_pending=50):
                cfg = (await jsm.consumer_info(s, "c")).config
                assert (cfg.max_deliver, cfg.ack_wait, cfg.backoff) == (3, 0.2, [0.2, 0.3])
    run(main)


def test_bad_settings_are_refused_with_the_field() -> None:
    with pytest.raises(AdapterError, match="max_deliver"):
        consumer("whatever", max_deliver=2, backoff=[1, 2])

    async def main() -> None:
        c = consumer("hubtest_missing_" + uuid.uuid4().hex[:6])
        with pytest.raises(AdapterError, match="no JetStream stream"):
            async with c:
                pass
    run(main)


def test_order_is_kept_per_subject() -> None:
    async def main() -> None:
        async with jetstream() as (js, s):
            for i in range(30):
                await js.publish(f"{s}.k{i % 3}", str(i).encode())
            async with consumer(s) as c:
                got = await drain(c, 30)
        per_key: dict[str, list[int]] = {}
        for m in got:
            per_key.setdefault(m.key or "", []).append(int(m.payload))
        assert len(per_key) == 3
        for values in per_key.values():
            assert values == sorted(values)
    run(main)


def test_cut_connection_resumes_and_every_message_arrives() -> None:
    async def main() -> None:
        async with jetstream() as (js, s), TcpProxy(PORT) as proxy:
            await publish(js, f"{s}.x", 60)
            seen: set[bytes] = set()
            async with consumer(s, proxy.port, ack_wait=2) as c:
                for m in await drain(c, 20):
                    seen.add(m.payload)
                unacked = await c.fetch(5, 1)  # in hand when the line goes: must come back
                await proxy.cut(refuse_for=1.0)
                for m in unacked:
                    with pytest.raises(TransportError):
                        await m.ack()
                for m in await drain(c, 60 - len(seen), limit=30):
                    seen.add(m.payload)
                assert proxy.cuts == 1 and c.reconnections >= 1 and proxy.connections >= 2
            assert seen == {str(i).encode() for i in range(60)}
    run(main)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _start_nats(port: int, store: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([_nats_server(), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not port_open(port):
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail("the private nats-server did not start")
        time.sleep(0.05)
    return proc


def _nats_server() -> str:
    found = shutil.which("nats-server") or ("/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists()
                                            else None)
    if found is None:
        pytest.skip("no nats-server binary to run a private server for the restart test")
    return found


def test_server_restart_resumes_the_pull_consumer(tmp_path: Path) -> None:
    """nats.py pull subscriptions go silent after a server restart (nats-io/nats.py#504); this one resumes."""
    port = _free_port()
    proc = _start_nats(port, tmp_path)

    async def main() -> None:
        nonlocal proc
        async with jetstream(port) as (js, s):
            await publish(js, f"{s}.x", 10)
            async with consumer(s, port, ack_wait=2) as c:
                first = await drain(c, 10)
                assert len(first) == 10
                await asyncio.sleep(0.3)  # let the acks reach the server before it goes
                proc.send_signal(signal.SIGTERM)
                await asyncio.to_thread(proc.wait, 10)
                proc = _start_nats(port, tmp_path)
                await asyncio.sleep(1.0)  # JetStream recovers the stream from its store
                pub = await nats.connect(f"nats://127.0.0.1:{port}")
                try:
                    await publish(pub.jetstream(), f"{s}.x", 10, start=10)
                finally:
                    await pub.close()
                second = await drain(c, 10, limit=30)
                assert sorted(int(m.payload) for m in second) == list(range(10, 20))
                assert c.reconnections >= 1
    try:
        run(main)
    finally:
        proc.kill()
        proc.wait()
