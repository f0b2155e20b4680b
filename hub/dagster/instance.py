"""The local Dagster instance that ``hub run`` and ``hub ui`` share.

Both use ``$DAGSTER_HOME`` when set, else ``<project>/.dagster``, so runs launched from the command
line show up in the UI. The DuckDB writer pool is set to one slot there (DuckDB allows one writer
process per file); an explicit limit set by the operator is left alone.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from hub.dagster.definitions import DUCKDB_POOL

DAGSTER_YAML = """\
# Written by hub for local use; see docs/operations.md for production settings.
telemetry:
  enabled: false
concurrency:
  pools:
    granularity: op
"""


def dagster_home(root: Path) -> Path:
    home = Path(os.environ.get("DAGSTER_HOME") or root / ".dagster").resolve()
    home.mkdir(parents=True, exist_ok=True)
    cfg = home / "dagster.yaml"
    if not cfg.exists():
        cfg.write_text(DAGSTER_YAML, encoding="utf-8")
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def ensure_pools(instance: dg.DagsterInstance) -> None:
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return
    if DUCKDB_POOL not in storage.get_concurrency_keys():
        storage.set_concurrency_slots(DUCKDB_POOL, 1)


def local_instance(root: Path) -> dg.DagsterInstance:
    dagster_home(root)
    instance = dg.DagsterInstance.get()
    ensure_pools(instance)
    return instance
