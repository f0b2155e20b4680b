"""Parsing XML from partners without trusting it.

A document type declaration is the door to external entities (XXE: reading local files, reaching
internal hosts) and to entity expansion bombs ("billion laughs"). SOAP forbids DTDs in messages
(SOAP 1.1 §3, SOAP 1.2 part 1 §5), and data files have no use for them, so the hub refuses any
document with a DTD before parsing it, and parses everything else with entity resolution, DTD
loading and network access switched off. WSDLs go through zeep with the equivalent settings.

Nesting is bounded too: the readers walk records in Python (recursively, and Arrow infers nested types
from them), so a record nested a thousand levels deep costs seconds to minutes. :class:`DepthLimit` finds
an element nested deeper than the limit (counted from the root element, which is level 1) in each record
with one precompiled XPath - in C, touching only the elements above the limit - before the record is
read. Content outside records is never walked in Python; libxml2 itself refuses documents nested deeper
than :data:`HARD_MAX_DEPTH` (in the huge-tree mode large text values need).
"""

from __future__ import annotations

import codecs
from pathlib import Path
from typing import IO, Any

from lxml import etree

from hub.errors import XMLSecurityError
from hub.runtime.xmllimits import DEFAULT_MAX_DEPTH, HARD_MAX_DEPTH, PROLOG_LIMIT

__all__ = ["DEFAULT_MAX_DEPTH", "HARD_MAX_DEPTH", "PROLOG_LIMIT", "DepthLimit", "check_prolog", "fromstring",
           "iterparse_options", "parser"]


def parser(**extra: Any) -> etree.XMLParser:
    """An lxml parser that never resolves entities, loads DTDs or touches the network."""
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
                           **extra)


def iterparse_options() -> dict[str, Any]:
    """The same safety settings, as keyword arguments of ``lxml.etree.iterparse``."""
    return {"resolve_entities": False, "no_network": True, "load_dtd": False, "dtd_validation": False,
            "huge_tree": True}


class DepthLimit:
    """Finds elements nested deeper than *limit* levels (the root element is level 1) in a subtree."""

    #: Without the EXSLT regular expressions lxml registers for every evaluation by default: 1.0 instead of
    #: 1.4-2.5 us a call, once per record.
    _count = etree.XPath("count(.//*)", regexp=False, smart_strings=False)

    def __init__(self, limit: int = DEFAULT_MAX_DEPTH) -> None:
        self.limit = limit
        self._paths: dict[int, etree.XPath] = {}  # by levels left below the checked element
        self._parent: Any = None  # the last checked element's parent, and that element's level
        self._level = 0

    def too_deep(self, el: Any) -> Any | None:
        """The first element in *el*'s subtree (*el* included) nested deeper than the limit, or None.

        Records are checked one after the other, so this must be cheap (about 2 us for a small record): the
        level is computed once per parent (records are siblings), and a subtree with no more elements than
        levels left cannot be too deep (``count``, in C). Only a larger one is searched, with one XPath of
        ``*`` steps that visits just the elements above the limit."""
        room = self.room(el)
        if room < 0:
            return el
        if self._count(el) <= room:
            return None
        path = self._paths.get(room)
        if path is None:
            path = self._paths[room] = etree.XPath("/".join(["*"] * (room + 1)) + "[1]", regexp=False)
        found = path(el)
        return found[0] if found else None

    def room(self, el: Any) -> int:
        """How many levels may still nest below *el* (negative: *el* itself is too deep); the level is computed
        once per parent, as records are siblings."""
        parent = el.getparent()
        if parent is None or parent is not self._parent:
            self._parent = parent
            self._level = 1 + sum(1 for _ in el.iterancestors())
        return self.limit - self._level

    def message(self, what: str, el: Any, setting: str) -> str:
        """The error for *el* (from :meth:`too_deep`) in the document *what*: where, and the limit."""
        line = f" at line {el.sourceline}" if el.sourceline else ""
        return (f"{what}: element <{etree.QName(el).localname}>{line} is nested more than {self.limit} levels deep "
                f"({setting}={self.limit}); refused (deep nesting is a denial-of-service pattern)")


def check_prolog(source: bytes | Path | IO[bytes], what: str) -> None:
    """Refuse *source* when a DOCTYPE comes before its first element. *what* names it in the error."""
    if isinstance(source, bytes):
        head = source[:PROLOG_LIMIT]
    elif isinstance(source, Path):
        with source.open("rb") as fh:
            head = fh.read(PROLOG_LIMIT)
    else:
        pos = source.tell()
        head = source.read(PROLOG_LIMIT)
        source.seek(pos)
    text = _decode_head(head)
    i, n = 0, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        if text.startswith("<?", i):
            end = text.find("?>", i)
        elif text.startswith("<!--", i):
            end = text.find("-->", i)
        elif text.startswith("<!DOCTYPE", i) or text.startswith("<!", i):
            raise XMLSecurityError(
                f"{what}: the document has a DTD (<!DOCTYPE ...>); DTDs and entity declarations are refused "
                "(they enable XXE and entity-expansion attacks, and SOAP messages must not carry them)")
        else:
            return  # the first element: no DTD can follow
        if end < 0:
            break
        i = end + 2
    if len(head) >= PROLOG_LIMIT:
        raise XMLSecurityError(f"{what}: more than {PROLOG_LIMIT} bytes before the first element; refused")


def _decode_head(head: bytes) -> str:
    for bom, codec in ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"),
                       (codecs.BOM_UTF16_BE, "utf-16-be")):
        if head.startswith(bom):
            return head[len(bom):].decode(codec, "replace")
    if head[:2] in (b"<\x00", b"\x00<"):
        return head.decode("utf-16-le" if head[:1] == b"<" else "utf-16-be", "replace")
    return head.decode("utf-8", "replace")


def fromstring(data: bytes, what: str) -> Any:
    """Parse a whole (small) document safely: DTDs refused, entities never resolved."""
    check_prolog(data, what)
    try:
        return etree.fromstring(data, parser())
    except etree.XMLSyntaxError as exc:
        from hub.errors import ResponseFormatError

        raise ResponseFormatError(f"{what}: not well-formed XML: {exc}") from None
