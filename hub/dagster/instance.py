"""The local Dagster instance that ``hub run`` and ``hub ui`` share.

Both use ``$DAGSTER_HOME`` when set, else ``<project>/.dagster``, so runs launched from the command
line show up in the UI. The DuckDB writer pool is set to one slot there (DuckDB allows one writer
process per file); an explicit limit set by the operator is left alone. A production instance (PostgreSQL
storage, queued runs, Celery workers) is configured by docs/deploy/dagster.yaml instead; see
docs/operations.md.
"""

from __future__ import annotations

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


def local_instance(root: Path) -> dg.DagsterInstance:
    dagster_home(root)
    instance = dg.DagsterInstance.get()
    ensure_pools(instance)
    return instance
