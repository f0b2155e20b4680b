"""The planner (hub agent plan): the offline backend on the demo estate, and the LLM backend against a scripted
OpenAI-compatible chat-completions server on loopback."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from hub.agent.catalog import build_catalog
from hub.agent.llm import LLMConfig
from hub.agent.planner import join_keys, plan, samples, universe, validate_plan
from hub.cli.main import app
from hub.demo.crm import CRMService
from hub.spec import Pipeline, load, loads
from hub.warehouse import DuckDBWarehouse
from tests.conftest import demo_spec_text

REVENUE = "every morning load yesterday's ERP orders, join CRM customers and give me revenue per region"


def _demo(tmp_path: Path) -> Pipeline:
    path = tmp_path / "specs" / "demo.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(demo_spec_text())
    return loads(path.read_text(), path)


# ------------------------------------------------------------------------------------------- offline

def test_offline_join_plan_is_valid_and_dry_runs(crm: CRMService, warehouse_path: Path, dagster_home: Path,
                                                 tmp_path: Path) -> None:
    demo = _demo(tmp_path)
    catalog = build_catalog([demo])
    out = tmp_path / "out" / "revenue.yaml"
    kept = tmp_path / "kept.duckdb"
    res = plan(REVENUE, [demo], catalog=catalog, output=out, partition="2024-01-02", warehouse=kept)
    assert res.ok, res.errors
    assert out.exists() and out.read_text() == res.spec_text
    planned = load(out)  # a valid spec on its own
    assert planned.name == "revenue"
    # the demo spec already has these assets: the plan takes none of its names (first-hour issue)
    assert set(planned.sources) == {"revenue_erp_orders", "revenue_crm_customers"}
    assert "renamed erp_orders to revenue_erp_orders" in res.spec_text
    assert planned.spec.schedule == "0 6 * * *"
    assert planned.spec.partitions is not None and planned.spec.partitions.kind == "daily"
    assert planned.sources["revenue_erp_orders"].partitioned
    assert not planned.sources["revenue_crm_customers"].partitioned
    assert planned.sources["revenue_erp_orders"].kind == "soap"
    assert planned.sources["revenue_erp_orders"].config.params["FromDate"] == "{{ partition.start }}"
    sql = planned.spec.models["revenue_revenue_by_region"].sql
    assert "join revenue_crm_customers c on c.id = o.customer_id" in sql and "sum(o.amount) as revenue" in sql
    assert planned.spec.systems["crm"].rest is not None  # copied from the given spec
    assert "order_id" in planned.spec.sources["revenue_erp_orders"].rules  # suggested rules
    assert res.partition == "2024-01-02" and res.dry_run["revenue_erp_orders"] > 0
    assert res.dry_run["revenue_revenue_by_region"] > 0
    # the dry-run result equals the demo's own model over the same partition
    wh = DuckDBWarehouse(f"duckdb:///{kept}")
    got = wh.query("select region, revenue from revenue_revenue_by_region order by region").to_pylist()
    want = wh.query("select c.region, sum(o.amount) as revenue from revenue_erp_orders o join revenue_crm_customers c "
                    "on c.id = o.customer_id group by 1 order by 1").to_pylist()
    assert got == want and len(got) == 4

    # write requests are refused, nothing is planned
    refused = plan("delete the cancelled orders in the ERP", [demo], catalog=catalog, output=tmp_path / "x.yaml")
    assert refused.refused and not refused.ok and "delete" in refused.reason and refused.spec_text is None
    assert not (tmp_path / "x.yaml").exists()

    # a single-system pull with a filter, and a three-system join
    gold = plan("CRM customers where tier is gold", [demo], catalog=catalog)
    assert gold.ok, gold.errors
    assert "c.tier = 'gold'" in (gold.spec_text or "") and "partitions: none" in (gold.spec_text or "")
    # three systems: ERP lines -> ERP orders -> CRM customers (customer_id), inventory levels (sku, their key)
    three = plan("ERP order lines with their CRM customer region and the inventory stock levels of their sku",
                 [demo], catalog=catalog, partition="2024-01-02")
    assert three.ok, three.errors
    planned3 = yaml.safe_load(three.spec_text or "")
    prefix = planned3["pipeline"]  # the demo's names are taken: the plan's assets carry its own name
    assert {f"{prefix}_erp_orders", f"{prefix}_crm_customers", f"{prefix}_inventory_levels"} <= set(planned3["sources"])
    assert "l.sku = ol.sku" in (three.spec_text or "") and three.dry_run[three.result_table or ""] > 0


def test_output_never_written_when_invalid(crm: CRMService, warehouse_path: Path, dagster_home: Path,
                                           tmp_path: Path) -> None:
    demo = _demo(tmp_path)
    catalog = build_catalog([demo])
    out = tmp_path / "broken.yaml"
    # no join key relates the bank's statements and the inventory's stock levels: rejected with the reason
    res = plan("bank statements with stock levels", [demo], catalog=catalog, output=out)
    assert not res.ok and "no join key" in res.reason and not out.exists()
    # a spec whose model reads a column no planned table has is rejected before any dry run
    good = plan("ERP orders per day", [demo], catalog=catalog, dry_run=False)
    assert good.ok and good.spec_text
    broken = good.spec_text.replace("count(*)", "sum(o.revenue)")
    problems, counts, _ = validate_plan(broken, [demo], catalog)
    assert any("erp_orders has no column 'revenue'" in p for p in problems) and not counts
    problems, _, _ = validate_plan(broken.replace("operation: GetOrders", "operation: DeleteOrders"),
                                   [demo], catalog, run=False)
    assert any("reads no action of the catalog" in p for p in problems)
    # a dry run that fails (unknown partition window data is fine; a bad parameter type is not)
    bad_param = good.spec_text.replace("PageSize: 10", "PageSize: ten")
    problems, _, _ = validate_plan(bad_param, [demo], catalog, run=False)
    assert any("PageSize" in p for p in problems)
    # the CLI: refused (exit 3) and rejected (exit 1) plans write nothing; a valid one is written
    spec = tmp_path / "specs" / "demo.yaml"
    runner = CliRunner()
    r = runner.invoke(app, ["agent", "plan", "send the open orders to the bank", "--spec", str(spec), "-o", str(out)])
    assert r.exit_code == 3 and not out.exists(), r.output
    r = runner.invoke(app, ["agent", "plan", "bank statements with stock levels", "--spec", str(spec), "-o", str(out)])
    assert r.exit_code == 1 and not out.exists(), r.output
    r = runner.invoke(app, ["agent", "plan", "CRM contacts per channel", "--spec", str(spec), "-o", str(out),
                            "--partition", "2024-01-03"])
    assert r.exit_code == 0, r.output
    assert load(out).spec.models


def test_offline_understands_requests(crm: CRMService, warehouse_path: Path, dagster_home: Path,
                                     tmp_path: Path) -> None:
    """Comparisons, top-N, anti-joins, joins found from sample values, verb-less writes and "not found", each
    checked against the rows the dry run loaded (the same warehouse)."""
    demo = _demo(tmp_path)
    catalog = build_catalog([demo])

    def rows(res: Any, db: Path, sql: str) -> tuple[list[Any], list[Any]]:
        wh = DuckDBWarehouse(f"duckdb:///{db}")
        got = wh.query(f"select * from {res.result_table}").to_pylist()
        return got, wh.query(sql).to_pylist()

    # a comparison in words, with a currency unit
    db = tmp_path / "cmp.duckdb"
    res = plan("ERP orders worth more than 1000 euros", [demo], catalog=catalog, partition="2024-01-02", warehouse=db)
    assert res.ok, res.errors
    assert "o.amount > 1000" in (res.spec_text or "")
    got, want = rows(res, db, "select * from plan_orders_erp_orders where amount > 1000")
    assert len(got) == len(want) > 0
    # top-N: ordered, limited
    db = tmp_path / "top.duckdb"
    res = plan("the 3 most expensive products in the catalogue", [demo], catalog=catalog, warehouse=db)
    assert res.ok, res.errors
    assert "order by p.price desc limit 3" in (res.spec_text or "")
    got, want = rows(res, db, "select price from plan_products_crm_products order by price desc limit 3")
    assert [r["price"] for r in got] == [r["price"] for r in want]
    # an anti-join: customers without any contact that day
    db = tmp_path / "anti.duckdb"
    res = plan("CRM customers who had no contact", [demo], catalog=catalog, partition="2024-01-02", warehouse=db)
    assert res.ok, res.errors
    assert "not exists (select 1 from" in (res.spec_text or "")
    prefix = yaml.safe_load(res.spec_text or "")["pipeline"]
    got, want = rows(res, db, f"select id from {prefix}_crm_customers where id not in "
                              f"(select customer_id from {prefix}_crm_contacts)")
    assert sorted(r["id"] for r in got) == sorted(r["id"] for r in want) and 0 < len(got) < 300
    assert any("rows with no matching" in n for n in res.notes)  # the assumption is stated
    # a join discovered from sample values: the bank's ORD-100001 is the ERP's order 100001; SKUs of the ERP
    # (SKU-100) never occur in the catalogue (SKU-00001), so those two never join
    tables = {t.name: t for t in universe(catalog, [demo])}
    sample = samples(catalog, [demo], list(tables.values()))
    keys = join_keys(tables["bank_statements"], tables["erp_orders"], sample)
    assert keys and keys[0].cond == "{a}.reference = 'ORD-' || cast({b}.order_id as varchar)"
    assert not join_keys(tables["erp_order_lines"], tables["crm_products"], sample)
    db = tmp_path / "join.duckdb"
    res = plan("bank payments with the ERP order they pay", [demo], catalog=catalog, partition="2024-01-01",
               warehouse=db)
    assert res.ok, res.errors
    got, _ = rows(res, db, "select 1")
    assert got and all(r["reference"] == f"ORD-{r['order_id']}" for r in got)
    # writes phrased without the usual verbs are refused
    for text in ("make the bronze customers gold", "the tier of customer 5 should be silver",
                 "set the stock of SKU-100 to 0 at every depot"):
        refused = plan(text, [demo], catalog=catalog)
        assert refused.refused and not refused.ok and "write workflow" in refused.reason, text
    # a field no system has: not found, with the closest candidates, and no plan
    missing = plan("the shoe size of each customer", [demo], catalog=catalog, output=tmp_path / "shoe.yaml")
    assert not missing.ok and not missing.refused and missing.spec_text is None
    assert "not found: no system offers 'shoe', 'size'" in missing.reason and "closest" in missing.reason
    assert not (tmp_path / "shoe.yaml").exists()


# --------------------------------------------------------------------------------------------- LLM

class ScriptedLLM:
    """An OpenAI-compatible /v1/chat/completions on loopback replaying scripted assistant messages."""

    def __init__(self) -> None:
        self.script: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
                message = dict(owner.script.pop(0)) if owner.script else {"role": "assistant", "content": "done"}
                finish = message.pop("finish_reason", "tool_calls")  # a scripted turn may say it was cut
                data = json.dumps({"id": "x", "object": "chat.completion", "model": body.get("model"),
                                   "choices": [{"index": 0, "message": message, "finish_reason": finish}]})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data.encode())

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def load(self, *messages: dict[str, Any]) -> None:
        self.script = list(messages)
        self.requests.clear()


@pytest.fixture
def llm_server() -> Iterator[ScriptedLLM]:
    server = ScriptedLLM()
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


def _call(name: str, arguments: Any, i: int = 0) -> dict[str, Any]:
    args = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"role": "assistant", "content": None,
            "tool_calls": [{"id": f"call_{name}_{i}", "type": "function",
                            "function": {"name": name, "arguments": args}}]}


def _llm_spec(sql: str) -> str:
    demo = yaml.safe_load(demo_spec_text())
    return yaml.safe_dump({
        "pipeline": "whatever", "partitions": {"daily": {"start": "2024-01-01"}}, "schedule": "0 6 * * *",
        "systems": {"crm": {"rest": {"base_url": "http://evil.example"}}},  # replaced by the given spec's
        "sources": {"erp_orders": demo["sources"]["erp_orders"], "crm_customers": demo["sources"]["crm_customers"]},
        "models": {"revenue_by_region": {"sql": sql}}}, sort_keys=False)


def test_llm_backend_repairs_then_rejects(crm: CRMService, warehouse_path: Path, dagster_home: Path,
                                          tmp_path: Path, llm_server: ScriptedLLM) -> None:
    demo = _demo(tmp_path)
    catalog = build_catalog([demo])
    cfg = LLMConfig(base_url=llm_server.url, model="scripted", api_key="sk-test", max_repairs=2)
    bad = _llm_spec("select c.region, sum(o.revenue) as revenue from erp_orders o "
                    "join crm_customers c on c.id = o.customer_id group by all")
    good = _llm_spec("select c.region, sum(o.amount) as revenue from erp_orders o "
                     "join crm_customers c on c.id = o.customer_id group by all order by all")
    llm_server.load(
        {"role": "assistant", "content": None, "tool_calls": [  # arguments as an object (llama.cpp style), no id
            {"type": "function", "function": {"name": "search_actions", "arguments": {"query": "orders"}}}]},
        _call("describe_action", '{"name": erp.GetOrders'),   # malformed JSON: told, retried
        _call("describe_action", {"name": "erp.GetOrders"}),
        _call("propose_spec", {"spec_yaml": bad}),            # invalid: the problems go back for repair
        _call("propose_spec", {"spec_yaml": good, "notes": "joined on customer id"}),
    )
    out = tmp_path / "llm" / "revenue.yaml"
    res = plan(REVENUE, [demo], "llm", catalog=catalog, llm=cfg, output=out, partition="2024-01-02")
    assert res.ok, res.errors
    assert res.attempts == 2 and len(llm_server.requests) == 5
    first = llm_server.requests[0]
    assert first["path"] == "/v1/chat/completions" and first["auth"] == "Bearer sk-test"
    assert {t["function"]["name"] for t in first["tools"]} == {"search_actions", "describe_action", "propose_spec",
                                                               "refuse"}
    context = first["messages"][1]["content"]
    assert "erp.GetOrders" in context and len(json.loads(context.split("(JSON):\n", 1)[1])["actions"]) <= cfg.top_k
    assert "not valid JSON" in llm_server.requests[2]["messages"][-1]["content"]
    described = json.loads(llm_server.requests[3]["messages"][-1]["content"])
    assert described["name"] == "erp.GetOrders" and "output_schema" in described
    assert "erp_orders has no column 'revenue'" in llm_server.requests[4]["messages"][-1]["content"]
    planned = load(out)
    assert planned.name == "revenue" and "evil" not in out.read_text()  # systems come from the given spec
    assert res.dry_run["revenue_revenue_by_region"] == 4  # renamed: the demo spec has revenue_by_region

    # always invalid: rejected after max_repairs with the reasons, nothing written
    out2 = tmp_path / "llm" / "never.yaml"
    llm_server.load(_call("propose_spec", {"spec_yaml": bad}), _call("propose_spec", {"spec_yaml": "pipeline: ["}))
    res = plan(REVENUE, [demo], "llm", catalog=catalog, llm=cfg, output=out2)
    assert not res.ok and "rejected after 2 invalid plans" in res.reason and "not valid YAML" in res.reason
    assert not out2.exists()

    # a plain answer with the spec in a fenced block is taken as a proposal
    llm_server.load({"role": "assistant", "content": f"Here is the plan:\n```yaml\n{good}```\n"})
    res = plan(REVENUE, [demo], "llm", catalog=catalog, llm=cfg, partition="2024-01-02")
    assert res.ok, res.errors

    # too many malformed tool calls: rejected
    llm_server.load(*[_call("describe_action", "{oops", i) for i in range(5)])
    res = plan(REVENUE, [demo], "llm", catalog=catalog, llm=cfg, output=out2)
    assert not res.ok and "malformed tool calls" in res.reason and not out2.exists()

    # the model refuses; a write request is refused before any model call
    llm_server.load(_call("refuse", {"reason": "cannot be answered from these systems"}))
    res = plan("weather in Paris per region", [demo], "llm", catalog=catalog, llm=cfg)
    assert res.refused and "cannot be answered" in res.reason
    llm_server.load()
    res = plan("update the CRM customers' tiers", [demo], "llm", catalog=catalog, llm=cfg)
    assert res.refused and not llm_server.requests


def test_llm_backend_survives_odd_arguments(crm: CRMService, tmp_path: Path, llm_server: ScriptedLLM) -> None:
    """What a small model sends (a limit that is no number, sources as a list, arguments cut at max_tokens) is
    answered as a problem the model can fix, never a crash; max_tokens goes to the server."""
    demo = _demo(tmp_path)
    cfg = LLMConfig(base_url=llm_server.url, model="scripted", max_tokens=64)
    llm_server.load(_call("search_actions", {"query": "orders", "limit": "ten"}),
                    _call("propose_spec", {"spec_yaml": "pipeline: p\nsources: [erp_orders]"}),
                    {**_call("propose_spec", '{"spec_yaml": "pipeline: p\\nsour'), "finish_reason": "length"},
                    _call("refuse", {"reason": "too hard"}))
    res = plan(REVENUE, [demo], "llm", catalog=build_catalog([demo]), llm=cfg)
    assert res.refused and "too hard" in res.reason
    assert [r["max_tokens"] for r in llm_server.requests] == [64] * 4
    found = json.loads(llm_server.requests[1]["messages"][-1]["content"])
    assert 1 <= len(found) <= cfg.top_k  # the default limit
    assert "sources: expected a mapping" in llm_server.requests[2]["messages"][-1]["content"]
    assert "cut off at its token limit" in llm_server.requests[3]["messages"][-1]["content"]


def test_a_plan_of_a_coarser_grain_is_dry_run_on_the_partition_holding_the_day(tmp_path: Path) -> None:
    """A plan may partition by month ("per quarter") while the estate is tried on a day: its dry run takes the
    month holding that day (it used to fail on a key the plan does not have)."""
    from hub.agent.planner import _partition

    path = tmp_path / "monthly.yaml"
    path.write_text(demo_spec_text().replace("daily: {start: 2024-01-01, timezone: UTC}",
                                             "monthly: {start: 2024-01-01, timezone: UTC}"))
    monthly = loads(path.read_text(), path)
    assert _partition(monthly, "2024-01-02") == "2024-01-01"
    assert _partition(monthly, "2024-02-29") == "2024-02-01"
    assert _partition(monthly, None) == "2024-01-01"
    daily = loads(demo_spec_text(), tmp_path / "daily.yaml")
    assert _partition(daily, "2024-01-02") == "2024-01-02"
