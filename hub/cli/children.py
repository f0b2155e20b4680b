"""Child processes the CLI starts (``dagster dev`` for ``hub ui``) stop with it.

Python's default reaction to SIGTERM is to die at once, which left ``dagster dev`` and the code server,
webserver and daemon it starts running after ``hub ui`` was stopped by a service manager or ``kill``. The
child runs in a session (process group) of its own, so a terminal's Ctrl-C reaches only ``hub``, and both
SIGINT and SIGTERM are forwarded as SIGINT (``dagster dev`` shuts its processes down on it); whatever is
still alive in the group after the grace period is killed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from pathlib import Path
from types import FrameType

#: Seconds the child gets to stop after the signal is forwarded, before its process group is killed.
GRACE = 8.0


class _Stop(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise(signum: int, _frame: FrameType | None) -> None:
    raise _Stop(signum)


def run_child(cmd: list[str], *, cwd: Path, grace: float = GRACE) -> int:
    """Run *cmd* until it exits, or until this process gets SIGINT/SIGTERM: then stop the child's whole
    process group (forwarded SIGINT, SIGKILL after *grace* seconds). Returns the child's exit status, or
    128 + the signal number when stopped by a signal."""
    proc = subprocess.Popen(cmd, cwd=cwd, start_new_session=True)
    handlers = {}
    if threading.current_thread() is threading.main_thread():
        handlers = {s: signal.signal(s, _raise) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return proc.wait()
    except (_Stop, KeyboardInterrupt) as exc:
        signum = exc.signum if isinstance(exc, _Stop) else signal.SIGINT
        stop_group(proc, grace)
        return 128 + signum
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)


def stop_group(proc: subprocess.Popen[bytes], grace: float = GRACE) -> None:
    """SIGINT to *proc*'s process group, then SIGKILL to what is left of it after *grace* seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError):  # the child, and any of its children still running
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
