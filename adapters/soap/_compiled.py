"""Compiled request envelopes and reply readers for writes: what zeep does per call, planned once.

A flow sends one small request per item (:meth:`adapters.soap.client.SoapSource.send`). Per call zeep turns the
parameters into value objects, validates them and renders them through a dozen layers, then parses the answer
into value objects that ``serialize_object`` turns into dicts: together ~0.4 ms of a ~2 ms call. Here the
operation's input and output messages are walked once, while the WSDL's types are at hand, into plans of plain
tuples (element tag, the XSD simple type whose ``xmlvalue`` / ``pythonvalue`` zeep would call, occurrences,
nested plans); a call then builds the envelope with lxml straight from the parameters' dict, and reads the reply's
body element into dicts, with the same values, by the same type methods.

The plans are an optimisation, never a second behaviour: the envelope is built with zeep's own element maker
and namespace map (taken when the plan is made: the hub never changes a client's prefixes afterwards),
WS-Security is applied by the same ``wsse`` object, the reply is parsed by zeep's ``parse_xml`` (DTDs, entities
refused alike). Whatever the compiler does not cover is left to zeep, at compile time (``xsd:choice``,
``xsd:any``, attributes, groups, simpleContent, SOAP-encoded arrays, defaults, recursive types, declared reply
headers, plugins, WS-Addressing) and per call (:class:`Fallback`: a parameter of a shape the plan does not know,
a missing required value, an unexpected element, a fault, a status other than 200): zeep then does what it always
did, its errors included. tests/test_soap_writes.py holds the proof of equivalence: every operation of the WSDLs
at hand, serialized and read both ways.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

from lxml import etree
from lxml.builder import ElementMaker
from zeep.exceptions import Error as ZeepError
from zeep.loader import parse_xml
from zeep.utils import get_media_type
from zeep.wsdl.messages.base import SerializedMessage
from zeep.wsdl.messages.soap import DocumentMessage, RpcMessage, SoapMessage
from zeep.xsd.elements import Element
from zeep.xsd.elements.indicators import Sequence
from zeep.xsd.types.complex import ComplexType
from zeep.xsd.types.simple import AnySimpleType

#: Values a simple element takes as they are (zeep hands them to the type's ``xmlvalue`` unchanged); any other
#: (zeep's Nil, CDATA, value objects, collections) is left to zeep.
SCALARS = (str, int, float, Decimal, bool, datetime, date, time, bytes)
#: Nesting the compiler follows; deeper (or recursive) types are left to zeep.
MAX_DEPTH = 24
XSI_NIL = "{http://www.w3.org/2001/XMLSchema-instance}nil"


class Fallback(Exception):
    """This call is not covered by the plan: let zeep build (or read) it."""


@dataclass(frozen=True, slots=True)
class Field:
    """One child element of a compiled sequence."""

    name: str  # zeep's attribute name: the parameter's / the result's key
    tag: str  # Clark notation
    local: str
    simple: Any  # the zeep simple type (xmlvalue / pythonvalue), None when complex
    node: Node | None  # the compiled complex type, None when simple
    optional: bool  # minOccurs = 0
    many: bool  # maxOccurs != 1
    min_occurs: int
    max_occurs: int | None  # None: unbounded


@dataclass(frozen=True, slots=True)
class Node:
    """A compiled complex type: a flat ``xsd:sequence`` of elements, no attributes."""

    fields: tuple[Field, ...]
    names: frozenset[str]


def _plain_simple(t: Any) -> bool:
    """A simple type zeep renders as ``text = xmlvalue(value)`` and reads as ``pythonvalue(text)`` (lists and
    unions render and parse their own way)."""
    cls = type(t)
    return isinstance(t, AnySimpleType) and cls.render is AnySimpleType.render \
        and cls.parse_xmlelement is AnySimpleType.parse_xmlelement


def compile_type(t: Any, path: tuple[int, ...] = ()) -> Node | None:
    """The plan of the complex type *t*, or None when zeep must handle it."""
    if not isinstance(t, ComplexType) or id(t) in path or len(path) >= MAX_DEPTH:
        return None
    cls = type(t)
    if cls.render is not ComplexType.render or cls.parse_xmlelement is not ComplexType.parse_xmlelement:
        return None
    if t._attributes or t._array_type is not None or t.attributes:
        return None
    seq = t._element
    if not t.elements_nested:  # no element at all (an empty sequence is falsy to zeep too)
        return Node((), frozenset()) if seq is None or (type(seq) is Sequence and not seq) else None
    if type(seq) is not Sequence or seq.max_occurs != 1 or seq.min_occurs != 1:
        return None
    if [name for name, _ in t.elements_nested] != ["_value_1"] or t.elements_nested[0][1] is not seq:
        return None
    fields: list[Field] = []
    for name, el in seq.elements_nested:
        f = _compile_element(name, el, (*path, id(t)))
        if f is None:
            return None
        fields.append(f)
    if [f.name for f in fields] != [name for name, _ in t.elements]:
        return None
    return Node(tuple(fields), frozenset(f.name for f in fields))


def _compile_element(name: str | None, el: Any, path: tuple[int, ...]) -> Field | None:
    if type(el) is not Element or not name or name != el.attr_name:
        return None
    if el.default is not None:
        return None  # zeep renders (and reads) the schema's default for an absent value: left to it
    max_occurs = None if el.max_occurs == "unbounded" else el.max_occurs
    if not isinstance(el.min_occurs, int) or not (max_occurs is None or isinstance(max_occurs, int)):
        return None
    qname = etree.QName(el.qname)
    if _plain_simple(el.type):
        simple, node = el.type, None
    else:
        simple, node = None, compile_type(el.type, path)
        if node is None:
            return None
    return Field(name, qname.text, qname.localname, simple, node, el.min_occurs == 0, max_occurs != 1,
                 el.min_occurs, max_occurs)


# --- requests ----------------------------------------------------------------------------------------------

def _render(parent: Any, node: Node, values: Any) -> None:
    if type(values) is not dict or not node.names.issuperset(values):
        raise Fallback  # zeep takes value objects too, and raises its own error for unknown names
    sub = etree.SubElement
    for f in node.fields:
        value = values.get(f.name)
        if value is None:
            if f.optional:
                continue
            raise Fallback  # zeep renders a default, or raises "Missing element"
        items = value if f.many else (value,)
        if f.many and (type(value) is not list or len(value) < f.min_occurs or
                       (f.max_occurs is not None and len(value) > f.max_occurs)):
            raise Fallback
        for item in items:
            if f.node is None:
                if not isinstance(item, SCALARS):
                    raise Fallback
                try:
                    text = f.simple.xmlvalue(item)
                except Exception:  # zeep raises it again, its way
                    raise Fallback from None
                sub(parent, f.tag).text = text
            else:
                if type(item) is not dict:
                    raise Fallback
                _render(sub(parent, f.tag), f.node, item)


@dataclass
class RequestPlan:
    """The envelope of one operation's request, built from a dict of parameters (see the module docstring)."""

    tag: str  # the body's element
    node: Node
    maker: Any  # zeep's ElementMaker for soap-env, with the same namespace map
    http_headers: dict[str, str]
    address: str
    client: Any

    @classmethod
    def compile(cls, client: Any, binding: Any, operation: Any, address: str) -> RequestPlan | None:
        """The plan of *operation* (a zeep ``SoapOperation`` of *binding*), or None when zeep must build its
        envelopes: a message shape the compiler does not cover, WS-Addressing, plugins, default SOAP headers,
        several WS-Security objects, extra HTTP headers."""
        message: Any = getattr(operation, "input", None)
        if type(message) not in (DocumentMessage, RpcMessage) or message._is_body_wrapped or message.body is None:
            return None
        if type(message).serialize is not SoapMessage.serialize:
            return None
        if getattr(operation.abstract, "wsa_action", None) or client.plugins or client._default_soapheaders \
                or isinstance(client.wsse, list) or client.settings.extra_http_headers:
            return None
        body = message.body
        if type(body) is not Element:
            return None
        node = compile_type(body.type)
        if node is None:
            return None
        nsmap = {"soap-env": message.nsmap["soap-env"], **message.wsdl.types._prefix_map_custom}
        soapaction = message.operation.soapaction
        serialized = SerializedMessage(path=None, headers={"SOAPAction": f'"{soapaction}"' if soapaction else '""'},
                                       content=None)
        binding._set_http_headers(serialized, operation)
        return cls(etree.QName(body.qname).text, node, ElementMaker(namespace=nsmap["soap-env"], nsmap=nsmap),
                   dict(serialized.headers), address, client)

    def envelope(self, params: dict[str, Any]) -> tuple[Any, dict[str, str]]:
        """The envelope (WS-Security applied) and HTTP headers zeep would send for *params*; :class:`Fallback`
        when zeep must build them."""
        soap = self.maker
        envelope = soap.Envelope()
        body = soap.Body()
        envelope.append(body)
        _render(etree.SubElement(body, self.tag), self.node, params)
        headers = dict(self.http_headers)
        if self.client.wsse:
            envelope, headers = self.client.wsse.apply(envelope, headers)
        return envelope, headers


# --- replies -----------------------------------------------------------------------------------------------

def _read(el: Any, node: Node, allow_none: bool) -> dict[str, Any] | None:
    """The element *el* of the complex type *node* as zeep's ``serialize_object(..., dict)`` gives it."""
    attrib = el.attrib
    if attrib and (len(attrib) > 1 or XSI_NIL not in attrib):
        raise Fallback  # xsi:type, attributes: zeep's
    if not node.fields:
        return None  # zeep reads a type without elements as None, whatever the element holds
    children = list(el)
    if not children:
        if allow_none and not attrib:
            return None  # zeep reads an empty element as None, but one with xsi:nil as an object of Nones
        return {f.name: [] if f.many else None for f in node.fields}
    out: dict[str, Any] = {}
    i, n = 0, len(children)
    for f in node.fields:
        found: list[Any] = []
        while i < n and (f.max_occurs is None or len(found) < f.max_occurs):
            child = children[i]
            tag = child.tag
            if tag != f.tag:
                if not isinstance(tag, str) or etree.QName(tag).localname == f.local:
                    raise Fallback  # a comment or PI, or the element in another namespace: zeep decides
                break
            if f.node is None:
                attrib = child.attrib
                if attrib and (len(attrib) > 1 or XSI_NIL not in attrib):
                    raise Fallback
                text = child.text
                if text is None:
                    found.append(None)
                else:
                    try:
                        found.append(f.simple.pythonvalue(text))
                    except (TypeError, ValueError):
                        raise Fallback from None  # zeep logs it and reads None
            else:
                found.append(_read(child, f.node, True))
            i += 1
            if not f.many:
                break
        if not found and not f.optional and i < n:
            raise Fallback  # zeep: "Unexpected element"
        out[f.name] = found if f.many else (found[0] if found else None)
    if i < n:
        raise Fallback  # elements left over: zeep (strict) refuses them
    return out


@dataclass
class ReplyPlan:
    """Reads an operation's answer into what ``serialize_object(binding.process_reply(...), dict)`` gives."""

    tag: str
    node: Node
    envelope_tag: str
    nsmap: dict[str, str]
    client: Any
    transport: Any

    @classmethod
    def compile(cls, client: Any, operation: Any) -> ReplyPlan | None:
        """The plan of *operation*'s output, or None when zeep must read its replies (RPC multi-refs, declared
        SOAP headers, a body of several parts or of a type the compiler does not cover, plugins, several
        WS-Security objects, lax parsing)."""
        message: Any = getattr(operation, "output", None)
        if type(message) is not DocumentMessage or message._is_body_wrapped or message.body is None:
            return None
        if type(message).deserialize is not SoapMessage.deserialize or message.header is None \
                or message.header.type._element:
            return None
        if client.plugins or isinstance(client.wsse, list) or not client.settings.strict \
                or client.settings.xsd_ignore_sequence_order:
            return None
        body = message.body
        if type(body) is not Element:
            return None
        node = compile_type(body.type)
        if node is None:
            return None
        env = message.nsmap["soap-env"]
        return cls(etree.QName(body.qname).text, node, f"{{{env}}}Envelope", {"soap-env": env}, client,
                   client.transport)

    def read(self, status: int, content: bytes, content_type: str | None) -> Any:
        """The answer as plain dicts and lists; :class:`Fallback` when zeep must read it (faults included)."""
        if status != 200 or not content:
            raise Fallback
        if content_type and "multipart" in content_type.lower() and get_media_type(content_type) == "multipart/related":
            raise Fallback  # MTOM/XOP: zeep's (get_media_type parses the header with the email package: only if needed)
        client = self.client
        try:
            doc = parse_xml(content, self.transport, settings=client.settings)  # type: ignore[arg-type]
        except ZeepError:
            raise Fallback from None
        if client.wsse:
            client.wsse.verify(doc)
        if doc.tag != self.envelope_tag or doc.find("soap-env:Body/soap-env:Fault", namespaces=self.nsmap) \
                is not None:
            raise Fallback
        body = doc.find("soap-env:Body", namespaces=self.nsmap)
        if body is None or not len(body):
            raise Fallback
        el = body[0]
        if el.tag != self.tag:
            raise Fallback
        result = _read(el, self.node, False)
        assert result is not None
        # zeep's unwrapping (DocumentMessage.deserialize): one child is returned itself, and a child of a complex
        # type with exactly one element is returned as that element's value
        fields = self.node.fields
        if not fields:
            return None
        if len(fields) > 1:
            return result
        inner = result[fields[0].name]
        f = fields[0]
        if isinstance(inner, dict) and f.node is not None and len(f.node.fields) == 1:
            return inner[f.node.fields[0].name]
        return inner
