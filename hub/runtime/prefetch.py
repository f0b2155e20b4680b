"""Run a blocking generator in a background thread, a few items ahead of its consumer.

An adapter whose reads release the GIL (ADBC fetching over the network, a DBAPI driver waiting on its
socket) then overlaps with the warehouse writing the previous batch, which releases the GIL too: the
two halves of a load proceed in parallel instead of taking turns. The queue is bounded, so memory stays
at *depth* batches however far the producer could run ahead; an exception in the producer is raised in
the consumer, and a consumer that stops early stops the producer: when it gives *cancel*, that is called
first, so a producer blocked in a server call (a long query) is released instead of outliving the
consumer — an exception in the consumer (KeyboardInterrupt, a failed write) then cancels the query.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


def prefetch(items: Iterator[T], depth: int = 2, name: str = "hub-prefetch",
             cancel: Callable[[], None] | None = None) -> Iterator[T]:
    """Yield what *items* yields, produced by a background thread at most *depth* items ahead; *cancel*
    interrupts the producer's blocking call (thread-safe) when the consumer stops before the end."""
    handover: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                handover.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as exc:  # handed to the consumer, raised there
            put(exc)
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=produce, name=name, daemon=True)
    worker.start()
    finished = False
    try:
        while True:
            item = handover.get()
            if item is _DONE or isinstance(item, BaseException):
                finished = True
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        cancelled = not finished and cancel is not None and worker.is_alive()
        if cancelled:
            assert cancel is not None
            with contextlib.suppress(Exception):
                cancel()
        worker.join(timeout=5 if cancelled else 30)
