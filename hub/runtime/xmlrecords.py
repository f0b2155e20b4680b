"""Records of an XML file as Arrow batches: parsed incrementally, in bounded memory, with DTDs refused.

Why here, in the runtime layer: the SFTP adapter's file reader calls it in-process, and a worker process of its own
(:mod:`hub.runtime.xmlprocess`) runs it for large files; that worker must start without the adapters' imports
(pydantic models, asyncssh: 135 MB of RSS before a record is read, against 92 MB for pyarrow and lxml alone).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
from lxml import etree

from hub.errors import AdapterError
from hub.runtime import xmlsafe
from hub.runtime.records import errors_batch, records_to_batch, with_lines

#: Flat records are turned into Arrow every this many (:class:`_Rows`).
CHUNK = 8192


def _element_value(el: Any) -> Any:
    children = [c for c in el if isinstance(c.tag, str)]
    if not children:
        return el.text
    out: dict[str, Any] = {}
    for c in children:
        key = etree.QName(c).localname
        value = _element_value(c)
        if key in out:  # repeated child: a list
            out[key] = out[key] if isinstance(out[key], list) else [out[key]]
            out[key].append(value)
        else:
            out[key] = value
    return out


def _flat_record(el: Any, depth: xmlsafe.DepthLimit, known: list[Any]) -> dict[str, Any] | None:
    """The row of a record whose children are all elements without children of their own (no comments, entities
    or processing instructions), with distinct names and no namespace, and that may nest one level: exactly what
    :func:`_element_value` gives it, built with one dict comprehension (most records in partners' files are like
    this; walking them generically cost three times lxml's parse). None for any other record. *known* holds the
    field names of the last record found flat (checked once for all records named alike)."""
    n = len(el)
    if not n or depth.room(el) < 1:
        return None
    fields = {c.tag: c.text for c in el if not len(c)}
    if len(fields) != n:
        return None
    keys = fields.keys()
    if keys != known[0]:
        try:
            if "{" in "".join(fields):  # namespaced: the generic walk takes local names
                return None
        except TypeError:  # a comment, entity or processing instruction: its tag is not a name
            return None
        known[0] = keys
    if el.attrib:
        row = dict(el.attrib)
        row.update(fields)
        return row
    return fields


class _Rows:
    """The records of one batch. While they are all flat (:func:`_flat_record`: every value text or None), every
    :data:`CHUNK` of them become an Arrow struct array of strings, read by Arrow from the dicts themselves: no type
    inference and no Python loop per value (five times faster than :func:`records_to_batch`), and a batch of
    65,536 records never holds more than a chunk of dicts (each costs about 3 KB: 200 MB for a batch). The
    batch is what :func:`records_to_batch` gives the same records: columns in the order names first appear, a
    column with no value at all of type null. A record that is not flat turns the chunks back into dicts."""

    def __init__(self) -> None:
        self.dicts: list[dict[str, Any]] = []
        self.chunks: list[tuple[list[str], list[pa.Array]]] = []
        self.flat = True
        self.n = 0

    def add(self, row: dict[str, Any], flat: bool) -> None:
        if self.flat and not flat:
            self.flat = False
            self.dicts = [r for keys, cols in self.chunks
                          for r in pa.StructArray.from_arrays(cols, names=keys).to_pylist()] + self.dicts
            self.chunks = []
        self.dicts.append(row)
        self.n += 1
        if self.flat and len(self.dicts) >= CHUNK:
            self._pack()

    def _pack(self) -> None:
        first = self.dicts[0].keys()
        keys = list(first) if all(r.keys() == first for r in self.dicts) else \
            list(dict.fromkeys(k for r in self.dicts for k in r))
        packed = pa.array(self.dicts, pa.struct([(k, pa.string()) for k in keys]))
        self.chunks.append((keys, packed.flatten()))
        self.dicts = []

    def batch(self) -> pa.RecordBatch:
        if not self.flat:
            return records_to_batch(self.dicts)
        if self.dicts:
            self._pack()
        n = self.n
        names = list(dict.fromkeys(k for keys, _ in self.chunks for k in keys))
        columns = []
        for name in names:
            parts = [cols[keys.index(name)] if name in keys else pa.nulls(len(cols[0]), pa.string())
                     for keys, cols in self.chunks]
            column = pa.concat_arrays(parts) if len(parts) > 1 else parts[0]
            columns.append(pa.nulls(n) if column.null_count == n else column)
        return pa.RecordBatch.from_arrays(columns, names=names)


class _Chain(io.RawIOBase):
    """*head*, then the rest of *rest*: a stream whose first bytes were read already."""

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self.head, self.rest = memoryview(head), rest
        self.more = getattr(rest, "read1", rest.read)  # what is there, without waiting for a whole buffer

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.head:
            n = min(len(buffer), len(self.head))
            buffer[:n] = self.head[:n]
            self.head = self.head[n:]
            return n
        data = self.more(len(buffer))
        buffer[:len(data)] = data
        return len(data)


def read_xml(stream: IO[bytes], record: str, name: str, batch_size: int,
             max_depth: int = xmlsafe.DEFAULT_MAX_DEPTH) -> Iterator[pa.RecordBatch]:
    """Elements named *record* anywhere in the document, each a record (attributes and children as
    fields); parsed incrementally with DTDs refused. A record nested deeper than *max_depth* levels (from
    the root element) goes to quarantine unread: reading it would take time growing with the cube of its
    depth (:mod:`hub.runtime.xmlsafe`)."""
    depth = xmlsafe.DepthLimit(max_depth)
    bad: list[tuple[int | None, str, str]] = []
    rows = _Rows()
    lines: list[int] = []
    known: list[Any] = [None]
    source: Any
    if isinstance(stream, io.BufferedReader) and isinstance(getattr(stream.raw, "name", None), str) and \
            Path(stream.raw.name).is_file():  # a local file is read by libxml2 itself, no Python read() per chunk
        xmlsafe.check_prolog(Path(stream.raw.name), name)
        source = stream.raw.name
    else:
        # the whole head, not what a peek has buffered: a stream that follows a download (or a pipe) may hold a
        # few bytes at first, and a head cut after "<" would let a DOCTYPE pass for the first element
        head = stream.read(xmlsafe.PROLOG_LIMIT)
        xmlsafe.check_prolog(head, name)
        source = io.BufferedReader(_Chain(head, stream), xmlsafe.PROLOG_LIMIT)
    try:
        for _, el in etree.iterparse(source, events=("end",), tag=f"{{*}}{record}", **xmlsafe.iterparse_options()):
            row = _flat_record(el, depth, known)
            if row is not None:
                rows.add(row, True)
                lines.append(el.sourceline or 0)
            elif (deep := depth.too_deep(el)) is not None:
                raw = etree.tostring(el, encoding="unicode", with_tail=False)[:2000]
                bad.append((el.sourceline, raw, depth.message(f"{name}: record", deep, "xml.max_depth")))
            else:
                value = _element_value(el)
                row = dict(el.attrib) if el.attrib else {}
                if isinstance(value, dict):
                    row.update(value)
                elif value is not None:
                    row["value"] = value
                rows.add(row, False)
                lines.append(el.sourceline or 0)
            el.clear()
            while el.getprevious() is not None:
                del el.getparent()[0]
            if rows.n >= batch_size:
                yield with_lines(rows.batch(), lines)
                rows, lines = _Rows(), []
    except etree.XMLSyntaxError as exc:
        raise AdapterError(f"{name}: not well-formed XML: {exc}") from None
    if rows.n:
        yield with_lines(rows.batch(), lines)
    if bad:
        yield errors_batch(bad)
