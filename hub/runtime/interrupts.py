"""Cancel work on a server before the process stops (SIGTERM, SIGINT / Ctrl-C).

Python's default reaction to SIGTERM is to die at once: no ``finally`` runs, and a query the process
was waiting for keeps running on the database server (PostgreSQL notices a vanished client only when
it next writes to it, ``pg_sleep`` or a lock wait never does). While :func:`cancel_on_interrupt` is
active, SIGTERM and SIGINT first call every registered cancel function (each sends its server a cancel
request, e.g. libpq's, or MySQL's ``KILL QUERY``) and then raise ``SystemExit(143)`` or
``KeyboardInterrupt`` in the main thread, so the usual clean-up (a warehouse rollback, closing
connections) runs too.

The handlers are installed only from the main thread and only over Python's defaults: a process that
has its own handlers (Dagster's run workers, a server) keeps them, and relies on the exception path
instead (:func:`hub.runtime.prefetch.prefetch` cancels its producer when its consumer stops early).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

_lock = threading.Lock()
_cancels: dict[int, Callable[[], None]] = {}
_installed: dict[int, object] = {}  # signal -> the handler it had before ours


def cancel_all() -> None:
    """Call every registered cancel function once (errors are ignored: the process is stopping anyway)."""
    with _lock:
        cancels = list(_cancels.values())
    for cancel in cancels:
        with contextlib.suppress(Exception):
            cancel()


def _handler(signum: int, _frame: FrameType | None) -> None:
    cancel_all()
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)


def _install() -> None:
    """Put our handler on SIGTERM / SIGINT where Python's default is in place (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum, default in ((signal.SIGTERM, signal.SIG_DFL), (signal.SIGINT, signal.default_int_handler)):
        if signum in _installed:
            continue
        current = signal.getsignal(signum)
        if current is default:
            signal.signal(signum, _handler)
            _installed[signum] = current


def _uninstall() -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    for signum, previous in list(_installed.items()):
        if signal.getsignal(signum) is _handler:
            signal.signal(signum, previous)  # type: ignore[arg-type]
        del _installed[signum]


@contextlib.contextmanager
def cancel_on_interrupt(cancel: Callable[[], None]) -> Iterator[None]:
    """While active, SIGTERM / SIGINT call *cancel* (from the main thread, so it must be safe to call while
    another thread waits on the server) before the process stops."""
    key = id(cancel)
    with _lock:
        _cancels[key] = cancel
        first = len(_cancels) == 1
    if first:
        _install()
    try:
        yield
    finally:
        with _lock:
            _cancels.pop(key, None)
            last = not _cancels
        if last:
            _uninstall()
