"""Runs whose process is gone, and waiting for a pool slot without spinning.

An in-process run (``hub run``, the demo, a dry run) lives in the process that started it. Killed outright
(SIGKILL, the out-of-memory killer, a lost machine) it cannot record its end: the run stays STARTED and keeps
its slot of the ``hub_duckdb`` pool, and the next run on the instance waits for that slot forever, inside
Dagster's executor, at 100% CPU and deaf to Ctrl-C. Dagster's run monitoring resolves this for runs a daemon
launched; in-process runs get the same here:

* every in-process run is tagged with its host and process id (:data:`HOST_TAG`, :data:`PID_TAG`);
* before a run starts, :func:`recover_dead_runs` marks failed the runs of this host whose process no longer
  exists, and frees the pool slots of every run that has finished (or was just marked failed);
* :func:`wait_for_pool` then waits, sleeping, while a live run holds the pool's last slot, saying which run
  and process hold it; SIGTERM/SIGINT end the wait at once (the sleep is interruptible).

A run without the tags (launched by the UI or a daemon) is never touched: its own launcher owns its fate.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

import dagster as dg

#: The host and process of an in-process run.
HOST_TAG, PID_TAG = "hub/host", "hub/pid"
_ACTIVE = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]


def run_tags() -> dict[str, str]:
    """The tags that let a later run tell whether this process is still alive."""
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def recover_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark failed the active runs of this host whose process is gone and free the pool slots of finished
    runs; returns one line per run recovered."""
    host, me = socket.gethostname(), os.getpid()
    said: list[str] = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=_ACTIVE)):
        pid = run.tags.get(PID_TAG, "")
        if run.tags.get(HOST_TAG) != host or not pid.isdigit() or int(pid) == me or _alive(int(pid)):
            continue
        instance.report_run_failed(run, f"the process of this run (pid {pid} on {host}) is gone (killed or "
                                        "crashed); marked failed by a later hub run")
        said.append(f"run {run.run_id[:8]} (pid {pid}) ended without a word (killed?): marked failed, its pool "
                    "slots freed")
    storage = instance.event_log_storage
    if storage.supports_global_concurrency_limits:
        for run_id in storage.get_concurrency_run_ids():
            found = instance.get_run_by_id(run_id)
            if found is None or found.is_finished:
                storage.free_concurrency_slots_for_run(run_id)
    return said


def wait_for_pool(instance: dg.DagsterInstance, pool: str | None, say: Callable[[str], None], *,
                  poll: float = 1.0) -> None:
    """Return once *pool* has a free slot; meanwhile say (once per holder) which run holds it, sleep between
    checks, and recover holders whose process dies while we wait."""
    storage = instance.event_log_storage
    if pool is None or not storage.supports_global_concurrency_limits:
        return
    told: set[str] = set()
    while True:
        info = storage.get_concurrency_info(pool)
        limit = info.limit if info.limit is not None else info.slot_count
        holders = sorted({s.run_id for s in info.claimed_slots})
        if not limit or len(info.claimed_slots) < limit:
            return
        for run_id in holders:
            if run_id not in told:
                told.add(run_id)
                run = instance.get_run_by_id(run_id)
                where = f", pid {run.tags[PID_TAG]} on {run.tags.get(HOST_TAG)}" if run and PID_TAG in run.tags else ""
                say(f"waiting for the {pool} pool: held by run {run_id[:8]}{where} (Ctrl-C to stop)")
        time.sleep(poll)
        for line in recover_dead_runs(instance):
            say(line)
