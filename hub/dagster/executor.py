"""Where the steps of a run execute, chosen by the deployment, not by the specs.

``HUB_EXECUTOR`` in the code location's environment picks the executor of every job of the code location
(``Definitions(executor=...)``), so the same specs run on a laptop and on a cluster:

- unset, ``multiprocess`` or ``default``: Dagster's default (one subprocess per step, ``in_process`` can be
  picked per run in the launchpad's ``execution`` config);
- ``in_process``: every step in the run worker's process (small VMs, debugging);
- ``celery``: each step is a Celery task, executed by ``dagster-celery worker start`` processes on any machine
  that shares the Dagster instance (``$DAGSTER_HOME/dagster.yaml`` with PostgreSQL storage) and can import
  the code location. The broker is ``$HUB_CELERY_BROKER`` (e.g. ``amqp://hub:PASSWORD@rabbitmq:5672//``; default
  dagster-celery's ``pyamqp://guest@$DAGSTER_CELERY_BROKER_HOST//``), the result backend ``$HUB_CELERY_BACKEND``
  (default ``rpc://``). Both are only defaults of the executor's run config: a run may still set ``execution:
  config: {broker: ..., backend: ..., config_source: ...}`` like with any dagster-celery job;
- ``k8s``: each step in its own Kubernetes Job (``dagster_k8s.k8s_job_executor``; needs ``dagster-k8s``, which
  the hub does not install, and a cluster — not tested here, see docs/operations.md).

``hub run`` is unaffected: it materializes in-process, whatever the code location's executor.

Workers must see the same environment as the code location (HUB_EXECUTOR, warehouse URL, system credentials):
a worker reconstructs the job from ``pipelines/definitions.py`` for every step it runs.
"""

from __future__ import annotations

import os
from typing import Any

import dagster as dg

from hub.errors import HubError

EXECUTOR_ENV = "HUB_EXECUTOR"
BROKER_ENV = "HUB_CELERY_BROKER"
BACKEND_ENV = "HUB_CELERY_BACKEND"
EXECUTORS = ("multiprocess", "in_process", "celery", "k8s")


def executor_from_env(environ: dict[str, str] | None = None) -> dg.ExecutorDefinition | None:
    """The executor ``$HUB_EXECUTOR`` names; None for Dagster's default (multiprocess)."""
    env = os.environ if environ is None else environ
    name = (env.get(EXECUTOR_ENV) or "").strip().lower().replace("-", "_")
    if name in ("", "default", "multiprocess"):
        return None
    if name == "in_process":
        return dg.in_process_executor
    if name == "celery":
        return celery_executor(env.get(BROKER_ENV) or None, env.get(BACKEND_ENV) or None)
    if name == "k8s":
        try:
            from dagster_k8s import k8s_job_executor
        except ImportError:
            raise HubError(f"${EXECUTOR_ENV}=k8s needs dagster-k8s (pip install dagster-k8s==<the "
                           "dagster-postgres version>)") from None
        return k8s_job_executor
    raise HubError(f"${EXECUTOR_ENV}={env.get(EXECUTOR_ENV)!r}: expected one of {', '.join(EXECUTORS)}")


def celery_executor(broker: str | None, backend: str | None) -> dg.ExecutorDefinition:
    """dagster-celery's executor with *broker* / *backend* as the defaults of its run config (imported only
    when asked for: Celery is not needed on a machine that never uses it)."""
    from dagster_celery import celery_executor as base
    from dagster_celery.executor import CELERY_CONFIG

    schema: dict[str, Any] = dict(CELERY_CONFIG)
    if broker:
        schema["broker"] = dg.Field(dg.Noneable(dg.StringSource), is_required=False, default_value=broker,
                                    description=f"The URL of the Celery broker (default from ${BROKER_ENV}).")
    if backend:
        schema["backend"] = dg.Field(dg.Noneable(dg.StringSource), is_required=False, default_value=backend,
                                     description=f"The URL of the Celery result backend (default from "
                                                 f"${BACKEND_ENV}).")

    def passthrough(config: dict[str, Any]) -> dict[str, Any]:
        return config

    return base.configured(passthrough, config_schema=schema, name="celery")
