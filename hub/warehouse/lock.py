"""One writer per DuckDB file: an advisory lock on ``<file>.lock`` next to it.

DuckDB allows one writer process per file; a second one fails to open it ("Could not set lock"). Dagster
runs used to be kept apart by the pool ``hub_duckdb`` alone, but ``hub run`` now loads without Dagster
(:mod:`hub.runs`), so the one rule both follow is this lock: the fast path holds it for its whole run, every
Dagster asset that writes (:mod:`hub.dagster.definitions`, ``files``, ``streams``) for its step.

* ``flock`` on a file of its own: the kernel releases it when the process dies (SIGKILL, out of memory), so
  a crash never leaves a stale lock; what the file *says* (who holds it) is only a description.
* A process that finds it taken says once who holds it (pid, host, run, what) and then waits in the kernel
  (a blocking ``flock``: no polling, no CPU); SIGINT/SIGTERM end the wait (Python's default SIGTERM ends
  the process; the hub's handlers raise, which interrupts the ``flock`` call).
* Re-entrant within a process (a Dagster asset of an in-process ``hub run --dagster`` run takes it again):
  ``flock`` on a second descriptor of the same file in the same process would wait for itself.

Other warehouses (PostgreSQL) take no lock: their transactions keep concurrent loads apart.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from hub.errors import WarehouseError

_held: dict[str, tuple[int, int]] = {}  # lock path -> (descriptor, depth)
_guard = threading.RLock()


def lock_path(url: str) -> Path | None:
    """The lock file of a DuckDB warehouse URL (None: not a DuckDB file, nothing to lock)."""
    if not url.startswith("duckdb:///"):
        return None
    path = url[len("duckdb:///"):].partition("?")[0]
    if not path or path == ":memory:":
        return None
    return Path(path).resolve().with_name(Path(path).name + ".lock")


def holder(path: Path) -> str:
    """What the lock file says about its holder ("" when it says nothing)."""
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""


@contextlib.contextmanager
def writer_lock(url: str, *, what: str = "", say: Callable[[str], None] | None = None,
                wait: bool = True) -> Iterator[None]:
    """Hold the writer lock of warehouse *url* for the block; *what* (e.g. ``run 1a2b3c4d of hub run``)
    is written into the lock file so a waiting process can name the holder; *say* hears about the wait.
    Without *wait* (``hub listen``, which backs off and keeps consuming), a taken lock raises
    :class:`~hub.errors.WarehouseError` naming the holder at once."""
    path = lock_path(url)
    if path is None:
        yield
        return
    key = str(path)
    with _guard:
        if key in _held:
            fd, depth = _held[key]
            _held[key] = (fd, depth + 1)
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield
        finally:
            _release(key)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise WarehouseError(f"warehouse {path.with_suffix('')} is locked: held by "
                                     f"{holder(path) or 'another process'}") from None
            if say is not None:
                said = holder(path)
                say(f"waiting for the warehouse {path.with_suffix('')}: held by {said or 'another process'} "
                    "(Ctrl-C to stop)")
            fcntl.flock(fd, fcntl.LOCK_EX)  # sleeps in the kernel until the holder releases (or dies)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}{', ' + what if what else ''}\n".encode(), 0)
    except BaseException:
        os.close(fd)
        raise
    with _guard:
        _held[key] = (fd, 1)
    try:
        yield
    finally:
        _release(key)


def _release(key: str) -> None:
    with _guard:
        fd, depth = _held[key]
        if depth > 1:
            _held[key] = (fd, depth - 1)
            return
        del _held[key]
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
    os.close(fd)  # closing the last descriptor releases the flock
