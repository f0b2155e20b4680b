"""File drops over SFTP against real servers: OpenSSH's sshd (when installed) and the embedded asyncssh
server. Host keys, authentication, stable files, exactly-once ingestion, quarantine, archive after
commit, the sensor, outbound exports, and every file format."""

from __future__ import annotations

import gzip
import json
import os
import time
import zipfile
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from adapters.sftp import AuthenticationError, HostKeyError, SftpSession, SftpSystemConfig
from adapters.sftp._formats import read
from adapters.sftp.config import FormatConfig
from hub.errors import HubError, TransportError, XMLSecurityError
from hub.files import LEDGER, ingest_file, ready_files
from hub.spec import loads
from hub.warehouse import DuckDBWarehouse
from tests.sftp_servers import PASSPHRASE, Drop, start_embedded

OLD = time.time() - 3600  # an mtime an hour ago: stable


def put(drop: Drop, rel: str, content: bytes | str, mtime: float | None = OLD) -> Path:
    path = drop.local(rel)
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def session(drop: Drop, **overrides: Any) -> SftpSession:
    return SftpSession(SftpSystemConfig.model_validate(drop.system(**overrides)))


# --- connecting ----------------------------------------------------------------------------------------

def test_known_host_and_pinned_fingerprint(drop: Drop) -> None:
    with session(drop) as s:
        s.connect()
    with session(drop, known_hosts=None, host_key_fingerprint=drop.fingerprint) as s:
        s.connect()


def test_unknown_host_key_is_refused_with_its_fingerprint(drop: Drop, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(HostKeyError) as info, session(drop, known_hosts=str(empty)) as s:
        s.connect()
    assert f"the server presented {drop.fingerprint}" in str(info.value) and "does not list" in str(info.value)
    with pytest.raises(HostKeyError, match="not a pinned fingerprint"), \
            session(drop, known_hosts=None, host_key_fingerprint="SHA256:AAAAnotthekey") as s:
        s.connect()


def test_changed_host_key_is_refused(drop: Drop, tmp_path: Path) -> None:
    import asyncssh

    other = asyncssh.generate_private_key("ssh-ed25519")
    changed = tmp_path / "known_hosts"
    changed.write_text(f"[127.0.0.1]:{drop.port} {other.export_public_key('openssh').decode().strip()}\n")
    with pytest.raises(HostKeyError) as info, session(drop, known_hosts=str(changed)) as s:
        s.connect()
    msg = str(info.value)
    assert "CHANGED" in msg and drop.fingerprint in msg and str(other.get_fingerprint("sha256")) in msg


def test_host_key_checking_cannot_be_forgotten(drop: Drop) -> None:
    with pytest.raises(ValueError, match="host keys are verified"):
        SftpSystemConfig.model_validate({**drop.system(), "known_hosts": None})
    with session(drop, known_hosts=None, insecure_accept_any_host_key=True) as s:  # explicit opt-out only
        s.connect()


@pytest.mark.parametrize("kind", ["rsa", "ecdsa", "ed25519"])
def test_private_keys_with_passphrase(drop: Drop, kind: str) -> None:
    with session(drop, password=None, private_key=str(drop.keys[kind]), passphrase=PASSPHRASE) as s:
        s.connect()
    with pytest.raises(AuthenticationError, match="cannot use private_key"), \
            session(drop, password=None, private_key=str(drop.keys[kind]), passphrase="wrong") as s:
        s.connect()


def test_key_given_as_text(drop: Drop) -> None:
    text = drop.keys["ed25519"].read_text()
    with session(drop, password=None, private_key=text, passphrase=PASSPHRASE) as s:
        s.connect()


def test_password_auth_and_refusal() -> None:
    import tempfile


    with tempfile.TemporaryDirectory() as tmp:
        server, embedded = start_embedded(Path(tmp))
        try:
            with session(server) as s:
                s.connect()
            with pytest.raises(AuthenticationError, match="authentication failed"), \
                    session(server, password="not-it-123") as s:
                s.connect()
        finally:
            embedded.stop()


def test_transient_disconnect_is_retried(tmp_path: Path) -> None:
    from hub.demo.sftpd import EmbeddedSftpServer

    root = tmp_path / "root"
    put_path = root / "drop" / "a.csv"
    put_path.parent.mkdir(parents=True)
    put_path.write_text("x\n1\n")
    first = EmbeddedSftpServer(root, password="pw-1234").start()
    port, key = first.port, first.host_key
    cfg = SftpSystemConfig(host="127.0.0.1", port=port, username="hub", password="pw-1234",
                           host_key_fingerprint=first.fingerprint, retries={"max": 3, "backoff": 0.2},
                           connect_timeout=2, keepalive=1)
    with SftpSession(cfg) as s:
        assert [f.name for f in s.list_files("/drop")] == ["a.csv"]
        first.stop()  # the server goes away mid-session and comes back on the same port
        second = EmbeddedSftpServer(root, port=port, password="pw-1234", host_key=key).start()
        try:
            assert [f.name for f in s.list_files("/drop")] == ["a.csv"]
            assert s.retries >= 1
        finally:
            second.stop()
        with pytest.raises(TransportError, match="gave up after"):
            s.list_files("/drop")


# --- listing and stable files ---------------------------------------------------------------------------

def test_listing_ignores_temporary_names_and_respects_the_pattern(drop: Drop) -> None:
    for name in ["list/a.csv", "list/b.csv", "list/c.txt", "list/.hidden.csv", "list/d.csv.filepart",
                 "list/e.csv.tmp", "list/sub/f.csv"]:
        put(drop, name, "x\n1\n")
    with session(drop) as s:
        assert [f.name for f in s.list_files(drop.remote("list"), "*.csv",
                                             ignore=[".*", "*.filepart", "*.tmp"])] == ["a.csv", "b.csv"]
        deep = s.list_files(drop.remote("list"), "*.csv", recursive=True, ignore=[".*", "*.filepart", "*.tmp"])
        assert sorted(f.name for f in deep) == ["a.csv", "b.csv", "sub/f.csv"]


# --- ingestion through the hub ---------------------------------------------------------------------------

CSV_HEADER = "Buchungstag;Betrag;Auftraggeber;Referenz\r\n"


def statement(rows: list[tuple[str, str, str, str]]) -> bytes:
    return (CSV_HEADER + "".join(";".join(r) + "\r\n" for r in rows)).encode("cp1252")


def spec(drop: Drop, folder: str, tmp: Path, **source: Any) -> Any:
    doc = {
        "pipeline": "files",
        "warehouse": f"duckdb:///{tmp / 'wh.duckdb'}",
        "systems": {"bank": {"sftp": drop.system()}},
        "sources": {"statements": {
            "system": "bank",
            "files": {"path": drop.remote(folder), "glob": "st_*.csv", "stable_for": "30s"},
            "format": {"csv": {"delimiter": ";", "encoding": "cp1252"}},
            "columns": {"Buchungstag": {"name": "booked_on", "type": "date", "format": "%d.%m.%Y"},
                        "Betrag": {"name": "amount", "type": "decimal(12,2)", "decimal_point": ","},
                        "Auftraggeber": "payer", "Referenz": "reference"},
            **source}},
    }
    return loads(yaml.safe_dump(doc, allow_unicode=True), tmp / "files.yaml")


def rows(tmp: Path, sql: str) -> list[tuple[Any, ...]]:
    return [tuple(r.values()) for r in DuckDBWarehouse(f"duckdb:///{tmp / 'wh.duckdb'}").query(sql).to_pylist()]


def test_exactly_once_ingestion(drop: Drop, tmp_path: Path) -> None:
    folder = f"once-{tmp_path.name}"
    put(drop, f"{folder}/st_1.csv", statement([("02.01.2024", "1813,80", "Müller & Söhne", "ORD-1"),
                                               ("02.01.2024", "-12,50", "Bank", "")]))
    pipeline = spec(drop, folder, tmp_path)
    first = ingest_file(pipeline, "statements", "st_1.csv", run_id="r1")
    assert first.status == "loaded" and first.load is not None and first.load.rows_loaded == 2
    assert first.after == "left in place"
    assert rows(tmp_path, "select booked_on::varchar, amount::varchar, payer from statements order by amount") == [
        ("2024-01-02", "-12.50", "Bank"), ("2024-01-02", "1813.80", "Müller & Söhne")], "cp1252, decimal comma, dates"
    assert rows(tmp_path, f"select file, status, rows, sha256 = '{first.sha256}' from {LEDGER}") == [
        ("st_1.csv", "loaded", 2, True)]
    # the same file again: not loaded twice
    again = ingest_file(pipeline, "statements", "st_1.csv", run_id="r2")
    assert again.status == "already loaded" and again.load is None
    # identical content dropped again under another name: skipped
    put(drop, f"{folder}/st_1_copy.csv", drop.local(f"{folder}/st_1.csv").read_bytes())
    copy = ingest_file(pipeline, "statements", "st_1_copy.csv", run_id="r3")
    assert copy.status == "duplicate of st_1.csv"
    # a changed file (same name, new content) is reloaded and replaces its previous rows
    put(drop, f"{folder}/st_1.csv", statement([("03.01.2024", "99,00", "Bäckerei Groß", "ORD-2")]), mtime=OLD + 60)
    changed = ingest_file(pipeline, "statements", "st_1.csv", run_id="r4")
    assert changed.status == "loaded" and changed.load is not None and changed.load.rows_deleted == 2
    assert rows(tmp_path, "select _hub_partition, reference from statements") == [("st_1.csv", "ORD-2")]
    assert rows(tmp_path, f"select file, status from {LEDGER} order by file") == [
        ("st_1.csv", "loaded"), ("st_1_copy.csv", "duplicate of st_1.csv")]


def test_half_written_file_is_not_taken(drop: Drop, tmp_path: Path) -> None:
    folder = f"half-{tmp_path.name}"
    put(drop, f"{folder}/st_old.csv", statement([("02.01.2024", "1,00", "A", "R1")]))
    put(drop, f"{folder}/st_growing.csv", statement([("02.01.2024", "2,00", "B", "R2")]), mtime=None)  # just written
    put(drop, f"{folder}/st_next.csv.filepart", b"partial", mtime=OLD)  # an upload in progress, by name
    pipeline = spec(drop, folder, tmp_path)
    assert [f.name for f in ready_files(pipeline, "statements")] == ["st_old.csv"]
    marker = spec(drop, folder, tmp_path, files={"path": drop.remote(folder), "glob": "st_*.csv",
                                                 "done_marker": ".done"})
    assert ready_files(marker, "statements") == [], "with a done marker, only marked files are ready"
    put(drop, f"{folder}/st_growing.csv.done", b"", mtime=None)
    assert [f.name for f in ready_files(marker, "statements")] == ["st_growing.csv"]


def test_archive_only_after_the_commit(drop: Drop, tmp_path: Path) -> None:
    folder = f"arch-{tmp_path.name}"
    good = statement([("02.01.2024", "10,00", "A", "R1")])
    bad = statement([("02.01.2024", "zehn", "A", "R1"), ("xx.01.2024", "1,00", "B", "R2"),
                     ("02.01.2024", "3,00", "C", "R3")])
    put(drop, f"{folder}/st_good.csv", good)
    put(drop, f"{folder}/st_bad.csv", bad)
    pipeline = spec(drop, folder, tmp_path, after={"move_to": drop.remote(f"{folder}/archive")}, max_bad_rows=1)
    with pytest.raises(HubError) as info:
        ingest_file(pipeline, "statements", "st_bad.csv", run_id="r1")
    msg = str(info.value)
    assert "file st_bad.csv: 2 of 3 rows rejected, more than max_bad_rows=1" in msg and "zehn" in msg
    assert drop.local(f"{folder}/st_bad.csv").exists(), "a failed file is not archived"
    assert not DuckDBWarehouse(f"duckdb:///{tmp_path / 'wh.duckdb'}").tables(), "and nothing was loaded"
    out = ingest_file(pipeline, "statements", "st_good.csv", run_id="r2")
    assert out.after.startswith("moved to ") and drop.local(f"{folder}/archive/st_good.csv").exists()
    assert not drop.local(f"{folder}/st_good.csv").exists()


def test_move_failing_after_the_commit_is_finished_on_the_next_run(drop: Drop, tmp_path: Path) -> None:
    folder = f"late-{tmp_path.name}"
    put(drop, f"{folder}/st_1.csv", statement([("02.01.2024", "10,00", "A", "R1")]))
    blocker = put(drop, f"{folder}/archive", b"a file where the archive folder should be")
    pipeline = spec(drop, folder, tmp_path, after={"move_to": drop.remote(f"{folder}/archive")})
    with pytest.raises(Exception):  # noqa: B017 - the server's own error for a failed mkdir/rename
        ingest_file(pipeline, "statements", "st_1.csv", run_id="r1")
    assert rows(tmp_path, "select reference from statements") == [("R1",)], "the rows were committed first"
    blocker.unlink()
    again = ingest_file(pipeline, "statements", "st_1.csv", run_id="r2")
    assert again.status == "already loaded" and again.after.startswith("moved to ")
    assert rows(tmp_path, "select count(*) from statements") == [(1,)]


def test_bad_rows_go_to_quarantine_with_file_line_and_raw_text(drop: Drop, tmp_path: Path) -> None:
    folder = f"quar-{tmp_path.name}"
    content = (CSV_HEADER + "02.01.2024;10,00;A;R1\r\n"
               "02.01.2024;11,00;B\r\n"             # line 3: a field short
               "02.01.2024;zwölf;C;R3\r\n"          # line 4: not a number
               "31.02.2024;13,00;D;R4\r\n"          # line 5: not a date
               "03.01.2024;14,00;E;R5\r\n").encode("cp1252")
    put(drop, f"{folder}/st_q.csv", content)
    out = ingest_file(spec(drop, folder, tmp_path), "statements", "st_q.csv", run_id="r1")
    assert out.load is not None and out.load.rows_loaded == 2 and out.rejected == 3
    got = rows(tmp_path, "select _hub_partition, row_number, reason, record from statements__quarantine "
                         "order by row_number")
    assert [(g[0], g[1]) for g in got] == [("st_q.csv", 3), ("st_q.csv", 4), ("st_q.csv", 5)]
    assert got[0][2] == "st_q.csv:3: expected 4 fields, found 3" and got[0][3] == "02.01.2024;11,00;B"
    assert "amount" in got[1][2] and "zwölf" in got[1][3]
    assert "booked_on" in got[2][2] and "%d.%m.%Y" in got[2][2]


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_rows_with_invalid_utf8_go_to_quarantine_with_their_bytes_escaped(drop: Drop, tmp_path: Path) -> None:
    """Regression (found by tests/test_fuzz.py): pyarrow decodes a malformed row's text strictly before the
    invalid-row handler runs, so a non-UTF-8 byte in it raised inside pyarrow ("Exception ignored in ...": an
    unraisable exception, an error here) and the row never reached the quarantine. Now the raw text keeps
    such bytes as \\xNN escapes, and a row that parses but holds one is quarantined instead of loaded."""
    folder = f"utf8-{tmp_path.name}"
    content = (CSV_HEADER.encode() + b"02.01.2024;10,00;A;R1\r\n"
               b"02.01.2024;11,00;B\xff\r\n"          # line 3: a field short, and a byte that is not UTF-8
               b"02.01.2024;12,00;B\xe4cker;R3\r\n"   # line 4: latin-1 in a UTF-8 file
               + "03.01.2024;14,00;Bäcker;R5\r\n".encode())
    put(drop, f"{folder}/st_u.csv", content)
    pipeline = spec(drop, folder, tmp_path, format={"csv": {"delimiter": ";", "encoding": "utf-8"}})
    out = ingest_file(pipeline, "statements", "st_u.csv", run_id="r1")
    assert out.load is not None and out.load.rows_loaded == 2 and out.rejected == 2
    assert rows(tmp_path, "select payer from statements order by payer") == [("A",), ("Bäcker",)]
    got = rows(tmp_path, "select row_number, reason, record from statements__quarantine order by row_number")
    assert [g[0] for g in got] == [3, 4]
    assert got[0][1].startswith("st_u.csv:3: expected 4 fields, found 3") and "not valid utf-8" in got[0][1]
    assert got[0][2] == "02.01.2024;11,00;B\\xff"
    assert got[1][1] == "st_u.csv:4: bytes that are not valid utf-8 (kept as \\xNN in the raw text)"
    assert got[1][2] == "02.01.2024;12,00;B\\xe4cker;R3"


def test_sensor_ticks_with_a_cursor(drop: Drop, tmp_path: Path) -> None:
    from hub.dagster.definitions import pipeline_definitions

    folder = f"sens-{tmp_path.name}"
    put(drop, f"{folder}/st_a.csv", statement([("02.01.2024", "1,00", "A", "R1")]))
    pipeline = spec(drop, folder, tmp_path, sensor={"every": "30s"},
                    files={"path": drop.remote(folder), "glob": "st_*.csv", "stable_for": 1})
    defs = pipeline_definitions(pipeline)
    sensor = defs.resolve_sensor_def("statements_sensor")
    instance = dg.DagsterInstance.ephemeral()

    def tick(cursor: str | None) -> Any:
        # the sensor's own result: its dynamic-partition requests are applied by the daemon before its
        # run requests, so resolving the run requests here (evaluate_tick) would find no partition yet
        return sensor(dg.build_sensor_context(cursor=cursor, instance=instance,
                                              repository_def=defs.get_repository_def()))

    first = tick(None)
    assert first.run_requests == [], "first sight: a file must look the same for stable_for first"
    state = json.loads(first.cursor or "{}")
    assert set(state["seen"]) == {drop.remote(f"{folder}/st_a.csv")}
    time.sleep(1.2)
    second = tick(first.cursor)
    [req] = second.run_requests
    remote = drop.remote(f"{folder}/st_a.csv")
    size = drop.local(f"{folder}/st_a.csv").stat().st_size
    assert req.partition_key == "st_a.csv" and req.run_key == f"{remote}:{int(OLD)}:{size}"
    assert json.loads(second.cursor or "{}")["newest_mtime"] == int(OLD)
    assert second.dynamic_partitions_requests[0].partition_keys == ["st_a.csv"]
    # a file being appended to changes between ticks: not requested until it settles
    growing = put(drop, f"{folder}/st_b.csv", statement([("02.01.2024", "2,00", "B", "R2")]), mtime=OLD + 10)
    third = tick(second.cursor)
    assert [r.partition_key for r in third.run_requests] == ["st_a.csv"]
    growing.write_bytes(growing.read_bytes() + "02.01.2024;3,00;C;R3\r\n".encode("cp1252"))
    os.utime(growing, (OLD + 20, OLD + 20))
    time.sleep(1.2)
    fourth = tick(third.cursor)
    assert [r.partition_key for r in fourth.run_requests] == ["st_a.csv"], "changed since last tick: waits"
    time.sleep(1.2)
    fifth = tick(fourth.cursor)
    assert sorted(r.partition_key for r in fifth.run_requests) == ["st_a.csv", "st_b.csv"]
    # the requested run loads the file
    from hub.dagster.definitions import pipeline_assets

    instance.add_dynamic_partitions("statements_files", ["st_b.csv"])
    result = dg.materialize(pipeline_assets(pipeline), instance=instance, partition_key="st_b.csv",
                            selection=["statements"])
    assert result.success
    assert rows(tmp_path, "select reference from statements order by 1") == [("R2",), ("R3",)]


def test_outbound_export_is_atomic(drop: Drop, tmp_path: Path) -> None:
    from hub.exports import run_export

    folder = f"exp-{tmp_path.name}"
    put(drop, f"{folder}/st_1.csv", statement([("02.01.2024", "10,00", "Müller", "R1"),
                                               ("03.01.2024", "20,50", "Weiß", "R2")]))
    pipeline = spec(drop, folder, tmp_path)
    ingest_file(pipeline, "statements", "st_1.csv", run_id="r1")
    text = yaml.safe_dump({
        "pipeline": "files", "warehouse": f"duckdb:///{tmp_path / 'wh.duckdb'}",
        "systems": {"bank": {"sftp": drop.system()}},
        "sources": {"statements": {"system": "bank", "files": {"path": drop.remote(folder)},
                                   "format": {"csv": {}}}},
        "exports": {"payers": {"system": "bank", "path": drop.remote(f"{folder}/out/payers_{{{{ run.date }}}}.csv"),
                               "sql": "select payer, sum(amount) as total from statements group by 1 order by 1",
                               "format": {"csv": {"delimiter": ";", "encoding": "cp1252"}}}},
    }, allow_unicode=True)
    out = run_export(loads(text, tmp_path / "x.yaml"), "payers")
    written = drop.local(out.remote_path.removeprefix(drop.remote_root.rstrip("/")))
    assert out.remote_path.endswith(f"/out/payers_{time.strftime('%Y-%m-%d', time.gmtime())}.csv")
    assert out.rows == 2 and written.read_bytes().decode("cp1252").splitlines() == [
        '"payer";"total"', '"Müller";10.00', '"Weiß";20.50']
    assert [p.name for p in written.parent.iterdir()] == [written.name], "no temporary file left behind"


# --- formats (local files: the reader is the same after download) ----------------------------------------

def fmt(**kw: Any) -> FormatConfig:
    return FormatConfig.model_validate(kw)


def all_rows(path: Path, f: FormatConfig, base: Path | None = None) -> list[dict[str, Any]]:
    return [r for b in read(path, f, base_dir=base) for r in b.to_pylist()]


def test_csv_encodings(tmp_path: Path) -> None:
    bom = tmp_path / "bom.csv"
    bom.write_bytes("\ufeffname,city\nZoë,Köln\n".encode())
    assert all_rows(bom, fmt(csv={})) == [{"name": "Zoë", "city": "Köln", "_hub_line": 2}]
    latin = tmp_path / "latin.csv"
    latin.write_bytes("name|city\nJosé|São Paulo\n".encode("latin-1"))
    assert all_rows(latin, fmt(csv={"delimiter": "|", "encoding": "latin-1"}))[0]["city"] == "São Paulo"
    noheader = tmp_path / "noheader.csv"
    noheader.write_text('1,"a, quoted"\n2,b\n')
    got = all_rows(noheader, fmt(csv={"header": False, "columns": ["id", "text"]}))
    assert [(r["id"], r["text"], r["_hub_line"]) for r in got] == [("1", "a, quoted", 1), ("2", "b", 2)]


def test_fixed_width_with_a_layout(tmp_path: Path) -> None:
    layout = tmp_path / "contracts" / "layout.yaml"
    layout.parent.mkdir()
    layout.write_text("fields:\n  - {name: id, start: 1, width: 4}\n  - {name: name, start: 5, width: 10}\n"
                      "  - {name: amount, start: 15, width: 8}\n")
    data = tmp_path / "f.txt"
    data.write_text("0001Ada       00012.50\n0002Bob       00003.00\n0003Short\n")
    got = all_rows(data, fmt(fixed_width={"layout": "contracts/layout.yaml"}), tmp_path)
    assert [(r["id"], r["name"], r["amount"]) for r in got[:2]] == [("0001", "Ada", "00012.50"),
                                                                     ("0002", "Bob", "00003.00")]
    assert got[2]["_hub_error"].endswith("line shorter than the layout's 22 characters") and got[2]["_hub_line"] == 3


def test_jsonl_xml_parquet_and_compression(tmp_path: Path) -> None:
    jl = tmp_path / "r.jsonl.gz"
    with gzip.open(jl, "wt") as fh:
        fh.write('{"id": 1, "tags": ["a"]}\n{not json}\n{"id": 2}\n')
    got = all_rows(jl, fmt(jsonl={}))
    assert [r.get("id") for r in got if not r.get("_hub_error")] == [1, 2]
    [bad] = [r for r in got if r.get("_hub_error")]
    assert bad["_hub_line"] == 2 and bad["_hub_raw"] == "{not json}"
    xml = tmp_path / "r.xml"
    xml.write_text('<?xml version="1.0"?><Batch><Payment id="1"><Amount>10.5</Amount><Payer><Name>Ann</Name>'
                   "</Payer></Payment><Payment id=\"2\"><Amount>3</Amount></Payment></Batch>")
    assert all_rows(xml, fmt(xml={"records": "Payment"}))[0] == {"id": "1", "Amount": "10.5", "Payer": {"Name": "Ann"},
                                                                 "_hub_line": 1}
    evil = tmp_path / "evil.xml"
    evil.write_text('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><B><P>&e;</P></B>')
    with pytest.raises(XMLSecurityError):
        all_rows(evil, fmt(xml={"records": "P"}))
    parquet = tmp_path / "r.parquet"
    pq.write_table(pa.table({"id": [1, 2], "x": [0.5, 1.5]}), parquet)
    assert all_rows(parquet, fmt(parquet={})) == [{"id": 1, "x": 0.5}, {"id": 2, "x": 1.5}]
    archive = tmp_path / "two.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("a.csv", "id\n1\n")
        z.writestr("b.csv", "id\n2\n")
    assert [r["id"] for r in all_rows(archive, fmt(csv={}))] == ["1", "2"]


def test_cli_runs_one_file_of_a_drop(bank: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from hub.cli.main import app
    from tests.conftest import DEMO_SPEC, state_env

    monkeypatch.setenv("HUB_WAREHOUSE", f"duckdb:///{tmp_path / 'cli.duckdb'}")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    for name, value in state_env(tmp_path).items():  # the checkout's spec: not the checkout's .hub/, reports/
        monkeypatch.setenv(name, value)
    (tmp_path / "dagster").mkdir()
    res = CliRunner().invoke(app, ["run", str(DEMO_SPEC), "--asset", "bank_statements", "--partition",
                                   "statements_20240103.csv"])
    assert res.exit_code == 0, res.output
    assert "partition file statements_20240103.csv: bank_statements=" in res.output
    assert (bank.root / "archive" / "statements_20240103.csv").exists(), "archived after the commit"
    assert (bank.outbox / "statements_20240102.csv").exists(), "the other files are untouched"
