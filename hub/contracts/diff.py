"""Comparing a contract snapshot with what a system offers now, change by change.

Every difference becomes a :class:`Change` naming the system, the element (operation, endpoint, file,
table), the path of the field, the before and the after, and whether it is **breaking**: something a
pipeline of the hub uses disappeared, was renamed, changed or narrowed its type, lost enumeration values,
or a new input became required. Everything else is **non-breaking** (added optional fields, added
operations, widened types) and so is any change to a part no pipeline uses: it is reported with "not used".
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hub.contracts.schema import (
    ITEMS,
    Path,
    canonical,
    kind,
    leaf_label,
    properties,
    relation,
    required,
    show,
    unwrap,
)
from hub.contracts.usage import Usage, Use, labels


@dataclass
class Change:
    """One difference between the snapshot and the live system."""

    system: str
    element: str  # the operation, endpoint, file or table, e.g. "GetOrders output"
    field: str  # the path inside it, e.g. "GetOrdersResult.Order[].Status" ("" for the element itself)
    what: str  # e.g. "removed", "renamed to OrderStatus", "type changed"
    before: str
    after: str
    breaking: bool
    used_by: list[str] = dataclasses.field(default_factory=list)  # "source (what it uses)"
    sources: list[str] = dataclasses.field(default_factory=list)  # the sources concerned

    @property
    def path(self) -> str:
        return f"{self.element} {self.field}".strip()

    @property
    def severity(self) -> str:
        return "breaking" if self.breaking else "non-breaking"

    @property
    def usage(self) -> str:
        return ("used by " + "; ".join(self.used_by)) if self.used_by else "not used by the pipeline"

    def message(self) -> str:
        """``erp: GetOrders output GetOrdersResult.Order[].Status: renamed to OrderStatus (before: ...; after:
        ...) - breaking, used by erp_orders (column Status)``"""
        return (f"{self.system}: {self.path}: {self.what} (before: {self.before}; after: {self.after}) - "
                f"{self.severity}, {self.usage}")

    def as_dict(self) -> dict[str, Any]:
        return {"system": self.system, "path": self.path, "element": self.element, "field": self.field,
                "change": self.what, "before": self.before, "after": self.after, "severity": self.severity,
                "used_by": self.used_by, "message": self.message()}


class Differ:
    """Collects the changes of one system."""

    def __init__(self, system: str, usage: Usage) -> None:
        self.system, self.usage = system, usage
        self.changes: list[Change] = []

    def add(self, element: str, path: Path | str, what: str, before: Any, after: Any, *,
            uses: list[Use], breaking: bool) -> None:
        shown = path if isinstance(path, str) else ("" if not path else show(path))
        self.changes.append(Change(self.system, element, shown, what, str(before), str(after), breaking,
                                   labels(uses), sorted({u.source for u in uses})))

    # --- JSON Schemas ---------------------------------------------------------------------------------

    def schema(self, before: dict[str, Any] | None, after: dict[str, Any] | None, *, element: str, scope: str,
               path: Path = (), direction: str = "out") -> None:
        """Compare two schemas of one place. *direction* ``out``: data the system sends (a response);
        ``in``: data the hub sends (parameters), where the uses are the parameters a pipeline sends."""
        b, b_null = unwrap(before)
        a, a_null = unwrap(after)
        kb, ka = kind(b), kind(a)
        uses = self.usage.users(scope, path)
        if kb == "unknown" or ka == "unknown":
            return  # nothing observed on one side (only nulls sampled): nothing to compare
        if kb != ka:
            self.add(element, path, "type changed", leaf_label(before or {}), leaf_label(after or {}),
                     uses=uses, breaking=bool(uses))
            return
        if direction == "out" and a_null and not b_null and path:
            keys = [u for u in uses if u.key]
            self.add(element, path, "now nullable", leaf_label(before or {}), leaf_label(after or {}),
                     uses=uses, breaking=bool(keys))
        if kb == "object":
            self._object(b, a, element=element, scope=scope, path=path, direction=direction)
        elif kb == "array":
            self.schema(b.get("items") or {}, a.get("items") or {}, element=element, scope=scope,
                        path=(*path, ITEMS), direction=direction)
        else:
            self._leaf(b, a, element=element, path=path, uses=uses)

    def _object(self, b: dict[str, Any], a: dict[str, Any], *, element: str, scope: str, path: Path,
                direction: str) -> None:
        pb, pa = properties(b), properties(a)
        rb, ra = required(b), required(a)
        removed = [k for k in pb if k not in pa]
        added = [k for k in pa if k not in pb]
        # one element renamed: same shape, same optionality, and no other candidate
        renames = find_renames(removed, added, lambda r, x: canonical(pb[r]) == canonical(pa[x])
                           and (r in rb) == (x in ra) and unwrap(pb[r])[1] == unwrap(pa[x])[1])
        for name in removed:
            p = (*path, name)
            uses = self.usage.users(scope, p)
            if name in renames:
                new = renames[name]
                new_required = direction == "in" and new in ra
                what = f"renamed to {new}" + (" (required)" if new_required else "")
                self.add(element, p, what, f"{name}: {leaf_label(pb[name])}", f"{new}: {leaf_label(pa[new])}",
                         uses=uses, breaking=bool(uses) or new_required)
            else:
                self.add(element, p, "removed", leaf_label(pb[name]), "absent", uses=uses, breaking=bool(uses))
        for name in added:
            if name in renames.values():
                continue
            p = (*path, name)
            if direction == "in" and name in ra:
                sent = [u for u in self.usage.users(scope, p) if u.path == p]
                self.add(element, p, "new required input", "absent", leaf_label(pa[name]), uses=sent,
                         breaking=not sent)
            else:
                optional = "required" if name in ra else "optional"
                self.add(element, p, f"added ({optional})", "absent", leaf_label(pa[name]),
                         uses=self.usage.users(scope, p) if direction == "in" else [], breaking=False)
        for name in pb:
            if name not in pa:
                continue
            p = (*path, name)
            if direction == "out" and name in rb and name not in ra:
                uses = self.usage.users(scope, p)
                self.add(element, p, "now optional (may be absent)", "required", "optional", uses=uses,
                         breaking=any(u.key for u in uses))
            if direction == "in" and name not in rb and name in ra:
                sent = [u for u in self.usage.users(scope, p) if u.path == p]
                self.add(element, p, "now required", "optional", "required", uses=sent, breaking=not sent)
            self.schema(pb[name], pa[name], element=element, scope=scope, path=p, direction=direction)

    def _leaf(self, b: dict[str, Any], a: dict[str, Any], *, element: str, path: Path, uses: list[Use]) -> None:
        eb, ea = b.get("enum"), a.get("enum")
        if isinstance(eb, list) and isinstance(ea, list):
            gone = [v for v in eb if v not in ea]
            new = [v for v in ea if v not in eb]
            if gone:
                self.add(element, path, "enum values removed: " + ", ".join(map(str, gone)), _enum(eb), _enum(ea),
                         uses=uses, breaking=bool(uses))
            if new:
                self.add(element, path, "enum values added: " + ", ".join(map(str, new)), _enum(eb), _enum(ea),
                         uses=uses, breaking=False)
        elif isinstance(ea, list) and not isinstance(eb, list):
            self.add(element, path, "now an enumeration", leaf_label(b), leaf_label(a), uses=uses,
                     breaking=bool(uses))
        elif isinstance(eb, list):
            self.add(element, path, "no longer an enumeration", leaf_label(b), leaf_label(a), uses=uses,
                     breaking=False)
        rel = relation(b, a)
        if rel == "same":
            return
        what = {"widened": "type widened", "narrowed": "type narrowed"}.get(rel, "type changed")
        self.add(element, path, what, leaf_label(b), leaf_label(a), uses=uses,
                 breaking=rel != "widened" and bool(uses))


def _enum(values: list[Any]) -> str:
    return "[" + ", ".join(map(str, values)) + "]"


def find_renames(removed: list[str], added: list[str], same: Any) -> dict[str, str]:
    """Removed name -> added name, where exactly one added element has the same shape."""
    out: dict[str, str] = {}
    for r in removed:
        candidates = [x for x in added if x not in out.values() and same(r, x)]
        if len(candidates) == 1:
            out[r] = candidates[0]
    return out


# --- columns of files and tables (SFTP and SQL) ----------------------------------------------------------

_LENGTH = re.compile(r"^(\w+)\((\d+)\)$")


Relation = Callable[[dict[str, Any], dict[str, Any]], str]


def compare_columns(d: Differ, before: list[dict[str, Any]], after: list[dict[str, Any]], *, element: str,
                     scope: str, positional: bool, relation_: Relation, nullability: bool = False) -> None:
    """Columns of a file or table. By name (a header, a table): removed and renamed columns a source uses
    break, reordering does not. Positional (no header): a column removed or the order changed breaks."""
    usage = d.usage
    nb = [c["name"] for c in before]
    na = [c["name"] for c in after]
    by_b = {c["name"]: c for c in before}
    by_a = {c["name"]: c for c in after}
    if positional:
        everything = usage.users(scope, ())
        if len(after) < len(before):
            gone = ", ".join(nb[len(after):])
            d.add(element, "columns", f"column(s) removed: {gone}", len(before), len(after), uses=everything,
                  breaking=bool(everything))
        elif len(after) > len(before):
            d.add(element, "columns", "column(s) added at the end", len(before), len(after), uses=[], breaking=False)
        tb = [c.get("type") for c in before]
        ta = [c.get("type") for c in after][:len(before)]
        if len(ta) == len(tb) and ta != tb and sorted(map(str, ta)) == sorted(map(str, tb)):
            d.add(element, "columns", "columns reordered (the file has no header: columns are read by position)",
                  ", ".join(map(str, tb)), ", ".join(map(str, ta)), uses=everything, breaking=bool(everything))
            return
        for i, (cb, ca) in enumerate(zip(before, after, strict=False)):
            rel = relation_(cb, ca)
            if rel != "same":
                uses = usage.users(scope, (cb["name"],))
                d.add(element, f"column {i + 1} ({cb['name']})", "type " + ("widened" if rel == "widened" else rel),
                      cb.get("type"), ca.get("type"), uses=uses, breaking=rel != "widened" and bool(uses))
        return
    removed = [n for n in nb if n not in by_a]
    added = [n for n in na if n not in by_b]
    renames = find_renames(removed, added, lambda r, x: nb.index(r) == na.index(x)
                       and by_b[r].get("type") == by_a[x].get("type"))
    for name in removed:
        uses = usage.users(scope, (name,))
        if name in renames:
            new = renames[name]
            d.add(element, f"column {name}", f"renamed to {new}", f"{name}: {by_b[name].get('type')}",
                  f"{new}: {by_a[new].get('type')}", uses=uses, breaking=bool(uses))
        else:
            d.add(element, f"column {name}", "removed", by_b[name].get("type"), "absent", uses=uses,
                  breaking=bool(uses))
    for name in added:
        if name not in renames.values():
            d.add(element, f"column {name}", "added", "absent", by_a[name].get("type"), uses=[], breaking=False)
    common_b = [n for n in nb if n in by_a]
    common_a = [n for n in na if n in by_b]
    if common_b != common_a:
        d.add(element, "columns", "columns reordered (read by name: not breaking)", ", ".join(common_b),
              ", ".join(common_a), uses=[], breaking=False)
    for name in common_b:
        cb, ca = by_b[name], by_a[name]
        uses = usage.users(scope, (name,))
        rel = relation_(cb, ca)
        if rel != "same":
            what = {"widened": "type widened", "narrowed": "type narrowed", "db": "database type changed "
                    "(same Arrow type)"}.get(rel, "type changed")
            d.add(element, f"column {name}", what, _column_label(cb), _column_label(ca), uses=uses,
                  breaking=rel in ("narrowed", "changed") and bool(uses))
        if nullability and not cb.get("nullable", True) and ca.get("nullable", True):
            keys = [u for u in uses if u.key]
            d.add(element, f"column {name}", "now nullable", "NOT NULL", "NULL allowed", uses=uses,
                  breaking=bool(keys))


def _column_label(col: dict[str, Any]) -> str:
    arrow = col.get("arrow")
    return f"{col.get('type')} ({arrow})" if arrow else str(col.get("type"))


# --- column types as a database catalog or a Parquet file reports them (SQL and SFTP) --------------------

_INTS = {"int8": 1, "int16": 2, "int32": 3, "int64": 4, "uint8": 1, "uint16": 2, "uint32": 3, "uint64": 4}
_FLOATS = {"halffloat": 1, "float": 2, "double": 3}
_DECIMAL = re.compile(r"^decimal(?:128|256)?\((\d+),\s*(\d+)\)$")


def arrow_relation(before: str, after: str) -> str:
    """Relation of two Arrow type names as the SQL catalog reports them."""
    if before == after:
        return "same"
    if {before, after} <= {"string", "large_string"}:
        return "same"
    if before in _INTS and after in _INTS:
        return "widened" if _INTS[after] > _INTS[before] else "narrowed" if _INTS[after] < _INTS[before] else "changed"
    if before in _INTS and after in _FLOATS:
        return "widened"
    if before in _FLOATS and after in _FLOATS:
        return "widened" if _FLOATS[after] > _FLOATS[before] else "narrowed"
    mb, ma = _DECIMAL.match(before), _DECIMAL.match(after)
    if mb and ma:
        pb, sb, pa, sa = int(mb[1]), int(mb[2]), int(ma[1]), int(ma[2])
        if pa - sa >= pb - sb and sa >= sb:
            return "widened"
        if pa - sa <= pb - sb and sa <= sb:
            return "narrowed"
    if mb and after in _INTS:
        return "changed"
    return "changed"


def column_relation(cb: dict[str, Any], ca: dict[str, Any]) -> str:
    """Relation of two columns as a database catalog or a Parquet file reports them: by their Arrow types, then
    by the database types (a ``VARCHAR(n)`` widened or narrowed; ``db``: another type, the same Arrow type)."""
    tb, ta = str(cb.get("type")), str(ca.get("type"))
    rel = arrow_relation(str(cb.get("arrow")), str(ca.get("arrow")))
    if rel != "same" or tb == ta:
        return rel
    lb, la = _LENGTH.match(str(tb).replace(" ", "")), _LENGTH.match(str(ta).replace(" ", ""))
    if lb and la and lb[1].upper() == la[1].upper():
        return "widened" if int(la[2]) > int(lb[2]) else "narrowed"
    return "db"


