"""From the WSDL's XML Schema to Arrow types, record plans and JSON Schema.

zeep resolves the schema into type objects but drops restriction facets (``totalDigits``,
``fractionDigits``, ``enumeration``), which decide a decimal's precision and an enumeration's values.
:class:`FacetIndex` reads them back from the schema documents the transport loaded.

A :class:`Space` is the compiled shape of one repeated element (the record, or a repeated child): every
leaf value gets a slot in a flat Python list (nested single elements are flattened into the same row),
so reading a record is one dictionary lookup and one list store per element.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from lxml import etree
from zeep.xsd import types as xsd_types
from zeep.xsd.elements import Any as AnyElement
from zeep.xsd.elements import Element

from hub.runtime import xmlsafe

XSD = "http://www.w3.org/2001/XMLSchema"
XSI_NIL = "{http://www.w3.org/2001/XMLSchema-instance}nil"
DEFAULT_DECIMAL = (38, 10)  # xsd:decimal without totalDigits/fractionDigits
MAX_DEPTH = 12  # nesting deeper than this (recursive types) is kept as XML text

# (zeep builtin class name) -> (kind, Arrow type); looked up along the type's MRO, most specific first.
_BUILTINS: dict[str, tuple[str, pa.DataType]] = {
    "Long": ("int", pa.int64()), "Int": ("int", pa.int32()), "Short": ("int", pa.int16()),
    "Byte": ("int", pa.int8()), "UnsignedLong": ("int", pa.uint64()), "UnsignedInt": ("int", pa.uint32()),
    "UnsignedShort": ("int", pa.uint16()), "UnsignedByte": ("int", pa.uint8()),
    "Integer": ("int", pa.int64()), "Decimal": ("decimal", pa.decimal128(*DEFAULT_DECIMAL)),
    "Float": ("float", pa.float32()), "Double": ("float", pa.float64()), "Boolean": ("bool", pa.bool_()),
    "Date": ("date", pa.date32()), "DateTime": ("datetime", pa.timestamp("us", tz="UTC")),
    "Time": ("time", pa.time64("us")), "Base64Binary": ("base64", pa.binary()), "HexBinary": ("hex", pa.binary()),
}
_STRING = ("string", pa.string())


@dataclass(frozen=True)
class Facets:
    base: str | None = None  # Clark name of the restricted base type
    total_digits: int | None = None
    fraction_digits: int | None = None
    enumeration: tuple[str, ...] = ()
    min_length: int | None = None  # minLength / length: checked before a request is sent (flows)
    max_length: int | None = None


class FacetIndex:
    """Restriction facets of every named simple type (and anonymous ones, by their element's name)."""

    def __init__(self, documents: Iterable[tuple[str, bytes]] = ()) -> None:
        self._types: dict[str, Facets] = {}
        self._anonymous: dict[str, Facets] = {}
        for url, content in documents:
            self.add(url, content)

    def add(self, url: str, content: bytes) -> None:
        try:
            root = xmlsafe.fromstring(content, url)
        except Exception:
            return
        schemas = [root] if root.tag == f"{{{XSD}}}schema" else root.iter(f"{{{XSD}}}schema")
        for schema in schemas:
            tns = schema.get("targetNamespace", "")
            for st in schema.iter(f"{{{XSD}}}simpleType"):
                facets = self._facets(st)
                if facets is None:
                    continue
                name = st.get("name")
                if name:
                    self._types[f"{{{tns}}}{name}"] = facets
                else:
                    owner = st.getparent()
                    if owner is not None and owner.get("name"):
                        self._anonymous.setdefault(owner.get("name"), facets)

    @staticmethod
    def _facets(simple_type: Any) -> Facets | None:
        restriction = simple_type.find(f"{{{XSD}}}restriction")
        if restriction is None:
            return None
        base = None
        if restriction.get("base"):
            prefix, _, local = restriction.get("base").rpartition(":")
            base = f"{{{restriction.nsmap.get(prefix or None, '')}}}{local}"

        def value(tag: str) -> int | None:
            el = restriction.find(f"{{{XSD}}}{tag}")
            return int(el.get("value")) if el is not None and (el.get("value") or "").isdigit() else None

        enum = tuple(e.get("value", "") for e in restriction.findall(f"{{{XSD}}}enumeration"))
        length = value("length")
        least = value("minLength") if length is None else length
        most = value("maxLength") if length is None else length
        return Facets(base, value("totalDigits"), value("fractionDigits"), enum, least, most)

    def lookup(self, type_qname: str | None, element_name: str | None) -> Facets:
        """Facets of a type (following restriction chains), or of an element's anonymous type."""
        found = self._types.get(type_qname or "") if type_qname else None
        if found is None and element_name:
            found = self._anonymous.get(element_name)
        if found is None:
            return Facets()
        total, fraction, enum, base = found.total_digits, found.fraction_digits, found.enumeration, found.base
        least, most = found.min_length, found.max_length
        seen = set()
        while base and base in self._types and base not in seen:
            seen.add(base)
            parent = self._types[base]
            total = total if total is not None else parent.total_digits
            fraction = fraction if fraction is not None else parent.fraction_digits
            enum = enum or parent.enumeration
            least = least if least is not None else parent.min_length
            most = most if most is not None else parent.max_length
            base = parent.base
        return Facets(found.base, total, fraction, enum, least, most)


def _qname(obj: Any) -> str | None:
    q = getattr(obj, "qname", None)
    return q.text if isinstance(q, etree.QName) else (str(q) if q else None)


def leaf_type(xsd_type: Any, element_name: str | None, facets: FacetIndex) -> tuple[str, pa.DataType, str]:
    """(conversion kind, Arrow type, XSD type name for messages) of a simple type."""
    kind, arrow = _STRING
    for cls in type(xsd_type).__mro__:
        if cls.__module__ == xsd_types.builtins.__name__ and cls.__name__ in _BUILTINS:
            kind, arrow = _BUILTINS[cls.__name__]
            break
    qname = _qname(xsd_type)
    name = etree.QName(qname).localname if qname else "anySimpleType"
    if kind == "decimal":
        f = facets.lookup(qname, element_name)
        precision = min(f.total_digits or DEFAULT_DECIMAL[0], 38)
        scale = f.fraction_digits if f.fraction_digits is not None else min(DEFAULT_DECIMAL[1], precision)
        arrow = pa.decimal128(precision, min(scale, precision))
    return kind, arrow, name


def is_repeated(el: Any) -> bool:
    return el.max_occurs == "unbounded" or (isinstance(el.max_occurs, int) and el.max_occurs > 1)


def is_complex(xsd_type: Any) -> bool:
    return isinstance(xsd_type, xsd_types.ComplexType)


def child_elements(xsd_type: Any) -> tuple[list[tuple[str, Element]], bool]:
    """The element children of a complex type, and whether it accepts any other element (xsd:any)."""
    elements: list[tuple[str, Element]] = []
    wildcard = False
    for name, el in xsd_type.elements:
        if isinstance(el, AnyElement):
            wildcard = True
        elif isinstance(el, Element):
            elements.append((name, el))
    return elements, wildcard


# --- record plans --------------------------------------------------------------------------------------

LEAF, STRUCT, REPEATED, XMLTEXT = 0, 1, 2, 3


@dataclass
class FieldPlan:
    name: str
    kind: int  # LEAF | STRUCT | REPEATED | XMLTEXT
    slot: int = -1  # LEAF/XMLTEXT: value slot; STRUCT: presence slot; REPEATED: list slot
    conv: str = "string"  # LEAF: conversion kind
    arrow: pa.DataType = field(default_factory=pa.string)
    xsd: str = "string"
    members: Members | None = None  # STRUCT: its children (slots in the same row); REPEATED: the item's space
    item: Space | None = None  # REPEATED: the row space of one item
    leaf_item: bool = False  # REPEATED of a simple type (a list of values)


@dataclass
class Members:
    """The children of one complex element: by tag for reading, in order for building."""

    fields: list[FieldPlan] = field(default_factory=list)
    by_tag: dict[str, FieldPlan] = field(default_factory=dict)
    #: tag -> (kind, slot, is text, plan): what the reader needs per element, unpacked in one step
    index: dict[str, tuple[int, int, bool, FieldPlan]] = field(default_factory=dict)
    attributes: dict[str, FieldPlan] = field(default_factory=dict)
    wildcard: bool = False
    #: tag -> slot of the simple children, the most common elements: read without the index's tuple
    leaves: dict[str, int] = field(default_factory=dict)
    #: slots of the simple children whose empty element is "" (strings), not None
    texts: set[int] = field(default_factory=set)


@dataclass
class Space:
    """One row space: a record, or an item of a repeated child."""

    members: Members
    nslots: int = 0


class PlanBuilder:
    """Compiles a complex type into a :class:`Space` (slots, conversions, tags)."""

    def __init__(self, facets: FacetIndex) -> None:
        self.facets = facets

    def space(self, xsd_type: Any, depth: int = 0) -> Space:
        space = Space(Members())
        self._members(xsd_type, space, space.members, depth)
        return space

    def _slot(self, space: Space) -> int:
        space.nslots += 1
        return space.nslots - 1

    def _members(self, xsd_type: Any, space: Space, members: Members, depth: int) -> None:
        elements, members.wildcard = child_elements(xsd_type)
        for name, el in elements:
            fp = self._field(name, el, space, depth)
            members.fields.append(fp)
            members.by_tag[_qname(el) or name] = fp
            members.index[_qname(el) or name] = (fp.kind, fp.slot, fp.conv == "string", fp)
            if fp.kind == LEAF:
                members.leaves[_qname(el) or name] = fp.slot
                if fp.conv == "string":
                    members.texts.add(fp.slot)
        for name, attr in getattr(xsd_type, "attributes", []) or []:
            if not hasattr(attr, "type") or attr.type is None:
                continue
            conv, arrow, xsd = leaf_type(attr.type, name, self.facets)
            fp = FieldPlan(name=name, kind=LEAF, slot=self._slot(space), conv=conv, arrow=arrow, xsd=xsd)
            members.fields.append(fp)
            qn = _qname(attr)
            members.attributes[qn if qn and not qn.startswith("{}") else name] = fp
            members.attributes.setdefault(name, fp)

    def _field(self, name: str, el: Element, space: Space, depth: int) -> FieldPlan:
        t = el.type
        if is_repeated(el):
            if is_complex(t):
                if depth >= MAX_DEPTH:
                    return FieldPlan(name=name, kind=XMLTEXT, slot=self._slot(space))
                item = self.space(t, depth + 1)
                return FieldPlan(name=name, kind=REPEATED, slot=self._slot(space), item=item)
            conv, arrow, xsd = leaf_type(t, name, self.facets)
            item = Space(Members(), nslots=1)
            item.members.fields.append(FieldPlan(name="value", kind=LEAF, slot=0, conv=conv, arrow=arrow, xsd=xsd))
            return FieldPlan(name=name, kind=REPEATED, slot=self._slot(space), item=item, leaf_item=True)
        if is_complex(t):
            elements, _ = child_elements(t)
            if not elements and not getattr(t, "attributes", None):
                return FieldPlan(name=name, kind=XMLTEXT, slot=self._slot(space))
            if depth >= MAX_DEPTH:
                return FieldPlan(name=name, kind=XMLTEXT, slot=self._slot(space))
            members = Members()
            fp = FieldPlan(name=name, kind=STRUCT, slot=self._slot(space), members=members)
            self._members(t, space, members, depth + 1)
            return fp
        conv, arrow, xsd = leaf_type(t, name, self.facets)
        return FieldPlan(name=name, kind=LEAF, slot=self._slot(space), conv=conv, arrow=arrow, xsd=xsd)


def find_element_path(root: Element, local_name: str) -> list[Element] | None:
    """The chain of elements from *root* down to the first element named *local_name* (breadth first,
    repeated elements preferred), or None."""
    queue: list[list[Element]] = [[root]]
    seen: set[int] = set()
    best: list[Element] | None = None
    while queue:
        chain = queue.pop(0)
        t = chain[-1].type
        if not is_complex(t) or id(t) in seen or len(chain) > MAX_DEPTH:
            continue
        seen.add(id(t))
        for name, el in child_elements(t)[0]:
            if name == local_name:
                if is_repeated(el):
                    return [*chain, el]
                best = best or [*chain, el]
            queue.append([*chain, el])
    return best


def element_names(xsd_type: Any) -> list[str]:
    return [name for name, _ in child_elements(xsd_type)[0]] if is_complex(xsd_type) else []


def tags_of(xsd_type: Any) -> set[str]:
    """Clark names of the child elements a complex type allows."""
    return {_qname(el) or name for name, el in child_elements(xsd_type)[0]} if is_complex(xsd_type) else set()


def qname_of(el: Any) -> str:
    return _qname(el) or el.name


# --- JSON Schema (for discovery and the agent layer) ------------------------------------------------------

_JSON_LEAF: dict[str, dict[str, Any]] = {
    "int": {"type": "integer"}, "decimal": {"type": "number"}, "float": {"type": "number"},
    "bool": {"type": "boolean"}, "date": {"type": "string", "format": "date"},
    "datetime": {"type": "string", "format": "date-time"}, "time": {"type": "string", "format": "time"},
    "base64": {"type": "string", "contentEncoding": "base64"}, "hex": {"type": "string", "pattern": "^[0-9a-fA-F]*$"},
    "string": {"type": "string"},
}


def json_schema(el: Any, facets: FacetIndex, depth: int = 0) -> dict[str, Any]:
    """JSON Schema of an element's content (its type), with XSD names kept under ``x-xsd-type``."""
    t = el.type
    if is_complex(t):
        if depth >= MAX_DEPTH:
            return {"type": "object", "description": "nested too deep to describe"}
        props: dict[str, Any] = {}
        required = []
        elements, wildcard = child_elements(t)
        for name, child in elements:
            schema = json_schema(child, facets, depth + 1)
            if is_repeated(child):
                schema = {"type": "array", "items": schema}
                if isinstance(child.max_occurs, int):
                    schema["maxItems"] = child.max_occurs
            if getattr(child, "nillable", False):
                schema = {"anyOf": [schema, {"type": "null"}]}
            props[name] = schema
            if (child.min_occurs or 0) >= 1:
                required.append(name)
        for name, attr in getattr(t, "attributes", []) or []:
            if getattr(attr, "type", None) is not None:
                props[name] = _leaf_schema(attr.type, name, facets)
                if getattr(attr, "required", False):
                    required.append(name)
        out: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": wildcard}
        if required:
            out["required"] = required
        if _qname(t):
            out["x-xsd-type"] = _qname(t)
        return out
    return _leaf_schema(t, getattr(el, "name", None), facets)


def _leaf_schema(xsd_type: Any, name: str | None, facets: FacetIndex) -> dict[str, Any]:
    conv, arrow, xsd = leaf_type(xsd_type, name, facets)
    schema = dict(_JSON_LEAF.get(conv, {"type": "string"}))
    f = facets.lookup(_qname(xsd_type), name)
    if f.enumeration:
        schema["enum"] = list(f.enumeration)
    if conv == "decimal" and isinstance(arrow, pa.Decimal128Type):
        schema["x-precision"], schema["x-scale"] = arrow.precision, arrow.scale
    if schema.get("type") == "string" and not f.enumeration:
        if f.min_length is not None:
            schema["minLength"] = f.min_length
        if f.max_length is not None:
            schema["maxLength"] = f.max_length
    schema["x-xsd-type"] = xsd
    return schema
