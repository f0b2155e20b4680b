"""The demo pipeline end to end through Dagster, against the demo CRM over real HTTP."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from typer.testing import CliRunner

from hub.cli.main import app
from hub.dagster import DUCKDB_POOL, build_definitions
from hub.dagster.instance import ensure_pools
from hub.dagster.run import partition_keys, run_pipeline
from hub.demo.bank import BankService
from hub.demo.crm import CRMService
from hub.errors import HubError
from hub.spec import loads
from hub.warehouse import DuckDBWarehouse
from tests.conftest import REPO, demo_spec_text

pytestmark = pytest.mark.slow


def _pipeline(tmp_path: Path):  # type: ignore[no-untyped-def]
    return loads(demo_spec_text(), tmp_path / "demo.yaml")


def _snapshot(target: Path | str) -> dict[str, list[tuple[object, ...]]]:
    """Every table's rows (run-specific columns left out), sorted: a DuckDB file, or a warehouse URL."""
    from hub.warehouse import connect

    wh = connect(target if isinstance(target, str) else f"duckdb:///{target}")
    out = {}
    for table in wh.tables():
        cols = [c for c in wh.query(f'select * from "{table}" limit 0').column_names
                if c not in ("_hub_loaded_at", "_hub_run_id")]
        sel = ", ".join(f'"{c}"' for c in cols)
        out[table] = [tuple(r.values()) for r in wh.query(f'select {sel} from "{table}" order by all').to_pylist()]
    return out


def test_two_partitions_then_rerun_is_identical(crm: CRMService, warehouse_path: Path, tmp_path: Path) -> None:
    pipeline = _pipeline(tmp_path)
    instance = dg.DagsterInstance.ephemeral()
    outcomes = run_pipeline(pipeline, instance, partitions=["2024-01-02", "2024-01-03"])
    files = [f"file statements_202401{d:02d}.csv" for d in range(2, 9)]
    assert [(o.partition, o.success) for o in outcomes] == [
        ("2024-01-02", True), ("2024-01-03", True), *[(f, True) for f in files], (None, True)], \
        [o.error for o in outcomes]
    assert set(outcomes[-1].assets) == {"contacts_by_region", "revenue_by_region", "order_payments", "stock_cover",
                                        "open_orders_to_bank"}, "models and exports run once, last"
    first = _snapshot(warehouse_path)
    expected_day2 = [c for c in crm.data.contacts if c["occurred_at"].startswith("2024-01-02")]
    expected_day3 = [c for c in crm.data.contacts if c["occurred_at"].startswith("2024-01-03")]
    assert len(first["crm_contacts"]) == len(expected_day2) + len(expected_day3)
    assert len(first["crm_customers"]) == 300
    assert outcomes[0].row_counts["crm_customers"] == 300
    assert outcomes[-1].row_counts["contacts_by_region"] == len(first["contacts_by_region"])
    # Re-materialize one partition (and the rest again): identical content, no duplicates.
    again = run_pipeline(pipeline, instance, partitions=["2024-01-02"])
    assert again[0].success, again[0].error
    assert _snapshot(warehouse_path) == first
    wh = DuckDBWarehouse(f"duckdb:///{warehouse_path}")
    dupes = wh.query("select count(*) - count(distinct contact_id) as d from crm_contacts").column("d")[0].as_py()
    assert dupes == 0
    # Dagster recorded the partitions as materialized with row counts
    key = dg.AssetKey("crm_contacts")
    assert instance.get_materialized_partitions(key) == {"2024-01-02", "2024-01-03"}
    event = instance.get_latest_materialization_event(key)
    assert event is not None and event.asset_materialization is not None
    md = event.asset_materialization.metadata
    assert md["dagster/row_count"].value == len(expected_day2)
    assert [c.name for c in md["dagster/column_schema"].value.columns][:3] == ["contact_id", "customer_id", "channel"]
    assert "***" not in str(md["hub/source_url"].value) and "/api/contacts" in str(md["hub/source_url"].value)


def test_failure_midway_leaves_warehouse_unchanged(crm: CRMService, warehouse_path: Path, tmp_path: Path) -> None:
    pipeline = _pipeline(tmp_path)
    instance = dg.DagsterInstance.ephemeral()
    assert all(o.success for o in run_pipeline(pipeline, instance, partitions=["2024-01-04"]))
    before = _snapshot(warehouse_path)
    # The CRM breaks after the first page of contacts: the extraction fails half-way through.
    crm.fail_after(1)
    outcome = run_pipeline(pipeline, instance, assets=["crm_contacts"], partitions=["2024-01-04"])[0]
    assert not outcome.success
    assert outcome.error is not None and "HTTP 500" in outcome.error and "/api/contacts" in outcome.error
    assert crm.requests > 1, "the failure happened mid-pagination, after a page was read"
    assert _snapshot(warehouse_path) == before
    crm.fail_after(None)


def test_wrong_token_is_a_clear_error(crm: CRMService, warehouse_path: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_TOKEN", "wrong-token-value")
    outcome = run_pipeline(_pipeline(tmp_path), dg.DagsterInstance.ephemeral(), assets=["crm_customers"],
                           partitions=["2024-01-04"])[0]
    assert not outcome.success and outcome.error is not None
    assert "HTTP 401" in outcome.error and "wrong-token-value" not in outcome.error


def test_partition_keys(tmp_path: Path) -> None:
    p = _pipeline(tmp_path)
    assert partition_keys(p, start="2024-01-30", end="2024-02-02") == [
        "2024-01-30", "2024-01-31", "2024-02-01", "2024-02-02"]
    with pytest.raises(HubError, match="'2024-13-01' is not a partition"):
        partition_keys(p, partition="2024-13-01")
    with pytest.raises(HubError, match="is --from after --to"):
        partition_keys(p, start="2024-02-02", end="2024-01-30")


def test_definitions_from_specs(dagster_home: Path) -> None:
    defs = build_definitions(REPO / "pipelines")
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == {"crm_customers", "crm_products", "crm_contacts", "contacts_by_region", "erp_orders",
                    "erp_order_lines", "revenue_by_region", "bank_statements", "order_payments", "open_orders_to_bank",
                    "inventory_warehouses", "inventory_levels", "stock_cover", "erp_order_events",
                    "inventory_movements", "bank_payment_events", "reconcile_payments"}
    # the demo's stream sources: a sensor draining the broker into the event store, a job absorbing it
    assert defs.resolve_sensor_def("erp_order_events_sensor").job_name == "erp_order_events_job"
    assert defs.resolve_sensor_def("inventory_movements_sensor").job_name == "inventory_movements_job"
    for name in ("erp_order_events", "inventory_movements", "bank_payment_events"):  # `sensor: running` in the demo
        assert defs.resolve_sensor_def(f"{name}_sensor").default_status == dg.DefaultSensorStatus.RUNNING
    statements = graph.get(dg.AssetKey("bank_statements"))
    assert isinstance(statements.partitions_def, dg.DynamicPartitionsDefinition), "one partition per file"
    assert defs.resolve_sensor_def("bank_statements_sensor").job_name == "bank_statements_job"
    assert set(graph.get(dg.AssetKey("open_orders_to_bank")).parent_keys) == {dg.AssetKey("order_payments")}
    contacts = graph.get(dg.AssetKey("crm_contacts"))
    assert contacts.partitions_def is not None and contacts.group_name == "demo"
    assert graph.get(dg.AssetKey("crm_customers")).partitions_def is None
    assert set(graph.get(dg.AssetKey("contacts_by_region")).parent_keys) == {
        dg.AssetKey("crm_contacts"), dg.AssetKey("crm_customers")}
    assets = {k.to_user_string(): a for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition)
              for k in a.keys}
    assert assets["crm_contacts"].specs_by_key[dg.AssetKey("crm_contacts")].kinds == {"rest", "duckdb"}
    assert assets["erp_order_lines"].specs_by_key[dg.AssetKey("erp_order_lines")].kinds == {"soap", "duckdb"}
    assert assets["erp_orders"] is assets["erp_order_lines"], "a source and its child table are one multi-asset"
    assert graph.get(dg.AssetKey("erp_order_lines")).partitions_def is not None
    assert {name: a.op.pool for name, a in assets.items()} == dict.fromkeys(assets, DUCKDB_POOL)
    schedule = defs.resolve_schedule_def("demo_schedule")
    assert schedule.cron_schedule == "0 6 * * *"
    # the pool is limited to one writer on the instance
    instance = dg.DagsterInstance.get()
    ensure_pools(instance)
    assert instance.event_log_storage.get_concurrency_info(DUCKDB_POOL).slot_count == 1


def test_schedule_requests_last_complete_partition(dagster_home: Path) -> None:
    defs = build_definitions(REPO / "pipelines")
    schedule = defs.resolve_schedule_def("demo_schedule")
    from datetime import UTC, datetime

    ctx = dg.build_schedule_context(scheduled_execution_time=datetime(2024, 3, 5, 6, 0, tzinfo=UTC),
                                    repository_def=defs.get_repository_def())
    result = schedule.evaluate_tick(ctx)
    assert [r.partition_key for r in result.run_requests or []] == ["2024-03-04"]


def test_dagster_definitions_validate() -> None:
    dagster = Path(sys.executable).parent / "dagster"
    proc = subprocess.run([str(dagster), "definitions", "validate", "-w", "workspace.yaml"], cwd=REPO,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "All code locations passed validation" in proc.stderr + proc.stdout


def test_cli_validate_and_run(crm: CRMService, warehouse_path: Path, dagster_home: Path, tmp_path: Path) -> None:
    spec = tmp_path / "demo.yaml"
    spec.write_text(demo_spec_text())
    runner = CliRunner()
    res = runner.invoke(app, ["validate", str(spec)])
    assert res.exit_code == 0 and "pipeline demo, 10 source(s), 4 model(s)" in res.output.replace("\n", " ")
    res = runner.invoke(app, ["run", str(spec), "--from", "2024-01-05", "--to", "2024-01-06"])
    assert res.exit_code == 0, res.output
    assert "partition 2024-01-05" in res.output and "partition 2024-01-06" in res.output
    wh = DuckDBWarehouse(f"duckdb:///{warehouse_path}")
    parts = wh.query("select distinct _hub_partition p from crm_contacts order by p").column("p").to_pylist()
    assert parts == ["2024-01-05", "2024-01-06"]
    # runs are recorded for hub runs, and their materializations reported to the local instance the UI reads
    from hub.dagster.journal import report_pending
    from hub.dagster.run import recent_runs

    instance = dg.DagsterInstance.get()
    report_pending(instance, dagster_home)
    runs = recent_runs(instance, 50, dagster_home)
    assert len(runs) == 2 + 7 + 1, "two days, seven statements, the models"
    assert {r.job for r in runs} == {"hub run"} and {r.status for r in runs} == {"SUCCESS"}
    contacts = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=dg.AssetKey("crm_contacts")), 10)
    assert sorted(r.event_log_entry.asset_materialization.partition for r in contacts.records  # type: ignore[union-attr]
                  ) == ["2024-01-05", "2024-01-06"]
    bad = runner.invoke(app, ["run", str(spec), "--partition", "yesterday"])
    assert bad.exit_code == 1 and "'yesterday' is not a partition" in bad.output


def test_demo_pipeline_into_postgresql_matches_duckdb(crm: CRMService, bank: BankService, warehouse_path: Path,
                                                      tmp_path: Path, pg_url: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Every feature the pipeline uses (partition replace, merge, child tables, the file ledger, the
    incremental mark, models, exports) on a PostgreSQL warehouse gives the DuckDB warehouse's tables."""
    pipeline = _pipeline(tmp_path)
    outcomes = run_pipeline(pipeline, dg.DagsterInstance.ephemeral(), partitions=["2024-01-02"])
    assert all(o.success for o in outcomes), [o.error for o in outcomes]
    in_duckdb = _snapshot(warehouse_path)

    for day in sorted(set(bank.dropped)):  # the first run archived the statements: the bank drops them again
        bank.drop(day)
    url = f"{pg_url}?schema=demo_e2e"
    monkeypatch.setenv("HUB_WAREHOUSE", url)
    pipeline = _pipeline(tmp_path)
    assert pipeline.warehouse_kind == "postgres"
    instance = dg.DagsterInstance.ephemeral()
    outcomes = run_pipeline(pipeline, instance, partitions=["2024-01-02"])
    assert all(o.success for o in outcomes), [o.error for o in outcomes]
    in_postgres = _snapshot(url)
    assert set(in_postgres) == set(in_duckdb)
    for table, rows in in_duckdb.items():
        assert len(in_postgres[table]) == len(rows), table
        assert [tuple(map(str, r)) for r in in_postgres[table]] == [tuple(map(str, r)) for r in rows], table
    # re-running the partition changes nothing; the ledger and the incremental mark live in PostgreSQL too
    again = run_pipeline(pipeline, instance, assets=["crm_contacts", "inventory_levels"], partitions=["2024-01-02"])
    assert all(o.success for o in again), [o.error for o in again]
    assert _snapshot(url) == in_postgres
    from hub.warehouse import connect

    internal = connect(url).tables(internal=True)
    assert "_hub_files" in internal and "_hub_state" in internal
