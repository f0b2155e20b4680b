"""Parsing XML from partners without trusting it.

A document type declaration is the door to external entities (XXE: reading local files, reaching
internal hosts) and to entity expansion bombs ("billion laughs"). SOAP forbids DTDs in messages
(SOAP 1.1 §3, SOAP 1.2 part 1 §5), and data files have no use for them, so the hub refuses any
document with a DTD before parsing it, and parses everything else with entity resolution, DTD
loading and network access switched off. WSDLs go through zeep with the equivalent settings.
"""

from __future__ import annotations

import codecs
from pathlib import Path
from typing import IO, Any

from lxml import etree

from hub.errors import XMLSecurityError

#: How much of a document may come before its first element (declaration, comments, PIs).
PROLOG_LIMIT = 1024 * 1024


def parser(**extra: Any) -> etree.XMLParser:
    """An lxml parser that never resolves entities, loads DTDs or touches the network."""
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
                           **extra)


def iterparse_options() -> dict[str, Any]:
    """The same safety settings, as keyword arguments of ``lxml.etree.iterparse``."""
    return {"resolve_entities": False, "no_network": True, "load_dtd": False, "dtd_validation": False,
            "huge_tree": True}


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
