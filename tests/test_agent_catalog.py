"""The action catalog and guarded calls against the real demo estate (CRM over REST with OpenAPI, ERP over
SOAP, bank over SFTP, inventory in SQLite) and a partner REST API with write endpoints."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from hub.agent.catalog import Catalog, build_catalog
from hub.agent.guard import AUDIT_TABLE, Guard, mask_params
from hub.cli.main import app
from hub.demo.crm import CRMService
from hub.errors import HubError
from hub.protocols.rest.actions import openapi_operations
from hub.protocols.soap.actions import soap_side_effect
from hub.spec import Pipeline, load, loads
from hub.warehouse import connect
from tests.agent_support import partner_api, partner_openapi, partner_spec
from tests.conftest import demo_spec_text


@pytest.fixture
def demo(crm: CRMService, tmp_path: Path, warehouse_path: Path) -> Pipeline:
    """The demo spec (live services from the fixtures), with the ERP's GetCustomer declared a write and a
    budget of 3 calls for the ERP, and an agent policy allowing that write."""
    text = demo_spec_text().replace(
        "  erp:\n    description:",
        "  erp:\n    agent: {writes: [GetCustomer], budget: 3}\n    description:", 1)
    text += "\nagent:\n  allow_writes: [erp.GetCustomer]\n  max_rows: 50\n"
    path = tmp_path / "demo.yaml"
    path.write_text(text)
    return loads(path.read_text(), path)


@pytest.fixture
def partner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("PARTNER_TOKEN", "partner-token")
    with partner_api() as server:
        yield server


@pytest.fixture
def catalog(demo: Pipeline) -> Catalog:
    return build_catalog([demo])


def audit_rows(pipeline: Pipeline) -> list[dict[str, Any]]:
    return connect(pipeline.warehouse_url).query(f"SELECT * FROM {AUDIT_TABLE} ORDER BY called_at").to_pylist()


# --- the catalog ---------------------------------------------------------------------------------------

def test_demo_catalog_has_every_system_with_side_effects_and_schemas(catalog: Catalog) -> None:
    assert catalog.errors == {}
    names = {a.name for a in catalog.actions}
    assert {"erp.GetOrders", "erp.GetOrdersFrom", "erp.ListOrders", "erp.GetCustomer", "crm.get_customers",
            "crm.get_contacts", "inventory.stock_levels", "inventory.warehouses", "bank.statements"} <= names
    orders = catalog.get("erp.GetOrders")
    assert (orders.protocol, orders.side_effect, orders.binding) == ("soap", "read",
                                                                    {"operation": "GetOrders", "records": "Order"})
    assert {"FromDate", "ToDate", "Page", "PageSize"} <= set(orders.input_schema["properties"])
    assert {"OrderId", "Status", "Amount", "Customer"} <= set(orders.output_schema["properties"])
    assert catalog.get("erp.GetCustomer").side_effect == "write"  # the spec's override of the name rule
    customers = catalog.get("crm.get_customers")
    assert customers.binding == {"method": "GET", "path": "/customers", "records": "$.data[*]",
                                 "operation_id": "listCustomers"}
    assert customers.side_effect == "read"
    assert set(customers.input_schema["properties"]) == {"page", "per_page"}
    assert customers.output_schema["properties"]["address"]["properties"]["city"] == {"type": "string"}  # $ref
    contacts = catalog.get("crm.get_contacts")
    assert contacts.input_schema["required"] == ["since", "until"]
    stock = catalog.get("inventory.stock_levels")
    assert (stock.protocol, stock.side_effect, stock.binding["table"]) == ("sql", "read", "stock_levels")
    assert {"warehouse_id", "sku", "quantity"} <= set(stock.output_schema["properties"])
    drop = catalog.get("bank.statements")
    assert (drop.protocol, drop.side_effect) == ("sftp", "read")
    assert drop.binding == {"path": "/outbox", "glob": "statements_*.csv", "source": "bank_statements"}
    assert drop.output_schema["properties"]["amount"]["x-source-field"] == "Betrag"


def test_graphql_fields_are_actions_queries_read_mutations_write(catalog: Catalog, demo: Pipeline) -> None:
    """The demo's GraphQL catalogue, read by introspection through the protocol plugin: query fields are
    read actions the guard calls, the mutation is a write it refuses without the allow-list."""
    products = catalog.get("catalogue.products")
    assert (products.protocol, products.side_effect) == ("graphql", "read")
    assert set(products.input_schema["properties"]) == {"first", "after", "category"}
    assert {"sku", "name", "price", "active"} <= set(products.output_schema["properties"])
    assert products.binding["records"] == "products.nodes" and products.binding["relay"] is True
    assert catalog.get("catalogue.product").input_schema["required"] == ["sku"]
    write = catalog.get("catalogue.setProductPrice")
    assert (write.side_effect, write.binding["operation"]) == ("write", "mutation")
    assert "catalogue.setProductPrice" in [a.name for a in catalog.search("change the price of a product", 3)]

    guard = Guard(catalog, actor="alice", agent="test-agent")
    r = guard.call("catalogue.products", {"first": 3, "category": "software"})
    assert r.outcome == "ok", r.message
    assert [row["category"] for row in r.records] == ["software"] * 3 and r.records[0]["sku"].startswith("SKU-")
    one = guard.call("catalogue.product", {"sku": r.records[0]["sku"]})
    assert one.outcome == "ok" and one.records[0]["name"] == r.records[0]["name"]
    assert guard.call("catalogue.product", {"sku": "X", "color": "red"}).outcome == "refused"  # not an argument
    refused = guard.call("catalogue.setProductPrice", {"sku": r.records[0]["sku"], "price": 1.0})
    assert refused.outcome == "refused" and "write action" in refused.message
    again = guard.call("catalogue.product", {"sku": r.records[0]["sku"]})
    assert again.records[0]["price"] == r.records[0]["price"]  # nothing was sent


def test_a_graphql_action_plans_a_source_that_loads(catalog: Catalog, demo: Pipeline, tmp_path: Path) -> None:
    """The plugin turns a query action into source keys (the generated document, records, Relay paging), and
    that source validates and walks every page."""
    from adapters.graphql import GraphQLSource, GraphQLSourceConfig
    from hub import protocols

    action = catalog.get("catalogue.products")
    plugin = protocols.get("graphql")
    keys = plugin.plan_source(action.binding, {"category": "service"})
    assert keys is not None and keys["paginate"] == {"relay": {}}
    assert plugin.plan_source(catalog.get("catalogue.setProductPrice").binding, {}) is None  # sources only read
    block = demo.spec.systems["catalogue"]
    source = GraphQLSource(plugin.resolve_system("catalogue", block), GraphQLSourceConfig.model_validate(keys),
                           name="planned", system_name="catalogue", state_dir=tmp_path)
    rows = [r for b in source.batches() for r in b.to_pylist()]
    assert len(rows) == 30 and {r["category"] for r in rows} == {"service"}  # 120 products, every 4th
    assert source.details()["pages"] > 1
    assert plugin.reads_action(demo.sources["crm_products"], action.binding)


def test_get_names_close_matches(catalog: Catalog) -> None:
    assert catalog.get("ERP.getorders").name == "erp.GetOrders"
    with pytest.raises(HubError, match=r"no action named 'erp.GetOrder'.*erp.GetOrders"):
        catalog.get("erp.GetOrder")


def test_soap_side_effect_rule() -> None:
    assert [soap_side_effect(n) for n in ("GetOrders", "ListX", "FindY", "SearchZ", "QueryA", "CheckB",
                                          "ReadC", "CreateOrder", "UpdateStock", "CancelOrder")] == \
        ["read"] * 7 + ["write"] * 3


def test_search_by_keyword_and_by_meaning(catalog: Catalog) -> None:
    def top(query: str, n: int = 1) -> list[str]:
        return [a.name for a in catalog.search(query, n)]

    orders = top("orders", 3)  # the ERP's order reads first (the CRM's activities mention orders too)
    assert orders[0].startswith("erp.") and sum(n.startswith("erp.") for n in orders) >= 2, orders
    assert any(n.startswith("erp.") for n in top("purchases", 3))  # purchase ~ order (the CRM logs on orders)
    assert top("client accounts")[0] in ("crm.get_customers", "erp.GetCustomer")  # client ~ customer
    assert top("inventory quantities on hand")[0] == "inventory.stock_levels"
    assert top("bank payments")[0] == "bank.statements"           # payment ~ statement
    assert top("custmer")[0] in ("crm.get_customers", "erp.GetCustomer")           # a typo: character n-grams
    assert top("interactions of a day")[0] == "crm.get_contacts"  # interaction ~ contact
    assert catalog.search("zebra giraffe") == []


def test_openapi_31_and_swagger_20_documents_parse() -> None:
    ops = {o["name"]: o for o in openapi_operations(partner_openapi(), "p")}
    assert {n: o["side_effect"] for n, o in ops.items()} == {
        "p.get_customers": "read", "p.post_customers": "write", "p.delete_customers_by_id": "write",
        "p.post_customers_search": "read"}  # x-hub-side-effect: read
    assert ops["p.get_customers"]["output_schema"]["properties"]["email"]["type"] == ["string", "null"]
    assert ops["p.post_customers"]["input_schema"]["properties"]["body"]["required"] == ["name"]
    assert ops["p.delete_customers_by_id"]["input_schema"]["required"] == ["id"]  # path-level parameter
    swagger = {
        "swagger": "2.0", "info": {"title": "Legacy", "version": "1"}, "basePath": "/v1",
        "paths": {"/invoices": {
            "get": {"operationId": "listInvoices", "parameters": [
                {"name": "status", "in": "query", "type": "string", "enum": ["open", "paid"]}],
                "responses": {"200": {"description": "ok", "schema": {
                    "type": "array", "items": {"$ref": "#/definitions/Invoice"}}}}},
            "put": {"parameters": [{"name": "body", "in": "body", "required": True,
                                    "schema": {"$ref": "#/definitions/Invoice"}}],
                    "responses": {"200": {"description": "ok"}}}}},
        "definitions": {"Invoice": {"type": "object", "properties": {
            "number": {"type": "string"}, "total": {"type": "number"},
            "parent": {"$ref": "#/definitions/Invoice"}}}},  # recursive: cut, not endless
    }
    sw = {o["name"]: o for o in openapi_operations(swagger, "legacy")}
    assert sw["legacy.get_invoices"]["input_schema"]["properties"]["status"]["enum"] == ["open", "paid"]
    assert sw["legacy.get_invoices"]["binding"]["records"] == "$[*]"
    assert sw["legacy.get_invoices"]["output_schema"]["properties"]["parent"]["x-recursive"] == "Invoice"
    assert sw["legacy.put_invoices"]["side_effect"] == "write"
    assert sw["legacy.put_invoices"]["input_schema"]["required"] == ["body"]


def _large_openapi(n_resources: int) -> dict[str, Any]:
    """An API of n resources x 5 operations (list, create, get, update, delete)."""
    nouns = ["invoice", "bill", "shipment", "supplier", "employee", "product", "ticket", "contract", "lead",
             "campaign", "asset", "vehicle", "project", "timesheet", "expense", "refund", "coupon", "review"]
    paths: dict[str, Any] = {}
    for i in range(n_resources):
        noun = f"{nouns[i % len(nouns)]}s" + (f"_{i // len(nouns)}" if i >= len(nouns) else "")
        schema = {"type": "object", "properties": {f"{noun}_id": {"type": "integer"}, "name": {"type": "string"},
                                                   f"field_{i}": {"type": "string"}}}
        ok = {"200": {"description": "ok", "content": {"application/json": {"schema": schema}}}}
        paths[f"/{noun}"] = {"get": {"summary": f"List {noun}", "responses": ok},
                             "post": {"summary": f"Create one of {noun}", "responses": ok}}
        paths[f"/{noun}/{{id}}"] = {"parameters": [{"name": "id", "in": "path", "required": True,
                                                    "schema": {"type": "integer"}}],
                                    "get": {"summary": f"One of {noun}", "responses": ok},
                                    "patch": {"summary": f"Change one of {noun}", "responses": ok},
                                    "delete": {"summary": f"Remove one of {noun}", "responses": ok}}
    return {"openapi": "3.0.3", "info": {"title": "big", "version": "1"}, "paths": paths}


def test_search_stays_fast_and_relevant_on_a_large_catalog() -> None:
    from hub.agent.catalog import Action

    ops = openapi_operations(_large_openapi(200), "big")
    # the keyword index (BM25, synonyms, n-grams) alone: embedding 1,000 actions for search by meaning takes
    # seconds on a cold cache and is measured by bench/search_eval/run.py, not here (tests/test_agent_search.py)
    catalog = Catalog(actions=[Action(**o) for o in ops], semantic=False)
    assert len(catalog) == 1000
    started = time.perf_counter()
    hits = catalog.search("list invoices")  # builds the index
    first = time.perf_counter() - started
    assert hits[0].name == "big.get_invoices"
    started = time.perf_counter()
    for query in ("create a bill", "remove shipment", "supplier by id", "employee timesheet", "vendors"):
        catalog.search(query)
    per_query = (time.perf_counter() - started) / 5
    assert first < 2.0 and per_query < 0.1, (first, per_query)
    assert catalog.search("create a bill")[0].name.startswith("big.post_bills")
    assert catalog.search("remove shipment")[0].name.startswith("big.delete_shipments")
    # by meaning: without any invoice endpoint, "invoices" finds the bills; "vendors" the suppliers
    no_invoices = Catalog(actions=[a for a in catalog.actions if "invoice" not in a.name], semantic=False)
    assert no_invoices.search("list invoices")[0].name.startswith("big.get_bills")
    assert "supplier" in no_invoices.search("vendors")[0].name


def test_rest_without_openapi_comes_from_the_declared_requests(demo: Pipeline) -> None:
    text = demo.path.read_text().replace('      openapi: "${HUB_DEMO_CRM_URL', '      # openapi: "${HUB_DEMO_CRM_URL')
    pipeline = loads(text, demo.path)
    catalog = build_catalog([pipeline], systems=["crm"])
    contacts = catalog.get("crm.get_contacts")
    assert contacts.binding["records"] == "$.items[*]" and contacts.binding["source"] == "crm_contacts"
    assert {"since", "until", "limit"} <= set(contacts.input_schema["properties"])
    assert "outcome" in contacts.output_schema["properties"]


def test_unreachable_system_is_reported_not_fatal(demo: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUB_DEMO_ERP_WSDL", "http://127.0.0.1:9/erp?wsdl")
    monkeypatch.setenv("HUB_CACHE_DIR", str(demo.root / "no-cache"))
    catalog = build_catalog([demo])
    assert "erp" in catalog.errors
    assert "crm.get_customers" in catalog and not any(a.system == "erp" for a in catalog.actions)


# --- guarded calls ---------------------------------------------------------------------------------------

def test_read_actions_return_bounded_records_and_are_audited(demo: Pipeline, catalog: Catalog) -> None:
    guard = Guard(catalog, actor="alice", agent="test-agent")
    r = guard.call("crm.get_customers", {"per_page": 20}, max_rows=5)
    assert (r.outcome, r.total, len(r.records), r.truncated) == ("ok", 20, 5, True)
    assert r.records[0]["id"] == 1 and "address" in r.records[0]
    r = guard.call("erp.GetOrders", {"FromDate": "2024-01-01T00:00:00Z", "ToDate": "2024-01-02T00:00:00Z",
                                     "Page": 1, "PageSize": 5})
    assert r.outcome == "ok" and r.total == 5 and r.records[0]["OrderId"] == 100001
    r = guard.call("inventory.stock_levels", {"where": {"warehouse_id": 1}, "order_by": ["-quantity"], "limit": 3})
    assert r.outcome == "ok" and len(r.records) == 3 and r.total is not None and r.total >= 3
    assert [x["quantity"] for x in r.records] == sorted((x["quantity"] for x in r.records), reverse=True)
    r = guard.call("inventory.stock_levels", {"where": {"sku; drop table x": 1}})
    assert r.outcome == "refused" and "not a column" in r.message
    files = guard.call("bank.statements", {})
    assert files.outcome == "ok" and files.total == 7 and files.records[0]["file"].startswith("statements_")
    lines = guard.call("bank.statements", {"file": files.records[0]["file"]}, max_rows=2)
    assert lines.outcome == "ok" and len(lines.records) == 2 and "Betrag" in lines.records[0]
    rows = audit_rows(demo)
    assert [(x["action"], x["outcome"]) for x in rows] == [
        ("crm.get_customers", "ok"), ("erp.GetOrders", "ok"), ("inventory.stock_levels", "ok"),
        ("inventory.stock_levels", "refused"), ("bank.statements", "ok"), ("bank.statements", "ok")]
    first = rows[0]
    assert (first["actor"], first["agent"], first["session"], first["side_effect"]) == (
        "alice", "test-agent", guard.session, "read")
    assert json.loads(first["params"]) == {"per_page": 20}
    assert (first["rows_returned"], first["rows_total"]) == (5, 20) and first["duration_ms"] > 0


def test_write_needs_allow_list_and_approval_and_budget_applies(demo: Pipeline, catalog: Catalog) -> None:
    guard = Guard(catalog, actor="bob")
    refused = guard.call("erp.GetCustomer", {"CustomerId": 3})  # a write (spec override), allowed, not approved
    assert refused.outcome == "refused" and "explicit approval" in refused.message
    ok = guard.call("erp.GetCustomer", {"CustomerId": 3}, approve=True)
    assert ok.outcome == "ok" and ok.records == [{"Id": 3, "Name": "Customer 0003", "Region": "APAC"}]
    assert guard.call("erp.GetOrders", {"PageSize": 1, "Nope": 1}).outcome == "refused"  # unknown parameter
    assert guard.call("erp.ListOrders", {"FromDate": "2024-01-01T00:00:00Z",
                                         "ToDate": "2024-01-01T01:00:00Z"}).outcome == "ok"
    assert guard.call("erp.GetCustomer", {"CustomerId": 4}, approve=True).outcome == "ok"  # 3rd erp call
    spent = guard.call("erp.GetCustomer", {"CustomerId": 5}, approve=True)
    assert spent.outcome == "refused" and "budget of system erp is spent (3 call(s)" in spent.message
    assert guard.call("crm.get_customers", {"per_page": 1}).outcome == "ok"  # other systems have their own
    outcomes = [(x["action"], x["outcome"], x["approved"]) for x in audit_rows(demo)]
    assert outcomes == [("erp.GetCustomer", "refused", False), ("erp.GetCustomer", "ok", True),
                        ("erp.GetOrders", "refused", False), ("erp.ListOrders", "ok", False),
                        ("erp.GetCustomer", "ok", True), ("erp.GetCustomer", "refused", True),
                        ("crm.get_customers", "ok", False)]


def test_rest_writes_against_a_partner_api(partner: Any, tmp_path: Path, warehouse_path: Path) -> None:
    pipeline = load(partner_spec(tmp_path / "p", partner.url, allow=["partner.post_customers"]))
    guard = Guard(build_catalog([pipeline]))
    denied = guard.call("partner.delete_customers_by_id", {"id": 1}, approve=True)
    assert denied.outcome == "refused" and "not in the allow-list" in denied.message
    unapproved = guard.call("partner.post_customers", {"body": {"name": "Initech"}})
    assert unapproved.outcome == "refused" and partner.posts == []
    created = guard.call("partner.post_customers", {"body": {"name": "Initech", "password": "hunter2"}},
                         approve=True)
    assert created.outcome == "ok" and created.records[0]["id"] == 3
    assert partner.posts == [{"name": "Initech", "password": "hunter2"}]
    found = guard.call("partner.post_customers_search", {"body": {"name": "Ini"}})  # POST marked as a read
    assert found.outcome == "ok" and [c["name"] for c in found.records] == ["Initech"]
    assert 1 in partner.store
    rows = audit_rows(pipeline)
    assert [r["outcome"] for r in rows] == ["refused", "refused", "ok", "ok"]
    assert json.loads(rows[2]["params"]) == {"body": {"name": "Initech", "password": "***"}}  # masked


def test_rate_limit_spaces_calls_and_budget_per_system(partner: Any, tmp_path: Path, warehouse_path: Path) -> None:
    pipeline = load(partner_spec(tmp_path / "p", partner.url, budget=4, rate_limit=10))
    guard = Guard(build_catalog([pipeline]))
    started = time.monotonic()
    assert [guard.call("partner.get_customers", {}).outcome for _ in range(5)] == ["ok"] * 4 + ["refused"]
    assert time.monotonic() - started >= 0.3  # 4 calls at most 10 per second: 3 gaps of 0.1 s
    assert guard.remaining("partner") == 0


def test_mask_params() -> None:
    assert mask_params({"user": "u", "api_key": "k", "nested": {"client_secret": "s", "n": 1}}) == \
        {"user": "u", "api_key": "***", "nested": {"client_secret": "***", "n": 1}}


# --- the CLI ---------------------------------------------------------------------------------------------

def test_cli_catalog_actions_and_agent_run(demo: Pipeline) -> None:
    runner = CliRunner()
    listed = runner.invoke(app, ["catalog", "actions", str(demo.path), "--json"])
    assert listed.exit_code == 0, listed.output
    assert "erp.GetOrders" in {a["name"] for a in json.loads(listed.stdout)}
    found = runner.invoke(app, ["catalog", "actions", str(demo.path), "--search", "stock levels", "-n", "1", "--json"])
    assert [a["name"] for a in json.loads(found.stdout)] == ["inventory.stock_levels"]
    human = runner.invoke(app, ["catalog", "actions", str(demo.path)])
    assert human.exit_code == 0 and "crm.get_contacts" in human.stdout
    ran = runner.invoke(app, ["agent", "run", "inventory.warehouses", "--params", '{"limit": 2}',
                              "--spec", str(demo.path), "--user", "carol"])
    assert ran.exit_code == 0, ran.output
    assert json.loads(ran.stdout)["returned"] == 2
    refused = runner.invoke(app, ["agent", "run", "erp.GetCustomer", "--params", '{"CustomerId": 1}',
                                  "--spec", str(demo.path)])
    assert refused.exit_code == 3 and json.loads(refused.stdout)["outcome"] == "refused"
    approved = runner.invoke(app, ["agent", "run", "erp.GetCustomer", "--params", '{"CustomerId": 1}',
                                   "--spec", str(demo.path), "--approve"])
    assert approved.exit_code == 0 and json.loads(approved.stdout)["records"][0]["Id"] == 1
    assert [r["actor"] for r in audit_rows(demo)] == ["carol", *[r["actor"] for r in audit_rows(demo)][1:]]
