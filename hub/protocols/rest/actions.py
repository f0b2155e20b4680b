"""REST's actions for the catalog and their guarded execution: every path and method of the system's OpenAPI
document (``openapi:``; OpenAPI 3.0/3.1 and Swagger 2.0, ``$ref`` resolved), or, without one, the requests the
spec's sources declare. HTTP GET/HEAD/OPTIONS are reads, POST/PUT/PATCH/DELETE writes (an OpenAPI operation may
say otherwise with ``x-hub-side-effect: read|write``). A guarded call (:func:`rest_call`) goes through the REST
adapter.

Imported by the plugin's hooks on first use (it needs :mod:`hub.agent`, above the spec layer); the guard
(and pyarrow with it) only by the calls, so building the catalog stays light.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from hub.agent.catalog import Action
from hub.errors import HubError
from hub.runtime.secrets import mask
from hub.runtime.window import is_template
from hub.spec.loader import Pipeline

if TYPE_CHECKING:
    from hub.agent.guard import Fetched

READ_METHODS = {"GET", "HEAD", "OPTIONS"}
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def rest_actions(pipeline: Pipeline, system: str) -> list[Action]:
    from hub.protocols.rest.contract import fetch_openapi

    block = pipeline.spec.systems[system]
    if not block.config.openapi:
        return rest_from_sources(pipeline, system)
    doc = fetch_openapi(block.protocol.resolve_system(system, block), pipeline.root, system)
    records: dict[tuple[str, str], str] = {(s.config.request.method, s.config.request.path or "/"): s.config.records
                                           for s in pipeline.sources.values() if s.system_name == system}
    return [Action(**{**spec, "pipeline": pipeline.name})
            for spec in openapi_operations(doc, system, records=records)]


def action_name(method: str, path: str) -> str:
    """``get_customers`` for GET /customers, ``get_customers_by_id`` for GET /customers/{id}."""
    parts = []
    for seg in path.strip("/").split("/"):
        if not seg:
            continue
        if seg.startswith("{") and seg.endswith("}"):
            parts.append(f"by_{seg[1:-1]}")
        else:
            parts.append(seg)
    slug = re.sub(r"[^A-Za-z0-9]+", "_", "_".join(parts)).strip("_").lower()
    return f"{method.lower()}_{slug}" if slug else method.lower()


class _Resolver:
    """``$ref`` resolution inside one document (local references), cycles cut with a marker."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc

    def pointer(self, ref: str) -> Any:
        if not ref.startswith("#/"):
            return {"description": f"external reference {ref} (not resolved)"}
        node: Any = self.doc
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, dict) or part not in node:
                raise HubError(f"OpenAPI: unresolvable $ref {ref}")
            node = node[part]
        return node

    def resolve(self, node: Any, stack: tuple[str, ...] = (), depth: int = 0) -> Any:
        if depth > 40:
            return {}
        if isinstance(node, list):
            return [self.resolve(v, stack, depth + 1) for v in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node and isinstance(node["$ref"], str):
            ref = node["$ref"]
            if ref in stack:
                return {"type": "object", "x-recursive": ref.rsplit("/", 1)[-1]}
            target = self.resolve(self.pointer(ref), (*stack, ref), depth + 1)
            extra = {k: v for k, v in node.items() if k != "$ref"}  # 3.1: siblings of $ref apply too
            return {**target, **self.resolve(extra, stack, depth + 1)} if isinstance(target, dict) else target
        return {k: self.resolve(v, stack, depth + 1) for k, v in node.items()}


def _normalize_schema(schema: Any, swagger: bool) -> Any:
    """JSON Schema (2020-12) from an OpenAPI schema object: 3.0 ``nullable`` becomes a null type, draft-4
    boolean ``exclusiveMinimum``/``exclusiveMaximum`` become the numbers, Swagger's ``file`` a binary string; 3.1
    schemas are kept (they are JSON Schema already). The guard validates calls against these schemas."""
    if isinstance(schema, list):
        return [_normalize_schema(s, swagger) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _normalize_schema(v, swagger) for k, v in schema.items() if k not in ("nullable", "xml",
                                                                                    "discriminator")}
    if schema.get("nullable") is True and "type" in out and isinstance(out["type"], str):
        out["type"] = [out["type"], "null"]
    for bound, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        if isinstance(out.get(exclusive), bool):  # 3.0 / Swagger (draft 4): a flag on the bound; now the bound
            flag = out.pop(exclusive)
            if flag and bound in out:
                out[exclusive] = out.pop(bound)
    if swagger and out.get("type") == "file":  # a Swagger 2.0 upload: not a JSON Schema type
        out.update(type="string", format="binary")
    return out


def openapi_operations(doc: dict[str, Any], system: str, *,
                       records: dict[tuple[str, str], str] | None = None) -> list[dict[str, Any]]:
    """Every operation of an OpenAPI 3.0/3.1 or Swagger 2.0 document as Action fields (without pipeline)."""
    if not isinstance(doc, dict) or not ("openapi" in doc or "swagger" in doc):
        raise HubError(f"systems.{system}.rest.openapi: not an OpenAPI document (no `openapi` or `swagger` key)")
    swagger = str(doc.get("swagger", "")).startswith("2")
    r = _Resolver(doc)
    records = records or {}
    out: list[dict[str, Any]] = []
    names: set[str] = set()
    for path, item in (doc.get("paths") or {}).items():
        item = r.resolve(item) if isinstance(item, dict) else {}
        shared = item.get("parameters") or []
        for method in HTTP_METHODS:
            op = item.get(method)
            if not isinstance(op, dict):
                continue
            verb = method.upper()
            params = {(p.get("in"), p.get("name")): p for p in [*shared, *(op.get("parameters") or [])]
                      if isinstance(p, dict)}
            props: dict[str, Any] = {}
            required: list[str] = []
            body_schema: dict[str, Any] | None = None
            body_required = False
            for (where, pname), p in params.items():
                if where == "body" and swagger:
                    body_schema = _normalize_schema(p.get("schema") or {}, swagger)
                    body_required = bool(p.get("required"))
                    continue
                if where not in ("query", "path", "header", "formData") or not pname:
                    continue
                if where == "header" and pname.lower() in ("authorization", "accept", "content-type"):
                    continue
                schema = p.get("schema") if "schema" in p else {k: v for k, v in p.items() if k in (
                    "type", "format", "enum", "items", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
                    "minLength", "maxLength", "minItems", "maxItems", "uniqueItems", "multipleOf", "default",
                    "pattern")}
                schema = dict(_normalize_schema(schema or {}, swagger))
                if p.get("description"):
                    schema["description"] = p["description"]
                schema["x-in"] = where
                props[pname] = schema
                if p.get("required") or where == "path":
                    required.append(pname)
            if not swagger and isinstance(op.get("requestBody"), dict):
                content = op["requestBody"].get("content") or {}
                media: Any = content.get("application/json") or next(iter(content.values()), {})
                body_schema = _normalize_schema((media or {}).get("schema") or {}, swagger)
                body_required = bool(op["requestBody"].get("required"))
            if body_schema is not None:
                props["body"] = {**body_schema, "x-in": "body"}
                if body_required:
                    required.append("body")
            response = _response_schema(op, swagger)
            declared = records.get((verb, path))
            record, records_path = _rest_record(response, declared)
            marked = op.get("x-hub-side-effect") or item.get("x-hub-side-effect")
            side = marked if marked in ("read", "write") else ("read" if verb in READ_METHODS else "write")
            base = action_name(method, path)
            name, n = base, 2
            while name in names:
                name, n = f"{base}_{n}", n + 1
            names.add(name)
            # summary, description and what the path's resource is (Twilio: "Recordings of phone calls"), each
            # once: most documents repeat the summary as the description, and the resource's description is
            # often the only text saying what a terse operation ("List Worker") is about
            said = [t.strip() for t in (op.get("summary"), op.get("description"), item.get("description"))
                    if isinstance(t, str) and t.strip()]
            text = " - ".join(dict.fromkeys(said))
            description = f"{verb} {path}" + (f": {text}" if text else "")
            if op.get("operationId"):
                description += f" (operationId {op['operationId']})"
            if op.get("tags"):
                description += f" [tags: {', '.join(map(str, op['tags']))}]"
            binding: dict[str, Any] = {"method": verb, "path": path}
            if records_path:
                binding["records"] = records_path
            if op.get("operationId"):
                binding["operation_id"] = op["operationId"]
            out.append({"name": f"{system}.{name}", "system": system, "protocol": "rest", "description": description,
                        "input_schema": {"type": "object", "properties": props, "required": required,
                                         **({"additionalProperties": False} if props else {})},
                        "output_schema": record, "side_effect": side, "binding": binding})
    return out


def _response_schema(op: dict[str, Any], swagger: bool) -> dict[str, Any]:
    responses = op.get("responses") or {}
    ok = [c for c in responses if str(c).startswith("2")] or (["default"] if "default" in responses else [])
    for code in sorted(ok, key=str):
        resp = responses[code] or {}
        if swagger:
            if isinstance(resp.get("schema"), dict):
                return dict(_normalize_schema(resp["schema"], swagger))
            continue
        content = resp.get("content") or {}
        media = content.get("application/json") or next((v for k, v in content.items() if "json" in k), None)
        if isinstance(media, dict) and isinstance(media.get("schema"), dict):
            return dict(_normalize_schema(media["schema"], swagger))
    return {}


def _schema_type(schema: dict[str, Any]) -> str | None:
    t = schema.get("type")
    if isinstance(t, list):
        t = next((x for x in t if x != "null"), None)
    return t if isinstance(t, str) else None


def _rest_record(response: dict[str, Any], declared: str | None) -> tuple[dict[str, Any], str | None]:
    """One record's schema: follow the source's JSONPath when declared (``$.data[*]``), else the array
    itself, or the object's only array-of-objects property, or the object."""
    if declared:
        node: Any = response
        for part in re.findall(r"[A-Za-z0-9_\-]+|\[\*\]", declared.removeprefix("$")):
            if not isinstance(node, dict):
                break
            node = (node.get("items") or {}) if part == "[*]" else (node.get("properties") or {}).get(part, {})
        return (node if isinstance(node, dict) and node else response), declared
    if _schema_type(response) == "array":
        return response.get("items") or {}, "$[*]"
    arrays = [(k, v) for k, v in (response.get("properties") or {}).items()
              if isinstance(v, dict) and _schema_type(v) == "array"]
    if len(arrays) == 1:
        key, arr = arrays[0]
        return arr.get("items") or {}, f"$.{key}[*]"
    return response, "$" if response else None


def rest_from_sources(pipeline: Pipeline, system: str) -> list[Action]:
    """Without an OpenAPI document: one action per distinct request the spec's sources declare, its input
    schema as precise as the spec allows (:func:`source_inputs`)."""
    out: dict[str, Action] = {}
    for source in pipeline.sources.values():
        if source.system_name != system:
            continue
        req = source.config.request
        path = req.path or "/"
        name = f"{system}.{action_name(req.method, path)}"
        if name in out:
            continue
        fields: dict[str, Any] = {c.name or p: {} for p, c in source.spec.column_specs()} if source.spec.columns else {}
        out[name] = Action(
            name=name, system=system, protocol="rest",
            description=f"{req.method} {path}: as read by source {source.name}"
                        + (f": {source.spec.description}" if source.spec.description else ""),
            input_schema=source_inputs(source.name, source.config),
            output_schema={"type": "object", "properties": fields},
            side_effect="read" if req.method in READ_METHODS else "write",
            binding={"method": req.method, "path": path, "records": source.config.records, "source": source.name},
            pipeline=pipeline.name)
    return list(out.values())


#: What a partition template renders to (hub.runtime.window.Window.context), as JSON Schema.
_TEMPLATE_SCHEMAS: dict[str, dict[str, Any]] = {
    "start": {"type": "string", "format": "date-time"}, "end": {"type": "string", "format": "date-time"},
    "start_date": {"type": "string", "format": "date"}, "end_date": {"type": "string", "format": "date"},
    "start_epoch": {"type": "string", "pattern": "^-?[0-9]+$"},
    "end_epoch": {"type": "string", "pattern": "^-?[0-9]+$"},
}


_ONE_TEMPLATE = re.compile(r"^\s*{{\s*partition\.([a-z_]+)\s*}}\s*$")


def _literal_schema(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, int):
        return {"type": "integer"}
    if isinstance(value, float):
        return {"type": "number"}
    return {"type": "string"}


def source_inputs(source: str, rest: Any) -> dict[str, Any]:
    """The input schema of a REST action derived from *source* (its ``RestSourceConfig`` *rest*): the parameters
    the source sends, typed as it sends them (a literal is the default the call sends when not given; a
    partition template is required, typed as what it renders to), the path's ``{placeholders}`` (required), and
    the pagination's parameters (integers from their start; without the position parameter the call reads
    every page). Nothing else is accepted."""
    props: dict[str, Any] = {}
    required: list[str] = []
    for key, value in rest.request.params.items():
        if isinstance(value, str) and is_template(value):
            match = _ONE_TEMPLATE.match(value)
            shape = _TEMPLATE_SCHEMAS.get(match.group(1), {"type": "string"}) if match else {"type": "string"}
            props[key] = {**shape, "x-in": "query",
                          "description": f"sent as {value!r} by source {source} (the partition's window)"}
            required.append(key)
        else:
            props[key] = {**_literal_schema(value), "x-in": "query", "default": value,
                          "description": f"sent as {value!r} by source {source}"}
    for key in re.findall(r"\{([A-Za-z0-9_]+)\}", rest.request.path or ""):
        props[key] = {"type": "string", "x-in": "path"}
        required.append(key)
    props.update(_paging_inputs(source, rest.paginate))
    schema: dict[str, Any] = {"type": "object", "properties": props, "required": required}
    if props:
        schema["additionalProperties"] = False
    return schema


def _paging_inputs(source: str, paginate: Any) -> dict[str, Any]:
    """The query parameters of a source's pagination, as the agent may set them."""
    every = "; without it every page is read"
    if paginate is None:
        return {}
    out: dict[str, Any] = {}
    if paginate.page_number is not None:
        p = paginate.page_number
        out[p.param] = {"type": "integer", "minimum": p.start, "x-in": "query",
                        "description": f"page number (pagination of source {source}, from {p.start}){every}"}
        if p.size_param:
            out[p.size_param] = {"type": "integer", "minimum": 1, "x-in": "query",
                                 "description": f"records per page (pagination of source {source})",
                                 **({"default": p.size} if p.size else {})}
    elif paginate.offset is not None:
        o = paginate.offset
        out[o.offset_param] = {"type": "integer", "minimum": o.start, "x-in": "query",
                               "description": f"offset of the first record (pagination of source {source}, from "
                                              f"{o.start}){every}"}
        out[o.limit_param] = {"type": "integer", "minimum": 1, "default": o.limit, "x-in": "query",
                              "description": f"records per page (pagination of source {source})"}
    elif paginate.cursor is not None:
        out[paginate.cursor.param] = {"type": "string", "minLength": 1, "x-in": "query",
                                      "description": f"cursor of a page, as a previous page returned it "
                                                     f"(pagination of source {source}){every}"}
    return out


def paging_position(paginate: Any) -> str | None:
    """The parameter that says which page to read (page number, offset or cursor); None without one."""
    if paginate is None:
        return None
    if paginate.page_number is not None:
        return str(paginate.page_number.param)
    if paginate.offset is not None:
        return str(paginate.offset.offset_param)
    return str(paginate.cursor.param) if paginate.cursor is not None else None


def rest_call(pipeline: Pipeline, action: Action, params: dict[str, Any], limit: int) -> Fetched:
    import httpx

    from adapters.rest import RestSource, RestSourceConfig, build_auth, origin_policy, select
    from hub.agent.guard import Fetched  # pyarrow: only when calling, so building the catalog stays light

    block = pipeline.spec.systems[action.system]
    system = block.protocol.resolve_system(action.system, block)
    from hub.protocols.rest import place_params

    path, query, headers, body = place_params(action, params)
    method = str(action.binding["method"]).upper()
    records_path = str(action.binding.get("records") or "$")
    # reads go through the REST adapter (retries, backoff); a write is sent exactly once, never retried
    if method in ("GET", "POST") and action.side_effect == "read" and (body is None or isinstance(body, dict)):
        bound = pipeline.sources.get(str(action.binding.get("source") or ""))
        if bound is not None and bound.kind == action.protocol:  # the spec's source of this REST action
            return _rest_pages(system, action, bound.config, path, query, headers, body, limit)
        source = RestSourceConfig.model_validate({"request": {"path": path, "method": method, "params": query,
                                                              "headers": headers,
                                                              **({"json": body} if body is not None else {})},
                                                  "records": records_path})
        page = RestSource(system, source, name=action.name).first_page()
        records = [r if isinstance(r, dict) else {"value": r} for r in page.records]
        return Fetched(records[:limit], len(records))
    timeout = system.timeout if isinstance(system.timeout, (int, float)) else system.timeout.read
    url = system.base_url.rstrip("/") + "/" + path.lstrip("/")
    try:
        with httpx.Client(auth=build_auth(system.auth), headers={**system.headers, **headers}, verify=system.verify,
                          timeout=timeout, event_hooks=origin_policy(system, action.system).hooks()) as client:
            response = client.request(method, url, params={**system.params, **query}, json=body)
    except httpx.HTTPError as exc:
        raise HubError(f"{action.name}: {method} {mask(url)}: {type(exc).__name__}: {mask(str(exc))}") from None
    if response.status_code >= 400:
        raise HubError(f"{action.name}: {method} {mask(url)}: HTTP {response.status_code}: "
                       f"{mask(response.text[:300])}")
    try:
        doc = response.json() if response.content else None
    except ValueError:
        return Fetched([{"status": response.status_code, "text": response.text[:2000]}], 1)
    found = select(records_path, doc) if doc is not None else []
    if len(found) == 1 and isinstance(found[0], list):
        found = found[0]
    out = [r if isinstance(r, dict) else {"value": r} for r in found] or [{"status": response.status_code}]
    return Fetched(out[:limit], len(out))


def _rest_pages(system: Any, action: Action, rest: Any, path: str, query: dict[str, Any], headers: dict[str, str],
                body: dict[str, Any] | None, limit: int) -> Fetched:
    """A read of an action derived from a spec source (its ``RestSourceConfig`` *rest*): the source's request,
    with its literal parameters as defaults, and its pagination, through the REST adapter (retries, rate limit,
    concurrent known pages); reading stops once more than *limit* records were seen, and the total is then
    unknown (at least the records seen). A page position the caller gives (page number, offset or cursor)
    reads that one page; a page size the caller gives is the pagination's size."""
    from adapters.rest import RestSource, RestSourceConfig
    from hub.agent.guard import Fetched

    raw = rest.model_dump(by_alias=True, exclude_none=True)
    request = raw.setdefault("request", {})
    literal = {k: v for k, v in (request.get("params") or {}).items() if not (isinstance(v, str) and is_template(v))}
    request.update(path=path, params={**literal, **query}, headers={**(request.get("headers") or {}), **headers})
    if body is not None:
        request["json"] = body
    paginate = raw.get("paginate") or {}
    if paging_position(rest.paginate) in query:
        raw.pop("paginate", None)
    elif (pages := paginate.get("page_number")) and pages.get("size") and pages.get("size_param") in query:
        pages["size"] = query[pages["size_param"]]
    elif (offsets := paginate.get("offset")) and offsets.get("limit_param", "limit") in query:
        offsets["limit"] = query[offsets.get("limit_param", "limit")]
    source = RestSource(system, RestSourceConfig.model_validate(raw), name=action.name, batch_size=limit + 1,
                        system_name=action.system)
    rows: list[dict[str, Any]] = []
    seen = 0
    batches = source.batches()
    try:
        for batch in batches:
            seen += batch.num_rows
            if len(rows) < limit:
                keep = [c for c in batch.schema.names if not c.startswith("_hub_")]
                rows.extend(batch.select(keep).slice(0, limit - len(rows)).to_pylist())
            if seen > limit:  # enough: the adapter's thread is stopped, the pages after are not fetched
                return Fetched(rows, None, seen)
    finally:
        close = getattr(batches, "close", None)  # a generator: stops and joins the adapter's thread
        if close is not None:
            close()
    return Fetched(rows, seen)
