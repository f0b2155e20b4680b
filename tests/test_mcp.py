"""`hub mcp` end to end: the official SDK's stdio client spawns `.venv/bin/hub mcp pipelines/demo.yaml` (plus a
partner API spec with write actions) against the running demo estate and calls every tool."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from hub.agent.guard import AUDIT_TABLE
from hub.demo.crm import CRMService
from hub.warehouse import connect
from tests.agent_support import partner_api, partner_spec
from tests.conftest import DEMO_SPEC, REPO

ENV_KEYS = ("HUB_DEMO_CRM_URL", "CRM_TOKEN", "HUB_DEMO_ERP_WSDL", "ERP_USER", "ERP_PASSWORD", "HUB_DEMO_BANK_PORT",
            "BANK_PASSWORD", "BANK_HOST_KEY_FINGERPRINT", "HUB_DEMO_INVENTORY_URL", "HUB_WAREHOUSE", "DAGSTER_HOME",
            "PARTNER_TOKEN", "HUB_CACHE_DIR")


def hub_executable() -> str:
    candidate = Path(sys.executable).parent / "hub"
    return str(candidate if candidate.exists() else REPO / ".venv" / "bin" / "hub")


def payload(result: Any) -> Any:
    """The JSON a tool returned (structured content, else its text)."""
    if getattr(result, "structured_content", None):
        content = result.structured_content
        return content.get("result", content) if set(content) == {"result"} else content
    return json.loads(result.content[0].text)


async def session_run(env: dict[str, str], specs: list[str]) -> dict[str, Any]:
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    params = StdioServerParameters(command=hub_executable(), args=["mcp", *specs], env=env, cwd=str(REPO))
    seen: dict[str, Any] = {}
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        tools = await session.list_tools()
        seen["tools"] = sorted(t.name for t in tools.tools)

        listed = await session.call_tool("list_actions", {})
        seen["list"] = payload(listed)
        seen["list_writes"] = payload(await session.call_tool("list_actions", {"side_effect": "write"}))
        seen["search"] = payload(await session.call_tool("search_actions", {"query": "purchase orders", "limit": 3}))
        seen["describe"] = payload(await session.call_tool("describe_action", {"name": "crm.get_contacts"}))
        seen["describe_write"] = payload(await session.call_tool("describe_action",
                                                                 {"name": "partner.post_customers"}))
        unknown = await session.call_tool("describe_action", {"name": "crm.get_contact"})
        seen["unknown"] = (unknown.is_error, unknown.content[0].text)
        seen["read"] = payload(await session.call_tool("call_action", {
            "name": "crm.get_customers", "params": {"per_page": 10}, "max_rows": 3}))
        refused = await session.call_tool("call_action", {"name": "partner.post_customers",
                                                          "params": {"body": {"name": "Initech"}}})
        text = refused.content[0].text  # "Error executing tool call_action: {...the call's JSON result...}"
        seen["refused"] = (refused.is_error, json.loads(text[text.index("{"):]))
        approved = await session.call_tool("call_action", {"name": "partner.post_customers",
                                                           "params": {"body": {"name": "Initech"}}, "approve": True})
        seen["approved"] = (approved.is_error, payload(approved))
        plan = await session.call_tool("plan_pipeline", {"request": "revenue per region and day"})
        seen["plan"] = (plan.is_error, plan.content[0].text if plan.content else "")
        mat = await session.call_tool("materialize", {"pipeline": "demo", "partition": "2024-01-01",
                                                      "assets": ["inventory_warehouses"]})
        seen["materialize"] = (mat.is_error, payload(mat) if not mat.is_error else mat.content[0].text)
        seen["status"] = payload(await session.call_tool("run_status", {"pipeline": "demo"}))
    return seen


def test_mcp_stdio_session_calls_every_tool(crm: CRMService, tmp_path: Path, warehouse_path: Path,
                                            dagster_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARTNER_TOKEN", "partner-token")
    monkeypatch.setenv("HUB_CACHE_DIR", str(tmp_path / "cache"))
    with partner_api() as partner:
        spec = partner_spec(tmp_path / "partner", partner.url, allow=["partner.post_customers"])
        env = {k: os.environ[k] for k in ENV_KEYS if k in os.environ}
        seen = asyncio.run(asyncio.wait_for(session_run(env, [str(DEMO_SPEC), str(spec)]), timeout=120))
        assert partner.posts == [{"name": "Initech"}]  # the approved write, once

    assert seen["tools"] == ["call_action", "describe_action", "list_actions", "materialize", "plan_pipeline",
                             "run_status", "search_actions"]
    names = {a["name"] for a in seen["list"]["actions"]}
    assert {"erp.GetOrders", "crm.get_customers", "inventory.stock_levels", "bank.statements",
            "partner.post_customers"} <= names
    assert {a["name"] for a in seen["list_writes"]["actions"]} == {"partner.post_customers",
                                                                   "partner.delete_customers_by_id",
                                                                   "catalogue.setProductPrice"}  # GraphQL mutation
    assert seen["search"]["actions"][0]["name"].startswith("erp.")
    assert seen["describe"]["input_schema"]["required"] == ["since", "until"]
    assert seen["describe"]["binding"]["records"] == "$.items[*]"
    assert seen["describe_write"]["allowed"] is True and seen["describe_write"]["needs_approval"] is True
    assert seen["unknown"][0] is True and "crm.get_contacts" in seen["unknown"][1]
    assert seen["read"]["outcome"] == "ok" and seen["read"]["total"] == 10 and len(seen["read"]["records"]) == 3
    is_error, refused = seen["refused"]
    assert is_error and refused["outcome"] == "refused" and "explicit approval" in refused["message"]
    assert seen["approved"][0] is False and seen["approved"][1]["records"][0]["name"] == "Initech"
    plan_error, plan_text = seen["plan"]
    assert plan_text and (not plan_error or "planner" in plan_text)
    mat_error, mat = seen["materialize"]
    assert not mat_error, mat
    assert mat["success"] and mat["runs"][0]["row_counts"]["inventory_warehouses"] > 0
    assert seen["status"]["runs"][0]["run_id"] == mat["runs"][0]["run_id"]
    assert seen["status"]["runs"][0]["status"] == "SUCCESS"
    assert seen["status"]["latest_materializations"]["inventory_warehouses"]["rows"] > 0

    audit = connect(f"duckdb:///{warehouse_path}").query(
        f"SELECT action, outcome, approved, agent FROM {AUDIT_TABLE} ORDER BY called_at").to_pylist()
    assert [(r["action"], r["outcome"], r["approved"]) for r in audit] == [
        ("crm.get_customers", "ok", False), ("partner.post_customers", "refused", False),
        ("partner.post_customers", "ok", True)]
    assert {r["agent"] for r in audit} == {"hub-mcp"}
