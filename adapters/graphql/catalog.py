"""Discovery: every query and mutation field of a GraphQL schema, with arguments and output as JSON Schema.

The schema comes from the live endpoint by introspection (graphql-core's standard introspection query, sent
through :class:`~adapters.graphql.client.GraphQLEndpoint`, so auth, retries and the origin policy apply) or
from an SDL file (``build_schema``). Query fields are *read* actions, mutation fields *write* actions:
this is what a person reads to write a source (``hub catalog graphql URL``) and what the agent layer turns
into actions.

Real schemas are not always valid SDL: GitHub's public schema defines two fields of
``EnterpriseOwnerInfo`` twice (same type and arguments, another description), which graphql-core refuses.
Such duplicates are merged with a warning; duplicates that differ in type or arguments, and any other SDL
error, are refused with their lines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from graphql import (
    DocumentNode,
    GraphQLEnumType,
    GraphQLField,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLScalarType,
    GraphQLSchema,
    GraphQLSyntaxError,
    GraphQLUnionType,
    Undefined,
    build_ast_schema,
    build_client_schema,
    get_introspection_query,
    parse,
    print_ast,
)
from graphql.language import (
    InputObjectTypeDefinitionNode,
    InputObjectTypeExtensionNode,
    InterfaceTypeDefinitionNode,
    InterfaceTypeExtensionNode,
    ObjectTypeDefinitionNode,
    ObjectTypeExtensionNode,
)
from graphql.validation.validate import validate_sdl

from adapters._http import origin
from adapters.graphql.client import GraphQLEndpoint
from adapters.graphql.config import GraphQLSystemConfig
from adapters.graphql.errors import GraphQLError
from hub.errors import ForeignOriginError, ResponseFormatError
from hub.runtime.secrets import mask_url

#: Object levels of an operation's output expanded in the catalog; deeper objects are named, not expanded
#: (``x-graphql-type``), which keeps GitHub's 1,600-type schema readable and cuts recursion.
DEFAULT_DEPTH = 2
#: SDL files larger than this are refused unread.
MAX_SDL_BYTES = 32 * 1024 * 1024

_SCALARS: dict[str, dict[str, Any]] = {
    "Int": {"type": "integer"}, "Float": {"type": "number"}, "String": {"type": "string"},
    "Boolean": {"type": "boolean"}, "ID": {"type": "string"},
}
_FORMATS = {"DateTime": "date-time", "Date": "date", "URI": "uri", "URL": "uri", "Time": "time"}
_WITH_FIELDS = (ObjectTypeDefinitionNode, ObjectTypeExtensionNode, InterfaceTypeDefinitionNode,
                InterfaceTypeExtensionNode, InputObjectTypeDefinitionNode, InputObjectTypeExtensionNode)


# --- loading ------------------------------------------------------------------------------------------------

def _signature(node: Any) -> tuple[Any, ...]:
    """What a field definition means, without its description: type, arguments, default, directives."""
    args = tuple((a.name.value, print_ast(a.type), print_ast(a.default_value) if a.default_value else None)
                 for a in getattr(node, "arguments", None) or ())
    default = getattr(node, "default_value", None)
    return (print_ast(node.type), args, print_ast(default) if default else None,
            tuple(print_ast(d) for d in node.directives or ()))


def _merge_duplicate_fields(document: DocumentNode, what: str) -> list[str]:
    """Drop second definitions of a field that mean the same (type, arguments; the description may differ),
    returning a warning each; duplicates that differ in meaning are an error."""
    warnings: list[str] = []
    for node in document.definitions:
        if not isinstance(node, _WITH_FIELDS) or not node.fields:
            continue
        kept: dict[str, Any] = {}
        fields = []
        for f in node.fields:
            name = f.name.value
            if name not in kept:
                kept[name] = f
                fields.append(f)
                continue
            if _signature(f) != _signature(kept[name]):
                line = f.loc.source.get_location(f.loc.start).line if f.loc else "?"
                raise ResponseFormatError(f"{what}: {node.name.value}.{name} is defined twice, differently "
                                          f"(line {line}); fix the schema file")
            line = f.loc.source.get_location(f.loc.start).line if f.loc else "?"
            same_text = print_ast(f) == print_ast(kept[name])
            warnings.append(f"{node.name.value}.{name} is defined twice (line {line}) with the same type and "
                            f"arguments{'' if same_text else ' but another description'}; the first is kept")
        if len(fields) != len(node.fields):
            node.fields = tuple(fields)  # type: ignore[assignment]
    return warnings


def load_sdl(text: str, *, what: str = "schema") -> tuple[GraphQLSchema, list[str]]:
    """The schema an SDL document defines, and the warnings about what was merged to read it.

    *what* names the document in errors (a file name)."""
    try:
        document = parse(text)
    except GraphQLSyntaxError as exc:
        line = exc.locations[0].line if exc.locations else "?"
        raise ResponseFormatError(f"{what}: not valid GraphQL SDL: {exc.message} (line {line})") from None
    warnings = _merge_duplicate_fields(document, what)
    errors = validate_sdl(document)
    if errors:
        shown = "; ".join(f"{e.message} (line {e.locations[0].line if e.locations else '?'})" for e in errors[:10])
        raise ResponseFormatError(f"{what}: {len(errors)} problem{'s' if len(errors) != 1 else ''} in the SDL: "
                                  f"{shown}")
    return build_ast_schema(document, assume_valid_sdl=True), warnings


def load_sdl_file(path: Path) -> tuple[GraphQLSchema, list[str]]:
    """:func:`load_sdl` of a file (at most :data:`MAX_SDL_BYTES`)."""
    size = path.stat().st_size
    if size > MAX_SDL_BYTES:
        raise ResponseFormatError(f"{path}: {size} bytes is over the {MAX_SDL_BYTES}-byte limit of a schema file")
    return load_sdl(path.read_text(encoding="utf-8"), what=str(path))


def introspect(system: GraphQLSystemConfig, *, system_name: str | None = None,
               state_dir: Path | None = None) -> GraphQLSchema:
    """The live endpoint's schema, by the standard introspection query (auth, retries, origins apply; the
    system's rate limit and circuit breaker state live under *state_dir*, as for its sources)."""
    endpoint = GraphQLEndpoint(system, system_name=system_name, name=system_name or "graphql", state_dir=state_dir)
    try:
        data = endpoint.execute_sync(get_introspection_query(descriptions=True), operation_name="IntrospectionQuery",
                                     label="introspection")
    except GraphQLError as exc:
        raise GraphQLError(f"{exc} Introspection may be turned off on this server: give the system a `schema:` "
                           "SDL file instead.", errors=exc.errors) from None
    try:
        return build_client_schema(data)
    except (TypeError, ValueError, KeyError) as exc:
        raise ResponseFormatError(f"{mask_url(system.endpoint)}: the introspection result is not a usable "
                                  f"schema: {exc}") from None


def schema_of(system: GraphQLSystemConfig, *, root: Path | None = None, system_name: str | None = None,
              state_dir: Path | None = None) -> tuple[GraphQLSchema, list[str]]:
    """The system's schema and the loader's warnings: its ``schema:`` SDL file (relative to *root*) when it has
    one, else introspected."""
    if system.schema_file:
        path = Path(system.schema_file)
        return load_sdl_file(path if path.is_absolute() or root is None else root / path)
    return introspect(system, system_name=system_name, state_dir=state_dir), []


# --- JSON Schema ----------------------------------------------------------------------------------------

def _scalar(t: GraphQLScalarType) -> dict[str, Any]:
    if t.name in _SCALARS:
        return dict(_SCALARS[t.name])
    out: dict[str, Any] = {"type": "string", "x-graphql-scalar": t.name}
    if t.name in _FORMATS:
        out["format"] = _FORMATS[t.name]
    return out


def _enum(t: GraphQLEnumType) -> dict[str, Any]:
    return {"type": "string", "enum": list(t.values), "x-graphql-type": t.name}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def input_schema(t: GraphQLInputType, defs: dict[str, Any]) -> dict[str, Any]:
    """JSON Schema of values of input type *t*; input objects go to *defs* (recursion-safe, by ``$ref``)."""
    if isinstance(t, GraphQLNonNull):
        return _input_inner(t.of_type, defs)
    return _nullable(_input_inner(t, defs))


def _input_inner(t: Any, defs: dict[str, Any]) -> dict[str, Any]:
    if isinstance(t, GraphQLList):
        return {"type": "array", "items": input_schema(t.of_type, defs)}
    if isinstance(t, GraphQLScalarType):
        return _scalar(t)
    if isinstance(t, GraphQLEnumType):
        return _enum(t)
    assert isinstance(t, GraphQLInputObjectType), t
    if t.name not in defs:
        defs[t.name] = {}  # placeholder first: a recursive input object refers to itself
        defs[t.name] = _arguments_object(t.fields, defs, t.description)
    return {"$ref": f"#/$defs/{t.name}"}


def _arguments_object(args: Any, defs: dict[str, Any], description: str | None = None) -> dict[str, Any]:
    props: dict[str, Any] = {}
    required: list[str] = []
    for name, arg in args.items():
        schema = input_schema(arg.type, defs)
        if arg.description:
            schema["description"] = arg.description
        if arg.default_value is not Undefined:
            schema["default"] = arg.default_value
        elif isinstance(arg.type, GraphQLNonNull):
            required.append(name)
        props[name] = schema
    out: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if required:
        out["required"] = required
    if description:
        out["description"] = description
    return out


def output_schema(t: GraphQLOutputType, depth: int = DEFAULT_DEPTH) -> dict[str, Any]:
    """JSON Schema of values of output type *t*, objects expanded *depth* levels deep (then only named)."""
    if isinstance(t, GraphQLNonNull):
        return _output_inner(t.of_type, depth)
    return _nullable(_output_inner(t, depth))


def _output_inner(t: Any, depth: int) -> dict[str, Any]:
    if isinstance(t, GraphQLList):
        return {"type": "array", "items": output_schema(t.of_type, depth)}
    if isinstance(t, GraphQLScalarType):
        return _scalar(t)
    if isinstance(t, GraphQLEnumType):
        return _enum(t)
    if isinstance(t, GraphQLUnionType):
        if depth <= 0:
            return {"type": "object", "x-graphql-type": t.name, "x-graphql-union": [m.name for m in t.types]}
        return {"anyOf": [_output_inner(m, depth) for m in t.types], "x-graphql-type": t.name}
    assert isinstance(t, GraphQLObjectType | GraphQLInterfaceType), t
    if depth <= 0:
        return {"type": "object", "x-graphql-type": t.name}
    props = {name: output_schema(f.type, depth - 1) for name, f in t.fields.items()}
    required = [name for name, f in t.fields.items() if isinstance(f.type, GraphQLNonNull)]
    out: dict[str, Any] = {"type": "object", "x-graphql-type": t.name, "properties": props}
    if required:
        out["required"] = required
    return out


# --- the catalog ------------------------------------------------------------------------------------------

def operation(name: str, field: GraphQLField, kind: str, depth: int = DEFAULT_DEPTH) -> dict[str, Any]:
    """One catalog entry: a query field (``read``) or a mutation field (``write``)."""
    defs: dict[str, Any] = {}
    arguments = _arguments_object(field.args, defs)
    if defs:
        arguments["$defs"] = defs
    return {"name": name, "kind": kind, "operation": "query" if kind == "read" else "mutation",
            "description": field.description, "deprecated": field.deprecation_reason,
            "returns": str(field.type), "arguments": arguments, "output": output_schema(field.type, depth)}


def describe(schema: GraphQLSchema, *, source: str, depth: int = DEFAULT_DEPTH,
             warnings: list[str] | None = None) -> dict[str, Any]:
    """The catalog of *schema*: every Query field as a read action, every Mutation field as a write action.

    *source* names where the schema came from (the masked endpoint or the SDL file)."""
    query, mutation = schema.query_type, schema.mutation_type
    return {
        "source": source,
        "types": len([n for n in schema.type_map if not n.startswith("__")]),
        "query_type": query.name if query else None,
        "mutation_type": mutation.name if mutation else None,
        "queries": [operation(n, f, "read", depth) for n, f in (query.fields.items() if query else ())],
        "mutations": [operation(n, f, "write", depth) for n, f in (mutation.fields.items() if mutation else ())],
        "warnings": list(warnings or ()),
    }


def catalog_of(target: str, *, system: GraphQLSystemConfig | None = None, depth: int = DEFAULT_DEPTH,
               system_name: str | None = None, state_dir: Path | None = None) -> dict[str, Any]:
    """``hub catalog graphql TARGET``: an endpoint URL (introspected; *system* gives auth and limits, else
    defaults) or an SDL file. A system's credentials only go to its own origin: a *target* elsewhere is refused."""
    if "://" not in target:
        schema, warnings = load_sdl_file(Path(target))
        return describe(schema, source=target, depth=depth, warnings=warnings)
    if system is None:
        cfg = GraphQLSystemConfig(endpoint=target)
    elif origin(target) != origin(system.endpoint):
        raise ForeignOriginError(f"{system_name or 'the system'}: refused to introspect {mask_url(target)} with the "
                                 f"credentials of {mask_url(system.endpoint)}: another origin")
    else:
        cfg = system.model_copy(update={"endpoint": target})
    return describe(introspect(cfg, system_name=system_name, state_dir=state_dir), source=mask_url(target),
                    depth=depth)
