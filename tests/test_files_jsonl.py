"""JSON-lines drops read by pyarrow's JSON reader in blocks (adapters/sftp/_formats.py) against the line-by-line
reader: the same batches (types, values, line numbers, marked and unreadable lines), file by file, whatever mix of
good and odd lines a block holds; and end to end on a real SFTP drop, the same rows, quarantine and ledger."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml

from adapters.sftp import _formats
from adapters.sftp._formats import ReadNotes, read_jsonl
from hub.files import LEDGER, ingest_file
from hub.runtime import xmlrecords
from hub.spec import loads
from hub.warehouse import DuckDBWarehouse
from tests.sftp_servers import Drop

OLD = time.time() - 3600

GOOD = [
    '{"id": 1, "booked_on": "2024-01-05", "amount": 12.5, "channel": "sepa", "note": "plain"}',
    '{"id": 2, "booked_on": "2024-01-06", "amount": 3, "channel": "card", "note": "caf\\u00e9 (x)"}',
    '{"id":3,"booked_on":"2024-01-07","amount":-1.25,"channel":"wire","note":"Bäcker"}',
    '{"note": "keys in another order", "channel": "card", "amount": 1.0, "booked_on": "2024-01-08", "id": 4}',
]
#: lines the two readers must agree on, each odd in its own way (comment: what makes it odd)
ODD = [
    '{"id": 5, "booked_on": "2024-01-09", "amount": 1, "channel": "sepa", "extra": true}',  # a new key
    '{"id": 6, "booked_on": null, "amount": null, "channel": null, "note": null}',  # nulls
    '{"id": 7, "booked_on": "not a date", "amount": "12.50", "channel": "card"}',  # text where numbers were
    '{"id": 8, "amount": 1, "amount": 2}',  # a repeated key: marked
    '{"id": 9, "nested": {"a": {"b": 1}}, "list": [1, 2]}',  # nesting and arrays
    '{"id": 10, "amount": NaN}',  # pyarrow reads NaN, orjson does not
    '{"id": 11, "amount": Infinity}',
    '{"id": 12, "amount": 9223372036854775808}',  # beyond int64
    '{"id": 13, "amount": 99999999999999999999}',
    '{"id": 14, "amount": -0}',  # an int 0 for orjson
    '{"id": 15, "amount": 9007199254740993}',  # not exact as a double
    'not json at all',
    '{"id": 16,}',  # a trailing comma
    '{"id": 17}{"id": 18}',  # two objects on a line
    '',  # an empty line
    '   ',  # white space only
    '[1, 2]',  # not an object
    '42',
    '{}',
    '{"id": 19, "note": "a\ttab"}',  # a raw tab inside a string: invalid JSON
    '{"id":\t20}',  # a tab between tokens: valid
    '{"id": 21, "note": "\\ud800"}',  # a lone surrogate
    '{"_hub_line": 5, "id": 22}',  # a reserved name
    '{"id": 23, "booked_on": 20240105}',  # a number where dates were text
    '{"id": 24, "flag": true}', '{"id": 25, "flag": 1}',  # booleans and numbers in one column
    '\ufeff{"id": 26}',  # a byte order mark
    '{"id": 27, "note": "{braces} and [brackets]"}',  # valid, but the screen cannot tell
]


def old(data: bytes, batch_size: int) -> list[pa.RecordBatch]:
    """The line-by-line reader (a stream that cannot seek never goes to pyarrow)."""

    class Unseekable(io.BytesIO):
        def seekable(self) -> bool:
            return False

    return list(read_jsonl(Unseekable(data), "utf-8", "d.jsonl", batch_size))


def new(data: bytes, batch_size: int) -> tuple[list[pa.RecordBatch], int]:
    notes = ReadNotes()
    return list(read_jsonl(io.BytesIO(data), "utf-8", "d.jsonl", batch_size, notes)), notes.pyarrow_records


def same(data: bytes, batch_size: int) -> int:
    """Assert both readers give equal batches; the records pyarrow read."""
    want = old(data, batch_size)
    got, fast = new(data, batch_size)
    assert [b.schema for b in got] == [b.schema for b in want]
    assert [b.to_pylist() for b in got] == [b.to_pylist() for b in want]
    assert all(g.equals(w) for g, w in zip(got, want, strict=True))
    return fast


@pytest.mark.parametrize("batch_size", [1, 2, 3, 4, 64])
def test_good_lines_are_read_by_pyarrow_with_the_line_readers_batches(batch_size: int) -> None:
    lines = GOOD * 5
    fast = same(("\n".join(lines) + "\n").encode(), batch_size)
    assert fast == len(lines)
    assert same(("\r\n".join(lines)).encode(), batch_size) == len(lines)  # CRLF, no newline at the end
    batches, _ = new(("\n".join(lines) + "\n").encode(), batch_size)
    first = batches[0]
    assert first.schema.names == ["id", "booked_on", "amount", "channel", "note", "_hub_line"]
    assert first.schema.field("booked_on").type == pa.string()  # not pyarrow's timestamp
    assert first.column("_hub_line").to_pylist()[:2] == [1, 2][:batch_size]


@pytest.mark.parametrize("odd", ODD)
@pytest.mark.parametrize("at", [0, 5, 9])
@pytest.mark.parametrize("batch_size", [2, 3, 64])
def test_each_odd_line_anywhere_gives_the_line_readers_batches(odd: str, at: int, batch_size: int) -> None:
    lines = GOOD * 2 + GOOD[:2]
    lines.insert(at, odd)
    data = ("\n".join(lines) + "\n").encode()
    fast = same(data, batch_size)
    if batch_size == 2 and at == 9:
        assert fast >= 8, "the blocks before the odd line are pyarrow's"


def test_all_odd_lines_together_and_invalid_bytes() -> None:
    data = ("\n".join(GOOD + ODD + GOOD) + "\n").encode() + b'{"id": 30, "note": "B\xe4cker"}\n' + \
        ("\n".join(GOOD) + "\n\r").encode() + b'{"id": 31}\r{"id": 32}\n'
    for batch_size in (1, 2, 3, 5, 7, 1000):
        same(data, batch_size)
    batches, _ = new(data, 1000)
    unreadable = batches[-1].to_pylist()
    assert [r["_hub_line"] for r in unreadable] == [10, 11, 16, 17, 18, 24, 26, 31]
    rows = [r for b in batches[:-1] for r in b.to_pylist()]
    assert [r["_hub_line"] for r in rows[-3:]] == [41, 43, 44] and rows[-7]["_hub_line"] == 37
    assert rows[-7]["note"] == "B\ufffdcker"


def test_a_field_null_in_a_block_after_pyarrow_read_it_as_timestamps() -> None:
    lines = ['{"id": 1, "day": "2024-01-05"}', '{"id": 2, "day": "2024-01-06"}',
             '{"id": 3, "day": null}', '{"id": 4, "day": null}',  # present, null: a null column
             '{"id": 5}', '{"id": 6}',  # absent: no column
             '{"id": 7}', '{"id": 8, "note": "day"}',  # absent, its name in a value
             '{"id": 9, "day": 5}', '{"id": 10, "day": "x"}']  # a number now
    data = ("\n".join(lines) + "\n").encode()
    assert same(data, 2) >= 6
    batches, _ = new(data, 2)
    assert [b.schema.names for b in batches[:3]] == [["id", "day", "_hub_line"], ["id", "day", "_hub_line"],
                                                     ["id", "_hub_line"]]
    assert batches[1].schema.field("day").type == pa.null()


# --- end to end -------------------------------------------------------------------------------------------

def put(drop: Drop, rel: str, content: bytes) -> None:
    path = drop.local(rel)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    os.utime(path, (OLD, OLD))


def state(tmp: Path) -> dict[str, Any]:
    wh = DuckDBWarehouse(f"duckdb:///{tmp / 'wh.duckdb'}")
    q = wh.query
    return {
        "rows": q("SELECT * EXCLUDE (_hub_loaded_at, _hub_run_id) FROM payments ORDER BY id").to_pylist(),
        "types": q("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'payments' "
                   "ORDER BY ordinal_position").to_pylist(),
        "quarantine": q("SELECT * EXCLUDE (_hub_loaded_at, _hub_run_id) FROM payments__quarantine "
                        "ORDER BY row_number, reason").to_pylist(),
        "ledger": q(f"SELECT source, file, status, rows FROM {LEDGER}").to_pylist(),
    }


def run(drop: Drop, tmp: Path, content: bytes, *, lines: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    folder = f"{tmp.name}-{'lines' if lines else 'pyarrow'}"
    put(drop, f"{folder}/p.jsonl", content)
    tmp = tmp / folder
    tmp.mkdir()
    doc = {
        "pipeline": "files", "warehouse": f"duckdb:///{tmp / 'wh.duckdb'}",
        "systems": {"bank": {"sftp": drop.system()}},
        "sources": {"payments": {
            "system": "bank", "files": {"path": drop.remote(folder), "glob": "*.jsonl"}, "format": {"jsonl": {}},
            "columns": {"id": {"type": "int64"}, "booked_on": {"type": "date"}, "amount": {"type": "decimal(12,2)"},
                        "channel": "channel", "note": "note"},
            "primary_key": ["id"],
            "rules": {"amount": {"min": -1000}, "channel": {"in": ["sepa", "card", "wire"]}}}},
    }
    pipeline = loads(yaml.safe_dump(doc), tmp / "files.yaml")
    reader = _formats.read_jsonl
    with monkeypatch.context() as m:
        m.setattr(_formats, "read_jsonl", lambda s, e, n, b, notes=None: reader(s, e, n, 3, notes))  # small blocks
        if lines:
            m.setattr(_formats, "_jsonl_block", lambda *a: None)
        out = ingest_file(pipeline, "payments", "p.jsonl", run_id="r1")
    return out, state(tmp)


def test_ingest_matches_the_line_reader(drop: Drop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    body = [*GOOD, '{"id": 1, "booked_on": "2024-01-05", "amount": 1, "channel": "card"}',  # repeats id 1
                   '{"id": 40, "booked_on": "2024-02-30", "amount": 1, "channel": "card"}',  # no such day
                   '{"id": 41, "booked_on": "2024-01-05", "amount": -2000, "channel": "card"}',  # below min
                   '{"id": 42, "booked_on": "2024-01-05", "amount": 1, "channel": "cash"}',  # not in
                   '{"id": 43, "booked_on": "2024-01-05", "amount": 12.345, "channel": "card"}', *ODD, GOOD[0]]
    content = ("\n".join(body) + "\n").encode()
    fast, got = run(drop, tmp_path, content, lines=False, monkeypatch=monkeypatch)
    slow, want = run(drop, tmp_path, content, lines=True, monkeypatch=monkeypatch)
    assert fast.details.get("reader") == "pyarrow" and "reader" not in slow.details
    assert got == want
    assert (fast.rejected, fast.details["rows_read"]) == (slow.rejected, slow.details["rows_read"])
    assert [r["id"] for r in got["rows"]][:4] == [1, 2, 3, 4]
    reasons = {q["row_number"]: q["reason"] for q in got["quarantine"]}
    assert reasons[5] == "rules.primary_key.unique: primary key (id) 1 was already seen in this load"
    assert reasons[16].startswith("p.jsonl:16: not valid JSON")


# --- XML: flat records read by one dict comprehension -----------------------------------------------------

XML_RECORDS = [
    "<payment><id>1</id><amount>12.50</amount><note>plain</note></payment>",
    "<payment><id>2</id><amount/><note></note></payment>",  # empty elements
    '<payment kind="x" id="attr"><id>3</id><amount>1</amount></payment>',  # an attribute and a child share a name
    "<payment><id>4</id><note>a</note><note>b</note></payment>",  # repeated: a list
    "<payment><id>5</id><party><name>n</name></party></payment>",  # nested: a struct
    "<payment><id>6</id><!-- a comment --><note>c</note></payment>",
    "<payment><id>7</id><note><!-- inside -->x</note></payment>",
    '<payment xmlns:p="urn:p"><id>8</id><p:note>ns</p:note></payment>',  # a namespace: local names
    '<payment xmlns:a="urn:a" xmlns:b="urn:b"><a:x>1</a:x><b:x>2</b:x></payment>',  # local names repeat
    "<payment>just text</payment>",
    "<payment/>",
    "<payment><id>9</id><note><![CDATA[<cdata>]]></note>tail text</payment>",
    "<payment><id>10</id><?pi data?><note>pi</note></payment>",
    "<payment><a><b><c><d><e>deep</e></d></c></b></a></payment>",  # beyond max_depth 4
    "<wrapper><payment><id>11</id></payment></wrapper>",  # a level deeper
]


def xml_batches(data: bytes, batch_size: int, monkeypatch: pytest.MonkeyPatch, *,
                generic: bool) -> list[pa.RecordBatch]:
    with monkeypatch.context() as m:
        if generic:
            m.setattr(xmlrecords, "_flat_record", lambda el, depth, known: None)
        return list(xmlrecords.read_xml(io.BytesIO(data), "payment", "d.xml", batch_size, max_depth=4))


@pytest.mark.parametrize(("batch_size", "chunk"), [(1, 8192), (3, 8192), (100, 8192), (100, 2), (7, 3)])
def test_xml_flat_records_give_the_generic_walks_batches(batch_size: int, chunk: int,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Also when flat records are packed into Arrow every *chunk* records and a record that is not flat turns the
    packed ones back into dicts (hub.runtime.xmlrecords._Rows)."""
    monkeypatch.setattr(xmlrecords, "CHUNK", chunk)
    data = ("<?xml version='1.0'?>\n<payments>\n" + "\n".join(XML_RECORDS + XML_RECORDS[:3]) +
            "\n</payments>\n").encode()
    want = xml_batches(data, batch_size, monkeypatch, generic=True)
    calls: list[bool] = []
    flat = xmlrecords._flat_record

    def counted(el: Any, depth: Any, known: Any) -> Any:
        row = flat(el, depth, known)
        calls.append(row is not None)
        return row

    monkeypatch.setattr(xmlrecords, "_flat_record", counted)
    got = list(xmlrecords.read_xml(io.BytesIO(data), "payment", "d.xml", batch_size, max_depth=4))
    assert [b.to_pylist() for b in got] == [b.to_pylist() for b in want]
    assert all(g.equals(w) for g, w in zip(got, want, strict=True))
    assert sum(calls) == 8 and len(calls) == len(XML_RECORDS) + 3  # 1, 2, 3 (twice each), 9 and 11 are flat
    rows = [r for b in got for r in b.to_pylist()]
    assert rows[2]["id"] == "3" and rows[2]["kind"] == "x"
    assert rows[-1]["_hub_error"].startswith("d.xml: record: element <c> at line 16")
