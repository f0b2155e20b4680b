"""One callable document per query or mutation field: what an agent action sends.

A catalog entry names a field and its arguments; to call it, a GraphQL document must also say what to
select. :func:`call_document` writes one: every argument becomes a variable of its declared type, and the
selection takes the leaf fields of the returned type (scalars and enums, without required arguments).
A Relay connection (a type with ``nodes`` or ``edges { node }``) selects the leaves of its nodes plus
``pageInfo { hasNextPage endCursor }`` and says so, so a planned source can page through it. An object
without leaf fields selects ``__typename`` (a selection set may not be empty).

Selecting leaves only keeps the documents small and valid for every schema (nested objects often take
required arguments); a user who wants nested data writes a source with their own query.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from graphql import (
    GraphQLField,
    GraphQLInterfaceType,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    Undefined,
    get_named_type,
    is_leaf_type,
)

from hub.errors import ResponseFormatError


@dataclass(frozen=True)
class CallDocument:
    """A document calling one root field: its text, where the records are in ``data``, and whether the field
    is a Relay connection (paged by ``$after`` when the field takes it)."""

    text: str
    field: str
    records: str
    relay: bool


def _takes_no_required_args(field: GraphQLField) -> bool:
    return not any(isinstance(a.type, GraphQLNonNull) and a.default_value is Undefined for a in field.args.values())


def _leaves(type_: Any) -> list[str]:
    named = get_named_type(type_)
    if not isinstance(named, (GraphQLObjectType, GraphQLInterfaceType)):
        return []
    return [name for name, f in named.fields.items()
            if is_leaf_type(get_named_type(f.type)) and _takes_no_required_args(f)]


def _connection(type_: Any) -> tuple[str, Any] | None:
    """("nodes" | "edges", the node type) when *type_* is a Relay connection with pageInfo."""
    named = get_named_type(type_)
    if not isinstance(named, (GraphQLObjectType, GraphQLInterfaceType)) or "pageInfo" not in named.fields:
        return None
    if "nodes" in named.fields:
        return "nodes", named.fields["nodes"].type
    edges = named.fields.get("edges")
    if edges is not None:
        edge = get_named_type(edges.type)
        if isinstance(edge, (GraphQLObjectType, GraphQLInterfaceType)) and "node" in edge.fields:
            return "edges", edge.fields["node"].type
    return None


def _selection(type_: Any) -> str:
    leaves = _leaves(type_)
    return "{ " + " ".join(leaves or ["__typename"]) + " }"


def call_document(schema: GraphQLSchema, kind: str, name: str) -> CallDocument:
    """The document that calls root field *name* of the ``query`` or ``mutation`` type (*kind*)."""
    root = schema.query_type if kind == "query" else schema.mutation_type if kind == "mutation" else None
    if root is None or name not in root.fields:
        raise ResponseFormatError(f"the schema has no {kind} field {name}")
    field = root.fields[name]
    variables = ", ".join(f"${arg}: {a.type}" for arg, a in field.args.items())
    arguments = ", ".join(f"{arg}: ${arg}" for arg in field.args)
    call = name + (f"({arguments})" if arguments else "")
    named = get_named_type(field.type)
    connection = _connection(field.type)
    if is_leaf_type(named):
        body, records, relay = call, name, False
    elif connection is not None:
        how, node = connection
        inner = f"nodes {_selection(node)}" if how == "nodes" else f"edges {{ node {_selection(node)} }}"
        body = f"{call} {{ {inner} pageInfo {{ hasNextPage endCursor }} }}"
        records = f"{name}.nodes" if how == "nodes" else f"$.{name}.edges[*].node"
        relay = "after" in field.args
    else:
        body, records, relay = f"{call} {_selection(field.type)}", name, False
    operation = "".join(p[:1].upper() + p[1:] for p in name.split("_")) or "Call"
    head = f"{kind} {operation}" + (f"({variables})" if variables else "")
    return CallDocument(text=f"{head} {{ {body} }}", field=name, records=records, relay=relay)


def records_at(data: Any, path: str) -> list[Any]:
    """The records at *path* (dotted, or ``$.a.edges[*].node``) inside ``data``, as a list."""
    steps = path.removeprefix("$.").replace("[*]", "").split(".")
    current: list[Any] = [data]
    for step in steps:
        nxt: list[Any] = []
        for item in current:
            value = item.get(step) if isinstance(item, dict) else None
            if isinstance(value, list):
                nxt.extend(value)
            elif value is not None:
                nxt.append(value)
        current = nxt
    return current
