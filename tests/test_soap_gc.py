"""The SOAP reader collects the young generation in larger steps while it reads, and puts CPython's
thresholds back afterwards, also when a read fails or readers overlap (adapters.soap._records)."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.soap._records import READ_GC_THRESHOLD, Columns, ResponseReader, _fewer_collections
from adapters.soap._schema import Members, Space
from hub.errors import ResponseFormatError


@pytest.fixture(autouse=True)
def _default_thresholds() -> Iterator[None]:
    saved = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*saved)


def test_thresholds_raised_while_reading_and_restored_by_the_last_reader() -> None:
    with _fewer_collections():
        assert gc.get_threshold() == (READ_GC_THRESHOLD, 10, 10)
        with _fewer_collections():  # a second reader overlapping the first
            assert gc.get_threshold() == (READ_GC_THRESHOLD, 10, 10)
        assert gc.get_threshold() == (READ_GC_THRESHOLD, 10, 10), "the first reader is still reading"
    assert gc.get_threshold() == (700, 10, 10)


def test_readers_in_threads_leave_the_thresholds_as_they_found_them() -> None:
    started, release = threading.Barrier(5), threading.Event()

    def read() -> None:
        with _fewer_collections():
            started.wait()
            release.wait(5)

    threads = [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    started.wait()
    assert gc.get_threshold()[0] == READ_GC_THRESHOLD
    release.set()
    for t in threads:
        t.join()
    assert gc.get_threshold() == (700, 10, 10)


def test_a_failing_read_restores_the_thresholds(tmp_path: Path) -> None:
    body = tmp_path / "response.xml"
    body.write_text("<?xml version='1.0'?><NotAnEnvelope/>")
    reader = ResponseReader(operation="GetOrders", url="http://erp.test/", chain=[("{urn:x}R", set())],
                            record_tag="{urn:x}Order", space=Space(Members()), columns=Columns(set()),
                            token_tag=None, batch_size=10)
    with pytest.raises(ResponseFormatError, match="not a SOAP envelope"):
        list(reader.read(body))
    assert gc.get_threshold() == (700, 10, 10)


def test_a_higher_threshold_is_left_alone() -> None:
    higher = 2 * READ_GC_THRESHOLD
    gc.set_threshold(higher, 10, 10)
    with _fewer_collections():
        assert gc.get_threshold()[0] == higher
    assert gc.get_threshold() == (higher, 10, 10)
