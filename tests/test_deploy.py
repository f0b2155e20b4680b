"""The production deployment of docs/operations.md, on this machine's real servers.

- ``docs/deploy/dagster.yaml`` is loaded verbatim as the Dagster instance, against a scratch PostgreSQL database:
  the demo pipeline's runs, event logs and schedule state must land in PostgreSQL (read back with psycopg, not
  only through Dagster), with the queue's tag limits and the pools' defaults as the file says.
- The demo job runs with the Celery executor (``HUB_EXECUTOR=celery``) on a real ``dagster-celery worker`` that
  shares that instance, with RabbitMQ as broker: every step must have run in the worker's processes, the
  ``hub_duckdb`` pool must still serialize the DuckDB writers, and the warehouse must hold the data.

Each test skips, with the reason, when PostgreSQL or RabbitMQ is not reachable. Kubernetes is not tested here
(no cluster on the test machine); docs/operations.md says so.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import dagster as dg
import psutil
import psycopg
import pytest
from dagster._core.definitions.reconstruct import ReconstructableRepository

from hub.dagster import DUCKDB_POOL
from hub.dagster.executor import executor_from_env
from hub.dagster.instance import ensure_pools
from hub.dagster.run import run_pipeline
from hub.demo.bank import BankService
from hub.demo.crm import CRMService
from hub.errors import HubError
from hub.runtime.secrets import mask_url
from hub.spec import load, loads
from hub.warehouse import connect
from tests.conftest import DEMO_SPEC, REPO, demo_spec_text, state_env
from tests.sql_servers import scratch_database

pytestmark = pytest.mark.slow

DEPLOY = REPO / "docs" / "deploy"
BIN = Path(sys.executable).parent
BROKER = os.environ.get("HUB_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672//")
DAY = "2024-01-02"


@dataclass
class PgInstance:
    instance: dg.DagsterInstance
    url: str  # the scratch database (Dagster's storage, and the warehouse schema of the first test)
    home: Path


@pytest.fixture
def pg_instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PgInstance]:
    """A Dagster home whose dagster.yaml is docs/deploy/dagster.yaml, unchanged, on a scratch database that is
    dropped afterwards (the file reads the database from $DAGSTER_PG_URL, as in production)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(DEPLOY / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    for name, value in state_env(tmp_path).items():  # the checkout's spec: not the checkout's .hub/, reports/
        monkeypatch.setenv(name, value)
    with scratch_database("postgresql") as url:
        monkeypatch.setenv("DAGSTER_PG_URL", url.replace("postgresql://", "postgresql+psycopg2://", 1))
        instance = dg.DagsterInstance.get()
        try:
            yield PgInstance(instance, url, home)
        finally:
            instance.dispose()


def _sql(url: str, query: str) -> list[tuple[object, ...]]:
    """Rows straight from PostgreSQL, bypassing Dagster: what is stored, not what an API reports."""
    with psycopg.connect(url, connect_timeout=5) as conn:
        return list(conn.execute(query.encode()).fetchall())


def _contacts_of(crm: CRMService, day: str) -> int:
    return sum(1 for c in crm.data.contacts if c["occurred_at"].startswith(day))


def test_production_instance_stores_runs_events_and_schedules_in_postgresql(
        crm: CRMService, bank: BankService, pg_instance: PgInstance, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/deploy/dagster.yaml as shipped: what the hub writes to a production instance must be in PostgreSQL
    (where every webserver, daemon and worker reads it), and the limits must be the ones the docs describe."""
    instance, db = pg_instance.instance, pg_instance.url
    # The file's settings, as the daemon and the executors will read them.
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
    assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
    assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
    concurrency = instance.get_concurrency_config()
    queue = concurrency.run_queue_config
    assert queue is not None and queue.max_concurrent_runs == 10
    assert {"key": "dagster/backfill", "limit": 4} in queue.tag_concurrency_limits
    assert {"key": "hub/full_refresh", "value": "true", "limit": 1} in queue.tag_concurrency_limits
    assert concurrency.pool_config.default_pool_limit == 2
    assert concurrency.pool_config.pool_granularity is not None
    assert concurrency.pool_config.pool_granularity.value == "op"

    # The DuckDB pool: a limit that came from default_limit is lowered to 1; an operator's own limit is kept.
    storage = instance.event_log_storage
    storage.initialize_concurrency_limit_to_default(DUCKDB_POOL)
    assert storage.get_concurrency_info(DUCKDB_POOL).slot_count == 2, "created with the file's default_limit"
    ensure_pools(instance)
    assert storage.get_concurrency_info(DUCKDB_POOL).slot_count == 1
    storage.set_concurrency_slots(DUCKDB_POOL, 3)
    ensure_pools(instance)
    assert storage.get_concurrency_info(DUCKDB_POOL).slot_count == 3, "an explicit limit is the operator's"

    # The demo pipeline, one day, into a PostgreSQL warehouse (the multi-machine setup).
    warehouse = f"{db}?schema=analytics"
    monkeypatch.setenv("HUB_WAREHOUSE", warehouse)
    spec = tmp_path / "demo.yaml"
    spec.write_text(demo_spec_text())
    pipeline = loads(spec.read_text(), spec)
    outcomes = run_pipeline(pipeline, instance, partitions=[DAY])
    assert all(o.success for o in outcomes), [o.error for o in outcomes]
    run_ids = {o.run_id for o in outcomes}
    assert len(run_ids) == 1 + len(bank.dropped) + 1, "the day, one run per statement file, the models"

    # Runs: through Dagster, and as rows of PostgreSQL's runs table.
    assert {r.run_id for r in instance.get_runs()} == run_ids
    stored = {str(run_id): str(status) for run_id, status in _sql(db, "select run_id, status from runs")}
    assert stored == dict.fromkeys(run_ids, "SUCCESS")
    # Event logs: the materializations, with their partitions, are rows of event_logs.
    mats = _sql(db, "select asset_key, partition from event_logs where dagster_event_type = 'ASSET_MATERIALIZATION'")
    assert ('["crm_contacts"]', DAY) in mats and ('["erp_order_lines"]', DAY) in mats
    assert sum(1 for key, _ in mats if key == '["bank_statements"]') == len(bank.dropped)
    assert {key for key, _ in mats} >= {'["crm_customers"]', '["revenue_by_region"]', '["stock_cover"]',
                                        '["open_orders_to_bank"]'}
    key = dg.AssetKey("crm_contacts")
    assert instance.get_materialized_partitions(key) == {DAY}
    # Source assets on a PostgreSQL warehouse are in their system's pool, created with the file's default.
    assert storage.get_concurrency_info("hub_system_crm").slot_count == 2

    # Schedules: started through the CLI like an operator would; the state is a row of the jobs table.
    env = {**os.environ, "HUB_WAREHOUSE": warehouse}
    proc = subprocess.run([str(BIN / "dagster"), "schedule", "start", "demo_schedule", "-w", "workspace.yaml"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    states = _sql(db, "select job_type, status, job_body from jobs")
    assert [(kind, status) for kind, status, body in states if '"demo_schedule"' in str(body)] == [
        ("SCHEDULE", "RUNNING")], states
    assert any(s.instigator_name == "demo_schedule" and s.status.value == "RUNNING"
               for s in instance.all_instigator_state())

    # The warehouse got the day.
    wh = connect(warehouse)
    rows = wh.query(f"select count(*) as n from crm_contacts where _hub_partition = '{DAY}'").column("n")[0].as_py()
    assert rows == _contacts_of(crm, DAY) > 0
    assert wh.query("select count(*) as n from crm_customers").column("n")[0].as_py() == 300
    assert wh.query("select count(*) as n from revenue_by_region").column("n")[0].as_py() > 0


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process group the test started (the process and everything it spawned), then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def test_daemon_dequeues_runs_within_the_tag_limits(crm: CRMService, warehouse_path: Path, pg_instance: PgInstance,
                                                   tmp_path: Path) -> None:
    """The production launch path: runs submitted to the queue (`dagster job launch`, as the UI does) stay QUEUED
    until the daemon dequeues them, and `hub/full_refresh=true` runs go one at a time, as the file's tag limit
    says, although `max_concurrent_runs` would allow both."""
    instance = pg_instance.instance
    ensure_pools(instance)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    run_ids = [uuid.uuid4().hex for _ in range(2)]
    launches = [subprocess.Popen(  # side by side: each CLI spends its time loading the code location
        [str(BIN / "dagster"), "job", "launch", "-w", "workspace.yaml", "-j", "demo_job", "-o", "inventory_levels",
         "--run-id", run_id, "--tags", json.dumps({"hub/full_refresh": "true", "dagster/partition": DAY}),
         "--config-json", json.dumps({"execution": {"config": {"in_process": {}}}})],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for run_id in run_ids]
    for launch in launches:
        output, _ = launch.communicate(timeout=120)
        assert launch.returncode == 0, output.decode(errors="replace")
    assert [instance.get_run_by_id(r).status for r in run_ids] == [dg.DagsterRunStatus.QUEUED] * 2  # type: ignore[union-attr]

    log = tmp_path / "daemon.log"
    daemon_started = time.time()
    with log.open("wb") as out:
        daemon = subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"], cwd=REPO, env=env,
                                  stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 150
        while True:
            runs = [instance.get_run_by_id(r) for r in run_ids]
            if all(r is not None and r.is_finished for r in runs):
                break
            assert daemon.poll() is None, f"the daemon exited:\n{log.read_text(errors='replace')}"
            assert time.monotonic() < deadline, f"runs not finished: {[r.status if r else None for r in runs]}"
            time.sleep(1)
    finally:
        _kill_group(daemon)
    records = [instance.get_run_record_by_id(r) for r in run_ids]
    assert all(r is not None and r.dagster_run.status == dg.DagsterRunStatus.SUCCESS for r in records), \
        [r.dagster_run.status if r else None for r in records]
    first, second = sorted((r for r in records if r is not None), key=lambda r: r.start_time or 0)
    assert first.end_time is not None and second.start_time is not None
    assert second.start_time >= first.end_time, "two full refreshes ran at once despite the tag limit of 1"
    for record in records:  # enqueued, then started by the daemon's run coordinator, not launched directly
        assert record is not None
        enqueued = instance.get_records_for_run(record.dagster_run.run_id,
                                                of_type=dg.DagsterEventType.RUN_ENQUEUED).records
        starting = instance.get_records_for_run(record.dagster_run.run_id,
                                                of_type=dg.DagsterEventType.RUN_STARTING).records
        assert len(enqueued) == 1 and len(starting) == 1
        assert enqueued[0].timestamp < daemon_started <= starting[0].timestamp
    wh = connect(f"duckdb:///{warehouse_path}")
    assert wh.query("select count(*) as n from inventory_levels").column("n")[0].as_py() > 0


def test_executor_is_chosen_by_the_environment() -> None:
    """HUB_EXECUTOR picks the executor of every job of the code location; the broker and backend env vars are
    defaults of the celery executor's run config (a run can still override them), and a wrong value is an error
    that lists the choices rather than a silent fallback to another executor."""
    assert executor_from_env({}) is None
    assert executor_from_env({"HUB_EXECUTOR": "multiprocess"}) is None
    in_process = executor_from_env({"HUB_EXECUTOR": "in_process"})
    assert in_process is not None and in_process.name == "in_process"
    celery = executor_from_env({"HUB_EXECUTOR": "celery", "HUB_CELERY_BROKER": "amqp://u:p@mq:5672//",
                                "HUB_CELERY_BACKEND": "redis://cache:6379/1"})
    assert celery is not None and celery.name == "celery"
    fields = celery.config_schema.as_field().config_type.fields  # type: ignore[attr-defined]
    assert fields["broker"].default_value == "amqp://u:p@mq:5672//"
    assert fields["backend"].default_value == "redis://cache:6379/1"
    with pytest.raises(HubError, match="HUB_EXECUTOR='dask': expected one of multiprocess, in_process, celery, k8s"):
        executor_from_env({"HUB_EXECUTOR": "dask"})
    if importlib.util.find_spec("dagster_k8s") is None:  # not a dependency of the hub: a clear error, not a crash
        with pytest.raises(HubError, match="HUB_EXECUTOR=k8s needs dagster-k8s"):
            executor_from_env({"HUB_EXECUTOR": "k8s"})


# --- Celery ---------------------------------------------------------------------------------------------------

def _rabbitmq_or_skip() -> None:
    parts = urlsplit(BROKER)
    try:
        socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5672), timeout=3).close()
    except OSError as exc:
        pytest.skip(f"RabbitMQ is not reachable at {mask_url(BROKER)} (set HUB_TEST_AMQP): {exc}")


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    name: str
    log: Path

    def pids(self) -> set[int]:
        """The worker's process tree: dagster-celery, celery's main process and its pool processes."""
        root = psutil.Process(self.proc.pid)
        return {root.pid, *(p.pid for p in root.children(recursive=True))}


@pytest.fixture
def celery_worker(pg_instance: PgInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Worker]:
    """``dagster-celery worker start`` with docs/deploy/celery.yaml, in its own process group (killed whole at the
    end), sharing the PostgreSQL instance through the same DAGSTER_HOME and environment as the test."""
    _rabbitmq_or_skip()
    monkeypatch.setenv("HUB_EXECUTOR", "celery")
    monkeypatch.setenv("HUB_CELERY_BROKER", BROKER)
    name = f"hubtest-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "worker.log"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app", "-y",
             str(DEPLOY / "celery.yaml"), "-n", name, "-l", "INFO", "--", "--concurrency=2"],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    worker = Worker(proc, name, log)
    try:
        deadline = time.monotonic() + 90
        while " ready." not in log.read_text(errors="replace"):
            assert proc.poll() is None, f"the worker exited ({proc.returncode}):\n{log.read_text(errors='replace')}"
            assert time.monotonic() < deadline, f"the worker did not come up:\n{log.read_text(errors='replace')}"
            time.sleep(0.5)
        yield worker
    finally:
        _kill_group(proc)


# dagster-celery registers its task on the launching side's app once per submitted step; Celery warns each time.
@pytest.mark.filterwarnings("ignore:Task name 'execute_plan' is already registered")
def test_celery_workers_run_the_demo_job(crm: CRMService, bank: BankService, warehouse_path: Path,
                                         pg_instance: PgInstance, celery_worker: Worker) -> None:
    """Scale-out as documented: with HUB_EXECUTOR=celery the steps must leave the launching process for the
    worker, and the DuckDB writer pool must still hold when two worker processes could write at once."""
    instance = pg_instance.instance
    ensure_pools(instance)  # what `hub ui` / `hub run` do on an instance: one DuckDB writer
    assert instance.event_log_storage.get_concurrency_info(DUCKDB_POOL).slot_count == 1
    # The statement files first (the models read them); in-process, on the same instance.
    statements = run_pipeline(load(DEMO_SPEC), instance, assets=["bank_statements"],
                              files=[f"statements_{DAY.replace('-', '')}.csv"])
    assert statements and all(o.success for o in statements), [o.error for o in statements]

    # The code location as the webserver and daemon load it (pipelines/definitions.py), with HUB_EXECUTOR=celery.
    repo = ReconstructableRepository.for_file(str(REPO / "pipelines" / "definitions.py"), "defs", str(REPO))
    job = repo.get_reconstructable_job("demo_job")
    job_def = job.get_definition()
    assert job_def.executor_def.name == "celery"
    pooled = {op.name for op in job_def.graph.node_defs if isinstance(op, dg.OpDefinition) and op.pool == DUCKDB_POOL}
    started = time.monotonic()
    with dg.execute_job(job, instance, tags={"dagster/partition": DAY}) as result:
        assert result.success, [e.message for e in result.all_events if e.is_failure]
        run_id = result.run_id
    elapsed = time.monotonic() - started

    records = instance.get_records_for_run(run_id).records
    events = [r.event_log_entry.dagster_event for r in records if r.event_log_entry.dagster_event is not None]
    starts = {e.step_key: e for e in events if e.event_type_value == "STEP_START" and e.step_key is not None}
    expected = {"crm_customers", "crm_products", "crm_contacts", "erp_orders", "inventory_warehouses",
                "inventory_levels", "order_payments", "revenue_by_region", "contacts_by_region", "stock_cover",
                "open_orders_to_bank"}
    assert expected <= set(starts), sorted(starts)  # and the contract checks of the systems with a snapshot
    assert pooled == expected, "every asset writing to the DuckDB warehouse is in the hub_duckdb pool"
    # Every step ran in the worker's processes, none in this (the launching) process ...
    worker_pids = celery_worker.pids()
    step_pids = {e.pid for e in starts.values()}
    assert os.getpid() not in step_pids
    assert step_pids <= worker_pids, (step_pids, worker_pids)
    # ... and Dagster recorded which worker took each step.
    delegated = {e.step_key: (e.engine_event_data.metadata.get("Celery worker") if e.engine_event_data else None)
                 for e in events if e.event_type_value == "ENGINE_EVENT" and "in celery worker" in (e.message or "")}
    assert set(delegated) == set(starts)
    assert {getattr(v, "value", v) for v in delegated.values()} == {f"{celery_worker.name}@{socket.gethostname()}"}
    log = celery_worker.log.read_text(errors="replace")
    assert log.count("Task execute_plan[") >= 2 * len(starts), "each step: received, succeeded"

    # The hub_duckdb pool (limit 1) still serializes the DuckDB writers across the worker's two processes.
    at: dict[tuple[str, str], float] = {}
    for r in records:
        event = r.event_log_entry.dagster_event
        if event is not None and event.step_key is not None:
            at[(event.event_type_value, event.step_key)] = r.event_log_entry.timestamp
    spans = sorted((at[("STEP_START", k)], at[("STEP_SUCCESS", k)], k) for k in pooled)
    for (_, end, before), (begin, _, after) in itertools.pairwise(spans):
        assert begin >= end, f"{after} started before {before} ended: two DuckDB writers at once"

    # The warehouse has the day, the reference data and the models.
    wh = connect(f"duckdb:///{warehouse_path}")
    rows = wh.query(f"select count(*) as n from crm_contacts where _hub_partition = '{DAY}'").column("n")[0].as_py()
    assert rows == _contacts_of(crm, DAY) > 0
    assert wh.query("select count(*) as n from crm_customers").column("n")[0].as_py() == 300
    assert wh.query("select count(*) as n from order_payments").column("n")[0].as_py() > 0
    assert wh.query("select count(*) as n from stock_cover").column("n")[0].as_py() > 0
    assert elapsed < 240
