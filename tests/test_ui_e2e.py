"""The Dagster UI end to end: ``dagster dev -w workspace.yaml`` over the demo estate, driven through the
webserver's GraphQL API, the way the UI's own buttons drive it.

What ``hub ui`` promises and only a real server shows: the code location loads from ``workspace.yaml``;
a backfill launched from the UI lands every partition exactly once through the daemon, run queue and
the one-slot ``hub_duckdb`` pool; the file sensor, on by default, turns a file dropped on the bank's SFTP
server into a run that loads it and writes the ``_hub_files`` ledger; and expectation suites reach the
UI as asset checks, a failure with the values that failed it. Everything runs for real: demo services on
loopback, a temporary ``DAGSTER_HOME`` with the hub's ``dagster.yaml``, a temporary warehouse.

The three tests share one server (module fixture) to keep the runtime down on small machines: starting
``dagster dev`` is cheap, but every Dagster run is a process of its own and DuckDB takes one at a time.
The new statement is dropped as soon as the server is up, so the sensor's stability wait (two looks
30 s apart) overlaps the backfill.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from hub.demo.bank import statement
from hub.demo.erp import orders_for
from tests.conftest import DEMO_ESTATE
from tests.dagster_ui import (
    DagsterDev,
    DemoEstate,
    asset_checks,
    dagster_dev,
    demo_estate,
    launch_assets,
    launch_backfill,
    run_failures,
    runs,
    sensor_status,
    start_sensor,
    wait_backfill,
    wait_for,
    wait_run,
)
from tests.dagster_ui import query_warehouse as _query

#: Runs `dagster dev` over the demo spec, whose stream sensors drain the demo's fixed RabbitMQ queue and hold its
#: MQTT session: one such demo at a time (tests/conftest.py, DEMO_ESTATE).
pytestmark = [pytest.mark.xdist_group(DEMO_ESTATE), pytest.mark.slow, pytest.mark.timeout(600)]

#: Three days: enough to show one run per day, each landing its own rows once (the runs take turns on the
#: warehouse's writer lock, so each day added costs a run's whole time; a week took 2.5 minutes under load).
DAYS = [(date(2024, 1, 1) + timedelta(days=n)).isoformat() for n in range(3)]
#: The demo pipeline's daily-partitioned assets (erp_order_lines loads with erp_orders, in one transaction).
DAILY = ["crm_contacts", "erp_orders", "erp_order_lines"]
#: The backfill's runs execute their steps in the run's process: the default executor starts a process per
#: step (four per day here, each loading the code location), which made the week take 6 minutes instead of
#: 2 on a busy 2-CPU machine. The pool, queue and daemon path is the same; the browser test and the
#: injected-data run below use the default executor.
IN_PROCESS: dict[str, Any] = {"execution": {"config": {"in_process": {}}}}
SENSOR = "bank_statements_sensor"
NEW_DAY = date(2024, 1, 9)  # the statement dropped while the UI runs (the bank starts with an empty outbox)
NEW_FILE = f"statements_{NEW_DAY:%Y%m%d}.csv"
BAD_EMAIL = "not-an-email"
BAD_CUSTOMER = 7


@dataclass
class Ui:
    dev: DagsterDev
    estate: DemoEstate
    dropped: Path
    scratch: Path

    def query(self, sql: str) -> list[dict[str, Any]]:
        return _query(self.dev, sql, scratch=self.scratch)


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ui]:
    """One ``dagster dev`` over one demo estate for the module; the new bank statement dropped at once."""
    root = tmp_path_factory.mktemp("ui_e2e")
    with demo_estate(root, bank_days=0) as estate, dagster_dev(root, estate) as dev:
        dropped = estate.bank.drop(NEW_DAY)  # written as the bank does: a .filepart, then renamed
        yield Ui(dev=dev, estate=estate, dropped=dropped, scratch=root / "scratch")


def test_backfill_of_days_lands_every_day_exactly_once(ui: Ui) -> None:
    gql = ui.dev.gql
    nodes = gql("""{ assetNodes { assetKey { path } groupName partitionDefinition { type } } }""")["assetNodes"]
    daily = sorted(n["assetKey"]["path"][0] for n in nodes
                   if n["groupName"] == "demo" and (n["partitionDefinition"] or {}).get("type") == "TIME_WINDOW")
    assert daily == sorted(DAILY), "the demo spec's daily assets changed; update DAILY"

    backfill_id = launch_backfill(gql, DAILY, DAYS, title="e2e: three days of the demo pipeline", run_config=IN_PROCESS)
    backfill = wait_backfill(gql, backfill_id, timeout_s=420)
    failures = {r["runId"]: run_failures(gql, r["runId"]) for r in backfill["runs"] if r["status"] != "SUCCESS"}
    assert backfill["status"] == "COMPLETED_SUCCESS", (backfill["status"], backfill["error"], failures)
    assert sorted(backfill["partitionNames"]) == DAYS
    # one run per day (a partition of a daily asset is never materialized twice), all tagged with the backfill
    tags = [{t["key"]: t["value"] for t in r["tags"]} for r in backfill["runs"]]
    assert sorted(t["dagster/partition"] for t in tags) == DAYS
    assert {t["dagster/backfill"] for t in tags} == {backfill_id}
    assert {r["status"] for r in backfill["runs"]} == {"SUCCESS"}

    # the warehouse: each day's rows in its partition, exactly once
    contacts = {r["day"]: r for r in ui.query(
        "select _hub_partition as day, count(*) as n, count(distinct contact_id) as ids, "
        "min(cast(occurred_at at time zone 'UTC' as date)) as first, "
        "max(cast(occurred_at at time zone 'UTC' as date)) as last from crm_contacts group by all")}
    orders = {r["day"]: r for r in ui.query(
        "select _hub_partition as day, count(*) as n, count(distinct order_id) as ids, sum(amount) as total "
        "from erp_orders group by all")}
    lines = {r["day"]: r for r in ui.query(
        "select _hub_partition as day, count(*) as n, count(distinct (order_id, line_no)) as ids "
        "from erp_order_lines group by all")}
    assert sorted(contacts) == sorted(orders) == sorted(lines) == DAYS
    crm = ui.estate.crm.data.contacts
    for key in DAYS:
        day = date.fromisoformat(key)
        want_contacts = [c for c in crm if c["occurred_at"].startswith(key)]
        want_orders = orders_for(day, day + timedelta(days=1))
        assert contacts[key]["n"] == contacts[key]["ids"] == len(want_contacts) > 0, key
        assert contacts[key]["first"] == contacts[key]["last"] == day, key
        assert orders[key]["n"] == orders[key]["ids"] == len(want_orders) > 0, key
        assert orders[key]["total"] == sum(Decimal(str(o["Amount"])) for o in want_orders), key
        assert lines[key]["n"] == lines[key]["ids"] == sum(len(o["Lines"]) for o in want_orders), key
    for table in DAILY:
        quarantined = ui.query(f"select count(*) as n from information_schema.tables "
                               f"where table_name = '{table}__quarantine'")[0]["n"]
        if quarantined:
            assert ui.query(f'select count(*) as n from "{table}__quarantine"')[0]["n"] == 0, table

    # every check of the backfilled assets ran in the backfill and passed (for the last day, the latest)
    checks = asset_checks(gql, DAILY)
    assert checks, "the daily assets have expectation suites and contract checks"
    assert {c.name for c in checks.values() if c.asset == "erp_orders"} >= {
        "expect_column_values_to_be_unique__order_id", "expect_column_values_to_be_in_set__status", "contract"}
    backfill_runs = {r["runId"] for r in backfill["runs"]}
    for check in checks.values():
        assert check.status == "SUCCEEDED" and check.success, check
        assert check.run_id in backfill_runs, check


def test_sensor_loads_a_file_dropped_on_the_bank_sftp(ui: Ui) -> None:
    gql = ui.dev.gql
    # on by default (the spec's sensor is declared RUNNING); an operator's toggle would be startSensor
    status = sensor_status(gql, SENSOR)
    if status != "RUNNING":
        pytest.fail(f"{SENSOR} should run by default, is {status}")
    assert start_sensor(gql, SENSOR) == "RUNNING"  # idempotent: what the UI's toggle sends

    def sensor_run() -> dict[str, Any] | None:
        found = runs(gql, tags={"dagster/sensor_name": SENSOR, "dagster/partition": NEW_FILE})
        return found[0] if found else None

    run = wait_for(f"the sensor's run for {NEW_FILE}", sensor_run, timeout_s=240)
    run = wait_run(gql, run["runId"], timeout_s=180)
    assert run["status"] == "SUCCESS", run_failures(gql, run["runId"])
    assert run["jobName"] == "bank_statements_job"
    tags = {t["key"]: t["value"] for t in run["tags"]}
    assert tags["hub/file"] == f"/outbox/{NEW_FILE}"
    assert len(runs(gql, tags={"dagster/sensor_name": SENSOR})) == 1, "one file, one run"

    # the statement's lines, in the file's own partition
    text = statement(NEW_DAY)
    want = sorted((f[6], Decimal(f[4].replace(",", "."))) for f in (line.split(";") for line in text.splitlines()[1:]))
    assert want, "the demo statement has lines"
    got = ui.query(f"select reference, amount, booked_on from bank_statements where _hub_partition = '{NEW_FILE}'")
    assert sorted((r["reference"] or "", r["amount"]) for r in got) == want
    assert {r["booked_on"] for r in got} == {NEW_DAY}
    assert ui.query("select count(*) as n from bank_statements")[0]["n"] == len(want)

    # the ledger: one row, loaded by this run, with the file's hash and row count
    ledger = ui.query("select file, path, status, rows, run_id, sha256, size from _hub_files")
    assert ledger == [{"file": NEW_FILE, "path": f"/outbox/{NEW_FILE}", "status": "loaded", "rows": len(want),
                       "run_id": run["runId"], "sha256": hashlib.sha256(text.encode("cp1252")).hexdigest(),
                       "size": len(text.encode("cp1252"))}]
    # archived after the commit (after: move_to /archive)
    bank_root = ui.estate.bank.root
    assert not ui.dropped.exists()
    assert (bank_root / "archive" / NEW_FILE).read_bytes() == text.encode("cp1252")


def test_asset_checks_report_injected_bad_data(ui: Ui) -> None:
    gql = ui.dev.gql
    crm = ui.estate.crm

    def bad_email(path: str, body: dict[str, Any]) -> dict[str, Any]:
        """One customer with an e-mail address the crm_customers suite's regex rejects."""
        if path.endswith("/customers"):
            body = {**body, "data": [{**r, "email": BAD_EMAIL} if r["id"] == BAD_CUSTOMER else r
                                     for r in body["data"]]}
        return body

    crm.rewrite = bad_email
    try:
        run_id = launch_assets(gql, ["crm_customers"], tags={"hub/test": "injected bad data"})
        run = wait_run(gql, run_id, timeout_s=240)
    finally:
        crm.rewrite = None
    # severity error: the check is blocking, so its failure fails the step (the rows are loaded all the same)
    assert run["status"] == "FAILURE", run
    assert "expect_column_values_to_match_regex__email" in run_failures(gql, run_id)
    assert ui.query(f"select email from crm_customers where id = {BAD_CUSTOMER}") == [{"email": BAD_EMAIL}]

    checks = {name: c for (asset, name), c in asset_checks(gql, ["crm_customers"]).items()}
    failing = checks.pop("expect_column_values_to_match_regex__email")
    assert (failing.status, failing.success, failing.severity, failing.run_id) == ("FAILED", False, "ERROR", run_id)
    assert failing.blocking
    assert failing.description == "1 of 300 rows unexpected (0.33%)"
    md = failing.metadata
    assert (md["unexpected_count"], md["element_count"], md["rows_validated"]) == (1, 300, 300)
    assert md["unexpected_values"] == [BAD_EMAIL]
    assert [(r["id"], r["email"]) for r in md["failing_rows_json"]] == [(BAD_CUSTOMER, BAD_EMAIL)]
    assert BAD_EMAIL in md["failing_rows"]
    assert md["severity"] == "error" and md["partition"] == "(whole table)"

    # the contract check is a step after the asset's: the failed blocking check stopped the run before it, and
    # the UI says so (EXECUTION_FAILED, not a pass or a fail of its own)
    contract = checks.pop("contract")
    assert (contract.status, contract.run_id, contract.success) == ("EXECUTION_FAILED", run_id, None), contract
    # every other expectation of the suite ran on the same rows in the same run and passed, the warn-only one too
    assert "expect_column_values_to_not_be_null__created_at" in checks and len(checks) == 7, sorted(checks)
    for name, check in checks.items():
        assert (check.status, check.success, check.run_id) == ("SUCCEEDED", True, run_id), (name, check)


def _rabbit_up() -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.skipif(not _rabbit_up(), reason="RabbitMQ is not listening on 127.0.0.1:5672")
def test_stream_sensor_drains_the_erp_queue_and_its_run_absorbs(ui: Ui) -> None:
    """The demo's stream sources start their sensors running (no `hub listen` in the demo): the ERP's order
    events published on RabbitMQ are drained by erp_order_events_sensor, which requests one run that absorbs
    them into erp_order_events, as the UI shows it."""
    import asyncio
    from datetime import UTC, datetime

    from hub.demo.erp import order_events, orders, publish_order_events

    sensor = "erp_order_events_sensor"
    assert sensor_status(ui.dev.gql, sensor) == "RUNNING"
    day = datetime(2024, 1, 3, tzinfo=UTC)
    events = order_events(orders(), day, day + timedelta(days=1))
    assert asyncio.run(publish_order_events("amqp://guest:guest@127.0.0.1:5672/", events)) == len(events) > 0

    def sensor_run() -> dict[str, Any] | None:
        found = runs(ui.dev.gql, tags={"dagster/sensor_name": sensor})
        return found[0] if found else None

    run = wait_for("the stream sensor's run", sensor_run, timeout_s=240)
    run = wait_run(ui.dev.gql, run["runId"], timeout_s=180)
    assert run["status"] == "SUCCESS", run_failures(ui.dev.gql, run["runId"])
    assert run["jobName"] == "erp_order_events_job"
    ids = {f"{e[0]}" for e in events}
    got = ui.query("select count(*) as n from erp_order_events")[0]["n"]
    assert got >= len(ids)  # the week's events of that day at least (the queue may hold earlier demo events)
