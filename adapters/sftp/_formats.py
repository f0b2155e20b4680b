"""Reading a downloaded file into Arrow batches, in bounded memory, whatever its format.

Every reader yields batches of the file's fields as text (or as stored, for Parquet), plus two reserved
columns the hub understands: ``_hub_line`` (the record's line in the file) and, for records that could
not be read at all, ``_hub_error`` (why) and ``_hub_raw`` (the raw text). The hub's Mapper turns the
marked records into quarantine rows and casts the rest to the types the spec declares, so a bad row
never stops the file and never disappears.
"""

from __future__ import annotations

import codecs
import functools
import gzip
import io
import re
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq
import yaml

from adapters.sftp.config import CsvFormat, FixedWidthField, FixedWidthFormat, FormatConfig
from hub.errors import AdapterError
from hub.runtime import jsonsafe, xmlprocess
from hub.runtime.records import ERROR, LINE, RAW, errors_batch, records_to_batch, with_lines
from hub.runtime.xmlrecords import read_xml

BLOCK = 1 << 20


@dataclass
class ReadNotes:
    """What a reader noticed that is not an error but should not pass unnoticed: the load reports it in its
    metadata and log (``hub/encoding_warnings``)."""

    encoding_warnings: list[str] = field(default_factory=list)
    mojibake_lines: int = 0  # lines of files declared in a legacy encoding that look like UTF-8
    pyarrow_records: int = 0  # JSON lines read by pyarrow's reader (the rest line by line)


# --- opening ---------------------------------------------------------------------------------------------

#: Below this many expanded bytes the ratio is not enforced: a small file that compresses well is no threat.
RATIO_FLOOR = 16 << 20

#: Magic numbers of archives and compressed streams, which are not expanded inside an archive.
_NESTED = {b"PK\x03\x04": "zip", b"\x1f\x8b": "gzip", b"\xfd7zXZ\x00": "xz",
           b"7z\xbc\xaf\x27\x1c": "7z", b"Rar!\x1a\x07": "rar", b"\x28\xb5\x2f\xfd": "zstd"}


class _Budget:
    """How many bytes one compressed file may expand to: at most ``max_uncompressed_bytes`` in all, and at most
    ``max_ratio`` times the compressed file's size once past :data:`RATIO_FLOOR`. One budget covers every member
    of an archive (entries of a zip may share their data, so a per-member check would not bound the total)."""

    def __init__(self, name: str, fmt: FormatConfig, compressed: int) -> None:
        self.name, self.compressed, self.used = name, compressed, 0
        self.max_bytes, self.max_ratio = int(fmt.max_uncompressed_bytes), fmt.max_ratio
        self.limit = min(self.max_bytes, max(int(self.max_ratio * compressed), RATIO_FLOOR))

    def check(self, total: int, member: str, *, declared: bool = False) -> None:
        """Refuse when *total* expanded bytes (declared by the archive, or read so far) exceed the budget."""
        if total <= self.limit:
            return
        how = "declares" if declared else "expands to"
        if total > self.max_bytes:
            why = f"more than max_uncompressed_bytes={self.max_bytes}"
        else:
            why = (f"more than max_ratio={self.max_ratio:g} times its {self.compressed} compressed bytes "
                   f"({self.limit} bytes)")
        where = self.name if member == self.name else f"{self.name} (at member {member})"
        raise AdapterError(f"{where}: {how} {why}; refused as a likely decompression bomb (raise "
                           "format.max_uncompressed_bytes / format.max_ratio if the file is genuine)")

    def take(self, n: int, member: str) -> None:
        self.used += n
        self.check(self.used, member)


class _Limited(io.RawIOBase):
    """A decompressing stream that counts what it hands out and stops at the budget, so a bomb costs at most
    the budget in time (and a block in memory) before it fails."""

    def __init__(self, stream: IO[bytes] | gzip.GzipFile, budget: _Budget, member: str) -> None:
        self.stream, self.budget, self.member = stream, budget, member

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self.stream.readinto(buffer)  # type: ignore[union-attr]
        self.budget.take(n or 0, self.member)
        return n or 0


def _limited(stream: IO[bytes] | gzip.GzipFile, budget: _Budget, member: str) -> IO[bytes]:
    """*stream* within *budget*; refuses an archive inside the archive (it would be read as data, or be a
    bomb's next layer)."""
    out = io.BufferedReader(_Limited(stream, budget, member), BLOCK)
    head = out.peek(8)
    kind = next((k for magic, k in _NESTED.items() if head.startswith(magic)), None)
    if kind is not None:
        raise AdapterError(f"{member}: is itself a {kind} archive; nested archives are not expanded (unpack it, "
                           "or have the partner drop the inner file)")
    return out


def compression(fmt: FormatConfig, name: str) -> str:
    """How the file *name* is compressed: ``none``, ``gzip`` or ``zip`` (``auto`` goes by the name's ending)."""
    if fmt.compression != "auto":
        return fmt.compression
    return "gzip" if name.endswith(".gz") else "zip" if name.endswith(".zip") else "none"


def members(path: Path, fmt: FormatConfig, name: str | None = None,
            stream: IO[bytes] | None = None) -> Iterator[tuple[str, IO[bytes]]]:
    """The readable streams in a file: itself, its gzip content, or every file in a zip archive, each with
    the name messages use (*name*: the file's name on the server, when *path* is a local copy). Decompressed
    content is limited by ``format.max_uncompressed_bytes`` and ``format.max_ratio`` (:class:`_Budget`).
    *stream*: the file opened already (uncompressed only; a download still in progress)."""
    name = name or path.name
    kind = compression(fmt, name)
    if kind == "none":
        if stream is not None:
            yield name, stream
            return
        with path.open("rb") as plain:
            yield name, plain
        return
    if stream is not None:
        raise ValueError(f"{name}: a {kind} file is read from its complete copy, not from a stream")
    budget = _Budget(name, fmt, path.stat().st_size)
    if kind == "gzip":
        with gzip.open(path, "rb") as packed:
            yield name, _limited(packed, budget, name)
        return
    with zipfile.ZipFile(path) as archive:
        infos = [info for info in archive.infolist() if not info.is_dir()]
        # declared sizes first (cheap, and a bomb usually admits it); never trusted: reading counts again
        budget.check(sum(info.file_size for info in infos), name, declared=True)
        for info in infos:
            member = f"{name}/{info.filename}"
            try:
                opened = archive.open(info)
            except (RuntimeError, NotImplementedError) as exc:  # encrypted, or a method zipfile lacks
                raise AdapterError(f"{member}: cannot decompress: {exc}") from None
            with opened as stream:
                yield member, _limited(stream, budget, member)


def read(path: Path, fmt: FormatConfig, *, name: str | None = None, base_dir: Path | None = None,
         batch_size: int = 65_536, notes: ReadNotes | None = None,
         stream: IO[bytes] | None = None, size: int | None = None) -> Iterator[pa.RecordBatch]:
    """Every record of the downloaded file *path* (called *name* in messages) as Arrow batches; warnings that
    do not stop the file go to *notes* (None: the encoding is not checked). *stream*: see :func:`members`;
    *size*: the file's size when *path* is still growing (XML from ``xml.process_from`` bytes is parsed by a
    worker process, :mod:`hub.runtime.xmlprocess`)."""
    apart = fmt.xml is not None and fmt.xml.process_from is not None and \
        (size if size is not None else path.stat().st_size) >= fmt.xml.process_from
    try:
        for member, opened in members(path, fmt, name, stream):
            if fmt.csv is not None:
                yield from read_csv(opened, fmt.csv, member, notes)
            elif fmt.fixed_width is not None:
                yield from read_fixed_width(opened, fmt.fixed_width, member, base_dir, notes)
            elif fmt.jsonl is not None:
                yield from read_jsonl(opened, fmt.jsonl.encoding, member, batch_size, notes)
            elif fmt.xml is not None and apart:
                yield from xmlprocess.read_xml(opened, fmt.xml.records, member, batch_size, fmt.xml.max_depth)
            elif fmt.xml is not None:
                yield from read_xml(opened, fmt.xml.records, member, batch_size, fmt.xml.max_depth)
            else:
                yield from read_parquet(opened, member, batch_size)
    except (zipfile.BadZipFile, gzip.BadGzipFile, EOFError, zlib.error) as exc:  # a damaged archive
        raise AdapterError(f"{name or path.name}: cannot decompress ({fmt.compression}): {exc}") from None


# --- encodings -------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=64)
def single_byte(encoding: str) -> bool:
    """Whether *encoding* maps every byte to one character (cp1252, latin-1, iso-8859-x, cp850, ...): text in
    it that also decodes as UTF-8 with multi-byte sequences is almost always UTF-8 declared wrongly."""
    try:
        if codecs.lookup(encoding).name in ("utf-8", "utf-8-sig"):
            return False
        return len(bytes(range(256)).decode(encoding, errors="replace")) == 256
    except (LookupError, ValueError, TypeError):
        return False


class _MojibakeSniffer(io.RawIOBase):
    """Passes a byte stream through unchanged while checking whether a file declared in a single-byte
    encoding is really UTF-8: every byte valid UTF-8 and some lines with multi-byte sequences (``ü`` read as
    cp1252 is ``Ã¼``). Cheap: ASCII blocks are skipped by ``bytes.isascii``; the first byte that is not valid
    UTF-8 (the normal case for a genuine legacy file) ends the checking; only blocks that are valid UTF-8 and
    not ASCII are searched line by line."""

    def __init__(self, raw: IO[bytes], encoding: str, name: str, notes: ReadNotes) -> None:
        self.raw, self.encoding, self.name, self.notes = raw, encoding, name, notes
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.checking, self.reported = True, False
        self.lines = 0  # lines with a multi-byte sequence
        self.newlines = 0  # newlines before the current block
        self.first: tuple[int, bytes] | None = None  # line and sequence of the first hit
        self.carry = b""  # a line not yet complete at the end of the last block

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self.raw.readinto(buffer)  # type: ignore[attr-defined]
        if self.checking:
            if n:
                self._scan(bytes(memoryview(buffer)[:n]), final=False)
            else:
                self._scan(b"", final=True)
        return n or 0

    def _scan(self, data: bytes, *, final: bool) -> None:
        try:
            self.decoder.decode(data, final)
        except UnicodeDecodeError:
            self.checking = False  # not UTF-8: the declared encoding is plausible
            return
        data = self.carry + data
        cut = len(data) if final else data.rfind(b"\n") + 1
        if not final and cut == 0 and len(data) < BLOCK:
            self.carry = data  # no complete line yet
            return
        cut = cut or len(data)
        block, self.carry = data[:cut], data[cut:]
        if not block.isascii():
            self._count(block)
        self.newlines += block.count(b"\n")
        if final:
            self._report()

    def _count(self, block: bytes) -> None:
        """Lines of *block* (whole lines, valid UTF-8) with a multi-byte sequence, i.e. a byte >= 0x80: located
        with numpy (a regex over every line cost as much as reading the CSV)."""
        data = np.frombuffer(block, dtype=np.uint8)
        high = np.flatnonzero(data >= 0x80)
        line_of = np.searchsorted(np.flatnonzero(data == 0x0A), high)  # sorted: count the changes
        self.lines += int(np.count_nonzero(np.diff(line_of))) + 1
        if self.first is None:
            start = int(high[0])  # the lead byte: every byte before it on its line is ASCII
            char = block[start:start + 4].decode("utf-8", errors="ignore")[:1]
            self.first = (self.newlines + int(line_of[0]) + 1, char.encode())

    def _report(self) -> None:
        self.checking = False
        if not self.lines or self.first is None or self.reported:
            return
        self.reported = True
        line, seq = self.first
        right, wrong = seq.decode("utf-8"), seq.decode(self.encoding, errors="replace")
        self.notes.mojibake_lines += self.lines
        self.notes.encoding_warnings.append(
            f"{self.name}: declared {self.encoding}, but every byte is valid UTF-8 and {self.lines} line(s) hold "
            f"multi-byte UTF-8 sequences (first at line {line}: {right!r} read as {wrong!r}); the file is very "
            f"likely UTF-8 (set encoding: utf-8)")


def _sniffed(stream: IO[bytes], encoding: str, name: str, notes: ReadNotes | None) -> IO[bytes]:
    """*stream*, checked for UTF-8 mis-declared as *encoding* when that is a single-byte encoding."""
    if notes is None or not single_byte(encoding):
        return stream
    return io.BufferedReader(_MojibakeSniffer(stream, encoding, name, notes), BLOCK)


# --- CSV -------------------------------------------------------------------------------------------------

class _EscapedUtf8(io.RawIOBase):
    """A UTF-8 byte stream with every invalid byte replaced by its ``\\xNN`` escape, and the lines where that
    happened noted (*invalid*, 1-based physical lines).

    pyarrow does not check UTF-8 input (it is its own encoding) and decodes the text of a malformed row strictly
    before the invalid-row handler sees it: a bad byte there raised inside pyarrow ("Exception ignored"), and the
    row was lost to a parse error. Escaped, the row's raw text reaches the quarantine; rows that parsed but held
    invalid bytes are marked there too (:func:`read_csv`), never loaded with the escapes as data."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw, self.invalid, self._line, self._tail, self._out = raw, set[int](), 1, b"", b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._out:
            chunk = self.raw.read(BLOCK)
            if not chunk and not self._tail:
                return 0
            self._out = self._escape(self._tail + chunk, final=not chunk)
        n = min(len(buffer), len(self._out))
        buffer[:n], self._out = self._out[:n], self._out[n:]
        return n

    def _escape(self, data: bytes, *, final: bool) -> bytes:
        out, pos = [], 0
        while True:
            try:
                data[pos:].decode("utf-8")
                out.append(data[pos:])
                break
            except UnicodeDecodeError as exc:
                start, end = pos + exc.start, pos + exc.end
                if end == len(data) and not final and exc.reason == "unexpected end of data":
                    out.append(data[pos:start])  # a character cut at the block's end: keep it for the next
                    self._tail = data[start:]
                    self._line += data.count(b"\n", 0, start)
                    return b"".join(out)
                self.invalid.add(self._line + data.count(b"\n", 0, start))
                out.append(data[pos:start] + "".join(f"\\x{b:02x}" for b in data[start:end]).encode())
                pos = end
        self._tail = b""
        self._line += data.count(b"\n")
        return b"".join(out)


def _utf8(encoding: str) -> bool:
    try:
        return codecs.lookup(encoding).name in ("utf-8", "utf-8-sig")
    except LookupError:
        return False


def read_csv(stream: IO[bytes], cfg: CsvFormat, name: str, notes: ReadNotes | None = None) -> Iterator[pa.RecordBatch]:
    """CSV as text columns. Rows with the wrong number of fields are marked, not fatal; so are rows with bytes
    that are not valid UTF-8 in a UTF-8 file (their raw text keeps them as ``\\xNN``). A file declared in a
    single-byte encoding that looks like UTF-8 is noted in *notes*."""
    bad: list[tuple[int | None, str, str]] = []
    escaped = _EscapedUtf8(stream) if _utf8(cfg.encoding) else None
    stream = io.BufferedReader(escaped, BLOCK) if escaped is not None else _sniffed(stream, cfg.encoding, name, notes)

    def invalid(row: Any) -> str:
        reason = f"{name}:{row.number}: expected {row.expected_columns} fields, found {row.actual_columns}"
        if escaped is not None and row.number in escaped.invalid:
            reason += f" (and bytes that are not valid {cfg.encoding}, kept as \\xNN)"
        bad.append((row.number, row.text, reason))
        return "skip"

    names = _csv_names(stream, cfg, name)
    read_options = pacsv.ReadOptions(
        encoding=cfg.encoding, skip_rows=cfg.skip_rows + (1 if cfg.header else 0), column_names=names,
        block_size=BLOCK, use_threads=False)
    parse_options = pacsv.ParseOptions(delimiter=cfg.delimiter, quote_char=cfg.quote_char,
                                       escape_char=cfg.escape_char or False, invalid_row_handler=invalid,
                                       newlines_in_values=True)
    convert_options = pacsv.ConvertOptions(column_types=dict.fromkeys(names, pa.string()),
                                           null_values=cfg.null_values, strings_can_be_null=True)
    first_line = cfg.skip_rows + (2 if cfg.header else 1)
    next_line = first_line
    seen_bad = 0  # rejected rows yielded
    skipped = 0  # rejected rows before next_line: pyarrow may have parsed (and rejected) rows of the next block
    try:
        reader = pacsv.open_csv(stream, read_options=read_options, parse_options=parse_options,
                                convert_options=convert_options)
        for batch in reader:
            if batch.num_rows:
                lines, next_line = _line_numbers(next_line, batch.num_rows, bad[skipped:])
                while skipped < len(bad) and (bad[skipped][0] or 0) < next_line:
                    skipped += 1
                yield _marked_invalid(batch.append_column(LINE, lines), escaped, cfg, name)
            if len(bad) > seen_bad:
                yield errors_batch(bad[seen_bad:])
                seen_bad = len(bad)
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise AdapterError(f"{name}: cannot read as CSV ({cfg.encoding}, delimiter {cfg.delimiter!r}): "
                           f"{exc}") from None
    if len(bad) > seen_bad:
        yield errors_batch(bad[seen_bad:])


def _line_numbers(first: int, rows: int, bad: list[tuple[int | None, str, str]]) -> tuple[pa.Array, int]:
    """The line numbers of a batch of *rows* rows starting at line *first*: consecutive, skipping the lines of
    the rejected rows in *bad*; and the line after the batch. Vectorized: a Python loop per row cost a
    quarter of the time pyarrow takes to parse the CSV."""
    skip = np.unique(np.array([b[0] for b in bad if b[0] is not None and b[0] >= first], dtype=np.int64))
    if not len(skip) or skip[0] >= first + rows:
        return pa.array(np.arange(first, first + rows, dtype=np.int64)), first + rows
    # enough candidates for every row plus every skipped line, minus the skipped ones
    candidates = np.arange(first, first + rows + len(skip), dtype=np.int64)
    kept = candidates[~np.isin(candidates, skip)][:rows]
    return pa.array(kept), int(kept[-1]) + 1 if rows else first


def _marked_invalid(batch: pa.RecordBatch, escaped: _EscapedUtf8 | None, cfg: CsvFormat,
                   name: str) -> pa.RecordBatch:
    """*batch* with its rows from lines that held invalid UTF-8 marked for the quarantine (raw: the fields as
    read, escapes included, joined by the delimiter)."""
    if escaped is None or not escaped.invalid:
        return batch
    lines = batch.column(LINE).to_pylist()
    hit = [line in escaped.invalid for line in lines]
    if not any(hit):
        return batch
    fields = [batch.column(n).to_pylist() for n in batch.schema.names if n != LINE]
    raw = [cfg.delimiter.join("" if v[i] is None else v[i] for v in fields) if h else None for i, h in enumerate(hit)]
    reasons = [f"{name}:{line}: bytes that are not valid {cfg.encoding} (kept as \\xNN in the raw text)" if h else None
               for line, h in zip(lines, hit, strict=True)]
    return batch.append_column(ERROR, pa.array(reasons, pa.string())).append_column(RAW, pa.array(raw, pa.string()))


def csv_columns(path: Path, cfg: CsvFormat, name: str) -> list[str]:
    """The column names of the uncompressed CSV file *path* (called *name* in messages), as :func:`read_csv` names
    them: for readers other than pyarrow's (the hub's DuckDB path, hub/files_csv.py) to agree with it."""
    with path.open("rb") as raw:  # 64 KiB: parsing a whole block for a header took 0.1 s
        return _csv_names(io.BufferedReader(raw, 1 << 16), cfg, name)


def _leading_lines(head: bytes, count: int, quote: str | bool) -> bytes:
    """The first *count* records of *head* (a quoted newline continues a record), or all of it: the header probe
    reads nothing else, so a bad data row (bytes that are not the declared encoding, a wrong field count) is
    never handed to pyarrow here — its invalid-row callback cannot even decode such a row."""
    q = quote.encode() if isinstance(quote, str) and quote else b""
    end, quoted = 0, 0
    for _ in range(count):
        while True:
            nl = head.find(b"\n", end)
            if nl < 0:
                return head
            if q:
                quoted += head.count(q, end, nl)
            end = nl + 1
            if quoted % 2 == 0:
                break
    return head[:end]


def _csv_names(stream: IO[bytes], cfg: CsvFormat, name: str) -> list[str]:
    """Column names: given, or the header line (read without consuming the stream)."""
    if cfg.columns and not cfg.header:
        return list(cfg.columns)
    if hasattr(stream, "peek"):
        head = stream.peek(BLOCK)  # empty: the end of the stream
    else:
        head = stream.read(BLOCK)
        stream.seek(0)
    try:
        sample = _leading_lines(head, cfg.skip_rows + 1, cfg.quote_char)
        probe = pacsv.open_csv(
            io.BytesIO(sample),
            read_options=pacsv.ReadOptions(encoding=cfg.encoding, skip_rows=cfg.skip_rows,
                                           autogenerate_column_names=not cfg.header, use_threads=False),
            parse_options=pacsv.ParseOptions(delimiter=cfg.delimiter, quote_char=cfg.quote_char,
                                             invalid_row_handler=lambda row: "skip"))
        found = list(probe.schema.names)
    except (pa.ArrowInvalid, StopIteration, UnicodeDecodeError) as exc:
        raise AdapterError(f"{name}: cannot read the CSV header ({cfg.encoding}): {exc}") from None
    if cfg.columns:
        if len(cfg.columns) != len(found):
            raise AdapterError(f"{name}: format.csv.columns names {len(cfg.columns)} columns, the header has "
                               f"{len(found)} ({', '.join(found)})")
        return list(cfg.columns)
    return [n.lstrip("\ufeff") for n in found]


# --- fixed width -----------------------------------------------------------------------------------------

def load_layout(cfg: FixedWidthFormat, base_dir: Path | None) -> list[FixedWidthField]:
    path = Path(cfg.layout)
    path = path if path.is_absolute() or base_dir is None else base_dir / path
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        return [FixedWidthField.model_validate(f) for f in doc["fields"]]
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise AdapterError(f"fixed-width layout {path}: expected `fields: [{{name, start, width}}, ...]`: "
                           f"{exc}") from None


def read_fixed_width(stream: IO[bytes], cfg: FixedWidthFormat, name: str, base_dir: Path | None,
                     notes: ReadNotes | None = None) -> Iterator[pa.RecordBatch]:
    """Each line sliced by the layout (vectorized); a line too short for the layout is marked."""
    fields = load_layout(cfg, base_dir)
    stream = _sniffed(stream, cfg.encoding, name, notes)
    need = max(f.start + f.width - 1 for f in fields)
    options = pacsv.ReadOptions(encoding=cfg.encoding, skip_rows=cfg.skip_rows, column_names=["line"],
                                block_size=BLOCK, use_threads=False)
    parse = pacsv.ParseOptions(delimiter="\x1f", quote_char=False, escape_char=False)  # unit separator: never in text
    convert = pacsv.ConvertOptions(column_types={"line": pa.string()}, strings_can_be_null=False, null_values=[])
    next_line = cfg.skip_rows + 1
    try:
        reader = pacsv.open_csv(stream, read_options=options, parse_options=parse, convert_options=convert)
    except pa.ArrowInvalid as exc:
        if "Empty CSV file" in str(exc):
            return  # an empty file has no records
        raise AdapterError(f"{name}: cannot read as fixed-width text ({cfg.encoding}): {exc}") from None
    except UnicodeDecodeError as exc:
        raise AdapterError(f"{name}: cannot read as fixed-width text ({cfg.encoding}): {exc}") from None
    yield from _fixed_width_batches(reader, fields, need, cfg, name, next_line)


def _fixed_width_batches(reader: Any, fields: list[FixedWidthField], need: int, cfg: FixedWidthFormat, name: str,
                         next_line: int) -> Iterator[pa.RecordBatch]:
    batches = iter(reader)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
            raise AdapterError(f"{name}: cannot read as fixed-width text ({cfg.encoding}): {exc}") from None
        lines = batch.column(0)
        yield fixed_width_batch(lines, fields, need, cfg, name, pa.array(range(next_line, next_line + batch.num_rows),
                                                                          pa.int64()))
        next_line += batch.num_rows


def fixed_width_batch(lines: pa.Array, fields: list[FixedWidthField], need: int, cfg: FixedWidthFormat, name: str,
                      numbers: pa.Array) -> pa.RecordBatch:
    """The fields of *lines* (text, one record each, at line *numbers*) cut by the layout: positions count
    characters, not bytes (ASCII lines are cut by bytes, which is the same and cheaper); a line shorter than
    *need* characters is marked."""
    columns = {}
    if pc.all(pc.string_is_ascii(lines)).as_py() is not False:
        # one byte a character: byte slices are the character slices, at a third of the cost (no UTF-8 walk)
        raw_type = pa.large_binary() if pa.types.is_large_string(lines.type) else pa.binary()
        data = lines.view(raw_type)
        short = pc.less(pc.binary_length(data), need)
        for f in fields:
            value = pc.binary_slice(data, f.start - 1, f.start - 1 + f.width).view(lines.type)
            columns[f.name] = pc.utf8_trim_whitespace(value) if cfg.strip else value
    else:
        short = pc.less(pc.utf8_length(lines), need)
        for f in fields:
            value = pc.utf8_slice_codeunits(lines, f.start - 1, f.start - 1 + f.width)
            columns[f.name] = pc.utf8_trim_whitespace(value) if cfg.strip else value
    out = pa.RecordBatch.from_pydict(columns).append_column(LINE, numbers)
    if pc.any(short).as_py():
        reasons = pc.if_else(short, pa.scalar(f"{name}: line shorter than the layout's {need} characters"),
                             pa.scalar(None, pa.string()))
        raw = pc.if_else(short, lines, pa.scalar(None, pa.string()))
        out = out.append_column(ERROR, reasons).append_column(RAW, raw)
    return out


# --- JSON lines, XML, Parquet -----------------------------------------------------------------------------

def read_jsonl(stream: IO[bytes], encoding: str, name: str, batch_size: int,
               notes: ReadNotes | None = None) -> Iterator[pa.RecordBatch]:
    """Every non-empty line of *stream* a record, in batches of *batch_size* records; lines that are not valid
    JSON (with line number, raw text and reason) at the end. A plain UTF-8 file is read by pyarrow's JSON reader
    in blocks of *batch_size* lines (:func:`_jsonl_block`), each block only when it yields exactly the batch the
    line-by-line reader would; any other block is read line by line, up to the end of its batch."""
    bad: list[tuple[int | None, str, str]] = []
    if codecs.lookup(encoding).name != "utf-8" or not stream.seekable():
        source = io.TextIOWrapper(_sniffed(stream, encoding, name, notes), encoding=encoding, errors="replace",
                                  newline="")
        yield from _jsonl_lines(source.readline, 1, name, batch_size, bad, stop=False)
    else:
        yield from _jsonl_blocks(stream, name, batch_size, bad, notes)
    if bad:
        yield errors_batch(bad)


def _jsonl_lines(readline: Any, number: int, name: str, batch_size: int, bad: list[tuple[int | None, str, str]],
                 *, stop: bool) -> Generator[pa.RecordBatch, None, tuple[int, bool]]:
    """The line-by-line reader, from line *number*: ``jsonsafe.loads`` per line, :func:`records_to_batch` per
    batch. With *stop*, returns after its first full batch: (the next line's number, whether the end was reached)."""
    records: list[Any] = []
    lines: list[int] = []
    while raw := readline():
        line = raw.strip()
        if line:
            try:
                records.append(jsonsafe.loads(line))
                lines.append(number)
            except orjson.JSONDecodeError as exc:
                bad.append((number, line[:2000], f"{name}:{number}: not valid JSON: {exc}"))
        number += 1
        if len(records) >= batch_size:
            yield with_lines(records_to_batch(records), lines)
            records, lines = [], []
            if stop:
                return number, False
    if records:
        yield with_lines(records_to_batch(records), lines)
    return number, True


#: Bytes read at a time while gathering a block of lines for pyarrow's JSON reader.
_JSONL_READ = 2 << 20
_TWO53 = float(1 << 53)


def _jsonl_blocks(stream: IO[bytes], name: str, batch_size: int, bad: list[tuple[int | None, str, str]],
                  notes: ReadNotes | None) -> Iterator[pa.RecordBatch]:
    """A seekable UTF-8 JSON-lines stream: blocks of *batch_size* lines parsed by pyarrow where that gives the
    line-by-line reader's batch exactly (:func:`_jsonl_block`), and read line by line (one batch) where not.
    Batches therefore start at the same records as the line-by-line reader's, which infers types per batch."""
    texts: list[str] = []  # fields pyarrow took for timestamps once: read as text from then on
    number, pos, eof = 1, stream.tell(), False
    # The bytes read ahead from pos live in one buffer, reused from block to block (parsed in place, the rest moved
    # to its front), with the offsets of their line ends. Joining or slicing bytes objects per block cost a fifth of
    # the parse: every new large object is fresh pages, which the kernel zeroes.
    area = bytearray(2 * _JSONL_READ)
    newline = np.empty(_JSONL_READ, bool)  # reused for the same reason
    size = 0
    ends = np.empty(0, np.int64)
    while True:
        while not eof and len(ends) < batch_size:
            if size + _JSONL_READ > len(area):
                area = area + bytes(len(area))  # only while a block is larger than any before
            with memoryview(area) as view:
                n = stream.readinto(view[size:size + _JSONL_READ])  # type: ignore[attr-defined]
            eof = not n
            if n:
                found = np.flatnonzero(np.equal(np.frombuffer(area, np.uint8, n, size), 0x0A, out=newline[:n]))
                found += size
                ends = np.concatenate([ends, found])
                size += n
        if not size:
            return
        cut = int(ends[batch_size - 1]) + 1 if len(ends) >= batch_size else size
        batch = _jsonl_block(area, cut, ends[:batch_size], number, texts)
        if batch is not None:
            if notes is not None:
                notes.pyarrow_records += batch.num_rows
            yield batch
            number, pos = number + batch.num_rows, pos + cut
            area[:size - cut] = area[cut:size]
            size -= cut
            ends = ends[batch_size:] - cut
            continue
        stream.seek(pos)
        text = _ByteLines(stream)
        number, eof = yield from _jsonl_lines(text.readline, number, name, batch_size, bad, stop=True)
        if eof:
            return
        pos = text.pos
        stream.seek(pos)
        size, ends = 0, np.empty(0, np.int64)


_EOL = re.compile(rb"\r\n?|\n")


class _ByteLines:
    """The lines of a binary UTF-8 stream from where it is, split where ``TextIOWrapper(newline="")`` splits them
    (LF, CRLF, a lone CR) and decoded with bad bytes replaced, as the line-by-line reader reads them; *pos* is the
    byte offset after the last line returned (a TextIOWrapper's ``tell`` is a cookie, not an offset)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream, self.pos, self.buf, self.at, self.eof = stream, stream.tell(), b"", 0, False

    def readline(self) -> str:
        while True:
            found = _EOL.search(self.buf, self.at)
            if found is not None and (found.end() < len(self.buf) or self.eof or found.group() != b"\r"):
                end = found.end()
            elif found is None and self.eof:
                end = len(self.buf)
            else:  # no line end yet, or a CR that an LF may follow
                chunk = self.stream.read(BLOCK)
                self.buf, self.at, self.eof = self.buf[self.at:] + chunk, 0, not chunk
                continue
            line, self.at = self.buf[self.at:end], end
            self.pos += len(line)
            return line.decode("utf-8", errors="replace")


def _jsonl_parse(block: memoryview, texts: list[str]) -> pa.Table:
    schema = pa.schema([(t, pa.string()) for t in texts]) if texts else None
    # one thread: the load keeps the other cores busy (DuckDB inserting, the download), and pyarrow's threads cost
    # more CPU in all and 30-40 MB of peak memory (their buffers) for no shorter load
    return pajson.read_json(pa.BufferReader(pa.py_buffer(block)), read_options=pajson.ReadOptions(use_threads=False),
                            parse_options=pajson.ParseOptions(explicit_schema=schema,
                                                              unexpected_field_behavior="infer"))


def _jsonl_block(buf: bytes | bytearray, cut: int, ends: np.ndarray, first: int,
                 texts: list[str]) -> pa.RecordBatch | None:
    """The batch of the block ``buf[:cut]`` (whole lines ending at *ends*, the first at line *first*) as
    :func:`_jsonl_lines` would build it, read by pyarrow; None when that cannot be guaranteed cheaply. The block is
    read in place (*buf* is the reader's buffer, reused for the next block: nothing returned refers to it).

    Screened before parsing, per line end (vectorized): every line starts with ``{`` and ends with ``}`` (LF or CRLF,
    no lone CR, which the line reader takes for a line end), so pyarrow's row count equals the line count only
    when every line is one object; valid UTF-8 (the line reader replaces bad bytes). pyarrow refuses repeated keys,
    bad escapes and surrogates, raw control characters in strings and syntax errors itself. After parsing: only the
    types ``pa.array`` infers for JSON scalars (null, bool, int64, double, string: nesting and arrays go line by
    line), no NaN or infinity (pyarrow reads ``NaN``/``Inf`` literals, orjson refuses them), no double of 2**53 or
    more (an integer orjson keeps exact, or a uint64), no negative zero (an integer ``-0`` is orjson's int 0), no
    ``_hub_`` field; strings pyarrow took for timestamps are read again as text (*texts*, remembered for the next
    blocks)."""
    data = np.frombuffer(buf, np.uint8, cut)
    ends_nl = bool(data[-1] == 0x0A)
    rows = len(ends) if ends_nl else len(ends) + 1
    if data[0] != 0x7B or data[-1 if not ends_nl else -2 - (data[-2] == 0x0D)] != 0x7D:
        return None
    inner = ends[:-1] if ends_nl else ends  # line ends followed by another line
    if not bool((data[inner + 1] == 0x7B).all()):
        return None
    crlf = buf.find(b"\r", 0, cut) >= 0
    if crlf:
        if buf.count(b"\r", 0, cut) != len(ends) or not bool((data[ends - 1] == 0x0D).all()):
            return None
        if not bool((data[ends - 2] == 0x7D).all()):
            return None
    elif not bool((data[ends - 1] == 0x7D).all()):
        return None
    with memoryview(buf)[:cut] as block:
        if int(data.max()) >= 0x80:
            try:
                codecs.utf_8_decode(block, "strict", True)
            except UnicodeDecodeError:
                return None  # read line by line: invalid bytes are replaced there
        explicit = list(texts)
        try:
            try:
                table = _jsonl_parse(block, explicit)
            except pa.ArrowInvalid:
                if not explicit:
                    raise
                explicit = []
                table = _jsonl_parse(block, explicit)
            stamps = [f.name for f in table.schema if pa.types.is_timestamp(f.type)]
            if stamps:
                texts.extend(s for s in stamps if s not in texts)
                explicit += [s for s in stamps if s not in explicit]
                table = _jsonl_parse(block, explicit)
        except pa.ArrowInvalid:
            return None
        del data
    if table.num_rows != rows or not table.num_columns:
        return None
    first_keys: list[str] = []
    if explicit:
        try:
            first_keys = list(orjson.loads(memoryview(buf)[:int(ends[0]) if len(ends) else cut]))
        except orjson.JSONDecodeError:
            return None
    columns: dict[str, pa.Array] = {}
    for field_ in table.schema:
        key, typ = field_.name, field_.type
        if key.startswith("_hub_") or typ not in _JSON_SCALARS:
            return None
        arr = table.column(key).combine_chunks()
        if key in explicit and arr.null_count == rows:  # pyarrow cannot tell an absent key from nulls
            if key in first_keys:
                arr = pa.nulls(rows)
            elif buf.find(orjson.dumps(key), 0, cut) >= 0:
                return None
            else:
                continue
        elif typ == pa.float64() and not _plain_doubles(arr):
            return None
        columns[key] = arr
    if not columns:
        return None
    # the order of first appearance: pyarrow puts explicit fields first
    leading = [k for k in first_keys if k in columns]
    order = leading + [k for k in columns if k not in leading]
    if any(k in explicit for k in order[len(leading):]):
        return None
    batch = pa.RecordBatch.from_arrays([columns[k] for k in order], names=order)
    del table, columns
    # the parse's buffers (per pyarrow thread) go back to the system: kept, they grew the load's peak with the file
    pa.default_memory_pool().release_unused()
    return batch.append_column(LINE, pa.array(np.arange(first, first + rows, dtype=np.int64)))


def _plain_doubles(arr: pa.Array) -> bool:
    """Whether a double column pyarrow read holds only what orjson gives alike: finite, below 2**53 in magnitude,
    and no negative zero."""
    values = arr.to_numpy(zero_copy_only=False)
    with np.errstate(invalid="ignore"):
        magnitude = np.abs(values)
        if not bool((magnitude < _TWO53).sum() == len(values) - arr.null_count):  # NaN, inf, nulls fail <
            return False
    return not bool(np.signbit(values[values == 0]).any())


_JSON_SCALARS = (pa.null(), pa.bool_(), pa.int64(), pa.float64(), pa.string())


def read_parquet(stream: IO[bytes], name: str, batch_size: int) -> Iterator[pa.RecordBatch]:
    """Parquet needs random access: content of an archive is first expanded (within its budget) to a
    temporary file."""
    if stream.seekable():
        yield from _parquet_batches(stream, name, batch_size)
        return
    with tempfile.TemporaryFile(prefix="hub-parquet-") as spool:
        shutil.copyfileobj(stream, spool, BLOCK)
        spool.seek(0)
        yield from _parquet_batches(spool, name, batch_size)


def _parquet_batches(stream: IO[bytes], name: str, batch_size: int) -> Iterator[pa.RecordBatch]:
    try:
        yield from pq.ParquetFile(stream).iter_batches(batch_size=batch_size)
    except (pa.ArrowInvalid, OSError) as exc:
        raise AdapterError(f"{name}: not a readable Parquet file: {exc}") from None
