"""``hub listen``: consume every stream source into the event store, acknowledging after the commit.

One asyncio task per stream source runs fetch → append (one store transaction) → commit → ack, with the
broker's prefetch as backpressure; consumers come from the protocol registry (:meth:`Protocol.stream`,
anything shaped like :class:`adapters.messages.Consumer`), so every broker plugin works unchanged. One more
task per pipeline absorbs new events into the warehouse in short transactions (in a thread, so consumption
never waits for it) and backs off while another process holds the DuckDB file (a backfill), and applies
retention. SIGTERM / SIGINT stop the loops after the batch in hand is stored and acknowledged; a last
absorb then runs when the warehouse is free.

``HUB_TEST_CRASH_AT`` (tests only) kills the process with SIGKILL at a named point: ``after_receive``,
``after_commit`` (stored, not acknowledged) or ``after_ack``, optionally on the N-th batch
(``after_commit:3``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hub.errors import HubError, TransportError, WarehouseError
from hub.events.absorb import absorb_source
from hub.events.drain import acknowledge
from hub.events.payloads import PayloadReader
from hub.events.replay import retain
from hub.events.store import Appended, EventStore, EventStoreError, Incoming, open_store
from hub.spec.loader import Pipeline
from hub.spec.models import ResolvedSource
from hub.warehouse import connect
from hub.warehouse.lock import writer_lock

log = logging.getLogger("hub.events.listen")
Echo = Callable[[str], None]


@dataclass
class ListenOptions:
    batch: int = 500  # messages per fetch and store transaction
    fetch_timeout: float = 1.0  # seconds a fetch waits for the first message (also the stop latency)
    linger: float = 0.02  # seconds a batch may wait to fill once its first message is in (fewer, fuller commits)
    absorb_every: float = 1.0  # seconds between absorbs (sooner when a batch was stored)
    absorb_max: int = 50_000  # events per absorb transaction
    absorb_busy: int = 5_000  # events in an absorb that mean "under load": the next one waits (fewer, bigger)
    progress_every: float = 5.0
    retain_every: float = 3600.0
    max_backoff: float = 30.0


@dataclass
class SourceStats:
    stored: int = 0
    duplicates: int = 0
    dead: int = 0
    position: int = 0
    absorbed: int = 0
    lag: int | None = None
    state: str = "starting"
    window_count: int = 0
    window_start: float = field(default_factory=time.monotonic)


class _CrashHook:
    """Kills the process at a named point when ``HUB_TEST_CRASH_AT`` asks (the crash-consistency tests), or
    stalls it there for some seconds when ``HUB_TEST_STALL_AT=point:seconds`` does (processing slower than
    the broker's ack wait)."""

    def __init__(self) -> None:
        point, _, nth = os.environ.get("HUB_TEST_CRASH_AT", "").partition(":")
        self.point, self.nth, self.seen = point, int(nth or 1), 0
        stall, _, seconds = os.environ.get("HUB_TEST_STALL_AT", "").partition(":")
        self.stall, self.stall_s = stall, float(seconds or 0)

    def __call__(self, point: str) -> None:
        if point == self.stall:
            time.sleep(self.stall_s)  # blocks the loop, as slow work in hand does
        if point == self.point:
            self.seen += 1
            if self.seen >= self.nth:
                os.kill(os.getpid(), signal.SIGKILL)


def _locked(exc: BaseException) -> bool:
    return isinstance(exc, WarehouseError) and "lock" in str(exc).lower()


class Listener:
    """Consumes the stream sources of *pipelines* until :meth:`stop` (or SIGTERM/SIGINT under :meth:`run`)."""

    def __init__(self, pipelines: list[Pipeline], *, options: ListenOptions | None = None,
                 echo: Echo = print, sources: list[str] | None = None) -> None:
        self.options = options or ListenOptions()
        self.echo = echo
        self.pipelines = pipelines
        self.streams: list[tuple[Pipeline, ResolvedSource]] = [
            (p, s) for p in pipelines for s in p.sources.values()
            if s.stream is not None and (not sources or s.name in sources)]
        self.stats: dict[str, SourceStats] = {
            s.name: SourceStats(state="pushed to hub serve" if s.protocol.pushed else "starting")
            for _, s in self.streams}
        self.run_id = f"listen-{uuid.uuid4().hex[:12]}"
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()  # a source stored a batch and the broker had nothing more: absorb now
        self._crash = _CrashHook()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._drained.set()

    def wake(self) -> None:
        """New events were stored by someone else (``hub serve``): absorb soon."""
        self._wake.set()

    async def run(self, *, handle_signals: bool = True) -> None:
        """Until stopped: consume, store, acknowledge, absorb. Installs SIGTERM/SIGINT handlers unless the
        caller owns the signals (``hub serve`` runs a listener that only absorbs)."""
        if not self.streams:
            raise HubError("no stream sources to listen to (a stream source's system is a broker: amqp, ...)")
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT) if handle_signals else ():
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._on_signal, sig)
        consumers = [asyncio.create_task(self._consume(p, s)) for p, s in self.streams
                     if not s.protocol.pushed]  # pushed sources (webhooks) arrive through `hub serve`
        pipelines = list({id(p): p for p, _ in self.streams}.values())
        absorbers = [asyncio.create_task(self._absorber(p)) for p in pipelines]
        reporter = asyncio.create_task(self._report())
        try:
            await asyncio.gather(*consumers)
            await self._stop.wait()  # only pushed sources: absorb until stopped
        finally:
            self.stop()
            await asyncio.gather(*absorbers, return_exceptions=True)
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
            self._progress(final=True)

    def _on_signal(self, sig: int) -> None:
        self.echo(f"{signal.Signals(sig).name}: stopping after the batch in hand is stored and acknowledged")
        self.stop()

    # -- consuming ------------------------------------------------------------------------------------

    async def _consume(self, pipeline: Pipeline, source: ResolvedSource) -> None:
        assert source.stream is not None
        name, opts, stats = source.name, self.options, self.stats[source.name]
        reader = PayloadReader(source.stream, f"sources.{name}")
        store = open_store(pipeline.warehouse_url, pipeline.root)
        stats.position = store.last_position(name)
        failures = 0
        while not self._stop.is_set():
            consumer = source.protocol.stream(pipeline, source)
            try:
                async with consumer:
                    failures = 0
                    stats.state = "consuming"
                    await self._pump(name, consumer, reader, store, stats)
            except HubError as exc:  # the broker cannot be reached (yet): keep trying until stopped
                failures += 1
                stats.state = "disconnected"
                wait = min(opts.max_backoff, 0.5 * 2 ** min(failures, 10))
                self.echo(f"{name}: {str(exc).splitlines()[0]}; retrying in {wait:.0f}s")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), wait)
        stats.state = "stopped"

    async def _pump(self, name: str, consumer: Any, reader: PayloadReader, store: EventStore,
                    stats: SourceStats) -> None:
        """Batches until stopped, one fetch ahead: the next batch is received while the one in hand is stored
        and acknowledged (a pull consumer, JetStream's, delivers nothing between two fetches otherwise). Each
        batch is still acknowledged only after its own commit; on stop the batch being fetched is stored and
        acknowledged too, then the loop ends."""
        ahead: asyncio.Task[list[Any]] | None = asyncio.create_task(self._fetch(consumer, stats))
        try:
            while ahead is not None:
                messages = await ahead
                ahead = None if self._stop.is_set() else asyncio.create_task(self._fetch(consumer, stats))
                await self._step(name, messages, reader, store, stats)
        finally:
            if ahead is not None:
                ahead.cancel()
                with contextlib.suppress(BaseException):
                    await ahead

    async def _fetch(self, consumer: Any, stats: SourceStats) -> list[Any]:
        """The next batch: up to ``batch`` messages, waiting ``fetch_timeout`` for the first, then ``linger``
        for the batch to fill."""
        opts = self.options
        messages: list[Any] = await consumer.fetch(opts.batch, opts.fetch_timeout)
        if messages and len(messages) < opts.batch and opts.linger > 0:
            # a commit costs an fsync: let the batch fill for a moment (the broker keeps delivering up to its
            # prefetch meanwhile) rather than committing every few messages under load
            until = time.monotonic() + opts.linger
            while len(messages) < opts.batch and (left := until - time.monotonic()) > 0:
                more = await consumer.fetch(opts.batch - len(messages), left)
                if not more:
                    break
                messages += more
        stats.lag = consumer.lag()
        stats.state = "consuming" if getattr(consumer, "connected", True) else "reconnecting"
        return messages

    async def _step(self, name: str, messages: list[Any], reader: PayloadReader, store: EventStore,
                    stats: SourceStats) -> None:
        """One batch: append in one transaction, commit, then acknowledge."""
        if not messages:
            return
        self._crash("after_receive")

        def store_batch() -> tuple[list[Incoming], Appended]:  # parsing too: off the event loop
            parsed = [reader.incoming(m) for m in messages]
            return parsed, store.append(name, parsed)

        try:
            incoming, appended = await asyncio.to_thread(store_batch)
        except EventStoreError as exc:
            self.echo(f"{name}: {exc}; the batch is redelivered")
            for m in messages:
                await m.nak(1.0)
            await asyncio.sleep(1.0)
            return
        self._crash("after_commit")
        try:
            await acknowledge(messages, appended.outcomes)
        except TransportError as exc:  # stored: the broker redelivers the rest, the store drops them
            self.echo(f"{name}: acknowledging failed ({str(exc).splitlines()[0]}); the stored messages not "
                      "acknowledged come back and are dropped as duplicates")
        self._crash("after_ack")
        stats.stored += appended.count("stored")
        stats.duplicates += appended.count("duplicate")
        stats.dead += appended.count("dead")
        stats.window_count += len(messages)
        if appended.last is not None:
            stats.position = appended.last
        if stats.lag == 0:
            self._drained.set()  # caught up with the broker: the absorber's rest (to let a backlog pile up) ends
        for inc, outcome in zip(incoming, appended.outcomes, strict=True):
            if outcome == "dead":
                self.echo(f"{name}: message {inc.message_id} dead-lettered: {inc.reason}")
        self._wake.set()

    # -- absorbing ------------------------------------------------------------------------------------

    async def _absorber(self, pipeline: Pipeline) -> None:
        names = [s.name for p, s in self.streams if p is pipeline]
        backoff = 0.0
        last_retain = 0.0
        took, busy = 0.0, 0
        while True:
            stopping = self._stop.is_set()
            if not stopping:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), max(self.options.absorb_every, backoff))
                self._wake.clear()
                # an absorb has a fixed cost (opening the warehouse, the merge): under load (the last absorb was
                # big) rest as long as it took, so absorbing takes about half the time and each absorb is bigger;
                # a trickle is absorbed at once (latency), and so is the tail of a backlog: the rest ends when a
                # source has caught up with its broker (no lag after a stored batch): nothing more is piling up
                rest = took * min(1.0, busy / max(self.options.absorb_busy, 1))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._drained.wait(), min(rest, self.options.absorb_every))
            try:
                if not stopping:
                    self._drained.clear()  # what is stored from here on is not in this absorb
                started, busy = time.monotonic(), 0
                for name in names:
                    before = self.stats[name].absorbed
                    outcome = await asyncio.to_thread(self._absorb, pipeline, name)
                    self.stats[name].absorbed = outcome
                    busy = max(busy, outcome - before)
                took = time.monotonic() - started
                backoff = 0.0
                if time.monotonic() - last_retain > self.options.retain_every:
                    last_retain = time.monotonic()
                    deleted = await asyncio.to_thread(retain, pipeline)
                    for name, n in deleted.items():
                        if n:
                            self.echo(f"{name}: retention deleted {n} absorbed event(s) older than keep")
            except HubError as exc:
                backoff = min(self.options.max_backoff, max(1.0, backoff * 2))
                if _locked(exc):
                    self.echo(f"{pipeline.name}: warehouse busy (another process is writing it); absorbing "
                              f"again in {backoff:.0f}s, consumption continues")
                else:
                    self.echo(f"{pipeline.name}: absorbing failed: {str(exc).splitlines()[0]}; again in "
                              f"{backoff:.0f}s, consumption continues")
            if stopping:
                return

    def _absorb(self, pipeline: Pipeline, name: str) -> int:
        """One short absorb; never waits for the DuckDB file (a backfill holding it): fails, and backs off."""
        url = pipeline.warehouse_url
        if url.startswith("duckdb:"):
            url += ("&" if "?" in url else "?") + "lock_wait=0"
        # the writer lock every DuckDB writer takes (hub run, Dagster steps, flows): taken, it fails at once
        with writer_lock(pipeline.warehouse_url, what=f"hub listen absorbing {name}", wait=False):
            outcome = absorb_source(pipeline, name, run_id=self.run_id, max_events=self.options.absorb_max,
                                    warehouse=connect(url))
        if outcome.details.get("dead_lettered"):
            self.echo(f"{name}: {outcome.details['dead_lettered']} event(s) rejected beyond the threshold moved to "
                      "the dead letters (hub events dead-letters); the rest was absorbed")
        return outcome.mark

    # -- progress -------------------------------------------------------------------------------------

    async def _report(self) -> None:
        while True:
            await asyncio.sleep(self.options.progress_every)
            self._progress()

    def _progress(self, final: bool = False) -> None:
        now = time.monotonic()
        for name, st in self.stats.items():
            rate = st.window_count / max(now - st.window_start, 1e-6)
            st.window_count, st.window_start = 0, now
            lag = "?" if st.lag is None else f"{st.lag:,}"
            self.echo(f"{name}: {'stopped' if final else st.state}, {rate:,.0f} msg/s, stored {st.stored:,} "
                      f"(duplicates {st.duplicates:,}, dead {st.dead:,}), position {st.position:,}, absorbed "
                      f"{st.absorbed:,}, broker lag {lag}")


def listen(pipelines: list[Pipeline], *, options: ListenOptions | None = None, echo: Echo = print,
           sources: list[str] | None = None) -> Listener:
    """Run a :class:`Listener` until SIGTERM/SIGINT; returns it (with its stats) once it stopped."""
    listener = Listener(pipelines, options=options, echo=echo, sources=sources)
    asyncio.run(listener.run())
    return listener
