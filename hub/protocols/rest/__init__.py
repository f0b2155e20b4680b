"""REST (:mod:`adapters.rest`) as a hub protocol.

The plugin is this module; what its hooks need from the layers above the spec is in the package's submodules,
imported by the hooks on first use: :mod:`~hub.protocols.rest.contract` (collect, usage, compare),
:mod:`~hub.protocols.rest.actions` (the catalog's actions and their guarded calls) and
:mod:`~hub.protocols.rest.send` (flow writes)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

from adapters.rest import RestSourceConfig, RestSystemConfig
from hub.protocols import ExtractRun, Loc, Protocol, SourceCheck
from hub.runtime.secrets import mask_url
from hub.runtime.window import render_config

if TYPE_CHECKING:
    from adapters.rest import RestSource
    from hub.spec.loader import Pipeline
    from hub.spec.models import ResolvedSource

#: Pagination settings that hold JSONPaths (checked when the spec is loaded).
_PAGINATE_PATHS = ("total_pages", "total_count", "total", "cursor_path", "path")


class RestProtocol(Protocol):
    name = "rest"
    system_model = RestSystemConfig
    source_model = RestSourceConfig
    prompt_keys = "request: {path, method, params}, records: JSONPath, paginate: ..."
    order = 10

    def check_source(self, check: SourceCheck) -> None:
        """Every JSONPath of the source (records, pagination totals and cursors) must compile."""
        from adapters.rest import JSONPathError, compile_path  # the client, on first use
        rest: RestSourceConfig = check.config
        paths: list[tuple[Loc, str]] = [(("records",), rest.records)]
        if rest.paginate:
            for kind in ("page_number", "offset", "cursor", "next_url"):
                cfg = getattr(rest.paginate, kind)
                if cfg is None:
                    continue
                for key in _PAGINATE_PATHS:
                    value = getattr(cfg, key, None)
                    if value:
                        paths.append((("paginate", kind, key), value))
        for ploc, expr in paths:
            try:
                compile_path(expr)
            except JSONPathError as exc:
                check.problem(ploc, str(exc))

    def extractor(self, run: ExtractRun) -> RestSource:
        """The REST adapter with secrets resolved and partition templates rendered; rate limit, circuit
        breaker and HTTP cache state live under the project's .hub (or ``$HUB_STATE_DIR``)."""
        return build(run.source, run.window, run.batch_size, root=run.pipeline.root)

    def write_effect(self, binding: dict[str, Any]) -> Literal["create", "update", "delete"] | None:
        """DELETE deletes, PUT and PATCH update, POST creates."""
        method = str(binding.get("method") or "").upper()
        if not method:
            return None
        return "delete" if method == "DELETE" else "update" if method in ("PUT", "PATCH") else "create"

    def write_target(self, binding: dict[str, Any]) -> str | None:
        """``POST /customers``."""
        if binding.get("method") and binding.get("path"):
            return f"{str(binding['method']).upper()} {binding['path']}"
        return None

    def endpoint(self, source: ResolvedSource) -> str | None:
        system: RestSystemConfig = source.system.config
        return mask_url(system.base_url.rstrip("/") + "/" + source.config.request.path.lstrip("/"))


    def collect(self, pipeline: Pipeline, system: str) -> dict[str, Any]:
        """The OpenAPI document when the system declares one, and the schema of each source's first page."""
        from hub.protocols.rest.contract import collect_rest

        return collect_rest(pipeline, system)

    def compare(self, pipeline: Pipeline, system: str, before: dict[str, Any], after: dict[str, Any]) -> list[Any]:
        """Observed responses, and the OpenAPI operations the sources call (matched by method and path)."""
        from hub.contracts.usage import system_sources
        from hub.protocols.rest.contract import compare_rest, match_operation, openapi_operations, rest_usage

        ops = openapi_operations(before["openapi"]) if isinstance(before.get("openapi"), dict) else {}
        matched = {}
        for source in system_sources(pipeline, system):
            if ops:
                op = match_operation(ops, source.config.request.method, source.config.request.path)
                if op is not None:
                    matched[source.name] = op
        from hub.protocols.rest.actions import action_name  # the names flows call actions by

        flow_ops = {action_name(*key.split(" ", 1)): key for key in ops}
        return compare_rest(system, before, after, rest_usage(pipeline, system, matched, flow_ops))

    searchable_inputs = True

    def actions(self, pipeline: Pipeline, system: str) -> list[Any]:
        """The OpenAPI document's operations, else one action per request the sources declare."""
        from hub.protocols.rest.actions import rest_actions

        return rest_actions(pipeline, system)

    def spec_actions(self, pipeline: Pipeline, system: str) -> list[Any]:
        from hub.protocols.rest.actions import rest_from_sources

        return rest_from_sources(pipeline, system)

    def closed_inputs(self, action: Any) -> bool:
        """An action that declares parameters takes no other; one that declares none passes them through."""
        return bool((action.input_schema or {}).get("properties"))

    def execute(self, pipeline: Pipeline, action: Any, params: dict[str, Any], limit: int) -> Any:
        from hub.protocols.rest.actions import rest_call

        return rest_call(pipeline, action, params, limit)

    def reads_action(self, source: ResolvedSource, binding: dict[str, Any]) -> bool:
        request = source.config.request
        return bool(request.path == binding.get("path")
                    and request.method.upper() == str(binding.get("method", "GET")).upper())

    def plan_source(self, binding: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        request: dict[str, Any] = {"path": binding.get("path", "/"),
                                   "method": str(binding.get("method", "GET")).upper()}
        if params:
            request["params"] = params
        out: dict[str, Any] = {"request": request}
        if binding.get("records"):
            out["records"] = binding["records"]
        return out

    sends = True

    def send(self, pipeline: Pipeline, action: Any, request: dict[str, Any], *, idempotency_key: str | None = None,
             key_header: str | None = None) -> Any:
        """A flow's write call, sent once (:func:`hub.protocols.rest.send.rest_send`)."""
        from hub.protocols.rest.send import rest_send

        return rest_send(pipeline, action, request, idempotency_key=idempotency_key, key_header=key_header)

    def source_params(self, config: Any) -> dict[str, Any]:
        return dict(config.request.params or {})

def place_params(action: Any, params: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, str], Any]:
    """(path, query, headers, body) of a call of REST *action* with *params*, each parameter placed where the
    action's input schema says (``x-in``: path, header, body, else query): for guarded agent calls and flow
    writes alike."""
    props = (action.input_schema or {}).get("properties") or {}
    path = str(action.binding["path"])
    query: dict[str, Any] = {}
    headers: dict[str, str] = {}
    body: Any = None
    for key, value in params.items():
        where = (props.get(key) or {}).get("x-in", "body" if key == "body" else "query")
        if where == "path":
            path = path.replace("{" + key + "}", quote(str(value), safe=""))
        elif where == "header":
            headers[key] = str(value)
        elif where == "body":
            body = value
        else:
            query[key] = json.dumps(value) if isinstance(value, (dict, list)) else value
    return path, query, headers, body


def build(source: ResolvedSource, window: Any, batch_size: int = 10_000, *, root: Path | None = None) -> RestSource:
    """The REST adapter for *source* and *window* (also used by contracts, which read one page)."""
    from adapters.rest import RestSource  # the client, on first use
    from hub.materialize import state_dir

    state = state_dir(root)
    return RestSource(PROTOCOL.resolve_system(source.system_name, source.system),
                      render_config(source.config, window, field=f"sources.{source.name}"),
                      name=source.name, batch_size=batch_size, system_name=source.system_name, state_dir=state,
                      cache_dir=Path(os.environ.get("HUB_CACHE_DIR") or state / "cache") / "http",
                      max_duration=source.spec.max_duration)


PROTOCOL = RestProtocol()
