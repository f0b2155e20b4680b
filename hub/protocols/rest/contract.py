"""REST's contract (:meth:`hub.protocols.rest.RestProtocol.collect` and ``compare``): the OpenAPI document when
the system declares one and the JSON Schema observed in the first page of each source (of the first partition);
what each source and flow uses of it; and the changes between a snapshot and the live system.

Imported by the plugin's hooks on first use (it needs :mod:`hub.contracts`, above the spec layer).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from hub.contracts.collect import first_window, scrub
from hub.contracts.diff import Change, Differ
from hub.contracts.schema import infer, leaf_label
from hub.contracts.usage import Usage, flow_uses, jsonpath_to_path, record_uses, system_sources
from hub.errors import AdapterError, HTTPStatusError, TransportError
from hub.runtime.secrets import mask
from hub.spec.loader import Pipeline
from hub.spec.models import ResolvedSource


def collect_rest(pipeline: Pipeline, system: str) -> dict[str, Any]:
    from hub.protocols.rest import build

    block = pipeline.spec.systems[system]
    window = first_window(pipeline)
    endpoints: dict[str, Any] = {}
    for source in system_sources(pipeline, system):
        request = f"{source.config.request.method} {source.config.request.path or '/'}"
        entry: dict[str, Any] = {"request": request, "records": source.config.records}
        adapter = build(source, window)
        try:
            page = adapter.first_page()
        except HTTPStatusError as exc:
            if exc.status in (404, 405, 410):
                endpoints[source.name] = {**entry, "status": exc.status}
                continue
            raise
        entry["sample"] = "first page" + (f" of partition {window.key}" if source.partitioned and window else "")
        entry["response"] = infer([page.doc])
        endpoints[source.name] = entry
    out: dict[str, Any] = {"endpoints": endpoints}
    if block.config.openapi:
        out["openapi"] = fetch_openapi(block.protocol.resolve_system(system, block), pipeline.root, system)
    return out


def fetch_openapi(cfg: Any, root: Path, system: str) -> dict[str, Any]:
    """The system's OpenAPI document (JSON or YAML; URL with the system's auth, or a file), without its
    ``servers`` (hosts are not part of the contract)."""
    import httpx

    from adapters.rest import build_auth, origin_policy

    location = str(cfg.openapi)
    where = f"systems.{system}.rest.openapi"
    if "://" in location:
        try:
            with httpx.Client(auth=build_auth(cfg.auth), headers={"Accept": "application/json, application/yaml",
                                                                  **cfg.headers},
                              verify=cfg.verify, timeout=30.0, follow_redirects=True,
                              event_hooks=origin_policy(cfg, system, location).hooks()) as client:
                response = client.get(location)
        except httpx.HTTPError as exc:
            raise TransportError(f"{where}: cannot fetch {scrub(location)}: {type(exc).__name__}: "
                                 f"{scrub(str(exc))}") from None
        if response.status_code >= 400:
            raise HTTPStatusError(f"{where}: GET {mask(location)}: HTTP {response.status_code}", url=mask(location),
                                  status=response.status_code)
        text = response.text
    else:
        path = Path(location)
        path = path if path.is_absolute() else root / path
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise AdapterError(f"{where}: cannot read {path}: {exc.strerror or exc}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise AdapterError(f"{where}: not JSON or YAML: {exc}") from None
    if not isinstance(doc, dict) or not ("openapi" in doc or "swagger" in doc):
        raise AdapterError(f"{where}: not an OpenAPI document (no `openapi` or `swagger` key)")
    return _without_servers(doc)


def _without_servers(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_servers(v) for k, v in node.items() if k not in ("servers", "host", "basePath")}
    if isinstance(node, list):
        return [_without_servers(v) for v in node]
    return node


def _pagination_paths(source: ResolvedSource) -> list[str]:
    rest = source.config
    if rest.paginate is None:
        return []
    out = []
    for kind in ("page_number", "offset", "cursor", "next_url"):
        cfg = getattr(rest.paginate, kind)
        for key in ("total_pages", "total_count", "total", "cursor_path", "path"):
            value = getattr(cfg, key, None) if cfg is not None else None
            if value:
                out.append(value)
    return out


def request_params(source: ResolvedSource) -> list[str]:
    """Query parameters a REST source sends (its own and its pagination's)."""
    rest = source.config
    params = dict.fromkeys(rest.request.params)
    p = rest.paginate
    if p is not None:
        if p.page_number:
            params[p.page_number.param] = None
            if p.page_number.size_param:
                params[p.page_number.size_param] = None
        if p.offset:
            params[p.offset.offset_param] = None
            params[p.offset.limit_param] = None
        if p.cursor:
            params[p.cursor.param] = None
    params.update(dict.fromkeys(source.system.config.params))
    return list(params)


def rest_usage(pipeline: Pipeline, system: str, openapi_ops: dict[str, str] | None = None,
               flow_ops: dict[str, str] | None = None) -> Usage:
    """Scope ``rest:SOURCE`` (the observed response document); with an OpenAPI document, also
    ``openapi:OP`` (the operation), ``openapi:OP:params`` and ``openapi:OP:response`` for the operation
    each source calls (*openapi_ops*: source -> operation key such as ``GET /customers``), and what the flows
    send (``openapi:OP:body`` too) and read (*flow_ops*: action name such as ``post_activities`` -> key)."""
    usage = Usage()

    def flow_scopes(name: str) -> tuple[str, str, str, str] | None:
        op = (flow_ops or {}).get(name)
        return None if op is None else (f"openapi:{op}", f"openapi:{op}:params", f"openapi:{op}:body",
                                        f"openapi:{op}:response")

    flow_uses(usage, pipeline, system, flow_scopes)
    for source in system_sources(pipeline, system):
        rest = source.config
        op = (openapi_ops or {}).get(source.name)
        scopes = [f"rest:{source.name}"] + ([f"openapi:{op}:response"] if op else [])
        root = jsonpath_to_path(rest.records)
        for scope in scopes:
            record_uses(usage, scope, root if root is not None else (), source, f"records {rest.records}")
            for expr in _pagination_paths(source):
                path = jsonpath_to_path(expr)
                usage.add(scope, path if path is not None else (), source.name, f"pagination {expr}")
        if op:
            usage.add(f"openapi:{op}", (), source.name, f"{rest.request.method} {rest.request.path}")
            for param in request_params(source):
                usage.add(f"openapi:{op}:params", (param,), source.name, f"param {param}", key=True)
    return usage


def compare_rest(system: str, before: dict[str, Any], after: dict[str, Any], usage: Usage) -> list[Change]:
    d = Differ(system, usage)
    eps_b, eps_a = before.get("endpoints") or {}, after.get("endpoints") or {}
    for source, eb in eps_b.items():
        ea = eps_a.get(source)
        element = f"{eb.get('request', source)} response"
        uses = usage.users(f"rest:{source}", ())
        if ea is None:
            d.add(element, "", "no longer read by the pipeline (take a new snapshot)", eb.get("request"), "absent",
                  uses=[], breaking=False)
            continue
        if ea.get("request") != eb.get("request"):
            d.add(element, "", "the source now requests another endpoint (take a new snapshot)", eb.get("request"),
                  ea.get("request"), uses=uses, breaking=False)
        if "status" in ea and "status" not in eb:
            d.add(element, "", "endpoint removed", "HTTP 200", f"HTTP {ea['status']}", uses=uses, breaking=True)
            continue
        if "status" in eb and "status" not in ea:
            d.add(element, "", "endpoint answers again", f"HTTP {eb['status']}", "HTTP 200", uses=uses,
                  breaking=False)
            continue
        d.schema(eb.get("response"), ea.get("response"), element=element, scope=f"rest:{source}")
    for source, ea in eps_a.items():
        if source not in eps_b:
            d.add(f"{ea.get('request', source)} response", "", "not in the snapshot (take a new snapshot)", "absent",
                  ea.get("request"), uses=[], breaking=False)
    ob, oa = before.get("openapi"), after.get("openapi")
    if ob is not None and oa is None:
        d.add("OpenAPI document", "", "no longer declared", "declared", "absent", uses=[], breaking=False)
    elif ob is None and oa is not None:
        d.add("OpenAPI document", "", "now declared (take a new snapshot to compare it)", "absent", "declared",
              uses=[], breaking=False)
    elif ob is not None and oa is not None:
        _compare_openapi(d, ob, oa, usage)
    return d.changes


_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def _resolve(node: Any, doc: dict[str, Any], seen: tuple[str, ...] = ()) -> Any:
    """*node* with local ``$ref``s inlined (a reference cycle stays a ``$ref``)."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            if ref in seen or len(seen) > 24:
                return {"$ref": ref}
            target: Any = doc
            for part in ref[2:].split("/"):
                target = target.get(part.replace("~1", "/").replace("~0", "~")) if isinstance(target, dict) else None
            return _resolve(target or {}, doc, (*seen, ref))
        return {k: _resolve(v, doc, seen) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, doc, seen) for v in node]
    return node


def _json_schema_of(content: Any) -> dict[str, Any] | None:
    if not isinstance(content, dict):
        return None
    for media, body in sorted(content.items()):
        if "json" in media and isinstance(body, dict):
            schema = body.get("schema")
            return schema if isinstance(schema, dict) else None
    return None


def openapi_operations(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``GET /customers`` -> its parameters (by name), JSON request body and JSON success response, with
    references resolved."""
    out: dict[str, dict[str, Any]] = {}
    for path, item in (doc.get("paths") or {}).items():
        if not isinstance(item, dict):
            continue
        item = _resolve(item, doc)
        shared = [p for p in item.get("parameters") or [] if isinstance(p, dict)]
        for method in _METHODS:
            op = item.get(method)
            if not isinstance(op, dict):
                continue
            params: dict[str, Any] = {}
            for p in [*shared, *(op.get("parameters") or [])]:
                if isinstance(p, dict) and p.get("name"):
                    params[str(p["name"])] = {"in": p.get("in"), "required": bool(p.get("required")),
                                              "schema": p.get("schema") or {}}
            responses = op.get("responses") or {}
            ok = sorted(code for code in responses if str(code).startswith("2"))
            response = _json_schema_of((responses.get(ok[0]) or {}).get("content")) if ok else None
            body = op.get("requestBody") if isinstance(op.get("requestBody"), dict) else None
            out[f"{method.upper()} {path}"] = {
                "parameters": params,
                "request": _json_schema_of(body.get("content")) if body else None,
                "request_required": bool(body.get("required")) if body else False,
                "response": response,
            }
    return out


def match_operation(operations: dict[str, Any], method: str, path: str) -> str | None:
    """The OpenAPI operation a request goes to: same method, path equal segment by segment (a ``{param}``
    matches any segment), or ending with the request's path (servers with a base path)."""
    want = [s for s in path.split("?")[0].strip("/").split("/") if s]

    def fits(template: list[str], actual: list[str]) -> bool:
        return len(template) == len(actual) and all(t == a or (t.startswith("{") and t.endswith("}")) or "{{" in a
                                                    for t, a in zip(template, actual, strict=True))

    candidates = []
    for key in operations:
        m, _, p = key.partition(" ")
        if m != method.upper():
            continue
        segments = [s for s in p.strip("/").split("/") if s]
        if fits(segments, want):
            return key
        if len(segments) > len(want) and fits(segments[len(segments) - len(want):], want):
            candidates.append(key)
    return candidates[0] if len(candidates) == 1 else None


def _compare_openapi(d: Differ, before: dict[str, Any], after: dict[str, Any], usage: Usage) -> None:
    ob, oa = openapi_operations(before), openapi_operations(after)
    for key in ob:
        if key not in oa:
            uses = usage.users(f"openapi:{key}", ())
            d.add(f"OpenAPI {key}", "", "operation removed", key, "absent", uses=uses, breaking=bool(uses))
    for key in oa:
        if key not in ob:
            d.add(f"OpenAPI {key}", "", "operation added", "absent", key, uses=[], breaking=False)
    for key, b in ob.items():
        a = oa.get(key)
        if a is None:
            continue
        element = f"OpenAPI {key}"
        scope = f"openapi:{key}:params"
        pb, pa = b["parameters"], a["parameters"]
        for name, spec in pb.items():
            sent = [u for u in usage.users(scope, (name,)) if u.path == (name,)]
            if name not in pa:
                d.add(element, f"parameter {name}", "removed", _param(spec), "absent", uses=sent, breaking=bool(sent))
                continue
            if not spec["required"] and pa[name]["required"]:
                d.add(element, f"parameter {name}", "now required", "optional", "required", uses=sent,
                      breaking=not sent)
            if spec["in"] != pa[name]["in"]:
                d.add(element, f"parameter {name}", "moved", spec["in"], pa[name]["in"], uses=sent,
                      breaking=bool(sent))
            d.schema(spec["schema"], pa[name]["schema"], element=f"{element} parameter", scope=scope, path=(name,),
                     direction="in")
        for name, spec in pa.items():
            if name in pb:
                continue
            sent = [u for u in usage.users(scope, (name,)) if u.path == (name,)]
            if spec["required"]:
                d.add(element, f"parameter {name}", "new required input", "absent", _param(spec), uses=sent,
                      breaking=not sent)
            else:
                d.add(element, f"parameter {name}", "added (optional)", "absent", _param(spec), uses=sent,
                      breaking=False)
        if b["request"] is not None or a["request"] is not None:
            d.schema(b["request"] or {}, a["request"] or {}, element=f"{element} request body",
                     scope=f"openapi:{key}:body", direction="in")
        if b["response"] is None and a["response"] is not None:
            continue
        if b["response"] is not None and a["response"] is None:
            uses = usage.users(f"openapi:{key}:response", ())
            d.add(f"{element} response", "", "no JSON success response any more", "declared", "absent", uses=uses,
                  breaking=bool(uses))
            continue
        d.schema(b["response"], a["response"], element=f"{element} response", scope=f"openapi:{key}:response")


def _param(spec: dict[str, Any]) -> str:
    return f"{spec.get('in')} {leaf_label(spec.get('schema') or {})}" + (", required" if spec.get("required") else "")
