"""JSON lines and XML read while they download (hub/files.py, ``SftpSource.start_fetch``): the reader follows the
spool file as it grows, the load equals one from a complete copy (rows, types, quarantine, ledger), a duplicate is
still told apart by its hash before anything is reported or committed, and a download that breaks fails the file,
keeps its prefix and resumes as before. Also the download itself, with few reads in flight. Real servers on
loopback (OpenSSH's sshd when installed, the embedded asyncssh server, a fault proxy)."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from adapters.sftp import SftpSession, SftpSource, SftpSystemConfig
from hub.errors import HubError, ThresholdExceeded
from hub.files import LEDGER, build_sftp, ingest_file
from hub.spec import loads
from hub.warehouse import DuckDBWarehouse
from tests.fault_proxy import FaultProxy
from tests.sftp_servers import Drop, start_embedded
from tests.test_faults import snapshot

OLD = time.time() - 3600


def put(drop: Drop, rel: str, content: bytes) -> Path:
    path = drop.local(rel)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    os.utime(path, (OLD, OLD))
    return path


def jsonl(n: int, start: int = 0) -> bytes:
    """*n* payment lines; every 97th has an amount below the rules' minimum (quarantined)."""
    return "".join(f'{{"id": {i}, "booked_on": "2024-01-{i % 28 + 1:02d}", '
                   f'"amount": {-5000 if i % 97 == 0 else i % 500}.25, "channel": "{("sepa", "card", "wire")[i % 3]}", '
                   f'"note": "payment number {i}"}}\n' for i in range(start, start + n)).encode()


def xml(n: int) -> bytes:
    rows = "".join(f"<payment><id>{i}</id><booked_on>2024-02-{i % 28 + 1:02d}</booked_on><amount>"
                   f"{-5000 if i % 97 == 0 else i % 500}.50</amount><channel>card</channel><note>n {i}</note>"
                   "</payment>\n" for i in range(n))
    return f"<?xml version='1.0'?>\n<payments>\n{rows}</payments>\n".encode()


def spec(system: dict[str, Any], folder: str, tmp: Path, fmt: str, **source: Any) -> Any:
    doc = {
        "pipeline": "files", "warehouse": f"duckdb:///{tmp / 'wh.duckdb'}",
        "systems": {"bank": {"sftp": system}},
        "sources": {"payments": {
            "system": "bank", "files": {"path": folder, "glob": f"*.{fmt}"},
            "format": {"jsonl": {}} if fmt == "jsonl" else {"xml": {"records": "payment"}},
            "columns": {"id": {"type": "int64"}, "booked_on": {"type": "date"}, "amount": {"type": "decimal(12,2)"},
                        "channel": "channel", "note": "note"},
            "primary_key": ["id"], "rules": {"amount": {"min": -1000}}, **source}},
    }
    return loads(yaml.safe_dump(doc), tmp / "files.yaml")


def state(tmp: Path) -> dict[str, Any]:
    q = DuckDBWarehouse(f"duckdb:///{tmp / 'wh.duckdb'}").query
    return {
        "rows": q("SELECT * EXCLUDE (_hub_loaded_at, _hub_run_id) FROM payments ORDER BY id").to_pylist(),
        "types": q("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'payments' "
                   "ORDER BY ordinal_position").to_pylist(),
        "quarantine": q("SELECT * EXCLUDE (_hub_loaded_at, _hub_run_id) FROM payments__quarantine "
                        "ORDER BY row_number").to_pylist(),
        "ledger": q(f"SELECT source, file, path, size, mtime, sha256, status, rows FROM {LEDGER} "
                    "ORDER BY file").to_pylist(),
    }


# --- the download ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("concurrency", [1, 2])
def test_a_download_with_few_reads_in_flight_is_whole(drop: Drop, tmp_path: Path, concurrency: int) -> None:
    """Once as many blocks had arrived as reads may be in flight, the download started no new read; when every
    read had completed by the time its loop ran again (always, with one read in flight) it ended early."""
    content = os.urandom(50_000)
    put(drop, f"dl-{tmp_path.name}/f.bin", content)
    cfg = SftpSystemConfig.model_validate(drop.system(concurrency=concurrency, block_size=4096))
    sizes: list[int] = []
    with SftpSession(cfg) as session:
        got = session.download(drop.remote(f"dl-{tmp_path.name}/f.bin"), tmp_path / "f.bin", resume=True,
                               written=sizes.append)
    assert got == len(content) and (tmp_path / "f.bin").read_bytes() == content
    assert sizes[0] == 0 and sizes[-1] == len(content) and sizes == sorted(sizes) and len(sizes) > 3


def test_a_reader_follows_the_download(drop: Drop, tmp_path: Path) -> None:
    content = jsonl(20_000)
    folder = f"follow-{tmp_path.name}"
    put(drop, f"{folder}/p.jsonl", content)
    pipeline = spec(drop.system(concurrency=2, block_size=4096), drop.remote(folder), tmp_path, "jsonl")
    adapter: SftpSource = build_sftp(pipeline, pipeline.sources["payments"])
    with adapter.session() as session:
        remote = adapter.find(session, "p.jsonl")
        assert remote is not None and adapter.streams(remote)
        fetching = adapter.start_fetch(session, remote)
        read, early = b"", False
        with fetching.open() as stream:
            while chunk := stream.read(3000):
                early = early or not fetching.done()
                read += chunk
            stream.seek(1000)  # back into what is on disk (the JSON-lines reader does, for odd blocks)
            assert stream.read(10) == content[1000:1010]
        copy = fetching.result()
    assert read == content and early, "read while the download was still running"
    assert copy.sha256 == hashlib.sha256(content).hexdigest() and copy.size == len(content)
    assert fetching.path.read_bytes() == content


# --- loads -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["jsonl", "xml"])
def test_a_load_read_while_downloading_equals_one_from_the_complete_copy(drop: Drop, tmp_path: Path, fmt: str,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    content = jsonl(30_000) if fmt == "jsonl" else xml(30_000)
    got: dict[str, Any] = {}
    folder = f"eq-{tmp_path.name}"
    put(drop, f"{folder}/p.{fmt}", content)
    for streamed in (True, False):  # the same file into two warehouses
        tmp = tmp_path / str(streamed)
        tmp.mkdir()
        pipeline = spec(drop.system(concurrency=4, block_size=16384), drop.remote(folder), tmp, fmt)
        with monkeypatch.context() as m:
            if not streamed:
                m.setattr(SftpSource, "streams", lambda self, remote: False)
            out = ingest_file(pipeline, "payments", f"p.{fmt}", run_id="r1")
        assert out.status == "loaded" and out.load is not None and out.rejected == 310
        assert out.sha256 == hashlib.sha256(content).hexdigest()
        got[str(streamed)] = (state(tmp), out.details["rows_read"], out.load.rows_loaded)
        assert not list((tmp / ".spool").rglob("*.data")), "the copy is removed after the load"
    assert got["True"] == got["False"]


@pytest.mark.parametrize("fmt", ["jsonl", "xml"])
def test_a_duplicate_read_while_downloading_is_recorded_not_loaded(drop: Drop, tmp_path: Path, fmt: str) -> None:
    content = jsonl(40_000) if fmt == "jsonl" else xml(40_000)
    folder = f"dup-{tmp_path.name}"
    put(drop, f"{folder}/a.{fmt}", content)
    put(drop, f"{folder}/b.{fmt}", content)  # the same bytes under another name
    pipeline = spec(drop.system(), drop.remote(folder), tmp_path, fmt)
    first = ingest_file(pipeline, "payments", f"a.{fmt}", run_id="r1")
    assert first.status == "loaded"
    before = state(tmp_path)
    reported: list[tuple[str, int]] = []
    second = ingest_file(pipeline, "payments", f"b.{fmt}", run_id="r2",
                         progress=lambda name, rows: reported.append((name, rows)))
    assert second.status == f"duplicate of a.{fmt}" and second.load is None and second.sha256 == first.sha256
    assert reported == [], "no progress is reported for a file that turns out to be a duplicate"
    after = state(tmp_path)
    assert after["rows"] == before["rows"] and after["quarantine"] == before["quarantine"]
    assert [(r["file"], r["status"]) for r in after["ledger"]] == [(f"a.{fmt}", "loaded"),
                                                                   (f"b.{fmt}", f"duplicate of a.{fmt}")]


def test_a_duplicate_is_a_duplicate_even_when_its_rows_would_fail_the_threshold(drop: Drop, tmp_path: Path) -> None:
    """Before reading overlapped the download, a duplicate was recognized before any row was read; the rows it
    would reject (here beyond a threshold set since) must not turn it into a failure."""
    content = jsonl(5_000)
    folder = f"dupbad-{tmp_path.name}"
    put(drop, f"{folder}/a.jsonl", content)
    put(drop, f"{folder}/b.jsonl", content)
    assert ingest_file(spec(drop.system(), drop.remote(folder), tmp_path, "jsonl"), "payments", "a.jsonl",
                       run_id="r1").rejected == 52
    strict = spec(drop.system(), drop.remote(folder), tmp_path, "jsonl", max_bad_rows=0)
    put(drop, f"{folder}/c.jsonl", jsonl(5_000, start=10_000))
    with pytest.raises(ThresholdExceeded):  # rows as bad in a file that is not a duplicate: it fails
        ingest_file(strict, "payments", "c.jsonl", run_id="r2")
    out = ingest_file(strict, "payments", "b.jsonl", run_id="r3")
    assert out.status == "duplicate of a.jsonl"


# --- a download that breaks --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Drop, FaultProxy]]:
    drop, server = start_embedded(tmp_path_factory.mktemp("sftp"))
    with FaultProxy(drop.port) as proxy:
        yield drop, proxy
    server.stop()


def proxied_spec(drop: Drop, port: int, folder: str, tmp: Path) -> Any:
    system = drop.system(port=port, retries={"max": 1, "backoff": 0.01}, host_key_fingerprint=drop.fingerprint,
                         concurrency=4)
    system.pop("known_hosts")  # it names the server's own port; the proxy's differs: the key is pinned instead
    return spec(system, drop.remote(folder), tmp, "jsonl")


def test_a_broken_download_fails_the_file_keeps_its_prefix_and_resumes(proxied: tuple[Drop, FaultProxy],
                                                                       tmp_path: Path) -> None:
    drop, proxy = proxied
    content = jsonl(60_000)  # ~6 MB
    folder = f"broken-{tmp_path.name}"
    put(drop, f"{folder}/p.jsonl", content)
    clean_dir, faulty_dir = tmp_path / "clean", tmp_path / "faulty"
    clean_dir.mkdir()
    faulty_dir.mkdir()
    clean = ingest_file(proxied_spec(drop, drop.port, folder, clean_dir), "payments", "p.jsonl", run_id="r1")
    assert clean.status == "loaded"
    faulty = proxied_spec(drop, proxy.port, folder, faulty_dir)
    proxy.inject("reset", after=2_000_000, times=None)
    try:
        with pytest.raises(HubError, match="gave up after 2 attempts"):  # the download's error, not the reader's
            ingest_file(faulty, "payments", "p.jsonl", run_id="failed")
    finally:
        proxy.clear()
    partial = list((faulty_dir / ".spool" / "partial").glob("*.data"))
    assert len(partial) == 1 and 0 < partial[0].stat().st_size < len(content), "the prefix is kept"
    assert snapshot(faulty_dir / "wh.duckdb") == {}, "nothing was loaded"
    outcome = ingest_file(faulty, "payments", "p.jsonl", run_id="resumed")
    assert outcome.status == "loaded" and outcome.details["resumed"] is True
    assert state(faulty_dir)["rows"] == state(clean_dir)["rows"]
    assert state(faulty_dir)["quarantine"] == state(clean_dir)["quarantine"]
