"""Agent parameters checked against the action's full input schema before anything is sent, and agent reads
of REST actions bound to a spec source that follow the source's pagination; against the real demo estate
(CRM over REST, ERP over SOAP) and a partner REST API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from hub.agent.catalog import Catalog, build_catalog
from hub.agent.guard import AUDIT_TABLE, Guard
from hub.agent.params import problems
from hub.cli.main import app
from hub.demo.crm import CRMService
from hub.demo.erp import ERPService
from hub.spec import Pipeline, load, loads
from hub.warehouse import connect
from tests.agent_support import partner_api, partner_spec
from tests.conftest import demo_spec_text


def _pipeline(tmp_path: Path, text: str) -> Pipeline:
    path = tmp_path / "demo.yaml"
    path.write_text(text)
    return loads(path.read_text(), path)


@pytest.fixture
def demo(crm: CRMService, tmp_path: Path, warehouse_path: Path) -> Pipeline:
    """The demo spec as shipped (the CRM described by its OpenAPI document)."""
    return _pipeline(tmp_path, demo_spec_text())


@pytest.fixture
def catalog(demo: Pipeline) -> Catalog:
    return build_catalog([demo])


def _without_openapi(tmp_path: Path) -> Pipeline:
    """The demo spec without the CRM's OpenAPI document (its actions come from the sources), customers read 2
    per page."""
    text = demo_spec_text().replace('      openapi: "${HUB_DEMO_CRM_URL', '      # openapi: "${HUB_DEMO_CRM_URL')
    text = text.replace("request: {path: /customers, params: {per_page: 50}}",
                        "request: {path: /customers, params: {per_page: 2}}")
    assert "per_page: 2}" in text and "# openapi" in text, "demo spec changed; update the test"
    return _pipeline(tmp_path, text)


@pytest.fixture
def paged(crm: CRMService, tmp_path: Path, warehouse_path: Path) -> Pipeline:
    """:func:`_without_openapi`, and a CRM holding 6 customers: 3 pages."""
    crm.data.customers[:] = crm.data.customers[:6]
    return _without_openapi(tmp_path)


def sent(crm: CRMService, path: str = "/api/customers") -> int:
    """Requests the CRM received for *path* (its request log)."""
    return sum(1 for p, _ in crm.traceparents if p == path)


def audit(pipeline: Pipeline) -> list[dict[str, Any]]:
    return connect(pipeline.warehouse_url).query(f"SELECT * FROM {AUDIT_TABLE} ORDER BY called_at").to_pylist()


# --- parameters ---------------------------------------------------------------------------------------------

def test_wrong_type_and_below_minimum_are_refused_before_sending(demo: Pipeline, catalog: Catalog,
                                                                 crm: CRMService) -> None:
    guard = Guard(catalog, actor="newcomer")
    text = guard.call("crm.get_customers", {"page": "abc"})
    assert text.outcome == "refused", text.to_dict()
    assert "page: 'abc' is not of type 'integer'" in text.message and "nothing was sent" in text.message
    zero = guard.call("crm.get_customers", {"page": 0})
    assert zero.outcome == "refused", zero.to_dict()
    assert "page: 0 is less than the minimum of 1" in zero.message
    both = guard.call("crm.get_customers", {"page": 0, "per_page": "many"})
    assert both.outcome == "refused" and "2 invalid parameter(s)" in both.message
    assert "page: 0 is less than the minimum of 1" in both.message
    assert "per_page: 'many' is not of type 'integer'" in both.message
    assert sent(crm) == 0  # nothing reached the CRM
    rows = audit(demo)
    assert [(r["action"], r["outcome"]) for r in rows] == [("crm.get_customers", "refused")] * 3
    assert "is not of type 'integer'" in rows[0]["message"] and json.loads(rows[2]["params"])["page"] == 0
    assert guard.used == {}  # a refused call spends no budget
    assert guard.call("crm.get_customers", {"page": 1, "per_page": 3}).outcome == "ok" and sent(crm) == 1


def test_every_problem_is_named_at_once_unknown_parameters_included(catalog: Catalog, crm: CRMService) -> None:
    r = Guard(catalog).call("crm.get_customers", {"nope": 1, "per_page": 500, "page": 1.5})
    assert r.outcome == "refused", r.to_dict()
    assert "3 invalid parameter(s)" in r.message
    assert "nope: unknown parameter (expected one of: page, per_page)" in r.message
    assert "per_page: 500 is greater than the maximum of 200" in r.message
    assert "page: 1.5 is not of type 'integer'" in r.message
    missing = Guard(catalog).call("crm.get_contacts", {"since": "2024-01-01"})
    assert missing.outcome == "refused"
    assert "since: '2024-01-01' is not a 'date-time'" in missing.message  # a date is not a date-time
    assert "until: required parameter is missing" in missing.message
    assert sent(crm) == 0 and sent(crm, "/api/contacts") == 0


def test_soap_parameters_of_the_wrong_type_are_refused(catalog: Catalog, erp: ERPService) -> None:
    erp.requests.clear()
    guard = Guard(catalog)
    r = guard.call("erp.GetOrders", {"FromDate": "yesterday", "ToDate": "2024-01-02T00:00:00Z", "Page": "two",
                                     "PageSize": 5})
    assert r.outcome == "refused", r.to_dict()
    assert "Page: 'two' is not of type 'integer'" in r.message
    assert "FromDate: 'yesterday' is not a 'date-time'" in r.message
    assert not any(b"GetOrders" in body for body in erp.requests)
    ok = guard.call("erp.GetOrders", {"FromDate": "2024-01-01T00:00:00Z", "ToDate": "2024-01-02T00:00:00Z",
                                      "Page": 1, "PageSize": 5})
    assert ok.outcome == "ok" and ok.total == 5
    assert any(b"GetOrders" in body for body in erp.requests)


def test_nested_body_is_validated_before_a_write(tmp_path: Path, warehouse_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARTNER_TOKEN", "partner-token")
    with partner_api() as partner:
        pipeline = load(partner_spec(tmp_path / "p", partner.url, allow=["partner.post_customers"]))
        guard = Guard(build_catalog([pipeline]))
        r = guard.call("partner.post_customers", {"body": {"email": 5}}, approve=True)
        assert r.outcome == "refused", r.to_dict()
        assert "body.name: required parameter is missing" in r.message
        assert "body.email: 5 is not of type 'string'" in r.message
        assert partner.posts == []
        assert [x["outcome"] for x in audit(pipeline)] == ["refused"]


def test_cli_agent_run_refuses_with_one_clear_line(demo: Pipeline, crm: CRMService) -> None:
    result = CliRunner().invoke(app, ["agent", "run", "crm.get_customers", "--params", '{"page": "abc"}',
                                      "--spec", str(demo.path)])
    assert result.exit_code == 3, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("refused: crm.get_customers:")
    assert "page: 'abc' is not of type 'integer'" in lines[0]
    assert json.loads(result.stdout)["outcome"] == "refused"
    assert sent(crm) == 0


# --- actions derived from spec sources ------------------------------------------------------------------------

def test_spec_source_action_schema_is_precise(paged: Pipeline, crm: CRMService) -> None:
    catalog = build_catalog([paged], systems=["crm"])
    customers = catalog.get("crm.get_customers")
    props = customers.input_schema["properties"]
    assert props["per_page"]["type"] == "integer" and props["per_page"]["default"] == 2
    assert props["page"] == {"type": "integer", "minimum": 1, "x-in": "query",
                             "description": "page number (pagination of source crm_customers, from 1); "
                                            "without it every page is read"}
    assert customers.input_schema["additionalProperties"] is False
    contacts = catalog.get("crm.get_contacts")
    assert contacts.input_schema["properties"]["since"]["format"] == "date-time"
    assert set(contacts.input_schema["required"]) == {"since", "until"}
    guard = Guard(catalog)
    for params, expected in (({"per_page": "two"}, "per_page: 'two' is not of type 'integer'"),
                             ({"page": 0}, "page: 0 is less than the minimum of 1")):
        r = guard.call("crm.get_customers", params)
        assert r.outcome == "refused" and expected in r.message, r.to_dict()
    assert sent(crm) == 0


def test_agent_read_of_a_paginated_spec_source_returns_every_page(paged: Pipeline, crm: CRMService) -> None:
    guard = Guard(build_catalog([paged], systems=["crm"]))
    r = guard.call("crm.get_customers", {})
    assert r.outcome == "ok", r.to_dict()
    assert (r.total, len(r.records), r.truncated) == (6, 6, False)
    assert [c["id"] for c in r.records] == [1, 2, 3, 4, 5, 6]
    assert sent(crm) == 3  # 3 pages of 2
    short = guard.call("crm.get_customers", {}, max_rows=3)
    assert short.outcome == "ok" and len(short.records) == 3 and short.truncated
    assert short.total is None and short.to_dict()["total_at_least"] >= 4
    assert "at least" in short.message
    one = guard.call("crm.get_customers", {"page": 2})  # the agent asks for one page: only that page
    assert [c["id"] for c in one.records] == [3, 4] and one.total == 2
    assert [(x["rows_returned"], x["rows_total"]) for x in audit(paged)] == [(6, 6), (3, None), (2, 2)]
    # cursor pagination, the source's literal `limit: 20` sent as the default, the window given by the agent
    day = [c for c in crm.data.contacts if c["occurred_at"].startswith("2024-01-02")]
    assert len(day) > 20
    contacts = guard.call("crm.get_contacts", {"since": "2024-01-02T00:00:00Z", "until": "2024-01-03T00:00:00Z"})
    assert contacts.outcome == "ok" and contacts.total == len(day) and not contacts.truncated, contacts.to_dict()
    assert sorted(c["contact_id"] for c in contacts.records) == sorted(c["contact_id"] for c in day)
    assert sent(crm, "/api/contacts") == -(-len(day) // 20)  # pages of 20



def test_paged_read_stops_fetching_at_the_row_limit(crm: CRMService, tmp_path: Path, warehouse_path: Path) -> None:
    pipeline = _without_openapi(tmp_path)  # the CRM's 300 customers, 2 per page: 150 pages
    r = Guard(build_catalog([pipeline], systems=["crm"])).call("crm.get_customers", {}, max_rows=5)
    assert r.outcome == "ok" and [c["id"] for c in r.records] == [1, 2, 3, 4, 5], r.to_dict()
    assert r.truncated and r.total is None and r.total_at_least is not None and r.total_at_least > 5
    assert sent(crm) < 30  # the first page, the concurrent window and the hand-over queue; not 150


def test_mcp_tools_get_the_same_refusal(demo: Pipeline, crm: CRMService) -> None:
    from hub.agent.mcp_server import HubTools

    out = HubTools([demo]).call_action("crm.get_customers", {"page": 0})
    assert out["outcome"] == "refused" and "page: 0 is less than the minimum of 1" in out["message"]
    assert sent(crm) == 0


def test_values_of_secret_parameters_stay_out_of_messages() -> None:
    schema = {"type": "object", "properties": {
        "api_key": {"type": "string", "minLength": 40},
        "nested": {"type": "object", "properties": {"client_secret": {"type": "string", "pattern": "^[a-f0-9]+$"}}},
        "note": {"type": "string", "maxLength": 3}}}
    found = problems(schema, {"api_key": "sk-live-123", "nested": {"client_secret": "NOT-HEX"}, "note": "x" * 500})
    text = "; ".join(found)
    assert len(found) == 3 and "sk-live-123" not in text and "NOT-HEX" not in text, found
    assert "api_key: '***' is too short" in text and "nested.client_secret: '***' does not match" in text
    assert "note: 'xxxx" in text and "x" * 100 not in text  # long values are cut


# --- the compiled check (hub.agent.params._compile) -------------------------------------------------------

HANDMADE: list[dict[str, Any]] = [
    {"type": "object", "required": ["id", "tags"], "additionalProperties": False, "properties": {
        "id": {"type": "integer", "minimum": 1, "maximum": 10}, "name": {"type": "string", "minLength": 2,
                                                                     "maxLength": 5, "pattern": "^[a-z]+$"},
        "kind": {"enum": ["a", "b"]}, "fixed": {"const": "x"}, "ratio": {"type": "number", "exclusiveMinimum": 0,
                                                                         "exclusiveMaximum": 1},
        "tags": {"type": "array", "minItems": 1, "maxItems": 2, "items": {"type": "string"}},
        "when": {"type": "string", "format": "date-time"}, "day": {"type": "string", "format": "date"},
        "nested": {"type": "object", "additionalProperties": {"type": "integer"},
                   "properties": {"s": {"type": "string"}}},
        "maybe": {"anyOf": [{"type": "integer"}, {"type": "null"}]}, "any": True,
        "multi": {"type": ["string", "null"]},
        "x": {"type": "string", "x-xsd-type": "string", "description": "annotated"}}},
    {"type": "object", "properties": {"v": {"oneOf": [{"type": "string"}, {"type": "integer"}]}}},  # not compiled
    {"type": "object", "properties": {"n": {"enum": [1, True, None]}}},  # not compiled: jsonschema's equality
    {"$schema": "http://json-schema.org/draft-04/schema#", "type": "object",
     "properties": {"n": {"type": "number", "minimum": 1, "exclusiveMinimum": True}}},  # draft 4: not compiled
    {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
     "properties": {"n": {"type": "integer"}, "l": {"items": [{"type": "string"}]}}},  # tuple items: not compiled
]

VALUES: list[Any] = [None, True, False, 0, 1, 5, 11, -1, 1.0, 0.5, 1.5, "", "a", "ab", "abc", "abcdef", "AB", "x",
                     "b", "2024-01-02T03:04:05Z", "2024-01-02", "not a date", [], ["a"], ["a", "b", "c"], [1], {},
                     {"s": "t"}, {"s": 1}, {"n": 1}, {"n": "1"}]


def _instances(schema: Any) -> list[Any]:
    """Objects built from the schema's own properties with every value of VALUES, one property at a time, plus
    the required-only object, objects missing each required property and one with an unknown property."""
    if not isinstance(schema, dict) or not isinstance(schema.get("properties"), dict):
        return list(VALUES)
    props = schema["properties"]
    base = {name: _valid(sub) for name, sub in props.items() if name in schema.get("required", [])}
    out: list[Any] = [base, {**base, "unknown-one": 1}, *VALUES]
    out.extend({k: v for k, v in base.items() if k != name} for name in base)
    for name, sub in props.items():
        out.extend({**base, name: value} for value in [*VALUES, _valid(sub)])
    return out


def _valid(schema: Any) -> Any:
    """A value that the schema most likely accepts (the test checks what it claims, not this guess)."""
    if not isinstance(schema, dict):
        return "a"
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    if "anyOf" in schema:
        return _valid(schema["anyOf"][0])
    kind = schema.get("type")
    kind = kind[0] if isinstance(kind, list) else kind
    if kind == "object":
        return {name: _valid(sub) for name, sub in (schema.get("properties") or {}).items()
                if name in schema.get("required", [])}
    if kind == "array":
        return [_valid(schema.get("items", {}))] * max(1, schema.get("minItems", 1))
    if kind == "integer":
        return int(schema.get("minimum", 5))
    if kind == "number":
        return 0.5 if "exclusiveMaximum" in schema else float(schema.get("minimum", 5))
    if kind == "boolean":
        return True
    if schema.get("format") == "date-time":
        return "2024-01-02T03:04:05Z"
    if schema.get("format") == "date":
        return "2024-01-02"
    return "abc"[: schema.get("maxLength", 3)] or ""


def _verdicts(schema: dict[str, Any]) -> tuple[int, int]:
    """(instances the compiled check accepted, instances jsonschema accepts); fails on any instance the compiled
    check accepts that jsonschema refuses."""
    from hub.agent.params import _accepting, _validator

    text = json.dumps(schema, sort_keys=True, default=str)
    quick, validator = _accepting(text), _validator(text)
    assert not isinstance(validator, str)
    accepted = valid = 0
    for instance in _instances(schema):
        ok = not list(validator.iter_errors(instance))
        valid += ok
        if quick is not None and quick(instance):
            accepted += 1
            assert ok, (schema, instance)
    return accepted, valid


def test_compiled_check_accepts_only_what_jsonschema_accepts(demo: Pipeline, catalog: Catalog,
                                                             erp: ERPService) -> None:
    """Every action's input schema of the demo estate (CRM over REST, ERP over SOAP) and schemas with each
    compiled keyword: the quick check never accepts a request jsonschema refuses, and accepts the valid ones of
    the schemas it compiles."""
    from hub.agent.params import _accepting, closed

    schemas = [closed(a.input_schema) for a in catalog.actions if a.input_schema] + HANDMADE
    compiled = 0
    for schema in schemas:
        accepted, valid = _verdicts(schema)
        if _accepting(json.dumps(schema, sort_keys=True, default=str)) is not None:
            compiled += 1
            assert accepted == valid, schema  # every valid instance is accepted without jsonschema's walk
    assert compiled >= len(schemas) - 4 and len(schemas) > 10
    for schema in HANDMADE[1:]:
        assert _accepting(json.dumps(schema, sort_keys=True)) is None, schema
