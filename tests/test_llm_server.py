"""The real-model server of tests/llm_server.py without the model: the real-model tests rely on it refusing a
conversation OpenAI would refuse, keeping every message in the prompt unescaped, and turning the grammar's
output into OpenAI tool calls (a cut one included)."""

from __future__ import annotations

import importlib.util
import json
from typing import Any

import pytest

from hub.agent.llm import TOOLS
from tests.llm_server import (
    MODEL_ALIAS,
    BadRequest,
    ChatModel,
    check_request,
    grammar_text,
    parse_answer,
    render_prompt,
    smollm2_gguf,
    unavailable,
)


def _conversation() -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": "plan"},
        {"role": "user", "content": 'Request: revenue\n{"actions": ["a<b>&c"]}'},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "search_actions", "arguments": '{"query": "x"}'}},
            {"id": "c2", "type": "function", "function": {"name": "describe_action", "arguments": '{"name": '}}]},
        {"role": "tool", "tool_call_id": "c1", "content": '[{"name": "erp.GetOrders"}]'},
        {"role": "tool", "tool_call_id": "c2", "content": "error: the arguments are not valid JSON"},
        {"role": "assistant", "content": "I cannot"},
        {"role": "user", "content": "Call propose_spec"},
    ]


def _body(messages: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": messages, "tools": TOOLS, "tool_choice": "auto", "temperature": 0, **extra}


def test_accepts_the_backends_conversation() -> None:
    assert check_request(_body(_conversation(), max_tokens=10))


@pytest.mark.parametrize("change, says", [
    (lambda ms: ms[2]["tool_calls"][0]["function"].update(arguments={"query": "x"}), "expected a string"),
    (lambda ms: ms[2]["tool_calls"][0].pop("id"), ".id: expected a non-empty string"),
    (lambda ms: ms[3].update(tool_call_id="c9"), "must be a response to a preceding message"),
    (lambda ms: ms.pop(4), "not answered: c2"),
    (lambda ms: ms.__delitem__(slice(3, None)), "have no tool answer"),
    (lambda ms: ms[5].update(role="bot"), "is not one of"),
    (lambda ms: ms[1].update(content={"text": "x"}), "expected a string or text parts"),
])
def test_refuses_what_openai_refuses(change: Any, says: str) -> None:
    messages = _conversation()
    change(messages)
    with pytest.raises(BadRequest, match=says):
        check_request(_body(messages))
    with pytest.raises(BadRequest, match="Unrecognized request argument supplied: functions"):
        check_request(_body(_conversation(), functions=[]))


def test_prompt_keeps_every_message_unescaped_and_grows_by_appending() -> None:
    messages = _conversation()
    prompt = render_prompt(messages, TOOLS, "auto")
    assert '{"actions": ["a<b>&c"]}' in prompt and "&#34;" not in prompt and "&lt;" not in prompt
    assert '<tool_response>\n[{"name": "erp.GetOrders"}]\n</tool_response>' in prompt
    assert "error: the arguments are not valid JSON" in prompt
    # the calls as the model writes them, arguments as they were (even when not JSON)
    assert '{"name": "describe_action", "arguments": {"name": }' in prompt
    assert "- search_actions(query: string, limit?: integer = 8): Search the catalog" in prompt
    for k in (k for k in range(1, len(messages)) if messages[k]["role"] != "tool"):  # the requests' cut points
        head = render_prompt(messages[:k], TOOLS, "auto").removesuffix("<|im_start|>assistant\n")
        assert prompt.startswith(head)
    assert "# Tools" not in render_prompt(messages[:2], TOOLS, "none")


def test_answers_become_openai_tool_calls() -> None:
    text = ('<tool_call>\n{"name": "search_actions", "arguments": {"query": "orders", "limit": 3}}\n</tool_call>\n'
            '<tool_call>\n{ "name": "propose_spec", "arguments": {"spec_yaml": "pipeline: p\\nsources:')
    content, calls = parse_answer(text, grammar=True)
    assert content is None and [c["function"]["name"] for c in calls] == ["search_actions", "propose_spec"]
    assert json.loads(calls[0]["function"]["arguments"]) == {"query": "orders", "limit": 3}
    assert calls[1]["function"]["arguments"] == '{"spec_yaml": "pipeline: p\\nsources:'  # cut: not JSON
    assert len({c["id"] for c in calls}) == 2 and all(c["type"] == "function" for c in calls)
    assert parse_answer("  I would rather not.\n", grammar=True) == ("I would rather not.", [])
    assert parse_answer('<tool_call>\n{"na', grammar=True) == ('<tool_call>\n{"na', [])  # cut in the name


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed")
def test_grammar_offers_exactly_the_allowed_answers() -> None:
    auto = grammar_text(TOOLS, "auto", parallel=True)
    assert auto is not None and "tc-text" in auto.splitlines()[0] and '"\\"propose_spec\\""' in auto
    assert r'char ::= [^"\\\x7F\x00-\x1F]' in auto  # no raw newline inside a JSON string
    named = grammar_text(TOOLS, {"type": "function", "function": {"name": "refuse"}}, parallel=False)
    assert named is not None and "tc-text" not in named and "propose_spec" not in named
    assert grammar_text(TOOLS, "none", parallel=True) is None


@pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))
def test_the_model_within_its_limits() -> None:
    """With the model (small context): a prompt past the context is OpenAI's error, which the real-model tests
    accept as a failure; a named tool is called, and max_tokens cuts the call, keeping its name."""
    gguf = smollm2_gguf()
    assert gguf is not None
    model = ChatModel(gguf, MODEL_ALIAS, n_ctx=512, threads=1)
    with pytest.raises(BadRequest, match="maximum context length is 512 tokens") as err:
        model.complete(_body([{"role": "user", "content": "word " * 600}], model=MODEL_ALIAS))
    assert err.value.code == "context_length_exceeded" and err.value.status == 400
    out = model.complete(_body([{"role": "user", "content": "weather in Paris?"}], model=MODEL_ALIAS, max_tokens=24,
                               tool_choice={"type": "function", "function": {"name": "refuse"}}))
    choice = out["choices"][0]
    assert out["usage"]["completion_tokens"] <= 24 and choice["finish_reason"] == "length"
    call = choice["message"]["tool_calls"][0]
    assert call["function"]["name"] == "refuse" and call["id"].startswith("call_")
    assert call["function"]["arguments"].startswith("{")
    with pytest.raises(ValueError):  # cut: what was generated, not JSON yet
        json.loads(call["function"]["arguments"])
