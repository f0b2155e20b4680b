"""Secrets never leave the process: the demo pipeline runs (and fails) with distinctive credentials, then every
output is scanned for them — logs, CLI output, error messages, the Dagster event log and run records, the
warehouse (every table), the reports and the agent's audit table, and every byte written under the test's
directory (Dagster's storage and compute logs, the DuckDB file, Data Docs)."""

from __future__ import annotations

import logging
from pathlib import Path

import dagster as dg
import pytest
from dagster._serdes import serialize_value
from typer.testing import CliRunner

from hub.agent.catalog import build_catalog
from hub.agent.guard import AUDIT_TABLE, Guard
from hub.cli.main import app
from hub.dagster.run import run_pipeline
from hub.demo.bank import DEMO_PASSWORD as BANK_PASSWORD
from hub.demo.crm import DEMO_TOKEN, CRMService
from hub.demo.erp import DEMO_PASSWORD as ERP_PASSWORD
from hub.demo.erp import ERPService
from hub.spec import loads
from hub.warehouse import DuckDBWarehouse
from tests.conftest import demo_spec_text

pytestmark = pytest.mark.slow

WRONG_ERP_PASSWORD = "wrong-erp-pass-Qz81xK"
WRONG_CRM_TOKEN = "wrong-crm-token-Vb27pL"
SECRETS = (DEMO_TOKEN, ERP_PASSWORD, BANK_PASSWORD, WRONG_ERP_PASSWORD, WRONG_CRM_TOKEN)


def _leaks(text: str, secrets: tuple[str, ...] = SECRETS) -> list[str]:
    return [s for s in secrets if s in text]


def _scan_files(root: Path, secrets: tuple[str, ...]) -> list[tuple[str, str]]:
    """Every file under *root* whose bytes contain a secret (raw or UTF-16, as some logs store text)."""
    found = []
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        data = path.read_bytes()
        for s in secrets:
            if s.encode() in data or s.encode("utf-16-le") in data:
                found.append((str(path.relative_to(root)), s))
    return found


def _warehouse_text(path: Path, expect: tuple[str, ...] = (AUDIT_TABLE,)) -> str:
    wh = DuckDBWarehouse(f"duckdb:///{path}")
    tables = wh.query("select table_name from information_schema.tables").column("table_name").to_pylist()
    assert set(expect) <= set(tables), tables
    return "\n".join(f"{t}: {wh.query('select * from ' + chr(34) + t + chr(34)).to_pylist()}" for t in tables)


def _event_log_text(instance: dg.DagsterInstance) -> str:
    parts = []
    for run in instance.get_runs():
        parts.append(serialize_value(run))
        parts.extend(serialize_value(entry) for entry in instance.all_logs(run.run_id))
    for kind in (dg.DagsterEventType.ASSET_MATERIALIZATION, dg.DagsterEventType.ASSET_CHECK_EVALUATION):
        parts.extend(serialize_value(r) for r in instance.get_event_records(dg.EventRecordsFilter(event_type=kind)))
    return "\n".join(parts)


def test_no_secret_reaches_any_output(crm: CRMService, erp: ERPService, warehouse_path: Path, dagster_home: Path,
                                      tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
                                      capfd: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("HUB_REPORTS_DIR", str(tmp_path / "reports"))
    spec = tmp_path / "demo.yaml"
    spec.write_text(demo_spec_text())
    pipeline = loads(spec.read_text(), spec)
    instance = dg.DagsterInstance.get()  # the instance under $DAGSTER_HOME: its files are scanned below
    errors: list[str] = []

    # 1. a good run of every asset: sources, file drop, models, export, expectation suites (Data Docs)
    ok = run_pipeline(pipeline, instance, partitions=["2024-01-02"], quiet=False)
    assert all(o.success for o in ok), [o.error for o in ok]

    # 2. failing runs: a wrong ERP password, a wrong CRM token, a CRM that breaks mid-pagination
    monkeypatch.setenv("ERP_PASSWORD", WRONG_ERP_PASSWORD)
    bad = run_pipeline(pipeline, instance, assets=["erp_orders"], partitions=["2024-01-03"], quiet=False)[0]
    assert not bad.success and bad.error
    errors.append(bad.error)
    monkeypatch.setenv("ERP_PASSWORD", ERP_PASSWORD)
    monkeypatch.setenv("CRM_TOKEN", WRONG_CRM_TOKEN)
    bad = run_pipeline(pipeline, instance, assets=["crm_customers"], partitions=["2024-01-03"], quiet=False)[0]
    assert not bad.success and bad.error and "HTTP 401" in bad.error
    errors.append(bad.error)
    monkeypatch.setenv("CRM_TOKEN", DEMO_TOKEN)
    crm.fail_after(1)
    bad = run_pipeline(pipeline, instance, assets=["crm_contacts"], partitions=["2024-01-03"], quiet=False)[0]
    crm.fail_after(None)
    assert not bad.success and bad.error and "HTTP 500" in bad.error
    errors.append(bad.error)

    # 3. `hub run` through the CLI (stdout and stderr captured), good and failing
    runner = CliRunner()
    cli = [runner.invoke(app, ["run", str(spec), "--partition", "2024-01-04"])]
    assert cli[0].exit_code == 0, cli[0].output
    monkeypatch.setenv("ERP_PASSWORD", WRONG_ERP_PASSWORD)
    cli.append(runner.invoke(app, ["run", str(spec), "--asset", "erp_orders", "--partition", "2024-01-05"]))
    assert cli[-1].exit_code != 0
    monkeypatch.setenv("ERP_PASSWORD", ERP_PASSWORD)

    # 4. contract snapshot and test (reports), and a guarded agent call with a secret among its parameters
    contracts = tmp_path / "contracts"
    cli.append(runner.invoke(app, ["contracts", "snapshot", str(spec), "--dir", str(contracts)]))
    assert cli[-1].exit_code == 0, cli[-1].output
    cli.append(runner.invoke(app, ["contracts", "test", str(spec), "--dir", str(contracts),
                                   "--reports", str(tmp_path / "reports")]))
    assert cli[-1].exit_code == 0, cli[-1].output
    guard = Guard(build_catalog([pipeline]), actor="mallory")
    for params in ({"per_page": 2, "q": f"token {DEMO_TOKEN}", "password": ERP_PASSWORD},  # refused: unknown
                   {"per_page": f"2{DEMO_TOKEN}"},  # sent: the CRM answers 4xx/5xx with the value in the URL
                   {"per_page": 1, "page": 1}):
        errors.append(str(guard.call("crm.get_customers", params, max_rows=1).to_dict()))
    cli.append(runner.invoke(app, ["agent", "run", "crm.get_customers", "--spec", str(spec),
                                   "--params", f'{{"per_page": 1, "note": "{BANK_PASSWORD}"}}']))
    cli.append(runner.invoke(app, ["agent", "run", "erp.GetOrders", "--spec", str(spec),
                                   "--params", f'{{"PageSize": 1, "Page": "{ERP_PASSWORD}"}}']))

    # --- the scan -------------------------------------------------------------------------------------
    captured = capfd.readouterr()
    outputs = {
        "errors": "\n".join(errors),
        "caplog": caplog.text + "\n".join(r.getMessage() for r in caplog.records),
        "stdout/stderr": captured.out + captured.err,
        "cli": "\n".join(r.output + (r.stderr if r.stderr_bytes else "") + repr(r.exception) for r in cli),
        "event log": _event_log_text(instance),
        "warehouse": _warehouse_text(warehouse_path, (AUDIT_TABLE, "_hub_files", "_hub_state", "_hub_calls")),
    }
    assert (tmp_path / "reports" / "data_docs").is_dir() and (tmp_path / "reports" / "contracts.html").is_file()
    leaks = {where: _leaks(text) for where, text in outputs.items() if _leaks(text)}
    assert not leaks, leaks
    spooled = tmp_path / "inventory"  # the inventory database itself holds no secret; everything else is scanned
    files = [f for f in _scan_files(tmp_path, SECRETS) if not (tmp_path / f[0]).is_relative_to(spooled)]
    assert not files, files


SQL_PASSWORD = "sql-url-pass-Hn64wT"


def test_password_in_sql_url_is_never_shown(pg_url: str, warehouse_path: Path, dagster_home: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
                                            capfd: pytest.CaptureFixture[str]) -> None:
    """The inventory on PostgreSQL, its URL carrying a password (the test server trusts loopback, so any password
    connects): a good run over ADBC and a run against a database that does not exist leak it nowhere."""
    from hub.demo.inventory import InventoryDb

    caplog.set_level(logging.DEBUG)
    url = pg_url.replace("postgresql://postgres@", f"postgresql://postgres:{SQL_PASSWORD}@", 1)
    assert SQL_PASSWORD in url
    db = InventoryDb(url=url).start()
    spec = tmp_path / "demo.yaml"
    spec.write_text(demo_spec_text())
    pipeline = loads(spec.read_text(), spec)
    instance = dg.DagsterInstance.get()
    monkeypatch.setenv("HUB_DEMO_INVENTORY_URL", url)
    try:
        ok = run_pipeline(pipeline, instance, assets=["inventory_warehouses", "inventory_levels"], quiet=False)
        assert all(o.success for o in ok), [o.error for o in ok]
        monkeypatch.setenv("HUB_DEMO_INVENTORY_URL", url.rsplit("/", 1)[0] + "/no_such_db_x")
        bad = run_pipeline(pipeline, instance, assets=["inventory_levels"], quiet=False)[0]
        assert not bad.success and bad.error
        runner = CliRunner()
        cli = runner.invoke(app, ["run", str(spec), "--asset", "inventory_warehouses"])
        assert cli.exit_code != 0
        audit = Guard(build_catalog([pipeline]), actor="mallory").call("inventory.warehouses", {"limit": 1})
    finally:
        db.engine.dispose()
    captured = capfd.readouterr()
    outputs = {"error": bad.error, "cli": cli.output + repr(cli.exception), "audit": str(audit.to_dict()),
               "caplog": caplog.text, "stdout/stderr": captured.out + captured.err,
               "event log": _event_log_text(instance), "warehouse": _warehouse_text(warehouse_path)}
    leaks = {where: _leaks(text, (SQL_PASSWORD,)) for where, text in outputs.items() if _leaks(text, (SQL_PASSWORD,))}
    assert not leaks, leaks
    files = [f for f in _scan_files(tmp_path, (SQL_PASSWORD,))]
    assert not files, files


def test_library_log_records_are_masked(caplog: pytest.LogCaptureFixture) -> None:
    """Third-party loggers (httpx logs every request URL at INFO) are masked as records are created."""
    from hub.runtime.secrets import register

    register("lib-secret-Zx91")
    with caplog.at_level(logging.INFO):
        logging.getLogger("httpx").info("HTTP Request: GET %s", "http://h/api?q=lib-secret-Zx91")
        logging.getLogger("some.lib").warning("plain %d", 3)
    assert "lib-secret-Zx91" not in caplog.text and "GET http://h/api?q=***" in caplog.text
    assert "plain 3" in caplog.text


def test_credentials_inside_address_fields_and_keys_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    """An address field stays readable, but a reference where a URL carries credentials (user info, query) is a
    secret, and so is any ``key:`` (a webhook API key, a private key given as text)."""
    from adapters.sql.config import SqlSystemConfig
    from adapters.webhook.config import ApiKeyAuth
    from hub.runtime.secrets import mask, register_referenced, resolve_config

    monkeypatch.setenv("HUB_T_DB_PW", "pw-4a9f-in-the-url")
    monkeypatch.setenv("HUB_T_DB_HOST", "db-host-4a9f.example")
    monkeypatch.setenv("HUB_T_HOOK_KEY", "hook-key-4a9f")
    monkeypatch.setenv("HUB_T_QUERY_TOKEN", "query-token-4a9f")
    resolve_config(SqlSystemConfig(url="postgresql://app:${HUB_T_DB_PW}@${HUB_T_DB_HOST}:5432/erp"),
                   field="systems.db.sql")
    resolve_config(ApiKeyAuth(type="api_key", key="${HUB_T_HOOK_KEY}"), field="systems.hooks.webhook.auth")
    register_referenced({"base_url": "https://api.example/v1?token=${HUB_T_QUERY_TOKEN}"}, field="systems.x.rest")
    shown = mask("pw-4a9f-in-the-url db-host-4a9f.example hook-key-4a9f query-token-4a9f")
    assert shown == "*** db-host-4a9f.example *** ***"
