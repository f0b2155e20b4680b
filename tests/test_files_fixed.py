"""Fixed-width drops on a real SFTP drop, read while they download (hub/files.py) against a read of the complete
copy: the same rows, types, quarantine (file, line, column, value, reason, raw text) and ledger, and what both give
checked too; positions in characters (UTF-8 multi-byte text before a field), the white space pyarrow trims; ASCII
lines cut by bytes as they are by characters; lines the reader refuses fail the file.

(Until issue 21's second round these files were read by DuckDB inside the load, hub/files_csv.py, and these tests
held that path to the Arrow path's results; the Arrow path, now the only one, is the reference they kept.)"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
import yaml

from adapters.sftp import SftpSource, fixed_width_batch
from adapters.sftp.config import FixedWidthField, FixedWidthFormat
from hub.errors import AdapterError
from hub.files import ingest_file
from hub.spec import loads
from tests.sftp_servers import Drop
from tests.test_files_csv import state

OLD = time.time() - 3600
#: (name, start, width): the note (free text, maybe multi-byte) before the typed fields
LAYOUT = [("id", 1, 5), ("note", 6, 14), ("booked_on", 20, 10), ("amount", 30, 10), ("channel", 40, 5),
          ("ok", 45, 5)]


def line(id_: str, note: str, day: str, amount: str, channel: str, ok: str) -> str:
    return "".join(v.ljust(w)[:w] for v, (_, _, w) in zip((id_, note, day, amount, channel, ok), LAYOUT, strict=True))


HEADER = "FIXED WIDTH EXPORT 2024-01-31"
BODY = [
    line("1", "plain", "2024-01-05", "12.50", "sepa", "true"),        # 2 good
    line("2", "bäcker müß", "2024-01-06", "12.5", "card", "yes"),     # 3 good: multi-byte text before the fields
    line("x3", "bad id", "2024-01-05", "1.00", "wire", "t"),          # 4 not an integer
    "5    too short",                                                 # 5 shorter than the layout
    line("5", "no such day", "2024-02-30", "1.00", "card", "no"),     # 6 not a date
    line("6", "short date", "2024-1-5", "1.00", "card", "no"),        # 7 DuckDB reads it, Arrow does not
    line("7", "too precise", "2024-01-05", "12.345", "card", "no"),   # 8 DuckDB would round it
    line("8", "not a bool", "2024-01-05", "1.00", "card", "maybe"),   # 9
    line("", "blank key", "2024-01-05", "1.00", "card", "no"),        # 10 '' is not an integer
    line("1", "repeats id 1", "2024-01-05", "1.00", "card", "no"),    # 11 duplicate key
    line("9", "below min", "2024-01-05", "-2000.00", "card", "no"),   # 12 rules.amount.min
    line("10", "not in", "2024-01-05", "1.00", "cash", "no"),         # 13 rules.channel.in
    line("11", "blank date", "", "1.00", "card", "no"),               # 14 '' is not a date
    "",                                                               # an empty line: skipped, not counted
    line("007", "leading zeros", "2024-01-05", "1.00", "card", "Y"),  # 15 good: 7
    line("12", "ABC", "2024-01-05", "1.00", "card", "no"),            # 16 rules.note.regex
    line("13", "\u00a0nbsp\u3000", "2024-01-05", "\u20031.00", "sepa", "1"),  # 17 good: Unicode spaces trimmed
    line("14", "tab\there\x0b", "2024-01-05", "\t2.00\t", "wire", "0"),  # 18 good: ASCII controls trimmed
    line("9", "\x0bfirst good 9", "2024-01-05", "3.00", "sepa", "no") + "and more",  # 19 good, longer line
    line("15", "ünïcödé ✓", "2024-01-05", "1e3", "card", "no"),  # 20 good: not canonical, Python reads it (1000)
    line("16", "last", "2024-01-05", "1.00", "sepa", "f").rstrip(),   # 21 trailing padding cut: too short
    line("17", "end", "2024-01-05", "1.00", "card", "n"),             # 22 good
]


def put(drop: Drop, rel: str, content: bytes) -> Path:
    path = drop.local(rel)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    os.utime(path, (OLD, OLD))
    return path


def spec(drop: Drop, folder: str, tmp: Path, **source: Any) -> Any:
    layout = tmp / "layout.yaml"
    layout.write_text(yaml.safe_dump({"fields": [{"name": n, "start": s, "width": w} for n, s, w in LAYOUT]}))
    doc = {
        "pipeline": "files",
        "warehouse": f"duckdb:///{tmp / 'wh.duckdb'}",
        "systems": {"bank": {"sftp": drop.system()}},
        "sources": {"payments": {
            "system": "bank",
            "files": {"path": drop.remote(folder), "glob": "*.txt"},
            "format": {"fixed_width": {"layout": str(layout), "skip_rows": 1, **source.pop("fixed", {})}},
            "columns": {"id": {"type": "int64"}, "booked_on": {"type": "date"},
                        "amount": {"type": "decimal(12,2)"}, "channel": "channel",
                        "ok": {"name": "flag", "type": "bool"}, "note": "note"},
            "primary_key": ["id"],
            "rules": {"amount": {"min": -1000}, "channel": {"in": ["sepa", "card", "wire"]},
                      "note": {"regex": "^[^A-Z]*$"}},
            **source}},
    }
    return loads(yaml.safe_dump(doc), tmp / "files.yaml")


def run(drop: Drop, tmp: Path, content: bytes, *, streamed: bool, monkeypatch: pytest.MonkeyPatch,
        **source: Any) -> tuple[Any, dict[str, Any]]:
    """Load *content*; *streamed*: read while it downloads (else from the complete copy, as before)."""
    folder = f"{tmp.name}-{'streamed' if streamed else 'copy'}"
    put(drop, f"{folder}/p.txt", content)
    tmp = tmp / ("streamed" if streamed else "copy")
    tmp.mkdir()
    with monkeypatch.context() as m:
        if not streamed:
            m.setattr(SftpSource, "streams", lambda self, remote: False)
        out = ingest_file(spec(drop, folder, tmp, **source), "payments", "p.txt", run_id="r1")
    return out, state(tmp)


def both(drop: Drop, tmp: Path, content: bytes, monkeypatch: pytest.MonkeyPatch,
         **source: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    streamed, got = run(drop, tmp, content, streamed=True, monkeypatch=monkeypatch, **source)
    copied, want = run(drop, tmp, content, streamed=False, monkeypatch=monkeypatch, **source)
    assert "reader" not in streamed.details and "reader" not in copied.details  # the Arrow path, both
    assert (streamed.rejected, streamed.details["rows_read"]) == (copied.rejected, copied.details["rows_read"])
    return got, want


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_quarantine_and_rows_match_the_arrow_path(drop: Drop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  newline: str) -> None:
    content = (newline.join([HEADER, *BODY]) + newline).encode()
    got, want = both(drop, tmp_path, content, monkeypatch)
    assert got["quarantine"] == want["quarantine"]
    assert got["rows"] == want["rows"]
    assert got["types"] == want["types"]
    assert got["ledger"] == want["ledger"]
    # and what both say, so that agreeing on something wrong fails too
    assert [q["row_number"] for q in got["quarantine"]] == [4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 16, 21]
    assert [r["id"] for r in got["rows"]] == [1, 2, 7, 9, 13, 14, 15, 17]
    rows = {r["id"]: r for r in got["rows"]}
    assert rows[2]["note"] == "bäcker müß" and str(rows[2]["amount"]) == "12.50" and rows[2]["channel"] == "card"
    assert rows[13]["note"] == "nbsp" and str(rows[13]["amount"]) == "1.00"
    assert rows[14]["note"] == "tab\there" and rows[9]["note"] == "first good 9"
    assert rows[15]["note"] == "ünïcödé ✓" and str(rows[15]["amount"]) == "1000.00"
    by_line = {q["row_number"]: q for q in got["quarantine"]}
    assert by_line[5] == {"_hub_partition": "p.txt", "row_number": 5, "column_name": "p.txt", "value": None,
                          "reason": "p.txt: line shorter than the layout's 49 characters", "record": "5    too short"}
    assert by_line[11]["reason"] == "rules.primary_key.unique: primary key (id) 1 was already seen in this load"
    assert by_line[11]["record"] == ('{"id": "1", "note": "repeats id 1", "booked_on": "2024-01-05", "amount": '
                                     '"1.00", "channel": "card", "ok": "no"}')
    assert by_line[10]["column_name"] == "id" and "''" in by_line[10]["reason"]
    assert by_line[12]["reason"].startswith("rules.amount.min:") and by_line[12]["value"] == "-2000.00"


def test_unstripped_fields_and_a_unique_column(drop: Drop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    body = [line(i, note, "2024-01-05", "1.00", "card", "no") for i, note in (("1", "same"), ("2", "same"),
                                                                             ("3", "other"))]
    content = ("\n".join([HEADER, *body]) + "\n").encode()
    source = {"fixed": {"strip": False}, "primary_key": [],
              "columns": {"id": {"type": "int64"}, "note": "note", "channel": "channel"},
              "rules": {"note": {"unique": True}}}
    got, want = both(drop, tmp_path, content, monkeypatch, **source)
    assert got == want
    assert [r["note"] for r in sorted(got["rows"], key=lambda r: r["note"])] == ["other         ", "same          "]
    assert [(q["row_number"], q["reason"]) for q in got["quarantine"]] == [
        (3, "rules.note.unique: note 'same          ' was already seen in this load")]


@pytest.mark.parametrize("strip", [True, False])
@pytest.mark.parametrize("large", [False, True])
def test_ascii_lines_are_cut_by_bytes_as_by_characters(strip: bool, large: bool) -> None:
    """A batch of ASCII lines is cut by byte slices (a third of the cost): the fields equal those of the same lines
    cut by characters, which a batch holding one multi-byte line still is."""
    typ = pa.large_string() if large else pa.string()
    lines = [line("1", "plain", "2024-01-05", "12.50", "sepa", "true"), "5    too short", "",
             line("14", "tab\there\x0b", "2024-01-05", "\t2.00\t", "wire", "0"), "\x1c" + ONE[1:],
             ONE + "and more"]
    fields = [FixedWidthField(name=n, start=s, width=w) for n, s, w in LAYOUT]
    cfg = FixedWidthFormat(layout="layout.yaml", strip=strip)
    need = max(s + w - 1 for _, s, w in LAYOUT)

    def cut(texts: list[str]) -> pa.RecordBatch:
        return fixed_width_batch(pa.array(texts, typ), fields, need, cfg, "p.txt", pa.array(range(len(texts))))

    by_bytes = cut(lines)
    by_chars = cut([*lines, line("2", "bäcker müß", "2024-01-06", "12.5", "card", "yes")])  # not ASCII
    assert pc.all(pc.string_is_ascii(pa.array(lines))).as_py()
    assert by_bytes.equals(by_chars.slice(0, len(lines)))
    assert by_bytes.column("id").to_pylist()[:2] == (["1", "5"] if strip else ["1    ", "5    "])
    assert by_bytes.column("_hub_error").to_pylist()[1:3] == ["p.txt: line shorter than the layout's 49 characters"] * 2


ONE, TWO = line("1", "a", "2024-01-05", "1.00", "card", "no"), line("2", "b", "2024-01-05", "1.00", "card", "no")


@pytest.mark.parametrize("content, encoding", [
    (f"{HEADER}\n{ONE}\r{TWO}\n".encode(), "utf-8"),  # a lone carriage return: pyarrow ends the line there
    (f"{HEADER}\n{ONE}\n".encode(), "cp1252"),  # the legacy-encoding checks wrap the stream
])
def test_odd_line_ends_and_legacy_encodings_load_alike_streamed(drop: Drop, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch, content: bytes,
                                                               encoding: str) -> None:
    got, want = both(drop, tmp_path, content, monkeypatch, fixed={"encoding": encoding})
    assert got == want and got["rows"]


@pytest.mark.parametrize("bad", [b"\x1f", b"\xe4"])
def test_lines_the_arrow_reader_refuses_fail_the_file_as_before(drop: Drop, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch, bad: bytes) -> None:
    good = line("1", "a", "2024-01-05", "1.00", "card", "no").encode()
    content = HEADER.encode() + b"\n" + good + b"\n" + good.replace(b"a ", b"a" + bad, 1) + b"\n"
    with pytest.raises(AdapterError, match="fixed-width text"):
        run(drop, tmp_path, content, streamed=True, monkeypatch=monkeypatch)
