"""The ``hub`` command line tells the truth clearly (the "first hour" findings): one line per expected failure
(the stack trace only with --verbose), run summaries that show quarantined rows and skipped files, a demo
estate that keeps running (``hub demo --serve``), ``hub runs`` and ``hub show``, and the smaller fixes.

Failures are checked in a real ``hub`` process (``python -m hub.cli.main``) where what a user sees matters:
Dagster logs to the process's stderr, which an in-process runner may not capture."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml
from typer.testing import CliRunner

from hub.cli.main import app
from hub.demo.bank import BankService
from hub.demo.crm import CRMService
from hub.demo.erp import ERPService
from hub.demo.inventory import InventoryDb
from hub.warehouse import DuckDBWarehouse, connect
from tests.conftest import REPO, demo_spec_text, state_env
from tests.rest_server import RestTestServer

TOKEN = "ux-secret-token-9f8e7d"
PRODUCTS = [{"id": 1, "name": "bolt", "price": 5}, {"id": 2, "name": "nut", "price": 7},
            {"id": 3, "name": "gear", "price": -3}, {"id": 4, "name": "cog", "price": 9},
            {"id": 5, "name": f"leaked {TOKEN}", "price": -1}, {"id": 6, "name": "pin", "price": -2}]


@pytest.fixture
def columns_at_print(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's console takes its width from COLUMNS at print time, as in a shell, even when COLUMNS was set when
    hub.cli.main was imported: Rich then fixes the width at the console's creation (pytest-xdist starts its
    workers with COLUMNS=80), and the tests' ``env={"COLUMNS": ...}`` would not widen the table they read."""
    from hub.cli import main

    monkeypatch.setattr(main.console, "_width", None)


@pytest.fixture(scope="module")
def api() -> Iterator[RestTestServer]:
    with RestTestServer() as server:
        server.add_json("/products", {"items": PRODUCTS})
        yield server


def _products_spec(tmp: Path, api: RestTestServer, *, name: str = "ux", warehouse: str | None = None,
                   **source: Any) -> Path:
    """A pipeline with one REST source `products` (6 rows, 3 with a negative price: quarantined by a rule),
    authenticated with the secret ${UX_TOKEN}; the price is a decimal column."""
    doc = {
        "pipeline": name, "warehouse": warehouse or f"duckdb:///{tmp / 'wh.duckdb'}", "partitions": "none",
        "systems": {"api": {"rest": {"base_url": api.url, "retries": {"max": 0},
                                     "auth": {"bearer": "${UX_TOKEN}"}}}},
        "sources": {"products": {
            "system": "api", "request": {"path": "/products"}, "records": "$.items[*]", "primary_key": ["id"],
            "columns": {"id": {"type": "int64"}, "name": "name", "price": {"type": "decimal(10,2)"}},
            "rules": {"price": {"min": 0}}, **source}},
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _hub(*args: str, env: dict[str, str] | None = None, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """The hub command in its own process, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "hub.cli.main", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200", **(env or {})})


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


# --- A. one line per expected failure -------------------------------------------------------------------

def test_unknown_asset_is_one_line(api: RestTestServer, tmp_path: Path, dagster_home: Path) -> None:
    spec = _products_spec(tmp_path, api)
    proc = _hub("run", str(spec), "--asset", "nosuch")
    assert proc.returncode == 1
    assert _lines(proc.stderr) == [f"error: {spec}: no asset named nosuch (assets: products)"], proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


def test_threshold_failure_is_one_line_and_the_trace_only_verbose(api: RestTestServer, tmp_path: Path,
                                                                  dagster_home: Path) -> None:
    spec = _products_spec(tmp_path, api, name="thr", max_bad_rows=1)
    env = {"UX_TOKEN": TOKEN}
    proc = _hub("run", str(spec), env=env)
    assert proc.returncode == 1
    lines = _lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("✗ unpartitioned failed (run ") and "products: sources.products: 3 of 6 rows " \
        "rejected, more than max_bad_rows=1" in lines[0]
    assert "hub.errors" not in lines[0], "the hub's own errors are shown without their class path"
    assert "STEP_FAILURE" not in proc.stdout + proc.stderr and "Traceback" not in proc.stdout + proc.stderr
    verbose = _hub("run", str(spec), "--verbose", env=env)
    assert verbose.returncode == 1
    assert "Traceback (most recent call last)" in verbose.stderr and "ThresholdExceeded" in verbose.stderr, \
        "--verbose shows the trace"
    assert _lines(verbose.stderr)[-1].startswith("✗ unpartitioned failed"), "and still ends with the line"
    in_dagster = _hub("run", str(spec), "--verbose", "--dagster", env=env)
    assert in_dagster.returncode == 1
    assert "STEP_FAILURE" in in_dagster.stderr and "Stack Trace" in in_dagster.stderr, "Dagster's log with --dagster"
    assert _lines(in_dagster.stderr)[-1].startswith("✗ unpartitioned failed"), "and still ends with the line"


def test_missing_crm_token_is_one_line_naming_it(crm: CRMService, warehouse_path: Path, dagster_home: Path,
                                                 tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CRM_TOKEN")
    spec = tmp_path / "demo.yaml"
    spec.write_text(demo_spec_text())
    proc = _hub("run", str(spec), "--asset", "crm_customers")
    assert proc.returncode == 1
    assert _lines(proc.stderr) == [
        f"✗ unpartitioned failed (run {_run_id(proc.stderr)}): crm_customers: systems.crm.rest.auth.bearer: "
        "environment variable CRM_TOKEN is not set (referenced as ${CRM_TOKEN})"], proc.stderr


def _run_id(text: str) -> str:
    return text.split("(run ", 1)[1][:8]


@pytest.mark.parametrize("kind", ["http_status", "soap_fault", "host_key", "unknown_partition"])
def test_each_expected_failure_kind_is_one_line(kind: str, crm: CRMService, erp: ERPService, bank: BankService,
                                                warehouse_path: Path, dagster_home: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    spec = tmp_path / "demo.yaml"
    spec.write_text(demo_spec_text())
    args = ["run", str(spec), "--partition", "2024-01-02"]
    if kind == "http_status":
        crm.fail_after(0)
        args += ["--asset", "crm_customers"]
        expect = "HTTP 500"
    elif kind == "soap_fault":
        monkeypatch.setenv("ERP_PASSWORD", "not-the-erp-password")
        args += ["--asset", "erp_orders"]
        expect = "erp_orders: "
    elif kind == "host_key":
        monkeypatch.setenv("BANK_HOST_KEY_FINGERPRINT", "SHA256:" + "A" * 43)
        args = ["run", str(spec), "--asset", "bank_statements"]
        expect = "host key"
    else:
        args[3] = "1999-01-01"
        expect = "'1999-01-01' is not a partition of pipeline 'demo'"
    try:
        res = CliRunner().invoke(app, args)
    finally:
        crm.fail_after(None)
    assert res.exit_code == 1, res.output
    failures = [line for line in _lines(res.output) if line.startswith(("✗", "error:"))]
    assert len(failures) == 1 and expect in failures[0], res.output
    assert all(not line.startswith(" ") for line in _lines(res.output)), "no continuation lines: " + res.output
    assert "Traceback" not in res.output and "STEP_FAILURE" not in res.output


# --- B. summaries: quarantined rows and where, files skipped ----------------------------------------------

def test_summary_counts_quarantined_rows_and_names_the_table(api: RestTestServer, tmp_path: Path,
                                                             dagster_home: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UX_TOKEN", TOKEN)
    res = CliRunner().invoke(app, ["run", str(_products_spec(tmp_path, api))])
    assert res.exit_code == 0, res.output
    assert "✓ unpartitioned: products=3 (3 quarantined → products__quarantine) (run " in res.output


def test_summary_says_already_loaded_files_were_skipped(bank: BankService, warehouse_path: Path,
                                                        dagster_home: Path, tmp_path: Path) -> None:
    spec = tmp_path / "demo.yaml"
    spec.write_text(demo_spec_text().replace("    after: {move_to: /archive}\n", ""))  # files stay in place
    args = ["run", str(spec), "--asset", "bank_statements", "--partition", "statements_20240102.csv"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "✓ partition file statements_20240102.csv: bank_statements=" in first.output
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "✓ partition file statements_20240102.csv: bank_statements: already loaded, skipped (run " \
        in again.output, again.output


# --- C. hub demo --serve ---------------------------------------------------------------------------------

def test_demo_help_names_all_four_systems() -> None:
    text = " ".join(CliRunner().invoke(app, ["demo", "--help"]).output.split())
    for system in ("CRM over REST", "ERP over SOAP", "bank's SFTP drop", "inventory database over SQL", "--serve"):
        assert system in text, text


def _read_until(proc: subprocess.Popen[str], marker: str, timeout: float = 60) -> list[str]:
    """Lines of *proc*'s stdout up to the one starting with *marker*."""
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"hub demo --serve ended early: {lines}")
        lines.append(line.rstrip("\n"))
        if line.startswith(marker):
            return lines
    raise AssertionError(f"no '{marker}' within {timeout}s: {lines}")


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
def test_demo_serve_prints_exports_that_work_and_stops_on_sigterm(tmp_path: Path) -> None:
    demo_vars = ("CRM_TOKEN", "ERP_USER", "ERP_PASSWORD", "BANK_PASSWORD", "BANK_WEBHOOK_SECRET",
                 "BANK_HOST_KEY_FINGERPRINT", "HUB_DEMO_CRM_URL", "HUB_DEMO_ERP_WSDL", "HUB_DEMO_BANK_PORT",
                 "HUB_DEMO_INVENTORY_URL")
    clean = {k: v for k, v in os.environ.items() if k not in demo_vars and not k.startswith("HUB_")}
    clean.update(PYTHONPATH=str(REPO), **state_env(tmp_path))  # nothing in the checkout's .hub/ or reports/
    server = subprocess.Popen([sys.executable, "-m", "hub.cli.main", "demo", "--serve"], cwd=REPO, env=clean,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = _read_until(server, "# the demo estate is running")
        exports = dict(shlex.split(line[len("export "):])[0].split("=", 1) for line in lines
                       if line.startswith("export "))
        assert set(exports) == set(demo_vars), lines
        assert all(line.startswith(("export ", "# ")) for line in lines), "the whole output pastes into a shell"
        inventory = exports["HUB_DEMO_INVENTORY_URL"]
        assert inventory == f"sqlite:///{tmp_path / 'state' / 'demo' / 'inventory.sqlite'}", inventory
        assert any(line.endswith(f"at {inventory}") for line in lines), "the printed URL is the one that works"
        children = psutil.Process(server.pid).children(recursive=True)

        # another shell: only the exported variables (and a warehouse and Dagster home of its own)
        env = {**clean, **exports, "HUB_WAREHOUSE": f"duckdb:///{tmp_path / 'wh.duckdb'}",
               "DAGSTER_HOME": str(tmp_path / "dagster"), "HUB_STATE_DIR": str(tmp_path / "client")}
        (tmp_path / "dagster").mkdir()
        run = subprocess.run([sys.executable, "-m", "hub.cli.main", "run", "pipelines/demo.yaml", "--partition",
                              "2024-01-02", "-a", "crm_customers", "-a", "erp_orders", "-a", "inventory_warehouses",
                              "-a", "bank_statements"], cwd=REPO, env=env, capture_output=True, text=True,
                             timeout=300)
        assert run.returncode == 0, run.stdout + run.stderr
        wh = DuckDBWarehouse(f"duckdb:///{tmp_path / 'wh.duckdb'}")
        for table in ("crm_customers", "erp_orders", "inventory_warehouses", "bank_statements"):
            assert wh.query(f"select count(*) n from {table}").column("n")[0].as_py() > 0, table

        ports = [int(exports["HUB_DEMO_BANK_PORT"]), int(exports["HUB_DEMO_CRM_URL"].split(":")[2].split("/")[0])]
        assert all(_port_open(p) for p in ports)
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=60)
        assert server.returncode == 0, err
        assert "# the demo estate stopped" in out
        assert not any(_port_open(p) for p in ports), "every server stopped"
        assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


# --- D. hub runs, hub show -------------------------------------------------------------------------------

def test_runs_lists_recent_runs_with_the_failure_reason(api: RestTestServer, tmp_path: Path, dagster_home: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        columns_at_print: None) -> None:
    monkeypatch.setenv("UX_TOKEN", TOKEN)
    runner = CliRunner()
    ok = runner.invoke(app, ["run", str(_products_spec(tmp_path, api))])
    # another pipeline, so its own warehouse: the first pipeline owns `products` in wh.duckdb (hub.owners)
    bad = runner.invoke(app, ["run", str(_products_spec(tmp_path, api, name="thr", max_bad_rows=1,
                                                        warehouse=f"duckdb:///{tmp_path / 'thr.duckdb'}"))])
    assert ok.exit_code == 0 and bad.exit_code == 1
    res = runner.invoke(app, ["runs", "--json", "--limit", "5"])
    assert res.exit_code == 0, res.output
    runs = json.loads(res.output)
    assert [(r["run_id"][:8], r["pipeline"], r["status"]) for r in runs] == [
        (_run_id(bad.output), "thr", "FAILURE"), (_run_id(ok.output), "ux", "SUCCESS")]
    assert runs[0]["assets"] == ["products"] and runs[0]["started"] and runs[0]["duration_s"] >= 0
    assert runs[0]["reason"].startswith("products: sources.products: 3 of 6 rows rejected, more than max_bad_rows")
    assert runs[1]["reason"] is None
    table = runner.invoke(app, ["runs"], env={"COLUMNS": "250"})
    assert table.exit_code == 0
    row = next(line for line in table.output.splitlines() if _run_id(bad.output) in line)
    assert "FAILURE" in row and "thr" in row and "products" in row and "3 of 6 rows rejected" in row
    assert runner.invoke(app, ["runs", "--limit", "1", "--json"]).output.count('"run_id"') == 1


def test_show_prints_quarantine_rows_with_secrets_masked(api: RestTestServer, tmp_path: Path, dagster_home: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         columns_at_print: None) -> None:
    monkeypatch.setenv("UX_TOKEN", TOKEN)
    spec = _products_spec(tmp_path, api)
    runner = CliRunner()
    assert runner.invoke(app, ["run", str(spec)]).exit_code == 0
    res = runner.invoke(app, ["show", "products__quarantine", "--spec", str(spec)], env={"COLUMNS": "300"})
    assert res.exit_code == 0, res.output
    assert "products__quarantine: 3 row(s)" in res.output and "rules.price.min" in res.output
    assert "leaked ***" in res.output and TOKEN not in res.output
    assert "timestamp[us, tz=" in res.output, "each column's Arrow type, brackets and all"
    rows = json.loads(runner.invoke(app, ["show", "products__quarantine", "--spec", str(spec), "--json",
                                          "--where", "row_number >= 3"]).output)
    assert [r["row_number"] for r in rows] == [4, 5] and TOKEN not in json.dumps(rows)
    assert json.loads(rows[0]["record"])["name"] == "leaked ***"
    # the internal tables and the warehouse HUB_WAREHOUSE names (no --spec) are shown the same way
    monkeypatch.setenv("HUB_WAREHOUSE", f"duckdb:///{tmp_path / 'wh.duckdb'}")
    calls = runner.invoke(app, ["show", "_hub_calls", "--limit", "1", "--json"])
    assert calls.exit_code == 0 and len(json.loads(calls.output)) == 1, calls.output
    missing = runner.invoke(app, ["show", "nosuch"])
    assert missing.exit_code == 1 and "no table nosuch" in missing.output and "products__quarantine" in missing.output


@pytest.mark.parametrize("where, refused", [
    ("1=1; DROP TABLE products", "not statements"),
    ("nextval('ux_seq') > 0", "read-only"),
    ("(SELECT count(*) FROM read_csv('/etc/passwd')) > 0", "file system operations are disabled"),
])
def test_show_where_only_reads_duckdb(where: str, refused: str, api: RestTestServer, tmp_path: Path,
                                      dagster_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UX_TOKEN", TOKEN)
    spec = _products_spec(tmp_path, api)
    runner = CliRunner()
    assert runner.invoke(app, ["run", str(spec)]).exit_code == 0
    wh = DuckDBWarehouse(f"duckdb:///{tmp_path / 'wh.duckdb'}")
    with wh._connect() as con:
        con.execute("CREATE SEQUENCE ux_seq")
    res = runner.invoke(app, ["show", "products", "--spec", str(spec), "--where", where])
    assert res.exit_code == 1 and refused in res.output, res.output
    assert wh.query("select count(*) n from products").column("n")[0].as_py() == 3
    assert wh.query("select nextval('ux_seq') n").column("n")[0].as_py() == 1, "the sequence never moved"


def test_show_where_only_reads_postgresql(api: RestTestServer, tmp_path: Path, dagster_home: Path, pg_url: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UX_TOKEN", TOKEN)
    url = f"{pg_url}?schema=cli_ux"
    spec = _products_spec(tmp_path, api, warehouse=url)
    runner = CliRunner()
    assert runner.invoke(app, ["run", str(spec)]).exit_code == 0
    wh = connect(url)
    with wh._connect() as con:  # type: ignore[attr-defined]
        con.execute("CREATE SEQUENCE cli_ux.ux_seq")
        con.commit()
    res = runner.invoke(app, ["show", "products", "--spec", str(spec), "--where", "nextval('cli_ux.ux_seq') > 0"])
    # refused twice over: the function deny-list before it is sent, the READ ONLY transaction if it were
    assert res.exit_code == 1 and "calls nextval()" in res.output and "nothing was run" in res.output, res.output
    res = runner.invoke(app, ["show", "products", "--spec", str(spec), "--where", "1=1; DELETE FROM products"])
    assert res.exit_code == 1 and "not statements" in res.output
    ok = runner.invoke(app, ["show", "products", "--spec", str(spec), "--where", "price > 6", "--json"])
    assert ok.exit_code == 0, ok.output
    assert sorted(r["id"] for r in json.loads(ok.output)) == [2, 4]
    assert wh.query("select nextval('cli_ux.ux_seq') n").column("n")[0].as_py() == 1, "the sequence never moved"


# --- E. smaller items ------------------------------------------------------------------------------------

def test_partition_with_a_range_is_refused(api: RestTestServer, tmp_path: Path, dagster_home: Path) -> None:
    res = CliRunner().invoke(app, ["run", str(_products_spec(tmp_path, api)), "--partition", "2024-01-02",
                                   "--from", "2024-01-01", "--to", "2024-01-03"])
    assert res.exit_code == 1
    assert "--partition runs one partition, --from/--to a range: give one or the other" in res.output
    assert not (tmp_path / "wh.duckdb").exists(), "nothing ran"


def test_catalog_sql_lists_arrow_types(inventory: InventoryDb) -> None:
    res = CliRunner().invoke(app, ["catalog", "sql", inventory.url], env={"COLUMNS": "300"})
    assert res.exit_code == 0, res.output
    assert "unit_cost: NUMERIC(10, 2) → decimal128(10, 2)" in res.output
    assert "opened_on: DATE → date32[day]" in res.output


def test_quarantine_record_keeps_json_types(api: RestTestServer, tmp_path: Path, dagster_home: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UX_TOKEN", TOKEN)
    assert CliRunner().invoke(app, ["run", str(_products_spec(tmp_path, api))]).exit_code == 0
    wh = DuckDBWarehouse(f"duckdb:///{tmp_path / 'wh.duckdb'}")
    records = [json.loads(r) for r in wh.query("select record from products__quarantine order by row_number")
               .column("record").to_pylist()]
    assert records[0] == {"id": 3, "name": "gear", "price": -3}, "the price stays a number, as the API sent it"


def test_suggest_names_the_partition_in_its_advice(warehouse_path: Path, tmp_path: Path) -> None:
    spec = tmp_path / "demo.yaml"
    spec.write_text(demo_spec_text())
    res = CliRunner().invoke(app, ["contracts", "suggest", "crm_contacts", "--spec", str(spec),
                                   "--partition", "2024-01-02"])
    assert res.exit_code == 1
    assert f"(hub run {spec} --asset crm_contacts --partition 2024-01-02)" in res.output, res.output


def test_plan_notes_and_refusals_read_once(crm: CRMService, warehouse_path: Path, dagster_home: Path,
                                           tmp_path: Path) -> None:
    spec = tmp_path / "demo.yaml"
    spec.write_text(demo_spec_text())
    runner = CliRunner()
    gold = runner.invoke(app, ["agent", "plan", "CRM customers where tier is gold", "--spec", str(spec)])
    assert gold.exit_code == 0, gold.output
    assert "note: dry run (unpartitioned): " in gold.output and "dry run :" not in gold.output
    refused = runner.invoke(app, ["agent", "plan", "delete the cancelled orders in the ERP", "--spec", str(spec)])
    assert refused.exit_code == 3
    # a destructive request: refused by the policy on planned flows (agent.flow_effects), with the reason
    assert "refused: 'delete the cancelled orders in the ERP' is destructive: 'delete'" in refused.output
    assert refused.output.count("refused") == 1, refused.output


def test_help_starts_without_the_heavy_layers() -> None:
    """`hub --help` must stay fast (issue 20: <= 0.3 s): it may not import the spec models, the adapters'
    clients, pyarrow, Dagster or Great Expectations. Checked in a fresh interpreter."""
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom hub.cli.main import app\n"
            "assert CliRunner().invoke(app, ['--help']).exit_code == 0\n"
            "heavy = ['hub.spec', 'pyarrow', 'dagster', 'great_expectations', 'zeep', 'asyncssh', 'sqlalchemy',"
            " 'duckdb', 'hub.protocols']\n"
            "print(','.join(m for m in heavy if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"hub --help imported: {out.stdout.strip()}"
