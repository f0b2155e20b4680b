"""The planner's LLM backend: any OpenAI-compatible chat-completions endpoint with tool calling (OpenAI,
Ollama, vLLM, llama.cpp server...), spoken to with httpx directly.

The model sees only the relevant slice of the catalog (the top-k search results for the request, with the
source configuration a given spec already uses for them) and works with four tools: ``search_actions``,
``describe_action``, ``propose_spec`` and ``refuse``. Bad tool-call arguments (not JSON, unknown tool) are
answered with the error and the model may retry, a bounded number of times; a proposed spec is validated
exactly like an offline plan (:func:`hub.agent.planner.validate_plan`, including the dry run) and its
problems are fed back for repair, a bounded number of times, before the plan is rejected with the reasons.

Environment: ``HUB_LLM_BASE_URL`` (e.g. ``http://127.0.0.1:11434/v1`` for Ollama), ``HUB_LLM_MODEL``,
``HUB_LLM_API_KEY`` (optional; sent as a bearer token), ``HUB_LLM_TIMEOUT`` (seconds per completion, default
120: a small model on a CPU can need more), ``HUB_LLM_MAX_TOKENS`` (optional: tokens per answer, the server's
default when unset; a spec proposal needs a few hundred).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from hub import protocols
from hub.agent.planner import (
    CatalogLike,
    PlanResult,
    _Dumper,
    _unwrap,
    distinct_names,
    find_template,
    result_table,
    source_for,
    system_raw,
    validate_plan,
    write_intent,
)
from hub.errors import HubError
from hub.runtime.secrets import mask
from hub.spec import Pipeline


@dataclass
class LLMConfig:
    base_url: str
    model: str
    api_key: str | None = None
    timeout: float = 120.0
    max_turns: int = 12       # chat completions per plan
    max_repairs: int = 3      # invalid specs fed back before the plan is rejected
    max_malformed: int = 3    # malformed tool calls answered before giving up
    top_k: int = 8            # actions of the catalog shown up front
    temperature: float = 0.0
    max_tokens: int | None = None  # tokens per answer (sent as max_tokens; None: the server's default)

    def plan(self, request: str, pipelines: list[Pipeline], catalog: CatalogLike, *, name: str | None = None,
             path: Path | None = None, dry_run: bool = True, partition: str | None = None,
             warehouse: Path | None = None) -> PlanResult:
        """Plan *request* with this model (the planner's ``llm`` backend, :func:`hub.agent.planner.plan`)."""
        return plan_with_llm(request, pipelines, catalog, self, name=name, path=path, dry_run=dry_run,
                             partition=partition, warehouse=warehouse)

    @classmethod
    def from_env(cls) -> LLMConfig:
        base = os.environ.get("HUB_LLM_BASE_URL")
        if not base:
            raise HubError("the llm backend needs HUB_LLM_BASE_URL (an OpenAI-compatible endpoint, e.g. "
                           "http://127.0.0.1:11434/v1 for Ollama) and HUB_LLM_MODEL")
        timeout = os.environ.get("HUB_LLM_TIMEOUT")
        try:
            seconds = float(timeout) if timeout else cls.timeout
        except ValueError:
            raise HubError(f"HUB_LLM_TIMEOUT: '{timeout}' is not a number of seconds") from None
        max_tokens = os.environ.get("HUB_LLM_MAX_TOKENS")
        try:
            tokens = int(max_tokens) if max_tokens else None
        except ValueError:
            raise HubError(f"HUB_LLM_MAX_TOKENS: '{max_tokens}' is not a number of tokens") from None
        return cls(base_url=base.rstrip("/"), model=os.environ.get("HUB_LLM_MODEL", "gpt-4o-mini"),
                   api_key=os.environ.get("HUB_LLM_API_KEY") or None, timeout=seconds, max_tokens=tokens)


TOOLS: list[dict[str, Any]] = [
    {"type": "function", "function": {
        "name": "search_actions", "description": "Search the catalog of system actions (read and write) by words.",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"},
                                                        "limit": {"type": "integer", "default": 8}},
                       "required": ["query"]}}},
    {"type": "function", "function": {
        "name": "describe_action", "description": "An action in full: binding, input and output JSON Schemas, and "
                                                  "the source configuration a given spec already uses for it.",
        "parameters": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}}},
    {"type": "function", "function": {
        "name": "propose_spec", "description": "Propose the pipeline spec (YAML). It is validated and dry-run; "
                                               "problems come back for repair.",
        "parameters": {"type": "object", "properties": {"spec_yaml": {"type": "string"},
                                                        "notes": {"type": "string"}},
                       "required": ["spec_yaml"]}}},
    {"type": "function", "function": {
        "name": "refuse", "description": "Refuse the request (it asks to change data, or cannot be answered).",
        "parameters": {"type": "object", "properties": {"reason": {"type": "string"}}, "required": ["reason"]}}},
]

SYSTEM_PROMPT = """You plan data pipelines for an integration hub. Answer a request with a pipeline spec in YAML:
pipeline: NAME            # identifier
partitions: {daily: {start: YYYY-MM-DD, timezone: UTC}}   # or monthly, or `none`
schedule: "0 6 * * *"     # optional cron (every morning = 0 6 * * *)
systems: {}               # leave empty: the hub copies the systems your sources name
sources:                  # each source reads ONE read action of the catalog, table name = source name
  NAME: {system: SYSTEM, ...protocol keys...}
{protocol_keys}
    # time parameters: "{{ partition.start }}" / "{{ partition.end }}"
    # columns: {source.path: new_name}   rules: {column: {not_null: true, in: [...], min: 0}}
models:                   # DuckDB SQL over the sources' tables and columns only
  NAME: {sql: "select ..."}
Prefer the `source` configuration shown for an action (it is known to work) and add what the request needs.
Sources only read: refuse any request to create, update, delete or send something.
Call propose_spec with the whole YAML; fix every problem it reports and propose again."""


def system_prompt() -> str:
    """The system prompt, with the source keys of every registered protocol (:mod:`hub.protocols`)."""
    keys = "\n".join(f"    # {p.name}: {p.prompt_keys}" for p in protocols.all() if p.prompt_keys)
    return SYSTEM_PROMPT.replace("{protocol_keys}", keys)


def _compact(schema: dict[str, Any], depth: int = 0) -> Any:
    """A short type sketch of a JSON Schema for the prompt: {field: type | {nested}}."""
    s = _unwrap(schema) or {}
    if s.get("type") == "object" or "properties" in s:
        if depth > 2:
            return "object"
        return {k: _compact(v, depth + 1) for k, v in (s.get("properties") or {}).items()}
    if s.get("type") == "array":
        return [_compact(s.get("items") or {}, depth + 1)]
    t = s.get("type", "any")
    if s.get("format"):
        t = f"{t}({s['format']})"
    if s.get("enum"):
        t = f"{t} in {s['enum']}"
    return t


def describe(action: Any, pipelines: Sequence[Pipeline], full: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"name": action.name, "system": action.system, "protocol": action.protocol,
                           "side_effect": action.side_effect, "description": action.description,
                           "binding": action.binding, "inputs": _compact(action.input_schema or {}),
                           "record": _compact(action.output_schema or {})}
    if find_template(action, pipelines) is not None:
        name, raw, _ = source_for(action, pipelines)
        out["source"] = {name: raw}
    if full:
        out["input_schema"], out["output_schema"] = action.input_schema, action.output_schema
    return out


def fill_systems(text: str, pipelines: Sequence[Pipeline], name: str | None) -> tuple[str, list[str]]:
    """The proposed spec with the systems its sources name copied from the given specs (never the model's)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return text, [f"not valid YAML: {getattr(exc, 'problem', exc)}"]
    if not isinstance(data, dict):
        return text, ["expected a YAML mapping with pipeline:, sources: and models:"]
    sources = data.get("sources") or {}
    if not isinstance(sources, dict):  # e.g. a list of names: the spec's loader would say so, but later
        return text, ["sources: expected a mapping of source name to its configuration "
                      f"(got {type(sources).__name__})"]
    problems: list[str] = []
    systems: dict[str, Any] = {}
    for sname, src in sources.items():
        system = src.get("system") if isinstance(src, dict) else None
        if not isinstance(system, str):
            continue
        raw = system_raw(system, pipelines)
        if raw is None:
            problems.append(f"sources.{sname}.system: '{system}' is not a system of the given specs")
        else:
            systems[system] = raw
    data["systems"] = systems
    if name:
        data["pipeline"] = name
    data.setdefault("pipeline", "plan")

    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120), problems


def _fenced_spec(content: str) -> str | None:
    """A spec in a ```yaml fenced block of a plain answer, if any."""
    m = re.search(r"```(?:ya?ml)?\s*\n(.*?)```", content, re.DOTALL)
    return m.group(1) if m and re.search(r"^(pipeline|sources):", m.group(1), re.MULTILINE) else None


def _normal_call(call: Any, turn: int, index: int) -> dict[str, Any]:
    """A tool call of the model's answer as the OpenAI format has it, to be sent back in the conversation: an
    id (the tool message answers it by that id), a name, and the arguments as a JSON *string*. llama.cpp and
    some proxies send the arguments as an object and may leave the id out; servers that validate requests
    (llama-cpp-python's) reject an assistant message that carries them so (HTTP 422)."""
    call = call if isinstance(call, dict) else {}
    fn = call.get("function") if isinstance(call.get("function"), dict) else {}
    args = fn.get("arguments")
    if not isinstance(args, str):
        args = json.dumps(args) if args is not None else "{}"
    call_id = call.get("id")
    return {"id": call_id if isinstance(call_id, str) and call_id else f"call_{turn}_{index}", "type": "function",
            "function": {"name": str(fn.get("name") or ""), "arguments": args}}


def _limit(value: Any, default: int) -> int:
    """search_actions' ``limit`` as the model gave it, within 1..20 (a model may send a string, a float or
    nonsense; a large limit would flood its context); *default* when it is not a number."""
    try:
        return min(max(int(value), 1), 20) if value is not None and not isinstance(value, bool) else default
    except (TypeError, ValueError, OverflowError):
        return default


class _Chat:
    def __init__(self, cfg: LLMConfig) -> None:
        self.cfg = cfg
        headers = {"Authorization": f"Bearer {cfg.api_key}"} if cfg.api_key else {}
        self.client = httpx.Client(base_url=cfg.base_url.rstrip("/") + "/", headers=headers, timeout=cfg.timeout)

    def complete(self, messages: list[dict[str, Any]]) -> tuple[dict[str, Any], str | None]:
        """The model's answer to *messages*: its message and the finish reason (``length``: cut at max_tokens)."""
        body: dict[str, Any] = {"model": self.cfg.model, "messages": messages, "tools": TOOLS,
                                "tool_choice": "auto", "temperature": self.cfg.temperature}
        if self.cfg.max_tokens:
            body["max_tokens"] = self.cfg.max_tokens
        try:
            resp = self.client.post("chat/completions", json=body)
        except httpx.HTTPError as exc:
            raise HubError(f"llm endpoint {self.cfg.base_url}: {mask(str(exc))}") from None
        if resp.status_code >= 400:
            raise HubError(f"llm endpoint {self.cfg.base_url}: HTTP {resp.status_code}: {mask(resp.text[:300])}")
        try:
            choice = resp.json()["choices"][0]
            message, finish = choice["message"], choice.get("finish_reason")
        except (ValueError, KeyError, IndexError, TypeError):
            raise HubError(f"llm endpoint {self.cfg.base_url}: not a chat completion: {resp.text[:300]}") from None
        if not isinstance(message, dict):
            raise HubError(f"llm endpoint {self.cfg.base_url}: not a chat completion message")
        return message, finish if isinstance(finish, str) else None

    def close(self) -> None:
        self.client.close()


def plan_with_llm(request: str, pipelines: list[Pipeline], catalog: CatalogLike, cfg: LLMConfig, *,
                  name: str | None = None, path: Path | None = None, dry_run: bool = True,
                  partition: str | None = None, warehouse: Path | None = None) -> PlanResult:
    res = PlanResult(request=request, backend="llm", attempts=0)
    verb = write_intent(request, catalog)  # as the offline planner: the catalog's write verbs count too
    if verb:
        res.refused = True
        res.errors.append(f"the request asks to {verb} something in a system; plans only read")
        return res
    top = list(catalog.search(request, limit=cfg.top_k))
    context = {"systems": sorted({s for p in pipelines for s in p.spec.systems}),
               "actions": [describe(a, pipelines) for a in top]}
    if name:
        context["pipeline_name"] = name
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": system_prompt()},
        {"role": "user", "content": f"Request: {request}\n\nRelevant catalog actions (JSON):\n"
                                    f"{json.dumps(context, default=str)}"}]
    chat = _Chat(cfg)
    malformed = repairs = 0
    try:
        for turn in range(cfg.max_turns):
            message, finish = chat.complete(messages)
            raw_calls = message.get("tool_calls") or []
            if not raw_calls and (fenced := _fenced_spec(message.get("content") or "")):
                # small models often answer with the YAML instead of calling the tool: take it as a proposal
                raw_calls = [{"function": {"name": "propose_spec", "arguments": {"spec_yaml": fenced}}}]
            calls = [_normal_call(c, turn, i) for i, c in enumerate(raw_calls if isinstance(raw_calls, list) else [])]
            messages.append({"role": "assistant", "content": message.get("content") or "",
                             **({"tool_calls": calls} if calls else {})})
            if not calls:
                malformed += 1
                if malformed > cfg.max_malformed:
                    res.errors.append("rejected: the model answered without calling propose_spec or refuse")
                    return res
                messages.append({"role": "user", "content": "Call propose_spec with the whole spec YAML, or refuse "
                                                            "with the reason."})
                continue
            for call in calls:
                fn, call_id = call["function"], call["id"]
                tool = fn["name"]
                try:
                    args = json.loads(fn["arguments"] or "{}")
                    if not isinstance(args, dict):
                        raise ValueError("expected a JSON object")
                except ValueError as exc:
                    malformed += 1
                    res.notes.append(f"malformed tool call {tool}: {exc}")
                    if malformed > cfg.max_malformed:
                        res.errors.append(f"rejected: {malformed} malformed tool calls (last: {tool}: {exc})")
                        return res
                    messages.append({"role": "tool", "tool_call_id": call_id,
                                     "content": f"error: the arguments are not valid JSON ({exc})"
                                                + ("; your answer was cut off at its token limit, keep it shorter"
                                                   if finish == "length" else "")
                                                + f"; call {tool} again with a JSON object"})
                    continue
                if tool == "search_actions":
                    found = catalog.search(str(args.get("query", "")), limit=_limit(args.get("limit"), cfg.top_k))
                    out: Any = [describe(a, pipelines) for a in found]
                elif tool == "describe_action":
                    try:
                        out = describe(catalog.get(str(args.get("name", ""))), pipelines, full=True)
                    except HubError as exc:
                        out = {"error": str(exc)}
                elif tool == "refuse":
                    res.refused = True
                    res.errors.append(f"the model declined: {args.get('reason', '')}")
                    return res
                elif tool == "propose_spec":
                    res.attempts += 1
                    text, problems = fill_systems(str(args.get("spec_yaml", "")), pipelines, name)
                    counts: dict[str, int] = {}
                    key = None
                    if not problems:
                        text, renamed = distinct_names(text, pipelines, path or Path("_plan.yaml"))
                        res.notes += renamed
                        problems, counts, key = validate_plan(text, pipelines, catalog, path=path, run=dry_run,
                                                              partition=partition, warehouse=warehouse)
                    if not problems:
                        res.spec_text = text
                        res.dry_run, res.partition = counts, key
                        res.result_table = result_table(text)
                        if args.get("notes"):
                            res.notes.append(str(args["notes"]))
                        return res
                    repairs += 1
                    res.notes.append(f"attempt {res.attempts} invalid: " + "; ".join(problems))
                    if repairs >= cfg.max_repairs:
                        res.errors.append(f"rejected after {res.attempts} invalid plans; last problems: "
                                          + "; ".join(problems))
                        return res
                    out = {"valid": False, "problems": problems,
                           "hint": "fix every problem and call propose_spec again with the whole spec"}
                else:
                    malformed += 1
                    if malformed > cfg.max_malformed:
                        res.errors.append(f"rejected: {malformed} malformed tool calls (unknown tool {tool})")
                        return res
                    out = {"error": f"unknown tool '{tool}'; use search_actions, describe_action, propose_spec, "
                                    "refuse"}
                messages.append({"role": "tool", "tool_call_id": call_id, "content": json.dumps(out, default=str)})
        res.errors.append(f"rejected: no valid plan within {cfg.max_turns} model turns")
        return res
    except HubError as exc:
        res.errors.append(str(exc))
        return res
    finally:
        chat.close()
