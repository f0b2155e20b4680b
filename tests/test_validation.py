"""Validation against real data paths: row rules before the load (REST over loopback HTTP, SFTP files),
expectation suites after it as Dagster asset checks (blocking or not), exactly the partition just loaded,
Data Docs, ``hub contracts suggest``, and spec errors for bad suites."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pytest
import yaml
from typer.testing import CliRunner

from hub.cli.main import app
from hub.dagster import pipeline_assets
from hub.errors import HubError, SpecError
from hub.files import ingest_file
from hub.materialize import materialize_source
from hub.runtime.window import Window
from hub.spec import loads
from hub.spec.loader import Pipeline
from hub.transform.mapping import Mapped
from hub.validation import RowRules, RuleSpec, load_suite
from hub.validation.runner import read_rows, run_suite
from hub.warehouse import DuckDBWarehouse
from tests.rest_server import RestTestServer
from tests.sftp_servers import Drop, start_embedded


def _order(i: int, **over: Any) -> dict[str, Any]:
    return {"order_id": i, "amount": 10.0 * i, "status": "open" if i % 2 else "paid",
            "email": f"buyer{i}@shop.example", "qty": str(i), **over}


GOOD = [_order(i) for i in range(1, 9)]


@pytest.fixture(scope="module")
def api() -> Iterator[RestTestServer]:
    with RestTestServer() as server:
        yield server


@pytest.fixture
def reports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "reports"
    monkeypatch.setenv("HUB_REPORTS_DIR", str(path))
    return path


def _spec(tmp: Path, api: RestTestServer, path: str, *, partitioned: bool = False, suite: list[Any] | None = None,
          checks: dict[str, str] | None = None, **source: Any) -> Pipeline:
    """A pipeline with one REST source `orders` (GET <path>, optionally per day) and a model over it."""
    doc: dict[str, Any] = {
        "pipeline": "vt", "warehouse": f"duckdb:///{tmp / 'wh.duckdb'}",
        "partitions": {"daily": {"start": "2024-01-01"}} if partitioned else "none",
        "systems": {"api": {"rest": {"base_url": api.url, "retries": {"max": 0}}}},
        "sources": {"orders": {
            "system": "api", "request": {"path": path + ("/{{ partition.key }}" if partitioned else "")},
            "records": "$.items[*]", "primary_key": ["order_id"],
            "columns": {"order_id": {"type": "int64"}, "amount": {"type": "float64"}, "status": "status",
                        "email": "email", "qty": "qty"},
            **source}},
        "models": {"order_totals": {"sql": "select status, sum(amount) as total from orders group by all"}},
    }
    if suite is not None:
        (tmp / "orders.suite.yaml").write_text(yaml.safe_dump(suite, sort_keys=False))
        doc["checks"] = {"orders": str(tmp / "orders.suite.yaml")}
    if checks is not None:
        doc["checks"] = checks
    text = yaml.safe_dump(doc, sort_keys=False)
    (tmp / "vt.yaml").write_text(text)
    return loads(text, tmp / "vt.yaml")


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def _materialized(result: dg.ExecuteInProcessResult) -> set[str]:
    return {m.asset_key.to_user_string() for m in result.get_asset_materialization_events() if m.asset_key}


SUITE = [
    {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "order_id"}},
    {"type": "expect_column_values_to_be_between", "kwargs": {"column": "amount", "min_value": 0, "max_value": 100}},
    {"expect_column_values_to_be_in_set": {"column": "status", "value_set": ["open", "paid"]}, "severity": "warn"},
]


# --- expectation suites as asset checks -------------------------------------------------------------------

@pytest.mark.parametrize("severity", ["error", "warn"])
def test_failing_expectation_blocks_downstream_only_when_error(api: RestTestServer, tmp_path: Path, reports: Path,
                                                               severity: str) -> None:
    api.add_json(f"/blocking-{severity}", {"items": [*GOOD, _order(9, amount=500.0, status="lost")]})
    suite = [dict(SUITE[0]), {**SUITE[1], "severity": severity}, dict(SUITE[2])]
    pipeline = _spec(tmp_path, api, f"/blocking-{severity}", suite=suite)
    result = dg.materialize(pipeline_assets(pipeline), selection=["orders", "order_totals"], raise_on_error=False,
                            instance=dg.DagsterInstance.ephemeral())
    checks = _checks(result)
    assert set(checks) == {"expect_column_values_to_not_be_null__order_id",
                           "expect_column_values_to_be_between__amount", "expect_column_values_to_be_in_set__status"}
    assert checks["expect_column_values_to_not_be_null__order_id"].passed
    amount = checks["expect_column_values_to_be_between__amount"]
    assert not amount.passed
    md = {k: v.value for k, v in amount.metadata.items()}
    assert md["unexpected_count"] == 1 and md["element_count"] == 9 and round(md["unexpected_percent"], 2) == 11.11
    assert md["unexpected_values"] == [500.0]
    assert md["failing_rows_json"] == [{"order_id": 9, "amount": 500.0, "status": "lost",
                                        "email": "buyer9@shop.example", "qty": "9"}]
    assert "| order_id | amount |" in md["failing_rows"] and "| 9 | 500.0 | lost |" in md["failing_rows"]
    assert md["partition"] == "(whole table)" and md["rows_validated"] == 9
    status = checks["expect_column_values_to_be_in_set__status"]
    assert not status.passed and status.severity == dg.AssetCheckSeverity.WARN
    assert "orders" in _materialized(result), "the rows are loaded; the check reports on them"
    if severity == "error":
        assert amount.severity == dg.AssetCheckSeverity.ERROR
        assert not result.success, "a failed blocking check fails the step"
        assert "order_totals" not in _materialized(result), "and the model downstream does not run"
    else:
        assert amount.severity == dg.AssetCheckSeverity.WARN
        assert result.success and "order_totals" in _materialized(result)
    # Data Docs for the validation, under $HUB_REPORTS_DIR
    docs = Path(str(md["data_docs"]))
    assert docs.is_file() and docs.is_relative_to(reports / "data_docs") and docs.suffix == ".html"
    assert (reports / "data_docs" / "index.html").is_file()
    assert (reports / "data_docs" / "expectations" / "orders.html").is_file()
    page = docs.read_text()
    assert "amount" in page and "500" in page, "the page shows the failing expectation and value"


def test_suite_runs_on_exactly_the_partition_just_loaded(api: RestTestServer, tmp_path: Path, reports: Path) -> None:
    api.add_json("/days/2024-01-01", {"items": [*GOOD[:4], _order(5, amount=999.0)]})  # one bad row, day 1
    api.add_json("/days/2024-01-02", {"items": GOOD[5:]})
    pipeline = _spec(tmp_path, api, "/days", partitioned=True, suite=SUITE)
    instance = dg.DagsterInstance.ephemeral()
    assets = pipeline_assets(pipeline)
    day1 = dg.materialize(assets, selection=["orders"], partition_key="2024-01-01", instance=instance,
                          raise_on_error=False)
    assert not _checks(day1)["expect_column_values_to_be_between__amount"].passed
    day2 = dg.materialize(assets, selection=["orders"], partition_key="2024-01-02", instance=instance)
    amount = _checks(day2)["expect_column_values_to_be_between__amount"]
    assert amount.passed, "day 1's bad row is not in day 2's partition"
    md = {k: v.value for k, v in amount.metadata.items()}
    assert md["partition"] == "2024-01-02" and md["rows_validated"] == len(GOOD[5:])
    both = DuckDBWarehouse(f"duckdb:///{tmp_path / 'wh.duckdb'}").query("select count(*) n from orders")
    assert both.column("n")[0].as_py() == 5 + len(GOOD[5:]), "yet both days are in the table"
    pages = sorted((reports / "data_docs" / "validations" / "orders").glob("2024-01-0*/**/*.html"))
    assert [p.relative_to(reports / "data_docs" / "validations" / "orders").parts[0][:10] for p in pages] == \
        ["2024-01-01", "2024-01-02"], "one Data Docs page per validated partition"


# --- row rules before the load ----------------------------------------------------------------------------

RULES = {
    "amount": {"min": 0, "max": 1000},
    "status": {"in": ["open", "paid"]},
    "email": {"regex": r"^[^@\s]+@[^@\s]+$", "not_null": True},
    "qty": {"type": "int32"},
}


def _quarantine(tmp: Path) -> list[dict[str, Any]]:
    wh = DuckDBWarehouse(f"duckdb:///{tmp / 'wh.duckdb'}")
    return wh.query("select row_number, column_name, value, reason, record from orders__quarantine "
                    "order by row_number").to_pylist()


def test_row_rules_quarantine_each_bad_row_with_rule_and_reason(api: RestTestServer, tmp_path: Path) -> None:
    bad = [_order(20, amount=-5.0), _order(21, status="lost"), _order(22, email="not-an-address"),
           _order(23, email=None), _order(24, qty="many"), _order(3, amount=1.0)]  # 3: a repeated primary key
    api.add_json("/rules", {"items": [*GOOD, *bad]})
    pipeline = _spec(tmp_path, api, "/rules", rules=RULES)
    outcome = materialize_source(pipeline, "orders", window=None, run_id="r1")
    assert outcome.load.rows_loaded == len(GOOD) and outcome.load.rows_quarantined == len(bad)
    got = [(q["row_number"], q["column_name"], q["value"], q["reason"].split(":")[0]) for q in _quarantine(tmp_path)]
    assert got == [(8, "amount", "-5.0", "rules.amount.min"), (9, "status", "lost", "rules.status.in"),
                   (10, "email", "not-an-address", "rules.email.regex"), (11, "email", None, "rules.email.not_null"),
                   (12, "qty", "many", "rules.qty.type"), (13, "order_id", "3", "rules.primary_key.unique")]
    reasons = [q["reason"] for q in _quarantine(tmp_path)]
    assert reasons[0] == "rules.amount.min: -5.0 is less than 0"
    assert reasons[1] == "rules.status.in: 'lost' is not one of [open, paid]"
    assert "already seen in this load" in reasons[5]
    assert json.loads(_quarantine(tmp_path)[1]["record"])["order_id"] == 21, "the whole record is kept"
    assert dict(outcome.load.columns)["qty"] == "INTEGER", "a type rule loads the column as that type"


def test_over_the_threshold_the_hop_fails_and_nothing_is_loaded(api: RestTestServer, tmp_path: Path) -> None:
    api.add_json("/threshold-good", {"items": GOOD})
    api.add_json("/threshold-bad", {"items": [*GOOD[:5], _order(30, amount=-1.0), _order(31, status="x"),
                                              _order(32, amount=5000.0)]})
    good = _spec(tmp_path, api, "/threshold-good", rules=RULES, max_bad_rows=2)
    materialize_source(good, "orders", window=None, run_id="r1")
    wh = DuckDBWarehouse(f"duckdb:///{tmp_path / 'wh.duckdb'}")
    before = wh.query("select * from orders order by order_id").to_pylist()
    for limit in ({"max_bad_rows": 2}, {"max_bad_fraction": 0.25}):
        pipeline = _spec(tmp_path, api, "/threshold-bad", rules=RULES, **limit)
        with pytest.raises(HubError) as info:
            materialize_source(pipeline, "orders", window=None, run_id="r2")
        msg = str(info.value)
        assert "3 of 8 rows rejected, more than " + ", ".join(f"{k}={v}" for k, v in limit.items()) in msg
        assert "nothing was loaded" in msg and "rules.amount.min 1" in msg and "rules.amount.max 1" in msg
        assert wh.query("select * from orders order by order_id").to_pylist() == before
    assert "orders__quarantine" not in wh.tables()


def test_uniqueness_holds_across_batches() -> None:
    rules = RowRules({"code": RuleSpec(unique=True)}, primary_key=["id", "part"], where="sources.t")
    seen = []
    for ids, codes in (([1, 2, 3], ["a", "b", None]), ([3, 4, 6], ["c", "a", None]), ([7], ["c"])):
        batch = pa.RecordBatch.from_pydict({"id": ids, "part": ["x"] * len(ids), "code": codes})
        out = rules.apply(Mapped(batch, []), batch)
        seen.append((out.batch.column("id").to_pylist(), [q["reason"].split(":")[0] for q in out.quarantine]))
    assert seen == [([1, 2, 3], []), ([6], ["rules.primary_key.unique", "rules.code.unique"]),
                    ([7], [])], "a code is taken only by a row that is loaded (id 3 was not)"


def test_integer_primary_key_uniqueness_matches_the_set_it_replaced() -> None:
    """An integer-like one-column key is tracked in compact sorted runs (_IntKeys) instead of a Python set
    (600 MB for a 10-million-row file); the rows it rejects must be exactly the ones the set rejected."""
    import random

    import numpy as np

    from hub.validation.rules import _IntKeys, _repeats

    rng = random.Random(3)
    for _ in range(200):
        compact, reference = _IntKeys(), set[Any]()
        typ = rng.choice([pa.int64(), pa.int32(), pa.int8(), pa.date32()])
        for _ in range(rng.randint(1, 8)):
            values = [None if rng.random() < 0.1 else rng.randint(-20, 20) for _ in range(rng.randint(0, 50))]
            arr = pa.array(values, pa.int32()).cast(typ) if typ == pa.date32() else pa.array(values, typ)
            eligible = np.array([rng.random() < 0.8 for _ in values], dtype=bool)
            expected, _, _ = _repeats(reference, arr, eligible)
            assert compact.repeats(arr, eligible).tolist() == expected.tolist(), (values, eligible.tolist())
    rules = RowRules({"id": RuleSpec(not_null=True)}, primary_key=["id"], where="sources.t")
    kept = []
    for ids in ([1, 2, 2, None], [3, 1, 4], [4, 5]):
        batch = pa.RecordBatch.from_pydict({"id": pa.array(ids, pa.int64())})
        out = rules.apply(Mapped(batch, []), batch)
        kept.append((out.batch.column("id").to_pylist(), [q["reason"].split(":")[0] for q in out.quarantine]))
    assert kept == [([1, 2], ["rules.primary_key.unique", "rules.id.not_null"]),
                    ([3, 4], ["rules.primary_key.unique"]), ([5], ["rules.primary_key.unique"])]


def test_rules_on_sftp_files(tmp_path: Path) -> None:
    (tmp_path / "sftp").mkdir()
    drop, server = start_embedded(tmp_path / "sftp")
    try:
        folder = drop.local("in/st_1.csv").parent
        (folder / "st_1.csv").write_bytes(("Buchungstag;Betrag;Referenz\r\n02.01.2024;10,00;ORD-1\r\n"
                                           "02.01.2024;-3,00;ORD-2\r\n03.01.2024;7,50;XYZ\r\n").encode("cp1252"))
        old = time.time() - 3600
        os.utime(folder / "st_1.csv", (old, old))
        pipeline = _sftp_spec(drop, tmp_path, max_bad_rows=5)
        out = ingest_file(pipeline, "statements", "st_1.csv", run_id="r1")
        assert out.load is not None and out.load.rows_loaded == 1 and out.rejected == 2
        wh = DuckDBWarehouse(f"duckdb:///{tmp_path / 'wh.duckdb'}")
        got = wh.query("select row_number, reason from statements__quarantine order by 1").to_pylist()
        assert [(q["row_number"], q["reason"].split(":")[0]) for q in got] == [
            (3, "rules.amount.min"), (4, "rules.reference.regex")], "SFTP rows keep their line numbers"
        strict = _sftp_spec(drop, tmp_path, max_bad_rows=1)
        (folder / "st_2.csv").write_bytes((folder / "st_1.csv").read_bytes().replace(b"ORD-1", b"ORD-5"))
        os.utime(folder / "st_2.csv", (old, old + 1))
        with pytest.raises(HubError, match=r"file st_2\.csv: 2 of 3 rows rejected, more than max_bad_rows=1"):
            ingest_file(strict, "statements", "st_2.csv", run_id="r2")
        parts = wh.query("select distinct _hub_partition p from statements").column("p").to_pylist()
        assert parts == ["st_1.csv"], "the failed file loaded nothing"
    finally:
        server.stop()


def _sftp_spec(drop: Drop, tmp: Path, **source: Any) -> Pipeline:
    doc = {"pipeline": "files", "warehouse": f"duckdb:///{tmp / 'wh.duckdb'}",
           "systems": {"bank": {"sftp": drop.system()}},
           "sources": {"statements": {
               "system": "bank", "files": {"path": drop.remote("in"), "glob": "st_*.csv", "stable_for": "30s"},
               "format": {"csv": {"delimiter": ";", "encoding": "cp1252"}},
               "columns": {"Buchungstag": {"name": "booked_on", "type": "date", "format": "%d.%m.%Y"},
                           "Betrag": {"name": "amount", "type": "decimal(12,2)", "decimal_point": ","},
                           "Referenz": "reference"},
               "rules": {"amount": {"min": 0}, "reference": {"regex": "^ORD-[0-9]+$"}}, **source}}}
    return loads(yaml.safe_dump(doc), tmp / "files.yaml")


# --- suggest and spec errors ------------------------------------------------------------------------------

def test_suggest_proposes_a_suite_that_passes_on_its_data(api: RestTestServer, tmp_path: Path) -> None:
    api.add_json("/suggest/2024-01-01", {"items": GOOD[:4]})
    api.add_json("/suggest/2024-01-02", {"items": [*GOOD[4:], _order(40, email=None)]})
    pipeline = _spec(tmp_path, api, "/suggest", partitioned=True)
    for day in ("2024-01-01", "2024-01-02"):
        materialize_source(pipeline, "orders", window=_window(day), run_id=f"r-{day}")
    out = tmp_path / "contracts" / "orders.suite.yaml"
    res = CliRunner().invoke(app, ["contracts", "suggest", "orders", "--spec", str(pipeline.path), "-o", str(out)])
    assert res.exit_code == 0, res.output
    suite = load_suite(out, asset="orders")
    kinds = {(e.type, tuple(e.columns)) for e in suite.expectations}
    assert ("expect_column_values_to_be_unique", ("order_id",)) in kinds
    assert ("expect_column_values_to_not_be_null", ("amount",)) in kinds
    assert ("expect_column_values_to_not_be_null", ("email",)) not in kinds, "email has a null"
    assert ("expect_column_values_to_be_in_set", ("status",)) in kinds
    between = next(e for e in suite.expectations if e.name == "expect_column_values_to_be_between__amount")
    assert between.kwargs == {"column": "amount", "min_value": 10.0, "max_value": 400.0}
    run = run_suite(suite, read_rows(pipeline.warehouse_url, "orders", None))
    assert run.success, [(o.expectation.name, o.observed, o.error) for o in run.outcomes if not o.passed]
    printed = CliRunner().invoke(app, ["contracts", "suggest", "orders", "--spec", str(pipeline.path)])
    assert printed.exit_code == 0 and printed.output.startswith("# Expectation suite for orders")


def _window(day: str) -> Window:
    from datetime import UTC, datetime, timedelta

    start = datetime.fromisoformat(day).replace(tzinfo=UTC)
    return Window(key=day, start=start, end=start + timedelta(days=1))


def test_bad_suites_and_rules_are_spec_errors_with_file_line_and_field(api: RestTestServer, tmp_path: Path) -> None:
    (tmp_path / "bad.suite.yaml").write_text(
        "- type: expect_column_values_to_not_be_null\n"
        "  kwargs: {colum: order_id}\n"
        "- expect_column_values_to_be_betwen: {column: amount}\n"
        "- type: expect_column_values_to_be_between\n"
        "  kwargs: {column: amount, min_value: low}\n"
        "  severity: fatal\n")
    with pytest.raises(SpecError) as info:
        _spec(tmp_path, api, "/x", rules={"amout": {"min": 0}}, checks={"orders": "bad.suite.yaml"})
    text = str(info.value)
    bad = "checks.orders: bad.suite.yaml"
    assert f"{bad}: line 2: [0].kwargs.colum: unknown argument of this expectation" in text
    assert f"{bad}: line 2: [0].kwargs.column: required argument is missing" in text
    assert f"{bad}: line 3: [1].expect_column_values_to_be_betwen: 'expect_column_values_to_be_betwen' is not a " \
           "Great Expectations expectation (did you mean expect_column_values_to_be_between" in text
    assert f"{bad}: line 5: [2].kwargs.min_value: value is not a valid float" in text
    assert f"{bad}: line 6: [2].severity: expected error or warn, got 'fatal'" in text
    assert "sources.orders.rules.amout: 'amout' is not one of the declared columns" in text
    with pytest.raises(SpecError) as info:  # a problem of the first pass (the document's shape)
        _spec(tmp_path, api, "/x", rules={"email": {"regex": "(?=lookahead)", "maximum": 3}},
              checks={"orders": "bad.suite.yaml"})
    text = str(info.value)
    assert "sources.orders.rules.email.regex: not a valid regular expression (RE2 syntax)" in text
    assert "sources.orders.rules.email.maximum: unknown field" in text
    assert f"{bad}: line 6: [2].severity: expected error or warn, got 'fatal'" in text, "suites are checked too"
    with pytest.raises(SpecError) as info:
        _spec(tmp_path, api, "/x", checks={"nope": "bad.suite.yaml", "orders": "missing.suite.yaml"})
    assert "checks.nope: 'nope' is not a source, child table or model" in str(info.value)
    assert "checks.orders: suite file missing.suite.yaml not found" in str(info.value)


def test_demo_suites_are_asset_checks_of_sources_child_tables_and_models(dagster_home: Path) -> None:
    from hub.dagster import build_definitions
    from hub.spec import load
    from tests.conftest import DEMO_SPEC, REPO

    pipeline = load(DEMO_SPEC)
    assert set(pipeline.suites) == {"erp_orders", "erp_order_lines", "crm_customers", "order_payments",
                                    "revenue_by_region"}
    graph = build_definitions(REPO / "pipelines").resolve_asset_graph()
    checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    assert ("erp_orders", "expect_column_values_to_be_in_set__status") in checks
    assert ("erp_order_lines", "expect_compound_columns_to_be_unique__order_id_line_no") in checks, \
        "the child table of a multi-asset has its own checks"
    assert ("revenue_by_region", "expect_column_values_to_be_between__revenue") in checks
    specs = {(s.asset_key.to_user_string(), s.name): s for a in graph.assets_defs for s in a.check_specs}
    assert specs[("erp_orders", "expect_column_values_to_be_unique__order_id")].blocking
    assert not specs[("erp_orders", "expect_column_values_to_be_in_set__currency")].blocking, "severity warn"
