"""The hand-over from an adapter's event loop to the caller's thread, shared by HTTP adapters.

The adapter's *walk* runs on its own asyncio loop in a background thread and calls ``emit(batches, token)``
once per page, in page order. Pages are grouped into hand-overs of up to ``batch_size`` rows and wait in a
queue of four for the caller, which is the back-pressure when the warehouse is slower than the API; a group
carries the checkpoint token of its last batch when that batch ends a page (:mod:`hub.runtime.checkpoint`).
If the caller stops iterating (or fails), the loop is cancelled and the thread joined before the generator
returns. This is the machinery of :meth:`adapters.rest.RestSource.resumable_batches`, written once for the
adapters that came after it (GraphQL).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import queue
import threading
from collections.abc import Awaitable, Callable, Generator
from typing import Any

import pyarrow as pa

from hub.runtime.checkpoint import Token
from hub.runtime.duration import over_budget

Emit = Callable[[list[pa.RecordBatch], Token | None], Awaitable[None]]
Item = tuple[pa.RecordBatch, Token | None]


class _Done:
    """End-of-stream marker on the hand-over queue, carrying the producer's error if it failed."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


def stream_batches(walk: Callable[[Emit], Awaitable[None]], *, name: str, batch_size: int,
                   max_duration: float | None, progress: Callable[[], str]) -> Generator[Item, None, None]:
    """Run *walk* in a background event loop and yield what it emits as ``(batch, token)`` pairs.

    *max_duration* bounds the whole walk (slow bodies and back-pressure included); when it runs out the
    error says how far the walk got (*progress*, e.g. "3 pages, 120 records read")."""
    handover: queue.Queue[Item | _Done] = queue.Queue(maxsize=4)
    stop = threading.Event()

    def put(item: Item | _Done) -> None:
        while not stop.is_set():
            try:
                handover.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        raise asyncio.CancelledError  # the consumer went away: unwind the producer

    group: list[pa.RecordBatch] = []
    last: list[Token | None] = [None]

    async def hand_over() -> None:
        if not group:
            return
        item = (group[0] if len(group) == 1 else pa.concat_batches(group), last[0])
        group.clear()
        last[0] = None
        if handover.full():
            await asyncio.to_thread(put, item)  # wait for room without stalling the loop
        else:
            put(item)

    async def emit(batches: list[pa.RecordBatch], token: Token | None) -> None:
        rows = [b for b in batches if b.num_rows]
        if not rows and group and last[0] is not None:
            last[0] = token  # an empty page right after a page boundary: the boundary moves past it
        for i, batch in enumerate(rows):
            if group and (not batch.schema.equals(group[0].schema)
                          or sum(b.num_rows for b in group) + batch.num_rows > batch_size):
                await hand_over()
            group.append(batch)
            last[0] = token if i == len(rows) - 1 else None

    running: dict[str, Any] = {}

    async def main() -> None:
        running["loop"], running["task"] = asyncio.get_running_loop(), asyncio.current_task()
        budget = asyncio.timeout(max_duration)
        try:
            try:
                async with budget:
                    await walk(emit)
            except TimeoutError:
                if not budget.expired() or max_duration is None:
                    raise
                raise over_budget(name, max_duration, progress()) from None
        except Exception:
            if last[0] is not None:  # whole pages wait in the group: hand them over, they can be checkpointed
                await hand_over()
            raise
        await hand_over()

    def produce() -> None:
        outcome = _Done()
        try:
            asyncio.run(main())
        except asyncio.CancelledError:
            return
        except BaseException as exc:  # handed to the consumer, raised there
            outcome = _Done(exc)
        with contextlib.suppress(asyncio.CancelledError):
            put(outcome)

    # The producer works in the caller's context (the asset's span and call log, see hub.runtime.tracing).
    thread = threading.Thread(target=contextvars.copy_context().run, args=(produce,), name=f"hub-{name}",
                              daemon=True)
    thread.start()
    try:
        while True:
            item = handover.get()
            if isinstance(item, _Done):
                if item.error is not None:
                    raise item.error
                return
            yield item
    finally:
        stop.set()
        loop, task = running.get("loop"), running.get("task")
        if loop is not None and task is not None:
            with contextlib.suppress(RuntimeError):  # the loop already finished
                loop.call_soon_threadsafe(task.cancel)
        thread.join()


def run_sync(coro_factory: Callable[[], Awaitable[Any]], name: str) -> Any:
    """Run one coroutine on its own event loop in a worker thread and return its result (or raise its error)
    in the caller's thread: for one-off calls (a sample page, an introspection) from code that may itself
    run inside an event loop."""
    result: dict[str, Any] = {}

    async def main() -> Any:
        return await coro_factory()

    def run() -> None:
        try:
            result["value"] = asyncio.run(main())
        except BaseException as exc:  # raised in the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=contextvars.copy_context().run, args=(run,), name=f"hub-{name}", daemon=True)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]
