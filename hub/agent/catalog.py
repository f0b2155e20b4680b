"""The action catalog: every operation the systems of the pipelines offer, as typed actions.

Actions are generated from what the systems describe themselves, read live through the hub's adapters:

* SOAP: every operation of the chosen service and port of the WSDL (:func:`adapters.soap.catalog.describe`);
  input and output JSON Schemas from the XSD;
* REST: every path and method of the system's OpenAPI document (``openapi:``; OpenAPI 3.0/3.1 and Swagger
  2.0, ``$ref`` resolved), or, without one, the requests the spec's sources declare;
* SQL: every table and view (:func:`adapters.sql.catalog.describe`), read-only;
* SFTP: every file drop the spec declares (list and read its files).

Side effects: HTTP GET/HEAD/OPTIONS and SQL are reads, POST/PUT/PATCH/DELETE writes (an OpenAPI operation may
say otherwise with ``x-hub-side-effect: read|write``); a SOAP operation is a read when its name starts with
Get/List/Find/Search/Query/Check/Read/Describe/Fetch, else a write; ``systems.<name>.agent.reads`` /
``writes`` override both.

Search (:meth:`Catalog.search`, :mod:`hub.agent.search`) fuses keywords (BM25 with a synonym map and
character n-grams) with meaning (sentence embeddings of a model shipped in a wheel, run offline,
:mod:`hub.agent.embed`); without the model it falls back to keywords.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hub.errors import HubError
from hub.runtime.secrets import mask
from hub.runtime.window import is_template
from hub.spec.loader import Pipeline

if TYPE_CHECKING:
    from hub.agent.search import HybridIndex

READ_PREFIXES = ("get", "list", "find", "search", "query", "check", "read", "describe", "fetch", "lookup", "count")
READ_METHODS = {"GET", "HEAD", "OPTIONS"}
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


@dataclass(frozen=True)
class Action:
    """One thing an agent can do with a system."""

    name: str            # stable: "<system>.<operation>", e.g. "erp.GetOrders", "crm.get_customers"
    system: str          # system name in the spec
    protocol: str        # rest | soap | sql | sftp
    description: str
    input_schema: dict[str, Any]   # JSON Schema of the parameters
    output_schema: dict[str, Any]  # JSON Schema of one record
    side_effect: str     # "read" | "write"
    binding: dict[str, Any]  # rest {method, path, records?}, soap {operation, records?}, sql {table, schema?},
    #                          sftp {path, glob, source}
    pipeline: str = ""   # the pipeline whose spec declares the system

    def summary(self) -> dict[str, Any]:
        """Name, system, protocol, side effect and description: what a listing shows."""
        return {"name": self.name, "system": self.system, "protocol": self.protocol,
                "side_effect": self.side_effect, "description": self.description}

    def to_dict(self) -> dict[str, Any]:
        return {**self.summary(), "pipeline": self.pipeline, "binding": self.binding,
                "input_schema": self.input_schema, "output_schema": self.output_schema}



# --- the catalog -----------------------------------------------------------------------------------------

@dataclass
class Catalog:
    """The actions of a set of pipelines' systems, searchable."""

    actions: list[Action]
    #: systems that could not be read (system -> reason); their actions are missing or come from the spec only
    errors: dict[str, str] = field(default_factory=dict)
    pipelines: dict[str, Pipeline] = field(default_factory=dict, repr=False)  # pipeline name -> pipeline
    #: search by meaning: None when the model is installed (else keywords, warned once), True required, False off
    semantic: bool | None = field(default=None, repr=False)
    #: where the action vectors are kept between builds (default: see :func:`hub.agent.embed.default_store_path`)
    vector_store: Path | None = field(default=None, repr=False)
    _index: HybridIndex | None = field(default=None, init=False, repr=False)
    _by_name: dict[str, Action] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self._by_name = {a.name: a for a in self.actions}

    def __len__(self) -> int:
        return len(self.actions)

    def __iter__(self) -> Any:
        return iter(self.actions)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def get(self, name: str) -> Action:
        """The action called *name*; a :class:`HubError` naming the closest names when there is none."""
        found = self._by_name.get(name)
        if found is not None:
            return found
        lowered = {n.lower(): n for n in self._by_name}
        if name.lower() in lowered:
            return self._by_name[lowered[name.lower()]]
        close = difflib.get_close_matches(name, list(self._by_name), n=5, cutoff=0.5)
        if not close:
            close = [a.name for a in self.search(name, limit=3)]
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise HubError(f"no action named '{name}' in the catalog ({len(self.actions)} actions){hint}")

    def pipeline_of(self, action: Action) -> Pipeline:
        if action.pipeline in self.pipelines:
            return self.pipelines[action.pipeline]
        raise HubError(f"action {action.name}: pipeline '{action.pipeline}' is not loaded")

    def pipeline_of_name(self, name: str) -> Pipeline:
        if name in self.pipelines:
            return self.pipelines[name]
        raise HubError(f"pipeline '{name}' is not loaded (pipelines: {', '.join(self.pipelines) or 'none'})")

    def search(self, query: str, limit: int = 10) -> list[Action]:
        """The actions that best match *query*, best first, by keywords and by meaning
        (:class:`hub.agent.search.HybridIndex`); an empty query lists the first *limit* actions."""
        return [a for a, _ in self.scored(query, limit)]

    @property
    def index(self) -> HybridIndex:
        """The search index, built on first use (the action vectors from the disk cache where known)."""
        if self._index is None:
            root = next((p.root for p in self.pipelines.values() if getattr(p, "root", None)), None)
            from hub.agent.embed import default_store_path  # numpy and the model only when searching
            from hub.agent.search import HybridIndex

            store = self.vector_store or default_store_path(Path(root) if root else None)
            self._index = HybridIndex(self.actions, semantic=self.semantic, store_path=store)
        return self._index

    def scored(self, query: str, limit: int = 10) -> list[tuple[Action, float]]:
        if not query.strip():
            return [(a, 0.0) for a in self.actions[:limit]]
        exact = self._by_name.get(query.strip())
        out = [(self.actions[i], round(s, 4)) for i, s in self.index.rank(query, limit)]
        if exact is not None:
            out = [(exact, 2.0), *[(a, s) for a, s in out if a is not exact][: limit - 1]]
        return out


def build_catalog(pipelines: list[Pipeline], *, systems: Iterable[str] | None = None) -> Catalog:
    """The catalog of every system of *pipelines* (only *systems* when given), read from the live systems.

    A system that cannot be read does not stop the catalog: its reason is kept in :attr:`Catalog.errors`
    and, where the spec says enough (REST requests, SFTP drops), actions come from the spec alone.
    A system declared by several pipelines is read once (the first pipeline's declaration).
    """
    wanted = set(systems) if systems is not None else None
    actions: list[Action] = []
    errors: dict[str, str] = {}
    seen: set[str] = set()
    for pipeline in pipelines:
        for system, cfg in pipeline.spec.systems.items():
            if system in seen or (wanted is not None and system not in wanted):
                continue
            seen.add(system)
            try:
                found = cfg.protocol.actions(pipeline, system)
            except Exception as exc:  # a system that cannot be described must not hide the others
                errors[system] = mask(str(exc) if isinstance(exc, HubError) else f"{type(exc).__name__}: {exc}")
                found = cfg.protocol.spec_actions(pipeline, system)  # what the spec alone says
            actions.extend(_with_policy(pipeline, system, a) for a in found)
    unique: dict[str, Action] = {}
    for a in actions:
        unique.setdefault(a.name, a)
    return Catalog(actions=list(unique.values()), errors=errors, pipelines={p.name: p for p in pipelines})


def _with_policy(pipeline: Pipeline, system: str, action: Action) -> Action:
    """*action* with the system's agent policy applied: ``agent: {writes: [...], reads: [...]}`` overrides the
    side effect a protocol inferred (by verb, HTTP method ...). Applied here, once, for every protocol."""
    agent = pipeline.spec.systems[system].agent
    operation = action.name.split(".", 1)[1] if "." in action.name else action.name
    side_effect = action.side_effect
    if agent is not None:
        if operation in agent.writes or action.name in agent.writes:
            side_effect = "write"
        elif operation in agent.reads or action.name in agent.reads:
            side_effect = "read"
    return dataclasses.replace(action, side_effect=side_effect, pipeline=action.pipeline or pipeline.name)


def soap_side_effect(operation: str) -> str:
    """``read`` when the operation's name starts with a reading verb (GetOrders, ListX, FindY...), else ``write``."""
    lowered = operation.lower()
    return "read" if any(lowered.startswith(p) for p in READ_PREFIXES) else "write"


def _system_description(pipeline: Pipeline, system: str) -> str:
    return pipeline.spec.systems[system].description or ""


# --- SOAP ------------------------------------------------------------------------------------------------

def soap_actions(pipeline: Pipeline, system: str) -> list[Action]:
    block = pipeline.spec.systems[system]
    cfg = block.protocol.resolve_system(system, block)  # first: a missing secret fails before zeep is imported

    from adapters.soap import load_wsdl, select_port
    from adapters.soap.catalog import describe
    from hub.materialize import cache_dir

    # the arguments a flow's sender loads it with (hub.flows.senders): the parsed WSDL is then reused
    wsdl = load_wsdl(cfg, cache_dir=cache_dir(pipeline) / "wsdl", base_dir=pipeline.root, system_name=system)
    service, port = select_port(wsdl, cfg)
    catalog = describe(wsdl)
    entry = next(p for s in catalog["services"] if s["name"] == service.name for p in s["ports"]
                 if p["name"] == port.name)
    declared = {s.config.operation: s for s in pipeline.sources.values() if s.system_name == system}
    out = []
    for op in entry["operations"]:
        name = op["name"]
        source = declared.get(name)
        records = source.config.records if source is not None else None
        output = op.get("output") or {"type": "object", "properties": {}}
        record_schema, found = _soap_record(output, records)
        description = f"SOAP operation {name} of {service.name}/{port.name}"
        if source is not None and source.spec.description:
            description += f"; read by source {source.name}: {source.spec.description}"
        elif _system_description(pipeline, system):
            description += f" ({_system_description(pipeline, system)})"
        binding: dict[str, Any] = {"operation": name}
        if found:
            binding["records"] = found
        out.append(Action(
            name=f"{system}.{name}", system=system, protocol="soap", description=description,
            input_schema=op.get("input") or {"type": "object", "properties": {}},
            output_schema=record_schema,
            side_effect=soap_side_effect(name),
            binding=binding, pipeline=pipeline.name))
    return out


def _soap_record(output: dict[str, Any], records: str | None) -> tuple[dict[str, Any], str | None]:
    """The schema of one record of an operation's output, and the record element's name: the element the
    source names, else the first repeated element (depth first), else the whole output."""
    def walk(schema: dict[str, Any], depth: int) -> tuple[dict[str, Any], str] | None:
        if depth > 6:
            return None
        for key, sub in (schema.get("properties") or {}).items():
            node = sub.get("anyOf", [sub])[0] if isinstance(sub, dict) else {}
            if node.get("type") == "array":
                items = node.get("items") or {}
                if records is None or key == records:
                    return items, key
            if records is not None and key == records:
                return node, key
            if node.get("type") == "object":
                found = walk(node, depth + 1)
                if found:
                    return found
            if node.get("type") == "array":
                found = walk(node.get("items") or {}, depth + 1)
                if found:
                    return found
        return None

    hit = walk(output, 0)
    if hit is None:
        props = output.get("properties") or {}
        if len(props) == 1:  # a wrapper element (GetCustomerResult): the record is inside it
            key, inner = next(iter(props.items()))
            inner = inner.get("anyOf", [inner])[0] if isinstance(inner, dict) else {}
            if inner.get("type") == "object":
                return inner, records or key
        return output, records
    return hit[0], hit[1]


# --- REST ------------------------------------------------------------------------------------------------

def rest_actions(pipeline: Pipeline, system: str) -> list[Action]:
    from hub.contracts.collect import fetch_openapi

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


# --- SQL -------------------------------------------------------------------------------------------------

SQL_INPUT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "columns": {"type": "array", "items": {"type": "string"}, "description": "Columns to return (default all)."},
        "where": {"type": "object", "description": "Column -> value: rows where every column equals its value."},
        "order_by": {"type": "array", "items": {"type": "string"}, "description": "Columns to sort by; "
                                                                                   "'-col' for descending."},
        "limit": {"type": "integer", "minimum": 1, "description": "Rows to return at most."},
    },
    "required": [],
    "additionalProperties": False,
}


def sql_system(pipeline: Pipeline, system: str) -> Any:
    """The resolved SQL system config; a relative SQLite path is taken from the project root."""
    block = pipeline.spec.systems[system]
    return block.protocol.resolve_system(system, block, root=pipeline.root)


def sql_actions(pipeline: Pipeline, system: str) -> list[Action]:
    from adapters.sql.catalog import describe

    cfg = sql_system(pipeline, system)
    schemas = {s.config.schema_ for s in pipeline.sources.values() if s.system_name == system}
    out = []
    for schema in sorted(schemas, key=lambda s: s or "") or [None]:
        catalog = describe(cfg, schema=schema)
        for t in catalog["tables"]:
            readers = [s.name for s in pipeline.sources.values() if s.system_name == system
                       and s.config.table == t["name"]]
            text = f"Rows of the {t['kind']} {t['name']}" + (f" ({t['description']})" if t["description"] else "")
            text += f"; columns {', '.join(c['name'] for c in t['columns'])}"
            if t["primary_key"]:
                text += f"; primary key {', '.join(t['primary_key'])}"
            if readers:
                text += f"; read by source {', '.join(readers)}"
            binding: dict[str, Any] = {"table": t["name"], "kind": t["kind"]}
            if schema:
                binding["schema"] = schema
            name = f"{system}.{t['name']}" if not schema else f"{system}.{schema}.{t['name']}"
            out.append(Action(name=name, system=system, protocol="sql", description=text,
                              input_schema=copy.deepcopy(SQL_INPUT), output_schema=t["schema"],
                              side_effect="read", binding=binding, pipeline=pipeline.name))
    return out


# --- SFTP ------------------------------------------------------------------------------------------------

SFTP_INPUT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "file": {"type": "string", "description": "A file of the drop to read (a name from the listing); without "
                                                  "it, the files are listed."},
        "limit": {"type": "integer", "minimum": 1, "description": "Records (or files) to return at most."},
    },
    "required": [],
    "additionalProperties": False,
}


def sftp_from_spec(pipeline: Pipeline, system: str) -> list[Action]:
    out = []
    for source in pipeline.sources.values():
        if source.system_name != system:
            continue
        files = source.config.files
        short = source.name.removeprefix(f"{system}_") or source.name
        props: dict[str, Any] = {}
        for path, col in source.spec.column_specs():
            ctype = col.type or "string"
            js: dict[str, Any] = {"type": "string"}
            if ctype.startswith(("int", "bigint")):
                js = {"type": "integer"}
            elif ctype.startswith(("float", "double")):
                js = {"type": "number"}
            elif ctype == "date":
                js = {"type": "string", "format": "date"}
            elif ctype.startswith("timestamp"):
                js = {"type": "string", "format": "date-time"}
            elif ctype.startswith("decimal"):
                js = {"type": "string", "format": "decimal"}
            elif ctype == "bool":
                js = {"type": "boolean"}
            props[col.name or path] = {**js, "x-source-field": path}
        out.append(Action(
            name=f"{system}.{short}", system=system, protocol="sftp",
            description=f"Files of the drop {files.path}/{files.glob} ({source.config.format.kind})"
                        + (f": {source.spec.description}" if source.spec.description else "")
                        + "; without `file` lists the ready files, with it reads that file's records",
            input_schema=copy.deepcopy(SFTP_INPUT),
            output_schema={"type": "object", "properties": props},
            side_effect="read", binding={"path": files.path, "glob": files.glob, "source": source.name},
            pipeline=pipeline.name))
    return out
