"""Streaming a SOAP response into typed Arrow batches, in bounded memory.

The response body is on disk (spooled by the transport, possibly still arriving: the reader then reads a file
object that waits for the bytes it asks for). ``lxml.etree.iterparse`` reports only the
elements that matter — the envelope, the body, a fault, the elements on the way to the records, each
record and the continuation token — and every record is read into a flat row (see
:mod:`adapters.soap._schema`) and removed from the tree at once, so memory holds one batch of rows, not
the document. Values are converted column-wise with Arrow casts; a value that does not fit its XSD type
marks its record with ``_hub_error`` (the hub quarantines it) instead of failing the whole response.
"""

from __future__ import annotations

import base64
import contextlib
import gc
import threading
from bisect import bisect_right
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from itertools import accumulate, chain
from pathlib import Path
from typing import IO, Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
from lxml import etree

from adapters.soap._schema import LEAF, REPEATED, STRUCT, XMLTEXT, XSI_NIL, FieldPlan, Members, Space
from hub.errors import ResponseFormatError, SoapFault, XMLSecurityError
from hub.runtime import xmlsafe
from hub.runtime.secrets import mask

SOAP11_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12_ENV = "http://www.w3.org/2003/05/soap-envelope"
ERROR_COLUMN = "_hub_error"
_TRUE = ("true", "1")
assert (LEAF, STRUCT, REPEATED) == (0, 1, 2), "fill() compares kinds as plain ints"


def local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def element_path(el: Any) -> str:
    """A readable path of local names from the document root to *el*."""
    names = [local(a.tag) for a in reversed(list(el.iterancestors())) if isinstance(a.tag, str)]
    return "/".join([*names, local(el.tag) if isinstance(el.tag, str) else "?"])


class _Unexpected(Exception):
    def __init__(self, el: Any, expected: Members) -> None:
        super().__init__(element_path(el))
        self.el, self.expected = el, expected


# --- rows ------------------------------------------------------------------------------------------------

def fill(elem: Any, members: Members, row: list[Any]) -> None:
    """Store the values of *elem*'s children (and attributes) into *row*'s slots. The hot loop of the
    reader: one dictionary lookup and one store per element."""
    if members.attributes and elem.attrib:
        for key, value in elem.attrib.items():
            f = members.attributes.get(key)
            if f is not None:
                row[f.slot] = value
    leaves, index = members.leaves, members.index
    for child in elem:
        tag = child.tag
        slot = leaves.get(tag)
        if slot is not None:  # a simple element (LEAF): its text
            text = child.text
            if text is None:
                row[slot] = "" if slot in members.texts and child.get(XSI_NIL) not in _TRUE else None
            else:
                row[slot] = text
            continue
        entry = index.get(tag)
        if entry is None:
            if not isinstance(tag, str) or members.wildcard:
                continue  # a comment or processing instruction, or content an xsd:any admits
            raise _Unexpected(child, members)
        kind, slot, is_text, f = entry
        if kind == 0:  # LEAF (in the index only when a plan was built without its leaves)
            text = child.text
            if text is None:
                row[slot] = "" if is_text and child.get(XSI_NIL) not in _TRUE else None
            else:
                row[slot] = text
        elif kind == 1:  # STRUCT
            if child.get(XSI_NIL) not in _TRUE:
                row[slot] = True
                fill(child, f.members, row)  # type: ignore[arg-type]
        elif kind == 2:  # REPEATED
            items = row[slot]
            if items is None:
                items = row[slot] = []
            item = f.item
            assert item is not None
            if f.leaf_item:
                text = child.text
                items.append([None if text is None and child.get(XSI_NIL) in _TRUE else (text or "")])
            else:
                sub = [None] * item.nslots
                fill(child, item.members, sub)
                items.append(sub)
        else:  # XMLTEXT: kept as the XML of the element
            row[slot] = etree.tostring(child, encoding="unicode", with_tail=False)


# --- columns ---------------------------------------------------------------------------------------------

def _parse_int(v: str, t: pa.DataType) -> int:
    n = int(v)
    pa.scalar(n, t)  # range check
    return n


def _parse_decimal(v: str, t: pa.DataType) -> Decimal:
    d = Decimal(v)
    if not d.is_finite():
        raise ValueError("not a finite number")
    if -d.as_tuple().exponent > t.scale:  # type: ignore[operator]
        raise ValueError(f"more than {t.scale} fraction digits")
    pa.scalar(d, t)
    return d


def _parse_bool(v: str, t: pa.DataType) -> bool:
    if v in ("true", "1"):
        return True
    if v in ("false", "0"):
        return False
    raise ValueError("expected true, false, 1 or 0")


def _parse_datetime(v: str, t: pa.DataType) -> datetime:
    ts = datetime.fromisoformat(v.replace("Z", "+00:00"))
    return ts.astimezone(UTC) if ts.tzinfo else ts.replace(tzinfo=UTC)


def _parse_time(v: str, t: pa.DataType) -> time:
    parsed = time.fromisoformat(v.replace("Z", "+00:00"))
    return parsed.replace(tzinfo=None)


_PARSERS: dict[str, Callable[[str, pa.DataType], Any]] = {
    "int": _parse_int,
    "float": lambda v, t: float(v),
    "decimal": _parse_decimal,
    "bool": _parse_bool,
    "date": lambda v, t: date.fromisoformat(v[:10]),
    "datetime": _parse_datetime,
    "time": _parse_time,
    "base64": lambda v, t: base64.b64decode("".join(v.split()), validate=True),
    "hex": lambda v, t: bytes.fromhex(v),
}


def convert(values: tuple[Any, ...] | list[Any], f: FieldPlan, path: str, errors: dict[int, str],
            arr: pa.Array | None = None) -> pa.Array:
    """Typed Arrow array for the text values of one leaf; bad values become null and an error entry.
    *arr*: the values already as an Arrow string array."""
    if arr is None:
        arr = pa.array(values, pa.string())
    kind = f.conv
    if kind == "string":
        return arr
    if kind in ("int", "float", "decimal", "bool", "date", "datetime"):
        try:
            if kind == "datetime":
                try:
                    return pc.cast(arr, f.arrow)
                except pa.ArrowInvalid:  # no offsets at all: the values are taken as UTC
                    return pc.cast(arr, pa.timestamp("us")).cast(f.arrow)
            return pc.cast(arr, f.arrow)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
    parse = _PARSERS[kind]
    out: list[Any] = []
    for i, v in enumerate(values):
        if v is None:
            out.append(None)
            continue
        try:
            out.append(parse(v.strip(), f.arrow))
        except (ValueError, TypeError, InvalidOperation, OverflowError, pa.ArrowInvalid) as exc:
            errors.setdefault(i, f"{path}: {v[:100]!r} is not a valid xsd:{f.xsd} ({exc})")
            out.append(None)
    return pa.array(out, f.arrow)


def _json_number(text: str | None, cast: Callable[[str], Any]) -> Any:
    if text is None:
        return None
    try:
        value = cast(text)
    except ValueError:
        return text  # the typed check has already flagged the record; keep what was sent
    if cast is int and not -(1 << 63) <= value < 1 << 64:
        return text  # beyond what orjson writes (and any integer column): flagged too, kept as sent
    return value


#: How a leaf's XML text appears in JSON: numbers and booleans as such, everything else as the text
#: itself (decimals stay exact, dates and base64 keep their XML form).
_JSON_VALUE: dict[str, Callable[[str | None], Any]] = {
    "int": lambda t: _json_number(t, int),
    "float": lambda t: _json_number(t, float),
    "bool": lambda t: None if t is None else (t.strip() in _TRUE if t.strip() in ("true", "1", "false", "0") else t),
}


def _as_json(members: Members, row: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in members.fields:
        value = row[f.slot]
        if f.kind == LEAF:
            conv = _JSON_VALUE.get(f.conv)
            out[f.name] = conv(value) if conv else value
        elif f.kind == STRUCT:
            out[f.name] = _as_json(f.members, row) if value is True else None  # type: ignore[arg-type]
        elif f.kind == REPEATED:
            out[f.name] = None if value is None else _items_json(f, value)
        else:
            out[f.name] = value
    return out


def _items_json(f: FieldPlan, items: list[list[Any]]) -> list[Any]:
    assert f.item is not None
    if f.leaf_item:
        conv = _JSON_VALUE.get(f.item.members.fields[0].conv)
        return [conv(i[0]) if conv else i[0] for i in items]
    return [_as_json(f.item.members, sub) for sub in items]


#: Characters orjson escapes in a string (a text without any is written as it is, between quotes).
_JSON_ESCAPED = r'["\\\x00-\x1f]'
#: Integers whose canonical form Arrow writes exactly as ``int()`` reads them (no sign, spaces, ``_``, ``0x``).
_PLAIN_INT = "^-?[0-9]+$"
_TRUE_TEXTS = pa.array(["true", "1"])
_FALSE_TEXTS = pa.array(["false", "0"])


def _json_values(f: FieldPlan, texts: pa.Array, typed: pa.Array) -> pa.Array:
    """The JSON text of every value of one leaf, as :data:`_JSON_VALUE` and orjson write it, by Arrow
    kernels: plain integers from the typed column, booleans and texts without characters to escape from
    the texts. The values outside these fast paths (floats, integers and booleans in other spellings,
    texts with quotes, backslashes or control characters) are written by orjson one by one, as before."""
    conv = f.conv
    if conv == "int":
        fast = pc.and_(pc.match_substring_regex(texts, _PLAIN_INT), pc.is_valid(typed))
        out = typed.cast(pa.string())
    elif conv == "bool":
        true = pc.is_in(texts, value_set=_TRUE_TEXTS)
        fast = pc.or_(true, pc.is_in(texts, value_set=_FALSE_TEXTS))
        out = pc.if_else(true, "true", "false")
    elif conv == "float":  # orjson's shortest float form is not Arrow's
        fast = pa.nulls(len(texts), pa.bool_())
        out = pa.nulls(len(texts), pa.string())
    else:
        fast = pc.invert(pc.match_substring_regex(texts, _JSON_ESCAPED))
        out = pc.binary_join_element_wise('"', texts, '"', "")
    absent = pc.is_null(texts)
    slow = pc.invert(pc.or_(pc.fill_null(fast, False), absent))
    out = pc.if_else(absent, "null", out)
    if slow.true_count:
        convert_one = _JSON_VALUE.get(conv)
        mask = slow.to_numpy(zero_copy_only=False)
        written = [orjson.dumps(convert_one(t) if convert_one else t).decode()
                   for t, m in zip(texts.to_pylist(), mask, strict=True) if m]
        out = pc.replace_with_mask(out, slow, pa.array(written, pa.string()))
    return out


def _json_column(f: FieldPlan, present: pa.Array, offsets: list[int], texts: dict[int, pa.Array],
                 typed: list[pa.Array]) -> pa.Array | None:
    """The JSON text of a repeated child (one array per row, null where absent) from the columns of its
    items (*texts* by slot, *typed* in field order), built by Arrow kernels instead of a dict per item and
    orjson per row: the same text as :func:`_items_json`. None when the items are not flat (nested
    elements, no fields, repeated names): those go the way of :func:`_items_json`."""
    assert f.item is not None
    fields = f.item.members.fields
    names = [fp.name for fp in fields]
    if not fields or any(fp.kind != LEAF for fp in fields) or len(set(names)) != len(names):
        return None
    values = [_json_values(fp, texts[fp.slot], arr) for fp, arr in zip(fields, typed, strict=True)]
    if f.leaf_item:
        items = values[0]
    else:
        parts: list[Any] = []
        for i, (name, value) in enumerate(zip(names, values, strict=True)):
            parts += [("{" if i == 0 else ",") + orjson.dumps(name).decode() + ":", value]
        items = pc.binary_join_element_wise(*parts, "}", "")
    lists = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), items, mask=pc.invert(present))
    return pc.binary_join_element_wise("[", pc.binary_join(lists, ","), "]", "")


class Columns:
    """Builds Arrow columns from rows of one :class:`Space`. Repeated children whose dotted path is in
    *lists* stay ``list<struct>`` (for child tables); the others become JSON text."""

    def __init__(self, lists: set[str]) -> None:
        self.lists = lists

    def build(self, space: Space, rows: list[list[Any]], errors: dict[int, str],
              prefix: str = "", texts: dict[int, pa.Array] | None = None) -> tuple[list[pa.Array], list[pa.Field]]:
        """The typed columns of *rows*; *texts*, when given, receives each leaf's text column by slot."""
        cols = list(zip(*rows, strict=True)) if rows else [()] * space.nslots
        return self._members(space.members, cols, len(rows), errors, prefix, {} if texts is None else texts)

    def _members(self, members: Members, cols: list[tuple[Any, ...]], n: int, errors: dict[int, str],
                 prefix: str, texts: dict[int, pa.Array]) -> tuple[list[pa.Array], list[pa.Field]]:
        arrays: list[pa.Array] = []
        fields: list[pa.Field] = []
        for f in members.fields:
            path = f"{prefix}{f.name}"
            if f.kind == LEAF:
                texts[f.slot] = pa.array(cols[f.slot], pa.string())
                arr = convert(cols[f.slot], f, path, errors, texts[f.slot])
            elif f.kind == XMLTEXT:
                arr = pa.array(cols[f.slot], pa.string())
            elif f.kind == STRUCT:
                assert f.members is not None
                child_arrays, child_fields = self._members(f.members, cols, n, errors, f"{path}.", texts)
                mask = pa.array([v is not True for v in cols[f.slot]], pa.bool_())
                if not child_fields:
                    arr = pa.nulls(n, pa.struct([]))
                else:
                    arr = pa.StructArray.from_arrays(child_arrays, fields=child_fields, mask=mask)
            else:
                arr = self._repeated(f, cols[f.slot], errors, path)
            arrays.append(arr)
            fields.append(pa.field(f.name, arr.type))
        return arrays, fields

    def _repeated(self, f: FieldPlan, values: tuple[Any, ...], errors: dict[int, str], path: str) -> pa.Array:
        assert f.item is not None
        offsets = [0, *accumulate([len(items) if items else 0 for items in values])]
        flat: list[list[Any]] = list(chain.from_iterable(items for items in values if items))
        item_errors: dict[int, str] = {}
        item_texts: dict[int, pa.Array] = {}
        item_arrays, item_fields = self.build(f.item, flat, item_errors, f"{path}.", item_texts)  # types checked
        for j, message in item_errors.items():  # the row of item j: the last one whose items start at or before j
            errors.setdefault(bisect_right(offsets, j) - 1, message)
        mask = pa.array([v is None for v in values], pa.bool_())
        if path not in self.lists:  # JSON text, written from the XML values (no round trip through Arrow)
            column = _json_column(f, pc.invert(mask), offsets, item_texts, item_arrays)
            if column is not None:
                return column
            return pa.array([None if items is None else orjson.dumps(_items_json(f, items)).decode()
                             for items in values], pa.string())
        items_arr = item_arrays[0] if f.leaf_item else pa.StructArray.from_arrays(item_arrays, fields=item_fields)
        return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), items_arr, mask=mask)


def make_batch(columns: Columns, space: Space, rows: list[list[Any]]) -> pa.RecordBatch:
    errors: dict[int, str] = {}
    arrays, fields = columns.build(space, rows, errors)
    if errors:
        arrays.append(pa.array([errors.get(i) for i in range(len(rows))], pa.string()))
        fields.append(pa.field(ERROR_COLUMN, pa.string()))
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


# --- the response ----------------------------------------------------------------------------------------

#: Allocations between two young-generation collections while a response is read (CPython's default: 700):
#: more than a batch of rows holds (a row and its items' lists; 45,000 for 10,000 orders of 2.5 lines), as
#: the rows are freed when the batch is made and the count goes down again.
READ_GC_THRESHOLD = 100_000
_gc_lock = threading.Lock()
_gc_readers = 0
_gc_saved: tuple[int, int, int] | None = None


@contextlib.contextmanager
def _fewer_collections() -> Iterator[None]:
    """Collect the young generation every :data:`READ_GC_THRESHOLD` allocations instead of every 700 while
    responses are read. Reading a record allocates an lxml proxy per element plus the row's lists, and the
    rows of the batch being gathered survive every young collection, so each of them walked thousands of
    live rows again: about a fifth of the reader's time (bench/soap_bench.py, 50,000 orders: 2.8-3.1 s
    instead of 3.7-3.9 s). With a threshold above the rows of a batch, a read of such records makes no
    collection at all (at 10,000: 32 young and 3 older ones for 50,000 orders, 0.1-0.17 s). Cycles are
    still collected, only in larger steps. Concurrent readers share one setting: the first saves CPython's
    thresholds, the last one out restores them."""
    global _gc_readers, _gc_saved
    with _gc_lock:
        if _gc_readers == 0:
            _gc_saved = gc.get_threshold()
            if _gc_saved[0] < READ_GC_THRESHOLD:
                gc.set_threshold(READ_GC_THRESHOLD, *_gc_saved[1:])
        _gc_readers += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_readers -= 1
            if _gc_readers == 0 and _gc_saved is not None:
                gc.set_threshold(*_gc_saved)
                _gc_saved = None


_NOT_SEEN = object()


class ResponseReader:
    """Reads one spooled response: records as batches, the continuation token, faults."""

    def __init__(self, *, operation: str, url: str, chain: list[tuple[str, set[str]]], record_tag: str,
                 space: Space, columns: Columns, token_tag: str | None, batch_size: int,
                 max_depth: int = xmlsafe.DEFAULT_MAX_DEPTH) -> None:
        """*chain*: (Clark name, allowed child tags) of every element from the response element down to
        the record's parent. *max_depth*: the deepest nesting accepted in a record (the system's
        ``max_xml_depth``; a deeper one refuses the response before the record is read)."""
        self.operation, self.url = operation, url
        self.chain = chain
        self.allowed = dict(chain)
        self.record_tag, self.space, self.columns = record_tag, space, columns
        self.token_tag, self.batch_size = token_tag, batch_size
        self.depth = xmlsafe.DepthLimit(max_depth)
        self.records = 0
        self.token: str | None = None

    def read(self, path: Path | IO[bytes]) -> Iterator[pa.RecordBatch]:
        """The records of the body in *path* (a file, or a file object: a body read as it arrives)."""
        with _fewer_collections():
            yield from self._read(path)

    def _read(self, path: Path | IO[bytes]) -> Iterator[pa.RecordBatch]:
        xmlsafe.check_prolog(path, f"response of {self.operation} from {self.url}")
        source = str(path) if isinstance(path, Path) else path
        container = self.chain[-1][0]
        response_tag = self.chain[0][0]
        tags = {f"{{{ns}}}{name}" for ns in (SOAP11_ENV, SOAP12_ENV) for name in ("Envelope", "Body", "Fault")}
        tags |= {tag for tag, _ in self.chain} | {self.record_tag}
        if self.token_tag:
            tags.add(self.token_tag)
        rows: list[list[Any]] = []
        saw_envelope = saw_response = False
        record_tag, members, nslots = self.record_tag, self.space.members, self.space.nslots
        too_deep, batch_size, siblings = self.depth.too_deep, self.batch_size, self.allowed[container]
        records_parent: Any = _NOT_SEEN  # the element holding the records
        try:
            for _, el in etree.iterparse(source, tag=sorted(tags), **xmlsafe.iterparse_options()):
                tag = el.tag
                if not saw_envelope:  # the first element of *tags* to start: the outermost one open now
                    first = [a for a in (el, *el.iterancestors()) if a.tag in tags][-1]
                    if local(first.tag) != "Envelope":
                        raise ResponseFormatError(self._where(f"the body is not a SOAP envelope (root "
                                                              f"element {first.tag})"))
                    if el.getroottree().docinfo.internalDTD is not None:
                        raise XMLSecurityError(self._where("the response has a DTD; refused"))
                    saw_envelope = True
                if tag == record_tag:
                    parent = el.getparent()
                    if parent is records_parent or (parent is not None and parent.tag == container):
                        records_parent = parent  # the same proxy while it is held: its tag is checked once
                        deep = too_deep(el)
                        if deep is not None:
                            raise XMLSecurityError(self.depth.message(
                                f"response of {self.operation} from {self.url}", deep, "max_xml_depth"))
                        row = [None] * nslots
                        fill(el, members, row)
                        rows.append(row)
                        el.clear()
                        prev = el.getprevious()
                        while prev is not None:
                            if prev.tag != record_tag and isinstance(prev.tag, str) and prev.tag not in siblings:
                                raise _Unexpected(prev, _members_of(siblings))
                            del parent[0]
                            prev = el.getprevious()
                        if len(rows) >= batch_size:
                            self.records += len(rows)
                            yield make_batch(self.columns, self.space, rows)
                            rows = []
                        continue
                if tag in self.allowed:
                    saw_response = saw_response or tag == response_tag
                    for child in el:
                        if isinstance(child.tag, str) and child.tag not in self.allowed[tag]:
                            raise _Unexpected(child, _members_of(self.allowed[tag]))
                elif tag == self.token_tag and not _inside(el, self.record_tag):
                    self.token = (el.text or "").strip() or None
                elif local(tag) == "Fault" and el.getparent() is not None and local(el.getparent().tag) == "Body":
                    raise self.fault(el)
                elif local(tag) == "Body" and not saw_response:
                    first = next((c for c in el if isinstance(c.tag, str)), None)
                    found = element_path(first) if first is not None else "an empty Body"
                    raise ResponseFormatError(self._where(
                        f"response does not match the WSDL: expected {_pretty(response_tag)} in the Body, "
                        f"found {found}"))
        except _Unexpected as exc:
            expected = ", ".join(sorted(_pretty(t) for t in exc.expected.by_tag)) or "no child elements"
            raise ResponseFormatError(self._where(
                f"response does not match the WSDL: unexpected element {element_path(exc.el)} "
                f"(expected one of: {expected})")) from None
        except etree.XMLSyntaxError as exc:
            raise ResponseFormatError(self._where(f"response is not well-formed XML: {exc}")) from None
        if not saw_envelope:
            raise ResponseFormatError(self._where("the body is not a SOAP envelope"))
        if rows:
            self.records += len(rows)
            yield make_batch(self.columns, self.space, rows)

    def _where(self, message: str) -> str:
        return f"{self.operation} at {self.url}: {message}"

    def fault(self, el: Any) -> SoapFault:
        """The hub error for a SOAP 1.1 or 1.2 Fault element."""
        if el.tag == f"{{{SOAP12_ENV}}}Fault":
            code_el = el.find(f"{{{SOAP12_ENV}}}Code")
            codes = [v.text.strip() for v in code_el.iter(f"{{{SOAP12_ENV}}}Value") if v.text] \
                if code_el is not None else []
            code = ".".join(codes) or "?"
            reason = " ".join(t.text.strip() for t in el.iter(f"{{{SOAP12_ENV}}}Text") if t.text) or "?"
            detail_el = el.find(f"{{{SOAP12_ENV}}}Detail")
        else:
            code = (el.findtext("faultcode") or el.findtext(f"{{{SOAP11_ENV}}}faultcode") or "?").strip()
            reason = (el.findtext("faultstring") or el.findtext(f"{{{SOAP11_ENV}}}faultstring") or "?").strip()
            detail_el = el.find("detail")
            if detail_el is None:
                detail_el = el.find(f"{{{SOAP11_ENV}}}detail")
        detail = mask(_render_detail(detail_el)) if detail_el is not None else None
        reason = mask(reason)
        message = f"SOAP Fault from operation {self.operation} at {self.url}: {code}: {reason}"
        if detail:
            message += f" (detail: {detail})"
        return SoapFault(message, operation=self.operation, code=code, reason=reason, detail=detail)


def _render_detail(el: Any) -> str:
    parts = []
    for node in el.iter():
        if node is el or not isinstance(node.tag, str):
            continue
        text = (node.text or "").strip()
        if text and len(node) == 0:
            parts.append(f"{local(node.tag)}={text}")
    if not parts:
        text = " ".join(t.strip() for t in el.itertext() if t.strip())
        return text[:500]
    return "; ".join(parts)[:500]


def _inside(el: Any, tag: str) -> bool:
    return any(a.tag == tag for a in el.iterancestors())


def _members_of(tags: set[str]) -> Members:
    members = Members()
    for t in tags:
        members.by_tag[t] = FieldPlan(name=local(t), kind=LEAF)
    return members


def _pretty(tag: str) -> str:
    return local(tag)
