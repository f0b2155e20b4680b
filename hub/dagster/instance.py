"""The local Dagster instance that ``hub run`` and ``hub ui`` share.

Both use ``$DAGSTER_HOME`` when set, else ``<project>/.dagster``, so runs launched from the command
line show up in the UI. The DuckDB writer pool is set to one slot there (DuckDB allows one writer
process per file); an explicit limit set by the operator is left alone. A production instance (PostgreSQL
storage, queued runs, Celery workers) is configured by docs/deploy/dagster.yaml instead; see
docs/operations.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

import dagster as dg

from hub.dagster.definitions import DUCKDB_POOL
from hub.runs import DAGSTER_YAML, dagster_home

__all__ = ["DAGSTER_YAML", "dagster_home", "ensure_pools", "local_instance"]


def ensure_pools(instance: dg.DagsterInstance) -> None:
    """Limit the DuckDB writer pool to one slot, unless an operator set a limit of their own.

    A production instance may set ``concurrency: pools: default_limit`` (docs/deploy/dagster.yaml): Dagster
    then creates ``hub_duckdb`` with that default the first time a step claims it, which would let several
    processes open the DuckDB file for writing. A limit that came from the default is therefore replaced by 1;
    one set explicitly (``dagster instance concurrency set hub_duckdb N``, or the UI) is kept.
    """
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return
    if DUCKDB_POOL not in storage.get_concurrency_keys() or \
            storage.get_concurrency_info(DUCKDB_POOL).using_default_limit:
        storage.set_concurrency_slots(DUCKDB_POOL, 1)


@contextlib.contextmanager
def _creating(home: Path) -> Iterator[None]:
    """Hold ``$DAGSTER_HOME/.hub-instance.lock`` while the instance is opened.

    Opening a local instance creates its SQLite storages and stamps their schema the first time; two processes
    doing that at once on a fresh ``$DAGSTER_HOME`` (``hub run``'s detached reporter and a ``hub runs`` typed
    right after it) race, and one fails ("table already exists", "database is locked"). The lock makes the
    first one create and the others open what it created; afterwards it costs one uncontended ``flock``."""
    fd = os.open(home / ".hub-instance.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def local_instance(root: Path) -> dg.DagsterInstance:
    """The instance of ``$DAGSTER_HOME`` (or ``<root>/.dagster``), created safely when several processes
    open it for the first time at once, with the DuckDB pool limited (:func:`ensure_pools`)."""
    home = dagster_home(root)
    with _creating(home):
        instance = dg.DagsterInstance.get()
        ensure_pools(instance)
    return instance
