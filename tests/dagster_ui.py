"""A real ``dagster dev`` over the demo estate, driven through the webserver's GraphQL API.

Shared by the UI's end-to-end test (``tests/test_ui_e2e.py``) and its browser check
(``tests/test_ui_browser.py``). What ``hub ui`` does, in isolation: the demo services on free loopback
ports, a temporary ``DAGSTER_HOME`` holding the hub's own ``dagster.yaml`` (with the ``hub_duckdb`` pool set
to one slot, as ``hub ui`` sets it), the warehouse, state, cache and reports in a temporary folder, and
``dagster dev -w workspace.yaml`` in its own process group on a free port. The server is stopped, its
whole process tree killed, even when a test fails, so no webserver, daemon, code server or run worker
outlives the test.

Nothing is mocked: every call goes over HTTP to the webserver, which talks to the real code location,
daemon, run workers and demo services.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import httpx
import psutil

from hub.dagster.definitions import DUCKDB_POOL
from hub.dagster.instance import DAGSTER_YAML, ensure_pools
from hub.demo import bank as demo_bank
from hub.demo.crm import DEMO_TOKEN, CRMService
from hub.demo.erp import DEMO_PASSWORD, DEMO_USER, ERPService
from hub.demo.estate import DEMO_CREDENTIALS, endpoints
from hub.demo.inventory import InventoryDb

REPO = Path(__file__).resolve().parents[1]
LOCATION = "hub"  # workspace.yaml's location_name
REPOSITORY = "__repository__"  # the repository Dagster makes of a module's `defs`
ASSET_JOB = "__ASSET_JOB"  # the implicit job the UI's "Materialize" launches

# Polling intervals: short enough to keep the test quick, long enough not to load 2 slow CPUs.
POLL_S = 1.0


class GraphQLError(AssertionError):
    """The webserver answered a GraphQL request with errors (or an error union member)."""


def free_port() -> int:
    """A TCP port free on loopback now (the OS picks it; nothing fixed, so parallel runs never collide)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class DemoEstate:
    """The demo services, started in this process (so a test can drop files and inject data), and the
    environment the demo spec reads, for the ``dagster dev`` subprocess."""

    crm: CRMService
    erp: ERPService
    bank: demo_bank.BankService
    inventory: InventoryDb
    env: dict[str, str] = field(default_factory=dict)


@contextlib.contextmanager
def demo_estate(root: Path, *, bank_days: int = 0) -> Iterator[DemoEstate]:
    """The CRM, ERP, bank and inventory on free ports, like :func:`hub.demo.estate.running` but without
    touching ``os.environ`` (the variables go to the subprocess only). The bank starts with *bank_days*
    statements in its outbox (0: empty, so every file the sensor sees is one a test dropped)."""
    stack = contextlib.ExitStack()
    with stack:
        crm = stack.enter_context(CRMService(port=0, token=DEMO_TOKEN))
        erp = stack.enter_context(ERPService(port=0, username=DEMO_USER, password=DEMO_PASSWORD))
        drop = stack.enter_context(demo_bank.BankService(port=0, days=bank_days, root=root / "bank"))
        inventory = InventoryDb(root=root / "inventory").start()
        stack.callback(inventory.stop)
        env = {**DEMO_CREDENTIALS, **endpoints(crm, erp, drop, inventory)}
        yield DemoEstate(crm=crm, erp=erp, bank=drop, inventory=inventory, env=env)


class GraphQL:
    """A tiny client for the webserver's ``/graphql`` endpoint that fails loudly on any error."""

    def __init__(self, base_url: str) -> None:
        self.url = base_url.rstrip("/") + "/graphql"
        self.http = httpx.Client(timeout=httpx.Timeout(60.0, connect=5.0))

    def __call__(self, query: str, **variables: Any) -> dict[str, Any]:
        reply = self.http.post(self.url, json={"query": query, "variables": variables})
        reply.raise_for_status()
        body = reply.json()
        if body.get("errors"):
            raise GraphQLError(f"GraphQL errors: {body['errors']}")
        data: dict[str, Any] = body["data"]
        return data

    def close(self) -> None:
        self.http.close()


def ok(value: dict[str, Any], typename: str) -> dict[str, Any]:
    """*value* when it is the union member *typename*, else a failure showing the error member."""
    if value.get("__typename") != typename:
        raise GraphQLError(f"expected {typename}, got {value}")
    return value


@dataclass
class DagsterDev:
    """A running ``dagster dev`` (webserver, daemon, code server) and where its files are."""

    proc: subprocess.Popen[bytes]
    port: int
    home: Path
    log: Path
    warehouse: Path
    reports: Path
    gql: GraphQL

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 60) -> str:
        """The end of the server's output, for failure messages."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _kill_tree(proc: subprocess.Popen[bytes], grace_s: float = 20.0) -> None:
    """Stop ``dagster dev`` the way Ctrl-C does (SIGINT: it shuts its webserver, daemon and code server
    down), then kill whatever of its process group and process tree is still alive."""
    try:
        tree = [proc.pid, *(c.pid for c in psutil.Process(proc.pid).children(recursive=True))]
    except psutil.NoSuchProcess:
        tree = [proc.pid]
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    for pid in tree:  # children that left the group (a code server or run worker in a session of its own)
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(pid).kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def _prepare_home(home: Path) -> None:
    """The hub's own ``dagster.yaml`` and the one-slot ``hub_duckdb`` pool, as ``hub ui`` sets them up."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(DAGSTER_YAML, encoding="utf-8")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        ensure_pools(instance)
        info = instance.event_log_storage.get_concurrency_info(DUCKDB_POOL)
        assert info.slot_count == 1, f"pool {DUCKDB_POOL} should have one slot, has {info.slot_count}"


@contextlib.contextmanager
def dagster_dev(root: Path, estate: DemoEstate, *, ready_timeout_s: float = 180.0) -> Iterator[DagsterDev]:
    """``dagster dev -w workspace.yaml`` on a free port over *estate*, everything it writes under *root*;
    yields once the code location is loaded and the daemons are healthy, and always kills it at the end."""
    home, warehouse, reports = root / "dagster_home", root / "warehouse" / "hub.duckdb", root / "reports"
    _prepare_home(home)
    port = free_port()
    env = {**os.environ, **estate.env,
           "DAGSTER_HOME": str(home), "HUB_WAREHOUSE": f"duckdb:///{warehouse}",
           "HUB_STATE_DIR": str(root / "state"), "HUB_CACHE_DIR": str(root / "cache"),
           "HUB_REPORTS_DIR": str(reports), "PYTHONUNBUFFERED": "1"}
    env.pop("DAGSTER_IS_DEV_CLI", None)
    dagster = Path(sys.executable).parent / "dagster"
    log = root / "dagster-dev.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(dagster), "dev", "-w", str(REPO / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)  # its own process group: the finalizer kills the whole tree
    gql: GraphQL | None = None
    try:
        gql = GraphQL(f"http://127.0.0.1:{port}")
        dev = DagsterDev(proc=proc, port=port, home=home, log=log, warehouse=warehouse, reports=reports, gql=gql)
        _wait_ready(dev, ready_timeout_s)
        yield dev
    finally:
        if gql is not None:
            gql.close()
        _kill_tree(proc)


def _wait_ready(dev: DagsterDev, timeout_s: float) -> None:
    """Until the webserver answers, the ``hub`` location is loaded and the sensor, backfill and run-queue
    daemons report healthy; a load error or an exited server fails at once with the server's log."""
    deadline = time.monotonic() + timeout_s
    last = "not started"
    while time.monotonic() < deadline:
        if dev.proc.poll() is not None:
            raise AssertionError(f"dagster dev exited with {dev.proc.returncode}:\n{dev.log_tail()}")
        try:
            data = dev.gql(READY_QUERY)
        except (httpx.HTTPError, GraphQLError) as exc:
            last = f"webserver not answering: {exc!r}"
            time.sleep(POLL_S)
            continue
        entries = {e["name"]: e for e in data["workspaceOrError"].get("locationEntries", [])}
        entry = entries.get(LOCATION)
        if entry is None or entry["loadStatus"] != "LOADED":
            last = f"location {LOCATION}: {entry and entry['loadStatus']}"
        elif entry["locationOrLoadError"]["__typename"] == "PythonError":
            raise AssertionError(f"code location {LOCATION} failed to load: "
                                 f"{entry['locationOrLoadError']['message']}")
        else:
            daemons = {d["daemonType"]: d["healthy"]
                       for d in data["instance"]["daemonHealth"]["allDaemonStatuses"]}
            missing = [d for d in ("SENSOR", "BACKFILL", "QUEUED_RUN_COORDINATOR") if not daemons.get(d)]
            if not missing:
                return
            last = f"daemons not healthy yet: {missing}"
        time.sleep(POLL_S)
    raise AssertionError(f"dagster dev not ready after {timeout_s:.0f}s ({last}):\n{dev.log_tail()}")


READY_QUERY = """
query Ready {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries { name loadStatus locationOrLoadError { __typename ... on PythonError { message } } }
    }
  }
  instance { daemonHealth { allDaemonStatuses { daemonType healthy } } }
}
"""

RUN_FIELDS = "runId jobName status tags { key value } assetSelection { path }"

RUN_QUERY = f"""
query Run($runId: ID!) {{
  runOrError(runId: $runId) {{ __typename ... on Run {{ {RUN_FIELDS} }} ... on PythonError {{ message }} }}
}}
"""

RUNS_QUERY = f"""
query Runs($filter: RunsFilter, $limit: Int) {{
  runsOrError(filter: $filter, limit: $limit) {{
    __typename ... on Runs {{ results {{ {RUN_FIELDS} }} }} ... on PythonError {{ message }}
  }}
}}
"""

STEP_FAILURES_QUERY = """
query Failures($runId: ID!) {
  logsForRun(runId: $runId, limit: 1000) {
    __typename
    ... on EventConnection {
      events { __typename ... on ExecutionStepFailureEvent { stepKey error { message } } }
    }
  }
}
"""

TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}


def run_failures(gql: GraphQL, run_id: str) -> str:
    """The step failures of a run, for assertion messages."""
    events = gql(STEP_FAILURES_QUERY, runId=run_id)["logsForRun"].get("events", [])
    return "\n".join(f"{e['stepKey']}: {(e.get('error') or {}).get('message', '').strip()[:800]}"
                     for e in events if e["__typename"] == "ExecutionStepFailureEvent") or "(no step failure)"


def wait_run(gql: GraphQL, run_id: str, timeout_s: float = 180.0) -> dict[str, Any]:
    """The run once it has finished (success, failure or cancellation)."""
    deadline = time.monotonic() + timeout_s
    run: dict[str, Any] = {}
    while time.monotonic() < deadline:
        run = ok(gql(RUN_QUERY, runId=run_id)["runOrError"], "Run")
        if run["status"] in TERMINAL:
            return run
        time.sleep(POLL_S)
    raise AssertionError(f"run {run_id} not finished after {timeout_s:.0f}s: {run.get('status')}")


def runs(gql: GraphQL, *, tags: dict[str, str] | None = None, run_ids: list[str] | None = None,
         limit: int = 100) -> list[dict[str, Any]]:
    """Runs matching every tag (and run id), newest first."""
    flt: dict[str, Any] = {}
    if tags:
        flt["tags"] = [{"key": k, "value": v} for k, v in tags.items()]
    if run_ids is not None:
        flt["runIds"] = run_ids
    results: list[dict[str, Any]] = ok(gql(RUNS_QUERY, filter=flt, limit=limit)["runsOrError"], "Runs")["results"]
    return results


def wait_for(what: str, probe: Callable[[], Any], timeout_s: float, interval_s: float = POLL_S) -> Any:
    """Poll *probe* until it returns something truthy; fail naming *what* after *timeout_s*."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


LAUNCH_RUN_MUTATION = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message stack }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on Error { message }
  }
}
"""


def launch_assets(gql: GraphQL, assets: list[str], *, tags: dict[str, str] | None = None) -> str:
    """Materialize *assets* (unpartitioned) in one run of the implicit asset job, as the UI's button does;
    the run id."""
    params = {
        "selector": {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "pipelineName": ASSET_JOB,
                     "assetSelection": [{"path": [a]} for a in assets]},
        "mode": "default",
        "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]},
    }
    result = ok(gql(LAUNCH_RUN_MUTATION, params=params)["launchRun"], "LaunchRunSuccess")
    run_id: str = result["run"]["runId"]
    return run_id


IN_FLIGHT = ["QUEUED", "NOT_STARTED", "STARTING", "STARTED", "MANAGED", "CANCELING"]


def wait_idle(gql: GraphQL, timeout_s: float = 180.0) -> None:
    """Until no run is queued or running (the warehouse is then at rest: DuckDB has one writer)."""
    wait_for("no run in flight", lambda: not ok(gql(RUNS_QUERY, filter={"statuses": IN_FLIGHT}, limit=5)
                                                ["runsOrError"], "Runs")["results"], timeout_s)


def query_warehouse(dev: DagsterDev, sql: str, *, scratch: Path) -> list[dict[str, Any]]:
    """Rows of *sql* on a copy of the warehouse, taken while no run is in flight.

    A copy, because DuckDB locks its file per process: a connection of the test's own, even a read-only
    one, would make a run that starts meanwhile fail on the lock."""
    wait_idle(dev.gql)
    scratch.mkdir(parents=True, exist_ok=True)
    copy = scratch / f"copy-{time.monotonic_ns()}.duckdb"
    shutil.copyfile(dev.warehouse, copy)
    wal = dev.warehouse.with_name(dev.warehouse.name + ".wal")
    if wal.exists():
        shutil.copyfile(wal, copy.with_name(copy.name + ".wal"))
    try:
        with duckdb.connect(str(copy), read_only=True) as con:
            cursor = con.execute(sql)
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    finally:
        for f in (copy, copy.with_name(copy.name + ".wal")):
            f.unlink(missing_ok=True)


BACKFILL_MUTATION = """
mutation Backfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on Error { message }
  }
}
"""

BACKFILL_QUERY = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill {
      id status partitionNames error { message }
      assetSelection { path }
      runs { runId status tags { key value } }
    }
    ... on Error { message }
  }
}
"""

BACKFILL_DONE = {"COMPLETED_SUCCESS", "COMPLETED_FAILED", "COMPLETED", "FAILED", "CANCELED"}


def launch_backfill(gql: GraphQL, assets: list[str], partitions: list[str], *, title: str,
                    run_config: dict[str, Any] | None = None) -> str:
    """An asset backfill of *partitions* of *assets*, as the UI's "Materialize selected" dialog launches
    it (with *run_config*, as its launchpad would); the backfill id."""
    params: dict[str, Any] = {"assetSelection": [{"path": [a]} for a in assets], "partitionNames": partitions,
                              "title": title}
    if run_config is not None:
        params["runConfigData"] = run_config
    result = ok(gql(BACKFILL_MUTATION, params=params)["launchPartitionBackfill"], "LaunchBackfillSuccess")
    backfill_id: str = result["backfillId"]
    return backfill_id


def wait_backfill(gql: GraphQL, backfill_id: str, timeout_s: float) -> dict[str, Any]:
    """The backfill once the daemon has finished it (whatever the outcome)."""
    last: dict[str, Any] = {}

    def done() -> dict[str, Any] | None:
        nonlocal last
        last = ok(gql(BACKFILL_QUERY, id=backfill_id)["partitionBackfillOrError"], "PartitionBackfill")
        return last if last["status"] in BACKFILL_DONE else None

    try:
        result: dict[str, Any] = wait_for(f"backfill {backfill_id}", done, timeout_s, interval_s=2 * POLL_S)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last state: {last.get('status')}, runs "
                             f"{[r['status'] for r in last.get('runs', [])]}") from None
    return result


CHECKS_QUERY = """
query Checks($keys: [AssetKeyInput!]) {
  assetNodes(assetKeys: $keys) {
    assetKey { path }
    assetChecksOrError {
      __typename
      ... on AssetChecks {
        checks {
          name blocking
          executionForLatestMaterialization {
            runId status
            evaluation {
              success severity description
              metadataEntries {
                label __typename
                ... on IntMetadataEntry { intValue }
                ... on FloatMetadataEntry { floatValue }
                ... on TextMetadataEntry { text }
                ... on JsonMetadataEntry { jsonString }
                ... on MarkdownMetadataEntry { mdStr }
              }
            }
          }
        }
      }
    }
  }
}
"""


@dataclass
class CheckResult:
    """The latest execution of one asset check, as the UI shows it on the asset's Checks tab."""

    asset: str
    name: str
    blocking: bool
    status: str | None  # SUCCEEDED | FAILED | IN_PROGRESS | SKIPPED | EXECUTION_FAILED; None: never ran
    run_id: str | None
    success: bool | None
    severity: str | None
    description: str | None
    metadata: dict[str, Any]


def _metadata_value(entry: dict[str, Any]) -> Any:
    for key in ("intValue", "floatValue", "text", "mdStr"):
        if key in entry:
            return entry[key]
    if "jsonString" in entry:
        return json.loads(entry["jsonString"])
    return None


def asset_checks(gql: GraphQL, assets: list[str]) -> dict[tuple[str, str], CheckResult]:
    """Every check of *assets* with its latest execution, keyed by (asset, check name)."""
    out: dict[tuple[str, str], CheckResult] = {}
    for node in gql(CHECKS_QUERY, keys=[{"path": [a]} for a in assets])["assetNodes"]:
        asset = "/".join(node["assetKey"]["path"])
        for check in ok(node["assetChecksOrError"], "AssetChecks")["checks"]:
            execution = check["executionForLatestMaterialization"] or {}
            evaluation = execution.get("evaluation") or {}
            out[(asset, check["name"])] = CheckResult(
                asset=asset, name=check["name"], blocking=check["blocking"], status=execution.get("status"),
                run_id=execution.get("runId"), success=evaluation.get("success"),
                severity=evaluation.get("severity"), description=evaluation.get("description"),
                metadata={e["label"]: _metadata_value(e) for e in evaluation.get("metadataEntries", [])})
    return out


SENSOR_QUERY = """
query Sensor($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor { name sensorState { status } }
    ... on Error { message }
  }
}
"""

START_SENSOR_MUTATION = """
mutation Start($selector: SensorSelector!) {
  startSensor(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { status } }
    ... on Error { message }
  }
}
"""


def sensor_status(gql: GraphQL, name: str) -> str:
    """RUNNING or STOPPED, as the sensor's toggle in the UI shows it."""
    selector = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "sensorName": name}
    status: str = ok(gql(SENSOR_QUERY, selector=selector)["sensorOrError"], "Sensor")["sensorState"]["status"]
    return status


def start_sensor(gql: GraphQL, name: str) -> str:
    """Turn the sensor on (the UI's toggle); its status afterwards."""
    selector = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "sensorName": name}
    status: str = ok(gql(START_SENSOR_MUTATION, selector=selector)["startSensor"], "Sensor")["sensorState"]["status"]
    return status
