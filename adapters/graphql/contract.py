"""Contracts of GraphQL sources: what a source's query selects, resolved against the schema, and how it changed.

A snapshot (:func:`selection_contract`) walks the query's selection set (fragments included) against the
schema and records, per selected field path (``repository.issues.nodes.title``; a fragment on another type
adds ``(on Type)``), its type with nullability (``String!``), the arguments the query passes with their types,
and for every selected object the fields its type offers. Comparing a snapshot with one taken against the
schema of today (:func:`compare`) classifies each change:

* **breaking**: a selected field was removed, its type changed, or it became nullable (``String!`` ->
  ``String``; a list's items too) — the records would lose or silently null a column; an argument the query
  passes was removed or changed type; the field gained a required argument the query does not pass;
* **drift** (non-breaking): a selected field became non-null, an argument became optional, or an object the
  query reads gained (or lost) fields the query does not select.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    OperationType,
    SelectionSetNode,
    Undefined,
    get_named_type,
    parse,
    validate,
)

from adapters.graphql.config import _operation
from hub.errors import ResponseFormatError

_ROOTS = {OperationType.QUERY: "query_type", OperationType.MUTATION: "mutation_type",
          OperationType.SUBSCRIPTION: "subscription_type"}


@dataclass(frozen=True)
class ContractChange:
    """One difference between a source's contract snapshot and the schema of today."""

    path: str  # the selected field, e.g. "repository.issues.nodes.title", or "field(argument)"
    change: str  # "removed", "type changed", "now nullable", "added (not selected)", ...
    before: str
    after: str
    breaking: bool

    @property
    def severity(self) -> str:
        return "breaking" if self.breaking else "drift"

    def message(self) -> str:
        return f"{self.path}: {self.change} (before: {self.before}; after: {self.after}) - {self.severity}"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "severity": self.severity, "message": self.message()}


class _Walker:
    """Resolves a selection set against a schema, leniently: what the schema lacks is simply not recorded."""

    def __init__(self, schema: GraphQLSchema, document: DocumentNode) -> None:
        self.schema = schema
        self.fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
        self.fields: dict[str, str] = {}
        self.arguments: dict[str, str] = {}
        self.unsatisfied: dict[str, list[str]] = {}
        self.available: dict[str, list[str]] = {}

    def walk(self, selection_set: SelectionSetNode | None, parent: Any, prefix: str, seen: frozenset[str]) -> None:
        if selection_set is None or not isinstance(parent, GraphQLObjectType | GraphQLInterfaceType):
            return
        self.available.setdefault(prefix or "(root)", sorted(parent.fields))
        for sel in selection_set.selections:
            if isinstance(sel, FieldNode):
                self._field(sel, parent, prefix, seen)
            elif isinstance(sel, InlineFragmentNode):
                cond = sel.type_condition.name.value if sel.type_condition else None
                self._fragment(sel.selection_set, cond, parent, prefix, seen)
            elif isinstance(sel, FragmentSpreadNode):
                name = sel.name.value
                frag = self.fragments.get(name)
                if frag is not None and name not in seen:
                    self._fragment(frag.selection_set, frag.type_condition.name.value, parent, prefix, seen | {name})

    def _fragment(self, selection_set: SelectionSetNode, cond: str | None, parent: Any, prefix: str,
                  seen: frozenset[str]) -> None:
        if cond is None or cond == parent.name:
            self.walk(selection_set, parent, prefix, seen)
            return
        target = self.schema.get_type(cond)
        if target is not None:
            self.walk(selection_set, target, f"{prefix}(on {cond})", seen)

    def _field(self, node: FieldNode, parent: Any, prefix: str, seen: frozenset[str]) -> None:
        name = node.name.value
        if name.startswith("__"):
            return
        field = parent.fields.get(name)
        if field is None:
            return
        path = f"{prefix}.{name}" if prefix else name
        self.fields[path] = str(field.type)
        passed = {a.name.value for a in node.arguments or ()}
        for arg in passed:
            if arg in field.args:
                self.arguments[f"{path}({arg})"] = str(field.args[arg].type)
        missing = sorted(n for n, a in field.args.items()
                         if n not in passed and isinstance(a.type, GraphQLNonNull) and a.default_value is Undefined)
        if missing:
            self.unsatisfied[path] = missing
        self.walk(node.selection_set, get_named_type(field.type), path, seen)


def selection_contract(schema: GraphQLSchema, query: str, operation_name: str | None = None, *,
                       check: bool = True) -> dict[str, Any]:
    """The contract snapshot of *query* against *schema*: ``fields`` (path -> type), ``arguments``
    (``path(arg)`` -> type), ``unsatisfied`` (path -> required arguments not passed) and ``available``
    (object path -> the fields its type offers). With *check*, the query must be valid for the schema."""
    document = parse(query, no_location=True)
    if check:
        errors = validate(schema, document)
        if errors:
            shown = "; ".join(e.message for e in errors[:10])
            raise ResponseFormatError(f"the query does not match the schema ({len(errors)} problem"
                                      f"{'s' if len(errors) != 1 else ''}): {shown}")
    op = _operation(document, operation_name)
    root = getattr(schema, _ROOTS[op.operation])
    walker = _Walker(schema, document)
    if root is not None:
        walker.walk(op.selection_set, root, "", frozenset())
    return {"operation": op.operation.value, "root": root.name if root else None, "fields": walker.fields,
            "arguments": walker.arguments, "unsatisfied": walker.unsatisfied, "available": walker.available}


def call_contract(schema: GraphQLSchema, name: str, sent: dict[str, Any], reads: list[tuple[str, ...]], *,
                  prefer: str = "mutation") -> dict[str, Any]:
    """The contract of one call a flow makes to root field *name* (a mutation, or a query it looks up): in the
    shape of :func:`selection_contract`, so :func:`compare` classifies it. ``arguments`` holds every argument
    the flow passes and, inside input objects, every input field it fills (``setPrice(input.amount)``), so a
    renamed input field is an argument removed (breaking); ``unsatisfied`` the required arguments and input
    fields it does not pass; ``fields`` the root field and the response fields its outputs read (*reads*:
    paths of names, relative to the response data or to a record of the field)."""
    roots = [schema.mutation_type, schema.query_type]
    if prefer != "mutation":
        roots.reverse()
    root = next((r for r in roots if r is not None and name in r.fields), None)
    out: dict[str, Any] = {"operation": None, "root": None, "fields": {}, "arguments": {}, "unsatisfied": {},
                           "available": {}}
    if root is None:
        return out
    field = root.fields[name]
    out.update(operation="mutation" if root is schema.mutation_type else "query", root=root.name)
    out["fields"][name] = str(field.type)
    missing = sorted(n for n, a in field.args.items()
                     if n not in sent and isinstance(a.type, GraphQLNonNull) and a.default_value is Undefined)
    if missing:
        out["unsatisfied"][name] = missing
    for arg, value in sent.items():
        if arg in field.args:
            _inputs(out, name, arg, field.args[arg].type, value)
    for path in reads:
        steps = [p for p in path if p != "[]"]
        if steps and steps[0] == name:
            steps = steps[1:]
        current, prefix = get_named_type(field.type), name
        for step in steps:
            if not isinstance(current, GraphQLObjectType | GraphQLInterfaceType):
                break
            if step not in current.fields and "nodes" in current.fields:  # a record of a connection
                current = get_named_type(current.fields["nodes"].type)
                prefix = f"{prefix}.nodes"
                if not isinstance(current, GraphQLObjectType | GraphQLInterfaceType):
                    break
            if step not in current.fields:
                break
            prefix = f"{prefix}.{step}"
            out["fields"][prefix] = str(current.fields[step].type)
            current = get_named_type(current.fields[step].type)
    return out


def _inputs(out: dict[str, Any], name: str, path: str, type_: Any, value: Any) -> None:
    """Record argument *path* of root field *name* with its type; inside an input object, the fields the flow
    fills (and the required ones it leaves out)."""
    out["arguments"][f"{name}({path})"] = str(type_)
    named = get_named_type(type_)
    if not isinstance(named, GraphQLInputObjectType):
        return
    for element in value if isinstance(value, list) else [value]:
        if not isinstance(element, dict):
            continue
        missing = sorted(n for n, f in named.fields.items()
                         if n not in element and isinstance(f.type, GraphQLNonNull) and f.default_value is Undefined)
        if missing:
            out["unsatisfied"][f"{name}({path})"] = missing
        for key, inner in element.items():
            if key in named.fields:
                _inputs(out, name, f"{path}.{key}", named.fields[key].type, inner)


_BANG = re.compile(r"!")


def _non_null_positions(type_text: str) -> set[int]:
    """Where ``!`` stands in *type_text*, counted in the text without them (``[A!]!`` -> {2, 3})."""
    return {m.start() - i for i, m in enumerate(_BANG.finditer(type_text))}


def _type_change(before: str, after: str, *, direction: str) -> tuple[str, bool]:
    """(what changed, breaking) for a type; *direction* ``out`` (a field read) or ``in`` (an argument sent)."""
    if before.replace("!", "") != after.replace("!", ""):
        return "type changed", True
    lost = _non_null_positions(before) - _non_null_positions(after)
    if direction == "out":
        return ("now nullable", True) if lost else ("now non-null", False)
    return ("now optional", False) if lost else ("now required (non-null)", True)


def compare(before: dict[str, Any], after: dict[str, Any]) -> list[ContractChange]:
    """The changes from snapshot *before* to snapshot *after* (the same query against today's schema, taken
    with ``check=False``), breaking ones first."""
    out: list[ContractChange] = []
    bf, af = before.get("fields", {}), after.get("fields", {})
    for path, was in bf.items():
        parent = path.rsplit(".", 1)[0] if "." in path else None
        if path not in af:
            if parent is None or parent in af or parent not in bf:  # report the top of a removed subtree only
                out.append(ContractChange(path, "removed", was, "absent", True))
            continue
        if af[path] != was:
            what, breaking = _type_change(was, af[path], direction="out")
            out.append(ContractChange(path, what, was, af[path], breaking))
    ba, aa = before.get("arguments", {}), after.get("arguments", {})
    for path, was in ba.items():
        field = path.split("(", 1)[0]
        if path not in aa:
            if field in af:
                out.append(ContractChange(path, "argument removed", was, "absent", True))
        elif aa[path] != was:
            what, breaking = _type_change(was, aa[path], direction="in")
            out.append(ContractChange(path, "argument " + what, was, aa[path], breaking))
    for path, names in after.get("unsatisfied", {}).items():
        new = [n for n in names if n not in before.get("unsatisfied", {}).get(path, [])]
        if new:
            out.append(ContractChange(path, "new required argument " + ", ".join(new), "absent", "required", True))
    bav, aav = before.get("available", {}), after.get("available", {})
    for path, names in aav.items():
        old = set(bav.get(path, names))
        selected = {p.rsplit(".", 1)[-1] for p in bf
                    if (p.rsplit(".", 1)[0] if "." in p else "(root)") == path}
        for name in sorted(set(names) - old):
            out.append(ContractChange(f"{'' if path == '(root)' else path + '.'}{name}", "added (not selected)",
                                      "absent", "available", False))
        for name in sorted(old - set(names) - selected):
            out.append(ContractChange(f"{'' if path == '(root)' else path + '.'}{name}", "removed (not selected)",
                                      "available", "absent", False))
    return sorted(out, key=lambda c: (not c.breaking, c.path))
