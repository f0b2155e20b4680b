"""Contract tests against the real demo services: snapshots, deliberate changes to the estate, their
classification and messages, the CLI's exit codes and reports, and the Dagster asset checks."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from hub.cli.main import app
from hub.contracts import Change, ContractResult, dumps, snapshot, verify
from hub.contracts.diff import arrow_relation
from hub.contracts.schema import infer, relation
from hub.contracts.usage import Usage, jsonpath_to_path
from hub.demo.bank import BankService
from hub.demo.crm import CRMService
from hub.demo.erp import ERPService
from hub.demo.inventory import InventoryDb
from hub.protocols.sftp.contract import column_type, compare_sftp, sniff_delimiter
from hub.protocols.sql.contract import query_columns
from hub.spec import Pipeline, loads
from tests.conftest import REPO, demo_spec_text


@pytest.fixture
def estate(crm: CRMService, erp: ERPService, bank: BankService, inventory: InventoryDb
           ) -> Iterator[dict[str, Any]]:
    """The whole demo estate on free ports; the test hooks are reset afterwards (the ERP is shared)."""
    crm.reset_hooks()
    erp.wsdl_rewrite = None
    yield {"crm": crm, "erp": erp, "bank": bank, "inventory": inventory}
    erp.wsdl_rewrite = None
    erp.rewrite = None
    crm.reset_hooks()


@pytest.fixture
def demo(tmp_path: Path) -> Pipeline:
    """The demo pipeline rooted in tmp_path: its snapshots go to tmp_path/contracts."""
    path = tmp_path / "demo.yaml"
    path.write_text(demo_spec_text())
    return loads(path.read_text(), path)


def only(result: ContractResult, path: str) -> Change:
    found = [c for c in result.changes if c.path == path]
    assert len(found) == 1, f"{path} not among:\n" + "\n".join(c.message() for c in result.changes)
    return found[0]


def check(pipeline: Pipeline, system: str) -> ContractResult:
    [result] = verify(pipeline, systems=[system])
    assert result.error is None, result.error
    return result


# --- the committed demo snapshots ------------------------------------------------------------------------

def test_committed_demo_snapshots_match_the_live_demo(estate: dict[str, Any], demo: Pipeline, tmp_path: Path,
                                                      demo_brokers: Callable[[str], str]) -> None:
    from hub.demo import events as demo_events

    demo.path.write_text(demo_brokers(demo.path.read_text()))  # this test's own queue, topic and MQTT session
    demo = loads(demo.path.read_text(), demo.path)
    # stream contracts are read from the event store: land the demo week's events as `--demo` does
    landed = demo_events.land(demo, *demo_events.WEEK, lambda line: None)
    streams = {"erp_events": "erp_order_events", "inventory_events": "inventory_movements",
               "bank_hooks": "bank_payment_events"}
    results = verify(demo, directory=REPO / "contracts")
    assert [(r.system, r.status) for r in results] == [
        ("crm", "passed"), ("catalogue", "passed"), ("erp", "passed"), ("bank", "passed"),
        ("inventory", "passed"), ("erp_events", "passed"), ("inventory_events", "passed"),
        ("bank_hooks", "passed")], \
        "\n".join(c.message() for r in results for c in r.changes) + "".join(r.error or "" for r in results)
    # taking the snapshot again gives the committed files byte for byte (no ports, hosts, run values); a
    # stream system only when its broker ran (without events its payload schema is unknown: {})
    for path in snapshot(demo):
        system = path.name.removesuffix(".contract.json")
        if system in streams and streams[system] not in landed:
            continue
        committed = REPO / "contracts" / "demo" / path.name
        assert path.read_text(encoding="utf-8") == committed.read_text(encoding="utf-8"), path.name
        assert "127.0.0.1" not in path.read_text(encoding="utf-8")


# --- SOAP ------------------------------------------------------------------------------------------------

def test_soap_element_renamed_in_the_wsdl_is_breaking(estate: dict[str, Any], demo: Pipeline) -> None:
    snapshot(demo, systems=["erp"])
    erp: ERPService = estate["erp"]
    erp.wsdl_rewrite = lambda wsdl: wsdl.replace(b'name="Status"', b'name="OrderStatus"')
    result = check(demo, "erp")
    assert result.status == "failed"
    used = only(result, "GetOrders output GetOrdersResult.Order[].Status")
    assert used.breaking and used.what == "renamed to OrderStatus"
    assert used.used_by == ["erp_orders (column Status)"]
    message = used.message()
    assert message.startswith("erp: GetOrders output GetOrdersResult.Order[].Status: renamed to OrderStatus")
    assert "before: Status: string (xsd OrderStatus) enum[open, shipped, cancelled]" in message
    assert "after: OrderStatus: string" in message and "breaking, used by erp_orders (column Status)" in message
    # the same type in operations no source calls: reported, not breaking
    unused = only(result, "GetOrdersFrom output GetOrdersFromResult.Order[].Status")
    assert not unused.breaking and "not used by the pipeline" in unused.message()
    # and the live responses (still <Status>) no longer match the WSDL
    responses = only(result, "GetOrders responses")
    assert responses.breaking and "unexpected element" in responses.after and "Status" in responses.after


def test_soap_unused_type_change_and_added_optional_element_are_not_breaking(estate: dict[str, Any],
                                                                              demo: Pipeline) -> None:
    snapshot(demo, systems=["erp"])
    erp: ERPService = estate["erp"]

    def rewrite(wsdl: bytes) -> bytes:
        wsdl = wsdl.replace(b'<xs:element name="Region" type="xs:string"', b'<xs:element name="Region" '
                            b'type="xs:integer"')  # the customer's region, which no source reads
        return wsdl.replace(b'<xs:element name="Currency"', b'<xs:element name="Channel" type="xs:string" '
                            b'minOccurs="0"/><xs:element name="Currency"', 1)
    erp.wsdl_rewrite = rewrite
    result = check(demo, "erp")
    assert result.status == "drift", [c.message() for c in result.breaking]
    region = only(result, "GetOrders output GetOrdersResult.Order[].Customer.Region")
    assert (region.what, region.before, region.after, region.breaking) == ("type changed", "string", "integer",
                                                                            False)
    assert region.used_by == []
    added = only(result, "GetOrders output GetOrdersResult.Order[].Channel")
    assert added.what == "added (optional)" and not added.breaking


def test_soap_responses_that_leave_the_wsdl_are_breaking(estate: dict[str, Any], demo: Pipeline) -> None:
    snapshot(demo, systems=["erp"])
    erp: ERPService = estate["erp"]
    erp.rewrite = lambda body: body.replace(b"<tns:Amount>", b"<tns:Total>").replace(b"</tns:Amount>",
                                                                                     b"</tns:Total>")
    result = check(demo, "erp")
    change = only(result, "GetOrders responses")
    assert change.breaking and change.what == "responses no longer match the WSDL"
    assert "Total" in change.after and change.used_by == ["erp_orders (records Order)"]


# --- REST ------------------------------------------------------------------------------------------------

def test_rest_field_dropped_is_breaking(estate: dict[str, Any], demo: Pipeline) -> None:
    snapshot(demo, systems=["crm"])
    estate["crm"].drop_fields.update({"email", "outcome.score"})
    result = check(demo, "crm")
    assert result.status == "failed"
    email = only(result, "GET /customers response data[].email")
    assert (email.what, email.before, email.after, email.breaking) == ("removed", "string", "absent", True)
    assert email.used_by == ["crm_customers (column email)"]
    assert email.message() == ("crm: GET /customers response data[].email: removed (before: string; after: "
                               "absent) - breaking, used by crm_customers (column email)")
    score = only(result, "GET /contacts response items[].outcome.score")
    assert score.breaking and score.used_by == ["crm_contacts (column outcome.score)"]


def test_graphql_field_removed_retyped_or_nullable_is_breaking(estate: dict[str, Any], demo: Pipeline) -> None:
    """The catalogue's schema changes under the crm_products query: each change is classified against what the
    query selects; a field the query does not select is drift only."""
    from hub.demo.catalogue import SDL

    snapshot(demo, systems=["catalogue"])
    assert check(demo, "catalogue").status == "passed"
    changed = (SDL.replace("  currency: String!\n", "")                  # selected, removed
               .replace("price: Float!", "price: String!")               # selected, retyped
               .replace("  name: String!\n", "  name: String\n")         # selected, now nullable
               .replace("  active: Boolean!\n", "  active: Boolean!\n  weight: Float\n"))  # added, unselected
    estate["crm"].serve_catalogue(changed)
    result = check(demo, "catalogue")
    assert result.status == "failed"
    currency = only(result, "crm_products query products.nodes.currency")
    assert (currency.what, currency.before, currency.after, currency.breaking) == ("removed", "String!", "absent",
                                                                                   True)
    assert currency.used_by == ["crm_products (selects products.nodes.currency)"]
    price = only(result, "crm_products query products.nodes.price")
    assert (price.what, price.breaking) == ("type changed", True)
    name = only(result, "crm_products query products.nodes.name")
    assert (name.what, name.before, name.after, name.breaking) == ("now nullable", "String!", "String", True)
    weight = only(result, "crm_products query products.nodes.weight")
    assert (weight.what, weight.breaking) == ("added (not selected)", False)
    assert {c.path for c in result.changes if c.breaking} == {
        "crm_products query products.nodes.currency", "crm_products query products.nodes.price",
        "crm_products query products.nodes.name"}


def test_rest_added_optional_field_and_unused_change_are_not_breaking(estate: dict[str, Any],
                                                                      demo: Pipeline) -> None:
    snapshot(demo, systems=["crm"])

    def rewrite(path: str, body: dict[str, Any]) -> dict[str, Any]:
        if path.endswith("/customers"):
            for record in body["data"]:
                if record["id"] % 2 == 0:
                    record["phone"] = f"+49 30 {record['id']:06d}"
            body["total"] = str(body["total"])  # an envelope field no source reads
        return body

    estate["crm"].rewrite = rewrite
    result = check(demo, "crm")
    assert result.status == "drift" and not result.breaking
    phone = only(result, "GET /customers response data[].phone")
    assert (phone.what, phone.before, phone.after, phone.breaking) == ("added (optional)", "absent", "string", False)
    total = only(result, "GET /customers response total")
    assert (total.what, total.before, total.after, total.breaking) == ("type changed", "integer", "string", False)
    assert total.message().endswith("non-breaking, not used by the pipeline")


def test_openapi_changes(estate: dict[str, Any], demo: Pipeline) -> None:
    snapshot(demo, systems=["crm"])
    crm: CRMService = estate["crm"]
    del crm.openapi["paths"]["/contacts"]
    crm.openapi["paths"]["/customers"]["get"]["parameters"].append(
        {"name": "tenant", "in": "query", "required": True, "schema": {"type": "string"}})
    crm.openapi["components"]["schemas"]["Customer"]["properties"]["tier"]["enum"] = ["gold", "silver"]
    result = check(demo, "crm")
    removed = only(result, "OpenAPI GET /contacts")
    assert removed.breaking and removed.what == "operation removed"
    assert removed.used_by == ["crm_contacts (GET /contacts)"]
    tenant = only(result, "OpenAPI GET /customers parameter tenant")
    assert tenant.breaking and tenant.what == "new required input"
    tier = only(result, "OpenAPI GET /customers response data[].tier")
    assert tier.breaking and tier.what == "enum values removed: bronze"
    assert (tier.before, tier.after) == ("[gold, silver, bronze]", "[gold, silver]")


def test_fields_a_flow_writes_are_part_of_the_contract(estate: dict[str, Any], demo: Pipeline) -> None:
    snapshot(demo, systems=["crm", "erp"])
    crm: CRMService = estate["crm"]
    new = crm.openapi["components"]["schemas"]["NewActivity"]
    new["properties"]["comment"] = new["properties"].pop("note")
    new["required"] = ["order_id", "kind", "comment"]
    erp: ERPService = estate["erp"]
    erp.wsdl_rewrite = lambda wsdl: wsdl.replace(b'name="PaymentRef"', b'name="PaymentReference"')
    note = only(check(demo, "crm"), "OpenAPI POST /activities request body note")
    assert note.breaking and note.what == "renamed to comment (required)"
    assert note.used_by == ["flow reconcile_payments (activity writes body.note)"]
    ref = only(check(demo, "erp"), "MarkOrderPaid input PaymentRef")
    assert ref.breaking and ref.used_by == ["flow reconcile_payments (mark_paid sends PaymentRef)"]


# --- SFTP ------------------------------------------------------------------------------------------------

def test_csv_header_changed_is_breaking(estate: dict[str, Any], demo: Pipeline) -> None:
    snapshot(demo, systems=["bank"])
    bank: BankService = estate["bank"]
    newest = max(bank.outbox.glob("statements_*.csv"))
    text = newest.read_bytes().replace(b"Betrag;", b"Betrag_EUR;", 1).replace(b"Valuta;", b"Wertstellung;", 1)
    drop = bank.outbox / "statements_20240301.csv"
    drop.write_bytes(text)
    when = datetime(2024, 3, 1, 6, tzinfo=UTC).timestamp()
    os.utime(drop, (when, when))  # the newest ready file now
    result = check(demo, "bank")
    assert result.status == "failed"
    element = "file /outbox/statements_*.csv (bank_statements)"
    amount = only(result, f"{element} column Betrag")
    assert (amount.what, amount.before, amount.after) == ("renamed to Betrag_EUR", "Betrag: decimal(,)",
                                                          "Betrag_EUR: decimal(,)")
    assert amount.breaking and amount.used_by == ["bank_statements (column Betrag)"]
    value_date = only(result, f"{element} column Valuta")  # read by no source
    assert value_date.what == "renamed to Wertstellung" and not value_date.breaking
    assert len(result.breaking) == 1


def test_csv_layout_inference() -> None:
    assert column_type(["02.01.2024", "31.01.2024"]) == "date(%d.%m.%Y)"
    assert column_type(["1813,80", "-12,50", "7"]) == "decimal(,)"
    assert column_type(["1", "", "22"]) == "integer"
    assert column_type(["", ""]) == "empty"
    assert column_type(["ORD-1", "12"]) == "string"
    assert sniff_delimiter(["a;b;c", "1;2;3"], ",", '"') == ";"
    assert sniff_delimiter(["a,b", "1,2"], ",", '"') == ","


# --- SQL -------------------------------------------------------------------------------------------------

def test_sql_column_type_changed_is_breaking(estate: dict[str, Any], demo: Pipeline) -> None:
    snapshot(demo, systems=["inventory"])
    inventory: InventoryDb = estate["inventory"]
    with inventory.engine.begin() as conn:  # SQLite cannot ALTER a column's type: recreate the table
        conn.execute(sa.text("ALTER TABLE stock_levels RENAME TO stock_levels_old"))
        sa.Table("stock_levels", sa.MetaData(),
                 sa.Column("warehouse_id", sa.Integer, primary_key=True),
                 sa.Column("sku", sa.String(16), primary_key=True),
                 sa.Column("quantity", sa.String(16), nullable=False),
                 sa.Column("unit_cost", sa.Numeric(10, 2), nullable=False),
                 sa.Column("updated_at", sa.DateTime, nullable=False)).create(conn)
        conn.execute(sa.text("INSERT INTO stock_levels SELECT * FROM stock_levels_old"))
        conn.execute(sa.text("DROP TABLE stock_levels_old"))
        conn.execute(sa.text("ALTER TABLE warehouses ADD COLUMN manager VARCHAR(40)"))
    result = check(demo, "inventory")
    assert result.status == "failed"
    quantity = only(result, "table stock_levels column quantity")
    assert (quantity.what, quantity.before, quantity.after) == ("type changed", "INTEGER (int32)",
                                                                "VARCHAR(16) (string)")
    assert quantity.breaking and quantity.used_by == ["inventory_levels (all columns)"]
    assert quantity.message().startswith("inventory: table stock_levels column quantity: type changed (before: "
                                         "INTEGER (int32); after: VARCHAR(16) (string)) - breaking")
    manager = only(result, "table warehouses column manager")
    assert manager.what == "added" and not manager.breaking
    assert len(result.breaking) == 1


# --- CLI, reports, Dagster -------------------------------------------------------------------------------

def test_cli_exit_codes_and_reports(estate: dict[str, Any], demo: Pipeline, tmp_path: Path) -> None:
    runner = CliRunner()
    spec, contracts = str(demo.path), tmp_path / "snapshots"
    out = runner.invoke(app, ["contracts", "snapshot", spec, "--dir", str(contracts)])
    assert out.exit_code == 0, out.output
    assert sorted(p.name for p in (contracts / "demo").iterdir()) == [
        "bank.contract.json", "bank_hooks.contract.json", "catalogue.contract.json", "crm.contract.json",
        "erp.contract.json", "erp_events.contract.json", "inventory.contract.json", "inventory_events.contract.json"]
    reports = {"--junit": tmp_path / "r" / "c.xml", "--html": tmp_path / "r" / "c.html",
               "--markdown": tmp_path / "r" / "c.md"}
    args = ["contracts", "test", spec, "--dir", str(contracts), *[x for k, v in reports.items() for x in (k, str(v))]]
    out = runner.invoke(app, args)
    assert out.exit_code == 0, out.output
    assert "passed demo/crm" in out.output

    estate["crm"].drop_fields.add("region")
    out = runner.invoke(app, args)
    assert out.exit_code == 1, out.output
    assert "crm: GET /customers response data[].region: removed" in out.output
    suite = ET.parse(reports["--junit"]).getroot()
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert set(cases) == {"crm", "catalogue", "erp", "bank", "inventory", "erp_events", "inventory_events",
                          "bank_hooks"}
    assert suite.get("tests") == "8" and suite.get("failures") == "1"
    failure = cases["crm"].find("failure")
    assert failure is not None and "data[].region: removed" in (failure.text or "")
    assert cases["erp"].find("failure") is None
    page = reports["--html"].read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "data[].region" in page and "<script" not in page
    assert "demo/inventory" in page and "<link" not in page and "src=" not in page, "self-contained"
    summary = reports["--markdown"].read_text(encoding="utf-8")
    assert "| demo/crm | rest | ❌ failed | 1 | 0 |" in summary
    assert "`GET /customers response data[].region`" in summary

    estate["crm"].drop_fields.clear()
    bad = demo.path.parent / "gone.yaml"
    bad.write_text(demo.path.read_text().replace("${HUB_DEMO_CRM_URL:-http://127.0.0.1:8801/api}",
                                                 "http://127.0.0.1:9/api"))
    out = runner.invoke(app, ["contracts", "test", str(bad), "--dir", str(contracts), "--system", "crm",
                              "--reports", str(tmp_path / "r2")])
    assert out.exit_code == 2, out.output  # the CRM cannot be reached: no verdict
    assert (tmp_path / "r2" / "contracts.xml").exists()


def test_asset_checks_report_drift(estate: dict[str, Any], demo: Pipeline) -> None:
    from hub.dagster.definitions import pipeline_definitions

    snapshot(demo, systems=["crm", "erp"])  # the bank and the inventory have no snapshot: no check
    defs = pipeline_definitions(demo)
    graph = defs.resolve_asset_graph()
    assert {k.asset_key.to_user_string() for k in graph.asset_check_keys if k.name == "contract"} == {
        "crm_customers", "crm_contacts", "erp_orders"}
    job = defs.resolve_job_def("demo_contracts")

    def run() -> dict[str, dg.AssetCheckEvaluation]:
        result = job.execute_in_process(instance=dg.DagsterInstance.ephemeral())
        assert result.success
        return {e.asset_key.to_user_string(): e for e in result.get_asset_check_evaluations()}

    healthy = run()
    assert {k: e.passed for k, e in healthy.items()} == {"crm_customers": True, "crm_contacts": True,
                                                          "erp_orders": True}
    estate["crm"].drop_fields.add("email")
    drifted = run()
    customers, contacts = drifted["crm_customers"], drifted["crm_contacts"]
    assert not customers.passed and customers.severity == dg.AssetCheckSeverity.ERROR
    assert "data[].email: removed" in (customers.description or "")
    assert customers.metadata["hub/breaking_changes"].value == 1
    assert not contacts.passed and contacts.severity == dg.AssetCheckSeverity.WARN, "drift of its system"
    assert drifted["erp_orders"].passed


# --- units -----------------------------------------------------------------------------------------------

def test_files_without_header_are_read_by_position() -> None:
    def layout(types: list[str], encoding: str = "cp1252") -> dict[str, Any]:
        names = ["id", "day", "amount"]
        return {"files": {"payments": {
            "path": "/in", "glob": "pay_*.csv", "format": "csv", "sample": "the newest ready file",
            "name_pattern": "pay_####.csv", "encoding": encoding, "declared_encoding": "cp1252", "delimiter": ";",
            "header": False, "columns": [{"name": n, "type": t} for n, t in zip(names, types, strict=False)]}}}

    usage = Usage()
    usage.add("file:payments", ("amount",), "payments", "column amount")
    before = layout(["integer", "date(%Y-%m-%d)", "decimal(,)"])
    [moved] = compare_sftp("partner", before, layout(["integer", "decimal(,)", "date(%Y-%m-%d)"]), usage)
    assert moved.breaking and moved.what.startswith("columns reordered (the file has no header")
    [gone] = compare_sftp("partner", before, layout(["integer", "date(%Y-%m-%d)"]), usage)
    assert gone.breaking and gone.what == "column(s) removed: amount" and (gone.before, gone.after) == ("3", "2")
    [enc] = compare_sftp("partner", before, layout(["integer", "date(%Y-%m-%d)", "decimal(,)"], "utf-8"), usage)
    assert enc.breaking and (enc.what, enc.before, enc.after) == ("encoding changed", "cp1252", "utf-8")
    assert compare_sftp("partner", before, layout(["integer", "date(%Y-%m-%d)", "decimal(,)"], "ascii"),
                        usage)[0].breaking is False, "plain ASCII reads the same in any encoding"


def test_inference_and_relations() -> None:
    schema = infer([{"a": 1, "b": None, "c": {"d": "2024-01-01T00:00:00Z"}}, {"a": 2.5, "b": "x"}])
    assert schema == {"type": "object", "required": ["a", "b"], "properties": {
        "a": {"type": "number"}, "b": {"type": ["null", "string"]},
        "c": {"type": "object", "required": ["d"], "properties": {"d": {"type": "string", "format": "date-time"}}}}}
    assert relation({"type": "integer"}, {"type": "number"}) == "widened"
    assert relation({"type": "number", "x-precision": 14, "x-scale": 2},
                    {"type": "number", "x-precision": 10, "x-scale": 2}) == "narrowed"
    assert relation({"type": "string", "format": "date"}, {"type": "string"}) == "changed"
    assert arrow_relation("int32", "int64") == "widened" and arrow_relation("int64", "string") == "changed"
    assert arrow_relation("decimal128(10, 2)", "decimal128(12, 2)") == "widened"
    assert jsonpath_to_path("$.data[*]") == ("data", "[]") and jsonpath_to_path("$..x") is None
    assert query_columns("select o.id, o.amount from orders o join lines l on l.order_id = o.id") == {
        "orders": ["amount", "id"], "lines": ["order_id"]}
    assert query_columns("select * from orders") == {"orders": None}
    assert dumps({"b": 1, "a": "ä"}) == '{\n  "a": "ä",\n  "b": 1\n}\n'
