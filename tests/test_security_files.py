"""Hostile or odd file drops against a real SFTP server (OpenSSH's sshd when installed, else the embedded asyncssh
server): names that are not UTF-8 or as long as the server allows, decompression bombs, and UTF-8 files
declared in a legacy encoding. One bad file never blocks the others, and nothing fails with a traceback."""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import resource
import time
import zipfile
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from adapters.sftp._formats import ReadNotes, read
from adapters.sftp.config import FormatConfig
from hub.errors import HubError
from hub.files import LEDGER, ingest_file, ready_files
from tests.sftp_servers import Drop
from tests.test_sftp import OLD, put, rows, spec, statement


def put_raw(drop: Drop, folder: str, name: bytes, content: bytes) -> Path:
    """A file whose name is given as bytes (it need not be UTF-8)."""
    directory = drop.local(f"{folder}/x").parent
    path = Path(os.fsdecode(os.fsencode(directory) + b"/" + name))
    path.write_bytes(content)
    os.utime(path, (OLD, OLD))
    return path


def row(ref: str) -> bytes:
    return statement([("02.01.2024", "1,00", "A", ref)])


# --- file names ------------------------------------------------------------------------------------------

LONG = "st_" + "x" * 247 + ".csv"  # 254 characters: legal on the server, too long with a local prefix


def test_odd_names_load_and_never_block_the_others(drop: Drop, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """Finding: a name that is not UTF-8 failed the whole listing (asyncssh's 'Unable to decode name'), and a
    254-character name failed its download with 'File name too long' (the local spool name added a prefix).
    Now both load, the first under its escaped name; the exact remote bytes are used to download and archive."""
    assert len(LONG) == 254
    folder = f"names-{tmp_path.name}"
    put(drop, f"{folder}/st_1.csv", row("R1"))
    put(drop, f"{folder}/st_2.csv", row("R2"))
    put_raw(drop, folder, b"st_\xff\xfe.csv", row("R3"))  # latin-1 bytes, invalid as UTF-8
    put(drop, f"{folder}/{LONG}", row("R4"))
    put_raw(drop, folder, b"st_a\\b.csv", row("R5"))  # a backslash: would make escaped names ambiguous
    pipeline = spec(drop, folder, tmp_path, after={"move_to": drop.remote(f"{folder}/archive")})
    with caplog.at_level(logging.WARNING, logger="hub.sftp"):
        names = [f.name for f in ready_files(pipeline, "statements")]
    assert sorted(names) == sorted(["st_1.csv", "st_2.csv", "st_\\xff\\xfe.csv", LONG])
    assert any("skipped st_a\\b.csv" in r.getMessage() for r in caplog.records), "the skipped name is named"
    outcomes = {n: ingest_file(pipeline, "statements", n, run_id=f"r{i}") for i, n in enumerate(names)}
    assert {n: o.status for n, o in outcomes.items()} == dict.fromkeys(names, "loaded")
    assert outcomes["st_\\xff\\xfe.csv"].details["remote_name"].endswith("shown escaped as st_\\xff\\xfe.csv")
    assert rows(tmp_path, "select _hub_partition, reference from statements order by reference") == [
        ("st_1.csv", "R1"), ("st_2.csv", "R2"), ("st_\\xff\\xfe.csv", "R3"), (LONG, "R4")]
    assert sorted(rows(tmp_path, f"select file, status from {LEDGER}")) == sorted((n, "loaded") for n in names)
    archive = os.fsencode(drop.local(f"{folder}/archive/x").parent)
    assert sorted(os.listdir(archive)) == sorted([b"st_1.csv", b"st_2.csv", b"st_\xff\xfe.csv", LONG.encode()]), \
        "archived under their exact names"
    again = ingest_file(pipeline, "statements", "st_\\xff\\xfe.csv", run_id="again")
    assert again.status.startswith("already loaded"), "the ledger knows the escaped name"


def test_names_dagster_refuses_are_valid_partition_keys(drop: Drop, tmp_path: Path) -> None:
    """Dagster's partition keys may not hold control characters or '...'; a partner's name can. The sensor and
    the run use the escaped name, which Dagster accepts, and the asset loads the file through it."""
    from hub.dagster.definitions import pipeline_assets, pipeline_definitions

    folder = f"keys-{tmp_path.name}"
    put_raw(drop, folder, b"st_tab\there...\xe9.csv", row("R1"))
    put(drop, f"{folder}/st_ok.csv", row("R2"))
    pipeline = spec(drop, folder, tmp_path, sensor={"every": "30s"},
                    files={"path": drop.remote(folder), "glob": "st_*.csv", "stable_for": 0})
    defs = pipeline_definitions(pipeline)
    sensor = defs.resolve_sensor_def("statements_sensor")
    instance = dg.DagsterInstance.ephemeral()
    context = dg.build_sensor_context(instance=instance, repository_def=defs.get_repository_def())
    first = sensor(context)
    second = sensor(dg.build_sensor_context(cursor=first.cursor, instance=instance,
                                            repository_def=defs.get_repository_def()))
    keys = sorted(r.partition_key for r in second.run_requests)
    odd = "st_tab\\x09here\\x2e\\x2e\\x2e\\xe9.csv"
    assert keys == sorted([odd, "st_ok.csv"])
    json.dumps([r.tags for r in second.run_requests])  # tags and keys are plain text
    instance.add_dynamic_partitions("statements_files", keys)  # Dagster checks nothing here; the UI parses '...'
    result = dg.materialize(pipeline_assets(pipeline), instance=instance, partition_key=odd, selection=["statements"])
    assert result.success
    [mat] = result.asset_materializations_for_node("statements")
    assert mat.metadata["hub/file"].value == odd and "shown escaped as" in str(mat.metadata["hub/remote_name"].value)
    assert any(odd in (e.user_message or "") for e in instance.all_logs(result.run_id) if e.level == logging.WARNING)
    assert rows(tmp_path, "select _hub_partition, reference from statements") == [(odd, "R1")]


# --- decompression bombs ---------------------------------------------------------------------------------

ROW = "02.01.2024;0,00;A;R\r\n".encode("cp1252")


def gzip_bomb(size: int) -> bytes:
    """*size* bytes of valid statement rows, gzip-compressed about 1000:1, built without holding them."""
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9, mtime=0) as gz:
        gz.write(b"Buchungstag;Betrag;Auftraggeber;Referenz\r\n")
        block = ROW * ((1 << 20) // len(ROW))
        for _ in range(size // len(block)):
            gz.write(block)
    return out.getvalue()


def zip_bomb(size: int) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive, \
            archive.open("statement.csv", "w") as member:
        member.write(b"Buchungstag;Betrag;Auftraggeber;Referenz\r\n")
        block = ROW * ((1 << 20) // len(ROW))
        for _ in range(size // len(block)):
            member.write(block)
    return out.getvalue()


def test_decompression_bombs_fail_fast_and_the_other_files_load(drop: Drop, tmp_path: Path) -> None:
    """Finding: an 8 MB zip expanding to 8 GB and a gzip bomb loaded with no limit. Now a compressed file may
    expand to at most max_uncompressed_bytes and (past 16 MiB) max_ratio times its size, counted while reading;
    past either the file fails like any bad file (nothing loaded, not archived) and the others still load."""
    folder = f"bombs-{tmp_path.name}"
    put(drop, f"{folder}/st_ok.csv", row("OK"))
    gz = gzip_bomb(48 << 20)
    put(drop, f"{folder}/st_bomb.csv.gz", gz)
    put(drop, f"{folder}/st_bomb.zip", zip_bomb(24 << 20))
    put(drop, f"{folder}/st_small.csv.gz", gzip.compress(row("SMALL")))
    # default limits for the gzip bomb (its ~1000:1 ratio), a low byte limit for the zip
    pipeline = spec(drop, folder, tmp_path, files={"path": drop.remote(folder), "glob": "st_*"},
                    after={"move_to": drop.remote(f"{folder}/archive")})
    small_limit = spec(drop, folder, tmp_path, files={"path": drop.remote(folder), "glob": "st_*"},
                       format={"csv": {"delimiter": ";", "encoding": "cp1252"}, "max_uncompressed_bytes": "4MiB"},
                       after={"move_to": drop.remote(f"{folder}/archive")})
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    with pytest.raises(HubError) as info:
        ingest_file(pipeline, "statements", "st_bomb.csv.gz", run_id="r1")
    assert time.monotonic() - started < 20
    assert str(info.value).startswith(f"st_bomb.csv.gz: expands to more than max_ratio=200 times its {len(gz)} "
                                      "compressed bytes") and "decompression bomb" in str(info.value)
    with pytest.raises(HubError) as info:
        ingest_file(small_limit, "statements", "st_bomb.zip", run_id="r2")
    assert str(info.value).startswith("st_bomb.zip: declares more than max_uncompressed_bytes=4194304")
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) / 1024
    assert grown_mib < 200, f"bounded memory: the peak grew by {grown_mib:.0f} MiB"
    for name in ("st_bomb.csv.gz", "st_bomb.zip"):
        assert drop.local(f"{folder}/{name}").exists(), f"{name}: a failed file is not archived"
    assert ingest_file(pipeline, "statements", "st_ok.csv", run_id="r3").status == "loaded"
    assert ingest_file(pipeline, "statements", "st_small.csv.gz", run_id="r4").status == "loaded"
    assert rows(tmp_path, "select _hub_partition, reference from statements order by 2") == [
        ("st_ok.csv", "OK"), ("st_small.csv.gz", "SMALL")]
    assert rows(tmp_path, f"select file from {LEDGER} order by 1") == [("st_ok.csv",), ("st_small.csv.gz",)]


def lying_zip(size: int) -> bytes:
    """A zip bomb whose directory understates the member's size: only reading can tell."""
    data = bytearray(zip_bomb(size))
    # the local header's and the central directory's uncompressed size (offsets 22 and 24 after the signatures)
    for sig, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = data.index(sig) + offset
        data[at:at + 4] = (1000).to_bytes(4, "little")
    return bytes(data)


def test_declared_sizes_are_not_trusted(tmp_path: Path) -> None:
    """A zip that declares 1000 bytes for a member of 24 MiB: reading stops at what was declared (zipfile) or
    fails on the budget, never expands it all into the load."""
    archive = tmp_path / "lie.zip"
    archive.write_bytes(lying_zip(24 << 20))
    fmt = FormatConfig.model_validate({"csv": {"delimiter": ";"}, "max_uncompressed_bytes": "1MiB"})
    with pytest.raises(HubError) as info:
        sum(b.num_rows for b in read(archive, fmt))
    assert "lie.zip" in str(info.value)


def test_nested_archives_are_not_expanded(tmp_path: Path) -> None:
    """A zip inside a zip (or a gzip inside a gzip) is refused by name rather than read as CSV data."""
    inner = zip_bomb(1 << 20)
    outer = tmp_path / "outer.zip"
    with zipfile.ZipFile(outer, "w") as archive:
        archive.writestr("statement.csv", "Buchungstag;Betrag\r\n02.01.2024;1,00\r\n")
        archive.writestr("more/inner.zip", inner)
    with pytest.raises(HubError, match=r"outer\.zip/more/inner\.zip: is itself a zip archive; nested archives are "
                                       r"not expanded"):
        list(read(outer, FormatConfig.model_validate({"csv": {"delimiter": ";"}})))
    double = tmp_path / "double.csv.gz"
    double.write_bytes(gzip.compress(gzip.compress(b"a\n1\n")))
    with pytest.raises(HubError, match=r"double\.csv\.gz: is itself a gzip archive"):
        list(read(double, FormatConfig.model_validate({"csv": {}})))


def test_damaged_or_encrypted_archives_fail_with_the_file_named(tmp_path: Path) -> None:
    broken = tmp_path / "broken.csv.gz"
    broken.write_bytes(gzip.compress(b"a\n" + b"1\n" * 1000)[:-40])
    with pytest.raises(HubError, match=r"broken\.csv\.gz: cannot "):
        list(read(broken, FormatConfig.model_validate({"csv": {}})))
    encrypted = tmp_path / "locked.zip"
    data = bytearray(zip_bomb(1 << 16))
    for sig, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # general purpose flag bit 0: encrypted
        at = data.index(sig) + offset
        data[at] |= 1
    encrypted.write_bytes(bytes(data))
    with pytest.raises(HubError, match=r"locked\.zip/statement\.csv: cannot decompress: .*encrypted"):
        list(read(encrypted, FormatConfig.model_validate({"csv": {"delimiter": ";"}})))


# --- encodings -------------------------------------------------------------------------------------------

def test_utf8_declared_cp1252_is_reported(drop: Drop, tmp_path: Path) -> None:
    """Finding: a UTF-8 file declared as cp1252 loaded as 'MÃ¼ller' without a word. It still loads as
    declared (the spec decides), but the load's metadata and log say how many lines look like UTF-8."""
    from hub.dagster.definitions import pipeline_assets

    folder = f"enc-{tmp_path.name}"
    utf8 = statement([]).decode("cp1252") + "02.01.2024;1,00;Müller;R1\r\n02.01.2024;2,00;Bank;R2\r\n" \
        "02.01.2024;3,00;Groß € AG;R3\r\n"
    put(drop, f"{folder}/st_utf8.csv", utf8.encode("utf-8"))
    put(drop, f"{folder}/st_cp.csv", utf8.encode("cp1252"))  # genuinely cp1252: nothing to report
    pipeline = spec(drop, folder, tmp_path)
    out = ingest_file(pipeline, "statements", "st_utf8.csv", run_id="r1")
    assert out.details["mojibake_lines"] == 2
    assert out.details["encoding_warnings"] == (
        "st_utf8.csv: declared cp1252, but every byte is valid UTF-8 and 2 line(s) hold multi-byte UTF-8 "
        "sequences (first at line 2: 'ü' read as 'Ã¼'); the file is very likely UTF-8 (set encoding: utf-8)")
    assert ("Müller",) not in rows(tmp_path, "select payer from statements"), "loaded as declared"
    assert "encoding_warnings" not in ingest_file(pipeline, "statements", "st_cp.csv", run_id="r2").details
    # through Dagster: in the materialization's metadata and the run's log
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("statements_files", ["st_utf8.csv"])
    put(drop, f"{folder}/st_utf8.csv", (utf8 + "03.01.2024;4,00;Zoë;R4\r\n").encode("utf-8"), mtime=OLD + 5)
    result = dg.materialize(pipeline_assets(pipeline), instance=instance, partition_key="st_utf8.csv",
                            selection=["statements"])
    [mat] = result.asset_materializations_for_node("statements")
    assert mat.metadata["hub/mojibake_lines"].value == 3
    assert "declared cp1252" in str(mat.metadata["hub/encoding_warnings"].value)
    logged = [e.user_message for e in instance.all_logs(result.run_id) if e.level == logging.WARNING]
    assert any("3 line(s) hold multi-byte UTF-8" in m for m in logged)


@pytest.mark.parametrize("kind", ["fixed_width", "jsonl"])
def test_mis_declared_encoding_in_other_text_formats(tmp_path: Path, kind: str) -> None:
    layout = tmp_path / "layout.yaml"
    layout.write_text("fields:\n  - {name: id, start: 1, width: 4}\n  - {name: name, start: 5, width: 10}\n")
    data = tmp_path / "f.txt"
    if kind == "fixed_width":
        data.write_bytes("0001Müller    \n0002Bank      \n".encode())
        cfg: dict[str, Any] = {"fixed_width": {"layout": str(layout), "encoding": "latin-1"}}
    else:
        data.write_bytes('{"name": "Müller"}\n{"name": "Bank"}\n'.encode())
        cfg = {"jsonl": {"encoding": "iso-8859-15"}}
    notes = ReadNotes()
    list(read(data, FormatConfig.model_validate(cfg), notes=notes))
    assert notes.mojibake_lines == 1 and "(first at line 1: 'ü' read as 'Ã" in notes.encoding_warnings[0]
    legacy = tmp_path / "legacy.txt"
    legacy.write_bytes(data.read_bytes().decode().encode("latin-1"))
    quiet = ReadNotes()
    list(read(legacy, FormatConfig.model_validate(cfg), notes=quiet))
    assert quiet == ReadNotes()


def test_mojibake_check_costs_little_on_a_large_legacy_file(tmp_path: Path) -> None:
    """The check must not slow the CSV path: a genuine cp1252 file stops it at its first non-UTF-8 byte and
    ASCII blocks are skipped, so reading with and without it takes about the same time."""
    big = tmp_path / "big.csv"
    big.write_bytes(("name;city\r\n" + "Ada;Koeln\r\n" * 400_000 + "Zoë;Köln\r\n" * 400_000).encode("cp1252"))
    fmt = FormatConfig.model_validate({"csv": {"delimiter": ";", "encoding": "cp1252"}})

    def timed(notes: ReadNotes | None) -> float:
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            sum(b.num_rows for b in read(big, fmt, notes=notes))
            best = min(best, time.perf_counter() - started)
        return best

    plain, checked = timed(None), timed(ReadNotes())
    assert checked < plain * 1.5 + 0.05, (plain, checked)
