"""`hub mcp` end to end with the official SDK's client, over both transports.

stdio: the client spawns `hub mcp pipelines/demo.yaml <partner spec>` against the running demo estate (plus a
partner API with write actions), checks every tool's annotations and output schema, calls every tool (each
structured result validated against its tool's schema), asks for a write (pending approval, then
`hub agent approve` runs it once and refuses a second time), reads the resources and prompts; a second
session with an elicitation callback confirms one write and declines another.

Streamable HTTP: `hub mcp --http` on loopback with two users' tokens: 401 without or with a wrong token, 403 for
a foreign Origin, sessions per user (audited as that user), a per-session call budget, elicitation over HTTP.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import jsonschema
import pytest

from hub.agent.guard import AUDIT_TABLE
from hub.demo.crm import CRMService
from hub.warehouse import connect
from tests.agent_support import partner_api, partner_spec
from tests.conftest import DEMO_SPEC, REPO

ENV_KEYS = ("HUB_DEMO_CRM_URL", "CRM_TOKEN", "HUB_DEMO_ERP_WSDL", "ERP_USER", "ERP_PASSWORD", "HUB_DEMO_BANK_PORT",
            "BANK_PASSWORD", "BANK_HOST_KEY_FINGERPRINT", "HUB_DEMO_INVENTORY_URL", "HUB_WAREHOUSE", "DAGSTER_HOME",
            "PARTNER_TOKEN", "HUB_CACHE_DIR", "HUB_STATE_DIR", "PYTHONPATH", "PATH", "HOME")

TOOLS = ["approval_status", "call_action", "describe_action", "list_actions", "materialize", "plan_pipeline",
         "read_action", "run_status", "search_actions"]
#: tool -> (readOnlyHint, destructiveHint, idempotentHint, openWorldHint)
HINTS = {"list_actions": (True, False, True, True), "search_actions": (True, False, True, False),
         "describe_action": (True, False, True, False), "read_action": (True, False, True, True),
         "call_action": (False, True, False, True), "approval_status": (True, False, True, False),
         "plan_pipeline": (True, False, True, True), "materialize": (False, False, True, True),
         "run_status": (True, False, True, False)}


def hub_executable() -> str:
    candidate = Path(sys.executable).parent / "hub"
    return str(candidate if candidate.exists() else REPO / ".venv" / "bin" / "hub")


def child_env() -> dict[str, str]:
    return {k: os.environ[k] for k in ENV_KEYS if k in os.environ}


class Checked:
    """Tool results, each validated against its tool's output schema (from tools/list)."""

    def __init__(self, session: Any, tools: Any) -> None:
        self.session = session
        self.schemas = {t.name: t.output_schema for t in tools.tools}

    async def call(self, tool: str, args: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
        result = await self.session.call_tool(tool, args)
        if result.structured_content is None:  # a tool error without a result (bad arguments, unknown action)
            assert result.is_error, result
            return True, {"text": text_of(result.content[0])}
        jsonschema.validate(result.structured_content, self.schemas[tool])
        return bool(result.is_error), result.structured_content


def check_tool_listing(tools: Any) -> None:
    assert sorted(t.name for t in tools.tools) == TOOLS
    for tool in tools.tools:
        a = tool.annotations
        assert a is not None, tool.name
        assert (a.read_only_hint, a.destructive_hint, a.idempotent_hint, a.open_world_hint) == HINTS[tool.name]
        assert tool.output_schema and tool.output_schema.get("type") == "object", tool.name
    listing = next(t for t in tools.tools if t.name == "list_actions")
    assert {"offset", "limit"} <= set(listing.input_schema["properties"])


def text_of(content: Any) -> str:
    """The text of a text content block (a resource's contents, a prompt message's content)."""
    assert hasattr(content, "text"), content
    return str(content.text)


async def read_text(session: Any, uri: str) -> str:
    return text_of((await session.read_resource(uri)).contents[0])


def approve_cli(approval_id: str, specs: list[str], *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([hub_executable(), "agent", "approve", approval_id, *[f"--spec={s}" for s in specs],
                           "--user", "pat", *extra], env=child_env(), cwd=str(REPO), capture_output=True,
                          text=True, timeout=120)


async def stdio_session(specs: list[str]) -> dict[str, Any]:
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    params = StdioServerParameters(command=hub_executable(), args=["mcp", *specs], env=child_env(), cwd=str(REPO))
    seen: dict[str, Any] = {}
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        tools = await session.list_tools()
        check_tool_listing(tools)
        c = Checked(session, tools)

        seen["list"] = (await c.call("list_actions", {}))[1]
        seen["list_page"] = (await c.call("list_actions", {"limit": 2, "offset": 1}))[1]
        seen["list_writes"] = (await c.call("list_actions", {"side_effect": "write"}))[1]
        seen["search"] = (await c.call("search_actions", {"query": "purchase orders", "limit": 3}))[1]
        seen["describe"] = (await c.call("describe_action", {"name": "crm.get_contact"}))  # unknown: suggests
        seen["describe_read"] = (await c.call("describe_action", {"name": "crm.get_customers"}))[1]
        seen["describe_write"] = (await c.call("describe_action", {"name": "partner.post_customers"}))[1]
        seen["describe_delete"] = (await c.call("describe_action", {"name": "partner.delete_customers_by_id"}))[1]
        seen["read"] = await c.call("read_action", {"name": "crm.get_customers", "params": {"per_page": 10},
                                                    "max_rows": 3})
        seen["read_write"] = await c.call("read_action", {"name": "partner.post_customers",
                                                          "params": {"body": {"name": "Initech"}}})
        seen["call_read"] = await c.call("call_action", {"name": "crm.get_customers", "params": {"per_page": 10},
                                                         "max_rows": 2})
        seen["not_allowed"] = await c.call("call_action", {"name": "partner.delete_customers_by_id",
                                                           "params": {"id": 1}})
        seen["bad_params"] = await c.call("call_action", {"name": "partner.post_customers",
                                                          "params": {"body": {"email": "x@example.com"}}})
        seen["pending"] = await c.call("call_action", {"name": "partner.post_customers",
                                                       "params": {"body": {"name": "Initech"}}})
        approval_id = seen["pending"][1]["approval"]["id"]
        seen["status_before"] = (await c.call("approval_status", {"approval_id": approval_id}))[1]
        pending_text = await read_text(session, "hub://approvals/pending")
        seen["pending_resource"] = json.loads(pending_text)
        # a person approves it, from the command line, while the session is open; then once more
        seen["approve"] = await anyio.to_thread.run_sync(lambda: approve_cli(approval_id, specs))
        seen["approve_again"] = await anyio.to_thread.run_sync(lambda: approve_cli(approval_id, specs))
        seen["status_after"] = (await c.call("approval_status", {"approval_id": approval_id}))[1]

        plan = await session.call_tool("plan_pipeline", {"request": "revenue per region and day"})
        seen["plan"] = (plan.is_error, text_of(plan.content[0]) if plan.content else "", plan.structured_content)
        if not plan.is_error:
            jsonschema.validate(plan.structured_content, c.schemas["plan_pipeline"])
        seen["materialize"] = await c.call("materialize", {"pipeline": "demo", "partition": "2024-01-01",
                                                           "assets": ["inventory_warehouses"]})
        seen["status"] = (await c.call("run_status", {"pipeline": "demo"}))[1]

        resources = await session.list_resources()
        seen["resources"] = sorted(str(r.uri) for r in resources.resources)
        seen["spec"] = await read_text(session, "hub://pipelines/demo/spec")
        seen["contract"] = await read_text(session, "hub://contracts/demo/crm")
        seen["audit"] = json.loads(await read_text(session, "hub://audit/recent"))
        prompts = await session.list_prompts()
        seen["prompts"] = sorted(p.name for p in prompts.prompts)
        got = await session.get_prompt("plan_pipeline_from_request", {"request": "stock per warehouse"})
        seen["prompt"] = text_of(got.messages[0].content)
        got = await session.get_prompt("investigate_failed_run", {"pipeline": "demo"})
        seen["prompt_failed"] = text_of(got.messages[0].content)
    return seen


def test_mcp_stdio_session(crm: CRMService, tmp_path: Path, warehouse_path: Path, dagster_home: Path,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARTNER_TOKEN", "partner-token")
    monkeypatch.setenv("HUB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HUB_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("HUB_REPORTS_DIR", str(tmp_path / "reports"))  # the demo spec's checks: not the checkout's
    with partner_api() as partner:
        spec = partner_spec(tmp_path / "partner", partner.url, allow=["partner.post_customers"])
        specs = [str(DEMO_SPEC), str(spec)]
        seen = asyncio.run(asyncio.wait_for(stdio_session(specs), timeout=240))
        assert partner.posts == [{"name": "Initech"}]  # the approved write, once

    names = {a["name"] for a in seen["list"]["actions"]}
    assert {"erp.GetOrders", "crm.get_customers", "inventory.stock_levels", "bank.statements",
            "partner.post_customers"} <= names
    assert seen["list"]["total"] == len(names) and seen["list"]["next_offset"] is None
    page = seen["list_page"]
    assert page["returned"] == 2 and page["offset"] == 1 and page["next_offset"] == 3
    assert [a["name"] for a in page["actions"]] == [a["name"] for a in seen["list"]["actions"][1:3]]
    assert {a["name"] for a in seen["list_writes"]["actions"]} == {
        "partner.post_customers", "partner.delete_customers_by_id",
        "catalogue.setProductPrice",  # a GraphQL mutation
        "erp.MarkOrderPaid", "crm.post_activities", "crm.delete_activities_by_id", "crm.post_tasks",  # the flows'
        "erp_events.publish",  # publishing to the ERP's RabbitMQ exchange
        "inventory_events.publish",  # MQTT
        "bank.put"}  # a file put on the bank's SFTP drop
    assert seen["search"]["actions"][0]["name"].startswith("erp.") and seen["search"]["returned"] == 3
    assert seen["describe"][0] is True and "crm.get_contacts" in seen["describe"][1]["text"]
    read = seen["describe_read"]
    assert read["hints"] == {"read_only": True, "destructive": False, "idempotent": True, "open_world": True}
    assert read["needs_approval"] is False and read["allowed"] is None
    write = seen["describe_write"]
    assert write["allowed"] is True and write["needs_approval"] is True
    assert write["hints"] == {"read_only": False, "destructive": False, "idempotent": False, "open_world": True}
    delete = seen["describe_delete"]
    assert delete["allowed"] is False
    assert delete["hints"] == {"read_only": False, "destructive": True, "idempotent": True, "open_world": True}

    is_error, out = seen["read"]
    assert not is_error and out["outcome"] == "ok" and out["total"] == 10 and len(out["records"]) == 3
    assert seen["read_write"][0] is True and "read_action runs reads only" in seen["read_write"][1]["text"]
    assert seen["call_read"][1]["outcome"] == "ok" and seen["call_read"][1]["returned"] == 2
    is_error, out = seen["not_allowed"]
    assert is_error and out["outcome"] == "refused" and "allow-list" in out["message"]
    is_error, out = seen["bad_params"]
    assert is_error and out["outcome"] == "refused" and "name" in out["message"] and out["approval"] is None

    is_error, pending = seen["pending"]
    assert not is_error and pending["outcome"] == "pending_approval" and pending["records"] == []
    approval = pending["approval"]
    assert approval["status"] == "pending" and approval["target"] == "POST /customers"
    assert approval["params"] == {"body": {"name": "Initech"}} and approval["requested_by"]
    assert f"hub agent approve {approval['id']}" in pending["message"]
    assert seen["status_before"]["status"] == "pending"
    assert [a["id"] for a in seen["pending_resource"]] == [approval["id"]]
    first = seen["approve"]
    assert first.returncode == 0, first.stderr
    done = json.loads(first.stdout)
    assert done["approval"]["status"] == "executed" and done["approval"]["decided_by"] == "pat"
    assert done["result"]["outcome"] == "ok" and done["result"]["records"][0]["name"] == "Initech"
    again = seen["approve_again"]
    assert again.returncode == 3 and "never run twice" in again.stderr, again.stderr
    after = seen["status_after"]
    assert after["status"] == "executed" and after["via"] == "cli" and after["call_id"] == done["result"]["call_id"]

    plan_error, plan_text, _ = seen["plan"]
    assert plan_text and (not plan_error or "planner" in plan_text)
    mat_error, mat = seen["materialize"]
    assert not mat_error, mat
    assert mat["success"] and mat["runs"][0]["row_counts"]["inventory_warehouses"] > 0
    assert seen["status"]["runs"][0]["run_id"] == mat["runs"][0]["run_id"]
    assert seen["status"]["runs"][0]["status"] == "SUCCESS"
    assert seen["status"]["latest_materializations"]["inventory_warehouses"]["rows"] > 0

    assert {"hub://pipelines/demo/spec", "hub://pipelines/partner/spec", "hub://contracts/demo/crm",
            "hub://audit/recent", "hub://approvals/pending"} <= set(seen["resources"])
    assert "pipeline: demo" in seen["spec"]
    assert json.loads(seen["contract"])  # the snapshot, as JSON
    assert {r["action"] for r in seen["audit"]} >= {"crm.get_customers", "partner.post_customers"}
    assert seen["prompts"] == ["investigate_failed_run", "plan_pipeline_from_request"]
    assert "stock per warehouse" in seen["prompt"] and "search_actions" in seen["prompt"]
    assert "run_status" in seen["prompt_failed"] and "hub://pipelines/demo/spec" in seen["prompt_failed"]

    audit = connect(f"duckdb:///{warehouse_path}").query(
        f"SELECT action, outcome, approved, agent, actor FROM {AUDIT_TABLE} ORDER BY called_at").to_pylist()
    assert [(r["action"], r["outcome"], r["approved"]) for r in audit] == [
        ("crm.get_customers", "ok", False), ("crm.get_customers", "ok", False),
        ("partner.delete_customers_by_id", "refused", False), ("partner.post_customers", "refused", False),
        ("partner.post_customers", "ok", True)]
    assert {r["agent"] for r in audit} == {"hub-mcp"}
    assert audit[-1]["actor"] == "pat"  # the person who approved


async def eliciting_session(specs: list[str], answers: list[str]) -> list[tuple[bool, dict[str, Any], str]]:
    """A client that can ask its user: each write's confirmation answered from *answers* (accept/decline)."""
    from mcp import ClientSession, StdioServerParameters, types
    from mcp.client.stdio import stdio_client

    asked: list[str] = []

    async def elicit(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.append(params.message)
        answer = answers[len(asked) - 1]
        if answer == "accept":
            return types.ElicitResult(action="accept", content={"confirm": True})
        return types.ElicitResult(action="decline")

    params = StdioServerParameters(command=hub_executable(), args=["mcp", *specs], env=child_env(), cwd=str(REPO))
    out = []
    async with stdio_client(params) as (read, write), ClientSession(read, write, elicitation_callback=elicit) as s:
        await s.initialize()
        c = Checked(s, await s.list_tools())
        for name in ("Acme", "Globex"):
            is_error, result = await c.call("call_action", {"name": "partner.post_customers",
                                                            "params": {"body": {"name": name, "password": "pw"}}})
            out.append((is_error, result, asked[-1] if asked else ""))
    return out


def test_mcp_write_confirmed_by_elicitation(tmp_path: Path, warehouse_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARTNER_TOKEN", "partner-token")
    monkeypatch.setenv("HUB_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("HUB_REPORTS_DIR", str(tmp_path / "reports"))  # the demo spec's checks: not the checkout's
    with partner_api() as partner:
        spec = partner_spec(tmp_path / "partner", partner.url, allow=["partner.post_customers"])
        (accepted, declined) = asyncio.run(asyncio.wait_for(
            eliciting_session([str(spec)], ["accept", "decline"]), timeout=120))
        assert partner.posts == [{"name": "Acme", "password": "pw"}]  # confirmed: sent once; declined: never

    is_error, result, question = accepted
    assert not is_error and result["outcome"] == "ok" and result["approval"]["status"] == "executed"
    assert result["approval"]["via"] == "elicitation"
    assert "partner.post_customers" in question and "POST /customers" in question and "Acme" in question
    assert '"password": "***"' in question and "pw" not in question.replace("password", "")  # masked
    is_error, result, question = declined
    assert is_error and result["outcome"] == "refused" and "declined" in result["message"]
    assert result["approval"]["status"] == "rejected" and "Globex" in question
    audit = connect(f"duckdb:///{warehouse_path}").query(
        f"SELECT action, outcome, approved, params FROM {AUDIT_TABLE} ORDER BY called_at").to_pylist()
    assert [(r["outcome"], r["approved"]) for r in audit] == [("ok", True), ("refused", False)]
    assert all('"***"' in r["params"] for r in audit)


# --- Streamable HTTP ---------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def http_server(specs: list[str], tokens: Path, *extra: str) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([hub_executable(), "mcp", *specs, "--http", "--port", str(port), "--tokens", str(tokens),
                             *extra], env=child_env(), cwd=str(REPO), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    why = proc.stderr.read() if proc.stderr else ""
                    raise AssertionError(f"hub mcp --http did not start: {why}") from None
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "probe", "version": "1"}}}
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}

ALICE = "alice-token-0123456789abcdef"
BOB = "bob-token-0123456789abcdef012"


async def http_sessions(url: str) -> dict[str, Any]:
    import httpx2
    from mcp import ClientSession, types
    from mcp.client.streamable_http import streamable_http_client

    async def confirm(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        return types.ElicitResult(action="accept", content={"confirm": True})

    seen: dict[str, Any] = {}
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {ALICE}"}, timeout=60) as client, \
            streamable_http_client(url, http_client=client) as (read, write), \
            ClientSession(read, write, elicitation_callback=confirm) as session:
        await session.initialize()
        tools = await session.list_tools()
        check_tool_listing(tools)
        c = Checked(session, tools)
        seen["search"] = (await c.call("search_actions", {"query": "create a customer", "limit": 2}))[1]
        seen["write"] = await c.call("call_action", {"name": "partner.post_customers",
                                                     "params": {"body": {"name": "Hooli"}}})
        seen["resources"] = sorted(str(r.uri) for r in (await session.list_resources()).resources)
        seen["prompts"] = sorted(p.name for p in (await session.list_prompts()).prompts)
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {BOB}"}, timeout=60) as client, \
            streamable_http_client(url, http_client=client) as (read, write), \
            ClientSession(read, write) as session:
        await session.initialize()
        c = Checked(session, await session.list_tools())
        seen["bob_write"] = await c.call("call_action", {"name": "partner.post_customers",
                                                         "params": {"body": {"name": "Pied Piper"}}})
        seen["bob_calls"] = [await session.call_tool("describe_action", {"name": "partner.post_customers"})
                             for _ in range(4)]
    return seen


def test_mcp_streamable_http(tmp_path: Path, warehouse_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARTNER_TOKEN", "partner-token")
    monkeypatch.setenv("HUB_STATE_DIR", str(tmp_path / "state"))
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# user token\nalice {ALICE}\nbob {BOB}\n")
    with partner_api() as partner:
        spec = str(partner_spec(tmp_path / "partner", partner.url, allow=["partner.post_customers"]))
        with http_server([spec], tokens, "--session-budget", "4") as url:
            origin = url.rsplit("/", 1)[0]
            probe = {
                "no token": httpx.post(url, json=INIT, headers=HEADERS),
                "wrong token": httpx.post(url, json=INIT, headers={**HEADERS, "Authorization": "Bearer nope"}),
                "foreign origin": httpx.post(url, json=INIT, headers={**HEADERS, "Authorization": f"Bearer {ALICE}",
                                                                      "Origin": "http://evil.example"}),
                "foreign origin, no token": httpx.post(url, json=INIT, headers={**HEADERS,
                                                                                "Origin": "http://evil.example"}),
                "own origin": httpx.post(url, json=INIT, headers={**HEADERS, "Authorization": f"Bearer {ALICE}",
                                                                  "Origin": origin}),
            }
            sid = probe["own origin"].headers["mcp-session-id"]
            listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
            session_headers = {**HEADERS, "mcp-session-id": sid, "mcp-protocol-version": "2025-06-18"}
            probe["alice's session, bob's token"] = httpx.post(
                url, json=listing, headers={**session_headers, "Authorization": f"Bearer {BOB}"})
            probe["alice's session, alice's token"] = httpx.post(
                url, json={"jsonrpc": "2.0", "method": "notifications/initialized"},
                headers={**session_headers, "Authorization": f"Bearer {ALICE}"})
            seen = asyncio.run(asyncio.wait_for(http_sessions(url), timeout=120))
        assert partner.posts == [{"name": "Hooli"}]  # alice confirmed hers; bob's waits for a person

    assert {k: r.status_code for k, r in probe.items()} == {
        "no token": 401, "wrong token": 401, "foreign origin": 403, "foreign origin, no token": 403,
        "own origin": 200, "alice's session, bob's token": 404, "alice's session, alice's token": 202}
    assert "www-authenticate" in probe["no token"].headers

    assert seen["search"]["actions"][0]["name"] == "partner.post_customers"
    is_error, write = seen["write"]
    assert not is_error and write["outcome"] == "ok" and write["approval"]["decided_by"] == "alice"
    assert "hub://pipelines/partner/spec" in seen["resources"] and len(seen["prompts"]) == 2
    is_error, pending = seen["bob_write"]
    assert not is_error and pending["outcome"] == "pending_approval"  # bob's client cannot ask: a person must
    assert pending["approval"]["requested_by"] == "bob"
    # bob's session: list_tools is free, call_action was call 1; describe 2-4 pass, the 5th call is refused
    assert [r.is_error for r in seen["bob_calls"]] == [False, False, False, True]
    assert "budget of 4 tool calls" in text_of(seen["bob_calls"][-1].content[0])

    audit = connect(f"duckdb:///{warehouse_path}").query(
        f"SELECT actor, outcome, approved FROM {AUDIT_TABLE} ORDER BY called_at").to_pylist()
    assert [(r["actor"], r["outcome"], r["approved"]) for r in audit] == [("alice", "ok", True)]
