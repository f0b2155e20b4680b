"""Plans that act (issue 19, point 1): `hub agent plan` turns a request that writes into a flow spec, validated
and dry-run (the exact requests, checked against the targets' schemas, nothing sent), which never runs without
an approval (`hub flow run --approve`, or `hub agent approve` of the MCP's pending approval); destructive
requests the policy forbids are refused with the reason. Against the demo estate (ERP SOAP, CRM REST, bank
SFTP) on loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from hub.agent.catalog import build_catalog
from hub.agent.flowplan import Clause, Field, Source, _text, action_effect, split_request, verb_effect
from hub.agent.planner import plan
from hub.agent.understand import write_intent
from hub.cli.main import app
from hub.demo.crm import CRMService
from hub.demo.erp import ERPService
from hub.spec import Pipeline, load, loads
from tests.conftest import demo_spec_text

PAYMENT = "when a payment arrives for an order, mark it paid in the ERP and log an activity in the CRM"


def _demo(tmp_path: Path, extra: str = "") -> Pipeline:
    path = tmp_path / "specs" / "demo.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(demo_spec_text() + extra)
    return loads(path.read_text(), path)


@pytest.fixture
def own_erp(crm: CRMService, monkeypatch: pytest.MonkeyPatch) -> Iterator[ERPService]:
    """An ERP of the test's own: approved flows mark its orders paid (the session's ERP stays untouched)."""
    with ERPService(port=0) as service:
        monkeypatch.setenv("HUB_DEMO_ERP_WSDL", service.wsdl_url)
        yield service


def _mark_paid_requests(erp: ERPService) -> list[bytes]:
    return [r for r in erp.requests if b"MarkOrderPaid" in r]


def test_request_parts_and_effects() -> None:
    acting = split_request(PAYMENT, set())
    assert acting is not None and acting.kind == "when" and acting.trigger == "a payment arrives for an order"
    assert [c.verb for c in acting.clauses] == ["mark", "log"]
    tail = split_request("open a task in the CRM if a customer pays more than an order is worth", set())
    assert tail is not None and tail.kind == "if" and [c.verb for c in tail.clauses] == ["open"]
    assert split_request("revenue per region", set()) is None
    timed = split_request("every day at 7 open a task in the CRM for each open order", set())
    assert timed is not None and timed.kind == "none" and [c.verb for c in timed.clauses] == ["open"]
    assert write_intent("every morning log an activity in the CRM for each shipped order") == "log"
    assert write_intent("every Monday at 8 give me the number of contacts per channel") is None
    # every mutating verb is classified by what it does, not looked up in a list of forbidden words
    assert [verb_effect(v) for v in ("wipe", "truncate", "overwrite", "reset", "zero", "log", "mark")] == \
        ["delete", "delete", "delete", "delete", "delete", "create", "update"]

    class _A:
        def __init__(self, name: str, protocol: str, binding: dict[str, str]) -> None:
            self.name, self.protocol, self.binding = name, protocol, binding

    assert action_effect(_A("crm.delete_activities_by_id", "rest", {"method": "DELETE"})) == "delete"
    assert action_effect(_A("crm.patch_tasks_by_id", "rest", {"method": "PATCH"})) == "update"
    assert action_effect(_A("crm.post_tasks", "rest", {"method": "POST"})) == "create"
    assert action_effect(_A("erp.MarkOrderPaid", "soap", {"operation": "MarkOrderPaid"})) == "update"
    assert action_effect(_A("erp.PurgeOrders", "soap", {"operation": "PurgeOrders"})) == "delete"
    assert action_effect(_A("catalogue.deleteProduct", "graphql", {"field": "deleteProduct"})) == "delete"


@pytest.mark.slow  # the estate, its catalog and sample partitions, dry runs: ~30 s
def test_writes_with_their_own_condition_and_named_systems() -> None:
    """A write with its own condition ("and for the ones above 1,000 euros also leave a note") is a clause of its own
    that carries the condition; "have the CRM raise a task" is a write; "1,000" is one number."""
    acting = split_request("once the bank shows an order paid in full, flag it as paid in the ERP, and for the ones "
                           "above 1,000 euros also leave a note in the CRM", set())
    assert acting is not None and [c.verb for c in acting.clauses] == ["flag", "leave"]
    assert acting.clauses[0].condition == "" and acting.clauses[1].condition == "for the ones above 1000 euros"
    acting = split_request("when a customer has paid more than the order was for, have the CRM raise a task; when "
                           "the payment matches, mark the order paid in the ERP instead", set())
    assert acting is not None and [c.verb for c in acting.clauses] == ["raise", "mark"]


def test_a_written_text_is_shortened_in_its_words_never_in_its_template() -> None:
    request = "put a note in the CRM against every order over 2000 euros that came in yesterday, " * 3
    field = Field(("body", "note"), "str", {"type": "string", "maxLength": 100}, True)
    item = [Source("item.order_id", "order_id", "int", {"order", "id"}, 0),
            Source("item.amount", "amount", "num", {"amount"}, 0)]
    text = _text(field, Clause(request, "put"), item, "")
    assert len(text) <= 100 and text.endswith("order_id {{ item.order_id }}, amount {{ item.amount }}"), text


def test_acting_request_is_a_flow_that_runs_only_when_approved(own_erp: ERPService, crm: CRMService,
                                                             warehouse_path: Path, dagster_home: Path,
                                                             tmp_path: Path) -> None:
    demo = _demo(tmp_path)
    catalog = build_catalog([demo])
    out = tmp_path / "specs" / "payments.yaml"
    res = plan(PAYMENT, [demo], catalog=catalog, output=out, partition="2024-01-01")
    assert res.ok, res.errors
    assert res.flow == "payments" and out.exists()
    planned = load(out)  # a valid spec on its own: sources, flow, checks of the flow
    flow = planned.spec.flows[res.flow]
    assert flow.approved is False and flow.planned_by and PAYMENT[:40] in flow.planned_by
    bank = next(n for n in planned.sources if n.endswith("bank_statements"))
    assert flow.trigger.after == bank  # "when a payment arrives": new bank statement lines
    calls = {s.call: s for s in flow.steps}
    assert set(calls) == {"erp.MarkOrderPaid", "crm.post_activities"}
    # the mapping: the ERP's order id is the number the bank's reference carries (sample values), the amount
    # by name, the CRM activity's kind from the request's words
    assert calls["erp.MarkOrderPaid"].params["OrderId"] == "{{ item.order_id }}"
    assert calls["erp.MarkOrderPaid"].params["Amount"] == "{{ item.amount }}"
    assert calls["crm.post_activities"].params["body"]["kind"] == "payment_received"
    assert "regexp_extract" in str(flow.input.sql) or "order_id" in str(flow.input.sql)
    # every write with its target and a sample request, validated against the target's schema; nothing sent
    samples = {w["step"]: w for w in res.writes if w["sample"]}
    assert {w["target"] for w in samples.values()} == {"erp: SOAP operation MarkOrderPaid", "crm: POST /activities"}
    mark = next(w for w in samples.values() if w["action"] == "erp.MarkOrderPaid")
    assert mark["request"]["PaymentRef"] == f"ORD-{mark['request']['OrderId']}"
    assert isinstance(mark["request"]["OrderId"], int) and mark["effect"] == "update"
    assert _mark_paid_requests(own_erp) == [] and crm.data.activities == {}

    runner = CliRunner()
    # the CLI prints every write and how to run it; the plan it writes is the same
    out2 = tmp_path / "specs" / "payments2.yaml"
    r = runner.invoke(app, ["agent", "plan", PAYMENT, "--spec", str(tmp_path / "specs" / "demo.yaml"), "-o", str(out2),
                            "--partition", "2024-01-01"])
    assert r.exit_code == 0, r.output
    assert "erp.MarkOrderPaid -> erp: SOAP operation MarkOrderPaid (update); sample request" in r.output
    assert "crm.post_activities -> crm: POST /activities (create); sample request" in r.output
    assert "--approve" in r.output and out2.exists()

    # the input is materialized like any pipeline; the flow itself is refused without an approval
    import dagster as dg

    from hub.dagster.run import run_pipeline

    outcomes = run_pipeline(planned, dg.DagsterInstance.ephemeral(), partitions=["2024-01-01"], files=None)
    assert all(o.success for o in outcomes), [o.error for o in outcomes]
    r = runner.invoke(app, ["flow", "run", res.flow, "--spec", str(out)])
    assert r.exit_code == 3, r.output
    assert f"hub flow run {res.flow} --spec {out} --approve" in r.output.replace("\n", "")
    assert _mark_paid_requests(own_erp) == [] and crm.data.activities == {}
    # Dagster gives an unapproved flow no trigger
    from hub.dagster.flows import flow_asset

    assert all(c is None for c in flow_asset(planned, res.flow, None).automation_conditions_by_key.values())
    approved = loads(out.read_text().replace("approved: false", "approved: true"), out)
    assert any(c is not None for c in flow_asset(approved, res.flow, None).automation_conditions_by_key.values())
    r = runner.invoke(app, ["flow", "run", res.flow, "--spec", str(out), "--dry-run"])
    assert r.exit_code == 0 and "nothing was sent" in r.output, r.output
    assert _mark_paid_requests(own_erp) == []
    # approved: the writes reach the ERP and the CRM (orders on hold are refused by the ERP: exit 1)
    r = runner.invoke(app, ["flow", "run", res.flow, "--spec", str(out), "--approve"])
    assert r.exit_code in (0, 1), r.output
    assert len(_mark_paid_requests(own_erp)) >= 1 and len(crm.data.activities) >= 1


@pytest.mark.slow  # the estate, its catalog and sample partitions, dry runs: ~30 s
def test_destructive_and_impossible_writes_are_refused(crm: CRMService, warehouse_path: Path, dagster_home: Path,
                                                      tmp_path: Path) -> None:
    demo = _demo(tmp_path)
    catalog = build_catalog([demo])
    out = tmp_path / "x.yaml"
    for request in ("delete the activities of cancelled orders in the CRM",
                    "when an order is cancelled, remove its activity in the CRM",
                    "wipe the CRM tasks"):
        res = plan(request, [demo], catalog=catalog, output=out)
        assert res.refused and not res.ok and res.spec_text is None, (request, res.errors)
        assert "agent.flow_effects" in res.reason or "destructive" in res.reason, res.reason
        assert not out.exists()
    # a write no action of the catalog does is refused as before (nothing planned)
    res = plan("make the gold customers silver", [demo], catalog=catalog, output=out)
    assert res.refused and "no write action of the catalog does" in res.reason and not out.exists()
    # a policy that allows deletions lets the same verb through the policy check (it is then planned or not on
    # its merits, never refused as forbidden)
    allowing = _demo(tmp_path, "\nagent: {flow_effects: [create, update, delete]}\n")
    res = plan("when an order is cancelled, remove its activity in the CRM", [allowing],
               catalog=build_catalog([allowing]))
    assert "agent.flow_effects" not in res.reason


@pytest.mark.slow  # the estate, its catalog and sample partitions, dry runs: ~30 s
def test_mcp_plan_of_a_flow_is_a_pending_approval(own_erp: ERPService, crm: CRMService, warehouse_path: Path,
                                                 dagster_home: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from hub.agent.mcp_server import HubTools

    monkeypatch.setenv("HUB_STATE_DIR", str(tmp_path / "state"))
    demo = _demo(tmp_path)
    tools = HubTools([demo], actor="alice")
    out = tools.plan_pipeline("whenever the bank books money against an order, flag that order as settled on "
                              "the ERP side", dry_run=True, requested_by="alice")
    assert out.outcome == "pending_approval" and out.approval is not None, out.plan.get("errors")
    assert out.approval.action.startswith("flow:") and "erp: SOAP operation MarkOrderPaid" in out.approval.target
    assert out.approval.status == "pending" and out.approval.requested_by == "alice"
    assert _mark_paid_requests(own_erp) == []
    runner = CliRunner()
    spec = str(tmp_path / "specs" / "demo.yaml")
    r = runner.invoke(app, ["agent", "pending", "--spec", spec, "--json"])
    assert r.exit_code == 0 and out.approval.id in r.output
    r = runner.invoke(app, ["agent", "approve", out.approval.id, "--spec", spec, "--user", "bob"])
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)["result"]
    written = Path(result["message"].split("written to ")[1].split(":")[0])
    adopted = load(written)
    name = out.approval.action.split(":", 1)[1]
    assert adopted.spec.flows[name].approved is True and "approved by bob" in str(adopted.spec.flows[name].planned_by)
    assert _mark_paid_requests(own_erp) == []  # approving adopts the flow; its trigger or `hub flow run` runs it
    r = runner.invoke(app, ["agent", "approve", out.approval.id, "--spec", spec])
    assert r.exit_code == 3  # never twice
    assert yaml.safe_load(written.read_text())["flows"][name]["approved"] is True


@pytest.mark.slow  # the estate, its catalog and sample partitions, dry runs: ~30 s
def test_schedules_literals_and_identifiers(crm: CRMService, warehouse_path: Path, dagster_home: Path,
                                            tmp_path: Path) -> None:
    """A schedule before the order, a sample value and an identifier as filters, a value the request gives as
    a literal: each reaches the flow and its sample requests."""
    demo = _demo(tmp_path)
    catalog = build_catalog([demo])
    daily = plan("every morning log an activity in the CRM for each shipped order", [demo], catalog=catalog,
                 partition="2024-01-02")
    assert daily.ok, daily.errors
    flow = yaml.safe_load(daily.spec_text or "")["flows"][daily.flow]
    assert flow["trigger"] == {"schedule": "0 6 * * *"} and "m.status = 'shipped'" in flow["input"]["sql"]
    sent = [w for w in daily.writes if w["action"] == "crm.post_activities"]
    assert sent and all(isinstance(w["request"]["body"]["order_id"], int) for w in sent)
    assert daily.dry_run[daily.flow] == len(sent)  # one activity per shipped order of the day, none sent
    assert crm.data.activities == {}
    price = plan("set the price of SKU-00001 in the catalogue to 49.90", [demo], catalog=catalog)
    assert price.ok, price.errors
    assert [w["request"] for w in price.writes] == [{"sku": "SKU-00001", "price": 49.9}]
    assert price.writes[0]["target"] == "catalogue: graphql mutation setProductPrice"
    assert yaml.safe_load(price.spec_text or "")["flows"][price.flow]["trigger"] == {"manual": True}
