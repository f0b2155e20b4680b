"""Large XML drops parsed by a worker process of their own (hub/runtime/xmlprocess.py): the same batches and the
same errors as the reader in this process, the download's error rather than a truncated parse, no worker left
behind when the reader stops early, and a whole load through it equal to one parsed in-process."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.sftp import SftpSource
from hub.errors import AdapterError, XMLSecurityError
from hub.files import ingest_file
from hub.runtime import xmlprocess, xmlrecords
from tests.sftp_servers import Drop
from tests.test_files_jsonl import XML_RECORDS
from tests.test_files_stream import put, spec, state, xml


def document(repeat: int = 1) -> bytes:
    return ("<?xml version='1.0'?>\n<payments>\n" + "\n".join(XML_RECORDS * repeat) + "\n</payments>\n").encode()


def workers() -> list[int]:
    """This process's children that are XML workers."""
    out = []
    for children in Path("/proc/self/task").glob("*/children"):
        for pid in children.read_text().split():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"hub.runtime.xmlprocess" in cmd:
                out.append(int(pid))
    return out


@pytest.mark.parametrize("batch_size", [1, 4, 1000])
def test_the_worker_gives_the_readers_batches(batch_size: int) -> None:
    data = document(3)
    want = list(xmlrecords.read_xml(io.BytesIO(data), "payment", "d.xml", batch_size, max_depth=4))
    got = list(xmlprocess.read_xml(io.BytesIO(data), "payment", "d.xml", batch_size, max_depth=4))
    assert len(got) == len(want) > 1
    assert all(g.equals(w) for g, w in zip(got, want, strict=True))
    assert got[-1].column("_hub_error")[0].as_py().startswith("d.xml: record: element <c> at line")


@pytest.mark.parametrize(("data", "error", "message"), [
    (b"<?xml version='1.0'?>\n<payments><payment><id>1</id></payment><payment>", AdapterError,
     "d.xml: not well-formed XML: Premature end of data"),
    (b"<?xml version='1.0'?>\n<!DOCTYPE p [<!ENTITY a 'b'>]><payments/>", XMLSecurityError,
     "d.xml: the document has a DTD"),
    (b"\n" * (1024 * 1024 + 10) + b"<payments/>", XMLSecurityError, "d.xml: more than 1048576 bytes before"),
])
def test_the_worker_raises_the_readers_errors(data: bytes, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message) as inside:
        list(xmlrecords.read_xml(io.BytesIO(data), "payment", "d.xml", 10))
    with pytest.raises(error, match=message) as apart:
        list(xmlprocess.read_xml(io.BytesIO(data), "payment", "d.xml", 10, 256))
    assert type(apart.value) is type(inside.value)
    assert not workers()


class Breaking(io.RawIOBase):
    """The first *good* bytes of *data*, then the error a failed download raises."""

    def __init__(self, data: bytes, good: int) -> None:
        self.data, self.good, self.pos = data, good, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.pos >= self.good:
            raise AdapterError("sftp: the download gave up after 2 attempts")
        n = min(len(buffer), self.good - self.pos)
        buffer[:n] = self.data[self.pos:self.pos + n]
        self.pos += n
        return n


def test_a_stream_that_fails_raises_its_error_not_the_parsers() -> None:
    data = xml(20_000)
    with pytest.raises(AdapterError, match="gave up after 2 attempts"):
        list(xmlprocess.read_xml(io.BufferedReader(Breaking(data, len(data) // 2)), "payment", "p.xml", 1000, 256))
    assert not workers()


def test_a_reader_stopped_early_leaves_no_worker() -> None:
    batches: Iterator[Any] = xmlprocess.read_xml(io.BytesIO(xml(50_000)), "payment", "p.xml", 100, 256)
    assert next(batches).num_rows == 100
    assert len(workers()) == 1
    batches.close()  # type: ignore[attr-defined]
    deadline = time.monotonic() + 10
    while workers() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not workers()


def test_a_load_through_the_worker_equals_one_parsed_here(drop: Drop, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Read while it downloads, through the worker (process_from: 0), and from the complete copy in this process."""
    content = xml(30_000)
    folder = f"xw-{tmp_path.name}"
    put(drop, f"{folder}/p.xml", content)
    got: dict[str, Any] = {}
    seen: list[int] = []
    reader = xmlprocess.read_xml

    def counted(*a: Any, **k: Any) -> Any:
        seen.append(os.getpid())
        yield from reader(*a, **k)

    for apart in (True, False):
        tmp = tmp_path / str(apart)
        tmp.mkdir()
        pipeline = spec(drop.system(concurrency=4, block_size=16384), drop.remote(folder), tmp, "xml",
                        format={"xml": {"records": "payment", "process_from": 0 if apart else "1TiB"}})
        with monkeypatch.context() as m:
            if apart:
                m.setattr(xmlprocess, "read_xml", counted)
            else:
                m.setattr(SftpSource, "streams", lambda self, remote: False)
            out = ingest_file(pipeline, "payments", "p.xml", run_id="r1")
        assert out.status == "loaded" and out.rejected == 310
        got[str(apart)] = (state(tmp), out.details["rows_read"])
    assert seen, "the worker read the file"
    assert got["True"] == got["False"]
    assert not workers()


class Trickle(io.RawIOBase):
    """*data* a few bytes per read, as a download that has only just begun or a pipe may give it."""

    def __init__(self, data: bytes, step: int = 1) -> None:
        self.data, self.step, self.pos = data, step, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        chunk = self.data[self.pos:self.pos + min(self.step, len(buffer))]
        buffer[:len(chunk)] = chunk
        self.pos += len(chunk)
        return len(chunk)


@pytest.mark.parametrize("apart", [False, True])
def test_a_doctype_is_refused_however_few_bytes_the_first_read_gives(apart: bool) -> None:
    """The prolog check looked at what a peek had buffered: one byte, "<", passed for the first element."""
    data = b"<!DOCTYPE p [<!ENTITY a 'b'>]><payments><payment><id>&a;</id></payment></payments>"
    reader = xmlprocess.read_xml if apart else xmlrecords.read_xml
    with pytest.raises(XMLSecurityError, match="the document has a DTD"):
        list(reader(io.BufferedReader(Trickle(data)), "payment", "d.xml", 10, 256))
    good = xml(3_000)
    batches = list(reader(io.BufferedReader(Trickle(good, 7)), "payment", "p.xml", 1000, 256))
    assert sum(b.num_rows for b in batches) == 3_000
