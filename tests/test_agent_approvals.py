"""Pending approvals (hub/agent/approvals.py): durable, decided once, never executed twice; the CLI that lists
and rejects them; the MCP server's hints and HTTP token handling that need no running system."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from hub.agent.approvals import ApprovalStore, target_of
from hub.agent.catalog import Action
from hub.agent.mcp_server import OriginGuard, action_hints, read_tokens
from hub.cli.main import app
from hub.errors import HubError, Refused
from tests.agent_support import partner_spec
from tests.conftest import REPO
from tests.test_mcp import HEADERS, INIT, child_env, free_port, hub_executable


def action(method: str = "POST", name: str = "partner.post_customers") -> Action:
    return Action(name=name, system="partner", protocol="rest", description="", input_schema={}, output_schema={},
                  side_effect="write", binding={"method": method, "path": "/customers"}, pipeline="partner")


def test_store_is_private_and_claims_once(tmp_path: Path) -> None:
    store = ApprovalStore(tmp_path / "state" / "approvals.sqlite")
    approval = store.request(action(), {"body": {"name": "Initech", "api_key": "k-123"}}, requested_by="alice",
                             agent="hub-mcp", session="s1")
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600  # it holds the exact parameters
    assert approval.params_masked == {"body": {"name": "Initech", "api_key": "***"}}
    assert "k-123" not in json.dumps(approval.public()) and "k-123" not in approval.summary()
    assert [a.id for a in store.list()] == [approval.id]

    wins: list[str] = []
    refusals: list[str] = []
    barrier = threading.Barrier(8)

    def claim(who: str) -> None:
        barrier.wait()
        try:
            store.claim(approval.id, by=who, via="cli")
            wins.append(who)
        except Refused as exc:
            refusals.append(str(exc))

    threads = [threading.Thread(target=claim, args=(f"p{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and len(refusals) == 7
    assert all("never run twice" in r for r in refusals)
    assert store.list() == [] and store.get(approval.id).status == "executing"  # type: ignore[union-attr]
    with pytest.raises(HubError, match="no approval 'nope'"):
        store.claim("nope", by="x", via="cli")


def test_reject_and_expiry(tmp_path: Path) -> None:
    store = ApprovalStore(tmp_path / "approvals.sqlite")
    one = store.request(action(), {"body": {"name": "A"}}, requested_by="bob", agent="hub-mcp", session="s")
    rejected = store.reject(one.id, by="pat", via="cli", reason="not today")
    assert rejected.status == "rejected" and rejected.message == "not today"
    with pytest.raises(Refused, match="rejected by pat"):
        store.claim(one.id, by="pat", via="cli")
    from datetime import timedelta

    old = store.request(action(), {}, requested_by="bob", agent="hub-mcp", session="s", ttl=timedelta(seconds=-1))
    assert store.list() == []  # expired on read
    with pytest.raises(Refused, match="expired"):
        store.claim(old.id, by="pat", via="cli")


def test_hints_and_targets_follow_the_side_effect() -> None:
    read = Action(name="crm.get_customers", system="crm", protocol="rest", description="", input_schema={},
                  output_schema={}, side_effect="read", binding={"method": "GET", "path": "/customers"})
    assert action_hints(read).model_dump() == {"read_only": True, "destructive": False, "idempotent": True,
                                               "open_world": True}
    expected = {"POST": (False, False), "PUT": (True, True), "PATCH": (True, False), "DELETE": (True, True)}
    for method, (destructive, idempotent) in expected.items():
        hints = action_hints(action(method))
        assert (hints.read_only, hints.destructive, hints.idempotent) == (False, destructive, idempotent)
    mutation = Action(name="catalogue.setProductPrice", system="catalogue", protocol="graphql", description="",
                      input_schema={}, output_schema={}, side_effect="write",
                      binding={"operation": "mutation", "field": "setProductPrice"})
    assert (action_hints(mutation).destructive, action_hints(mutation).idempotent) == (True, False)
    assert target_of(mutation) == "graphql mutation setProductPrice"
    assert target_of(action("DELETE")) == "DELETE /customers"


def test_origin_guard_and_tokens_file(tmp_path: Path) -> None:
    guard = OriginGuard(None, ["http://127.0.0.1:8765", "http://localhost:*"])
    assert guard.ok("http://127.0.0.1:8765") and guard.ok("http://localhost:3000")
    assert not guard.ok("http://127.0.0.1:9999") and not guard.ok("http://localhost.evil.example:80")
    assert not guard.ok("http://evil.example")
    tokens = tmp_path / "tokens"
    tokens.write_text("alice 0123456789abcdef0123\n")
    assert read_tokens(tokens) == {"0123456789abcdef0123": "alice"}
    tokens.write_text("alice short\n")
    with pytest.raises(HubError, match=r"tokens:1: .*16\+ characters"):
        read_tokens(tokens)


def test_cli_lists_and_rejects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUB_STATE_DIR", str(tmp_path / "state"))
    spec = partner_spec(tmp_path / "partner", "http://127.0.0.1:9", allow=["partner.post_customers"])
    store = ApprovalStore(tmp_path / "state" / "approvals.sqlite")
    approval = store.request(action(), {"body": {"name": "Umbrella", "password": "s3cret"}}, requested_by="alice",
                             agent="hub-mcp", session="s")
    runner = CliRunner()
    listed = runner.invoke(app, ["agent", "pending", "--spec", str(spec), "--json"])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.stdout)
    assert [r["id"] for r in rows] == [approval.id] and rows[0]["params"]["body"]["password"] == "***"
    assert "s3cret" not in listed.stdout
    rejected = runner.invoke(app, ["agent", "reject", approval.id, "--spec", str(spec), "--user", "pat",
                                   "--reason", "wrong customer"])
    assert rejected.exit_code == 0 and json.loads(rejected.stdout)["status"] == "rejected"
    again = runner.invoke(app, ["agent", "approve", approval.id, "--spec", str(spec), "--user", "pat"])
    assert again.exit_code == 3 and "rejected by pat" in again.output
    missing = runner.invoke(app, ["agent", "approve", "0000", "--spec", str(spec)])
    assert missing.exit_code == 1 and "no approval '0000'" in missing.output


def test_http_generates_a_token_shown_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HUB_MCP_TOKEN", raising=False)
    spec = partner_spec(tmp_path / "partner", "http://127.0.0.1:9")
    port = free_port()
    proc = subprocess.Popen([hub_executable(), "mcp", str(spec), "--http", "--port", str(port), "--user", "ops"],
                            env=child_env(), cwd=str(REPO), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "bearer token for user ops" in line
        token = line.rsplit(" ", 1)[1].strip()
        url = f"http://127.0.0.1:{port}/mcp"
        deadline = time.monotonic() + 30
        while True:
            try:
                ok = httpx.post(url, json=INIT, headers={**HEADERS, "Authorization": f"Bearer {token}"})
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.2)
        assert ok.status_code == 200
        assert httpx.post(url, json=INIT, headers={**HEADERS, "Authorization": "Bearer x" + token}).status_code == 401
    finally:
        proc.terminate()
        rest = proc.communicate(timeout=10)[1]
    assert token not in rest  # printed once, never again


def test_a_large_catalog_is_paged_never_dumped(tmp_path: Path) -> None:
    from hub.agent.catalog import Catalog
    from hub.agent.mcp_server import HubTools
    from hub.spec import load

    pipeline = load(partner_spec(tmp_path / "partner", "http://127.0.0.1:9"))
    actions = [Action(name=f"sys{i % 7}.op_{i}", system=f"sys{i % 7}", protocol="rest",
                      description=f"operation {i} on {('orders', 'invoices', 'customers')[i % 3]} " + "x" * 500,
                      input_schema={}, output_schema={}, side_effect="write" if i % 5 == 0 else "read",
                      binding={"method": "POST" if i % 5 == 0 else "GET", "path": f"/op/{i}"}, pipeline="partner")
               for i in range(1500)]
    tools = HubTools([pipeline])
    tools._catalog = Catalog(actions, pipelines={"partner": pipeline}, semantic=False,
                             vector_store=tmp_path / "vectors.sqlite")
    first = tools.list_actions()
    assert first.total == 1500 and first.returned == 50 and first.next_offset == 50
    assert all(len(a.description) <= 300 for a in first.actions)  # long descriptions are cut in listings
    capped = tools.list_actions(limit=10_000, offset=1400)
    assert capped.returned == 100 and capped.next_offset is None  # at most 200 a page; here the last 100
    writes = tools.list_actions(side_effect="write", limit=200)
    assert writes.total == 300 and writes.returned == 200 and not any(a.hints.read_only for a in writes.actions)
    found = tools.search_actions("invoices", limit=500)
    assert found.returned == 50 and found.next_offset == 50  # at most 50 a page
    more = tools.search_actions("invoices", limit=50, offset=50)
    assert not {a.name for a in more.actions} & {a.name for a in found.actions}
    assert len(json.dumps(first.model_dump())) < 40_000
