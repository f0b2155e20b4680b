"""Resume: a long extraction that fails for good part-way continues where it stopped on the next attempt.

Every case uses real servers on loopback. A run fails part-way (a page that keeps failing, connections reset
beyond the retries, a SIGKILL); the warehouse is unchanged; once the fault clears, the re-run asks the
source only for what the first attempt did not get (asserted from the server's own request log, or the bytes
a proxy forwarded) and its warehouse equals a fault-free run's, row for row. A changed spec, page numbers
over data that may move and ``--full-refresh`` start over instead (docs/reliability.md, "Resume").
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml

from adapters.rest._paginate import PageRequest, Paginator
from adapters.rest.config import PaginateConfig
from hub.dagster.run import run_pipeline
from hub.demo.erp import ERPService
from hub.errors import HubError
from hub.files import ingest_file
from hub.materialize import materialize_source
from hub.runtime.secrets import register
from hub.runtime.window import Window
from hub.spec import loads
from hub.warehouse import DuckDBWarehouse
from tests.conftest import REPO, demo_spec_text
from tests.fault_proxy import FaultProxy, sigkill_when
from tests.rest_server import RestTestServer
from tests.sftp_servers import start_embedded
from tests.sql_servers import scratch_database, writer
from tests.test_faults import snapshot


def spools(root: Path) -> list[Path]:
    """The checkpoint spools with a resume point under *root*/.hub."""
    return sorted((root / ".hub" / "checkpoints").rglob("state.json"))


# --- REST -------------------------------------------------------------------------------------------------

def rest_spec(server: RestTestServer, tmp: Path, warehouse: str, *, path: str, params: dict[str, Any],
              paginate: dict[str, Any], partitioned: bool = False, **source: Any) -> Any:
    doc: dict[str, Any] = {
        "pipeline": "resume",
        "warehouse": f"duckdb:///{tmp / warehouse}",
        "systems": {"api": {"rest": {"base_url": server.url, "concurrency": 2,
                                     "retries": {"max": 1, "backoff": 0.01}}}},
        "sources": {"items": {"system": "api", "request": {"path": path, "params": params},
                              "records": "$.data[*]", "paginate": paginate, "primary_key": ["id"],
                              "columns": {"id": {"type": "int64"}, "name": "name"}, **source}},
    }
    if partitioned:
        doc["partitions"] = {"daily": {"start": "2024-01-01"}}
        doc["sources"]["items"]["request"]["params"]["day"] = "{{ partition.key }}"
    return loads(yaml.safe_dump(doc), tmp / f"{warehouse}.yaml")


CURSOR = {"cursor": {"param": "cursor", "cursor_path": "$.meta.next_cursor"}}
DAY = Window("2024-01-03", datetime(2024, 1, 3, tzinfo=UTC), datetime(2024, 1, 4, tzinfo=UTC))


def test_rest_cursor_resumes_after_a_page_that_keeps_failing(tmp_path: Path) -> None:
    with RestTestServer() as server:
        params = {"n": 95, "size": 10}
        clean = rest_spec(server, tmp_path, "clean.duckdb", path="/cursor", params=params, paginate=CURSOR)
        faulty = rest_spec(server, tmp_path, "faulty.duckdb", path="/cursor", params=params, paginate=CURSOR)
        # The faulty warehouse already holds an earlier load (35 items): the failed run must leave exactly that.
        earlier = rest_spec(server, tmp_path, "faulty.duckdb", path="/cursor", params={"n": 35, "size": 10},
                            paginate=CURSOR)
        materialize_source(earlier, "items", window=None, run_id="earlier")
        materialize_source(clean, "items", window=None, run_id="clean")
        expected, before = snapshot(tmp_path / "clean.duckdb"), snapshot(tmp_path / "faulty.duckdb")
        assert len(expected["items"]) == 95 and len(before["items"]) == 35

        stuck = server._token(60)  # the 7th page (items 61-70) answers 503, retries included
        server.add_fault("/cursor", 503, times=None, match={"cursor": stuck})
        start = len(server.requests())
        with pytest.raises(HubError, match="HTTP 503"):
            materialize_source(faulty, "items", window=None, run_id="failed")
        cursors = [r.param("cursor") for r in server.requests()[start:]]
        assert cursors[0] is None and cursors[-2:] == [stuck, stuck], cursors
        assert snapshot(tmp_path / "faulty.duckdb") == before, "a failed run leaves the warehouse as it was"
        assert len(spools(tmp_path)) == 1

        server._faults.clear()
        start = len(server.requests())
        outcome = materialize_source(faulty, "items", window=None, run_id="resumed")
        cursors = [r.param("cursor") for r in server.requests()[start:]]
        assert cursors == [server._token(off) for off in range(60, 95, 10)], "only the pages not spooled"
        assert outcome.details["resumed"] is True
        assert outcome.details["resumed_from"] == f"cursor={stuck}"
        assert outcome.details["resumed_rows"] == 60 and outcome.details["pages"] == 4
        assert outcome.load.rows_loaded == 95
        assert snapshot(tmp_path / "faulty.duckdb") == expected
        assert spools(tmp_path) == [], "the commit deletes the spool"


def test_rest_known_pages_of_a_past_partition_resume_at_the_failed_page(tmp_path: Path) -> None:
    """Page numbers are trusted for a window in the past: the pages after the spooled ones are fetched."""
    with RestTestServer() as server:
        params = {"n": 95, "per_page": 10}
        paging = {"page_number": {"param": "page", "total_pages": "$.total_pages"}}
        clean = rest_spec(server, tmp_path, "clean.duckdb", path="/pages", params=params, paginate=paging,
                          partitioned=True)
        faulty = rest_spec(server, tmp_path, "faulty.duckdb", path="/pages", params=params, paginate=paging,
                           partitioned=True)
        materialize_source(clean, "items", window=DAY, run_id="clean")
        server.add_fault("/pages", 503, times=None, match={"page": "6"})
        with pytest.raises(HubError, match="HTTP 503"):
            materialize_source(faulty, "items", window=DAY, run_id="failed")
        assert snapshot(tmp_path / "faulty.duckdb") == {}
        server._faults.clear()
        start = len(server.requests())
        outcome = materialize_source(faulty, "items", window=DAY, run_id="resumed")
        pages = sorted(int(r.param("page") or 0) for r in server.requests()[start:])
        assert pages == [6, 7, 8, 9, 10], pages
        assert outcome.details["resumed_from"] == "page=6" and outcome.details["resumed_rows"] == 50
        assert snapshot(tmp_path / "faulty.duckdb") == snapshot(tmp_path / "clean.duckdb")


def test_rest_page_numbers_of_moving_data_start_over(tmp_path: Path) -> None:
    """Unpartitioned page-number paging may shift between attempts: no checkpoint, the re-run starts at page 1."""
    with RestTestServer() as server:
        paging = {"page_number": {"param": "page", "total_pages": "$.total_pages"}}
        spec = rest_spec(server, tmp_path, "wh.duckdb", path="/pages", params={"n": 95, "per_page": 10},
                         paginate=paging)
        server.add_fault("/pages", 503, times=None, match={"page": "6"})
        with pytest.raises(HubError, match="HTTP 503"):
            materialize_source(spec, "items", window=None, run_id="failed")
        assert spools(tmp_path) == []
        server._faults.clear()
        start = len(server.requests())
        outcome = materialize_source(spec, "items", window=None, run_id="again")
        assert sorted(int(r.param("page") or 0) for r in server.requests()[start:]) == list(range(1, 11))
        assert outcome.details["resumed"] is False
        assert "may still change" in outcome.details["resume_reason"]


def test_changed_spec_or_full_refresh_does_not_resume(tmp_path: Path) -> None:
    with RestTestServer() as server:
        spec = rest_spec(server, tmp_path, "wh.duckdb", path="/cursor", params={"n": 95, "size": 10},
                         paginate=CURSOR)
        server.add_fault("/cursor", 503, times=None, match={"cursor": server._token(60)})
        with pytest.raises(HubError):
            materialize_source(spec, "items", window=None, run_id="failed")
        assert len(spools(tmp_path)) == 1
        server._faults.clear()
        # The same source asking for other records (n=97): the spool of the old spec must not be used.
        changed = rest_spec(server, tmp_path, "wh.duckdb", path="/cursor", params={"n": 97, "size": 10},
                            paginate=CURSOR)
        start = len(server.requests())
        outcome = materialize_source(changed, "items", window=None, run_id="changed")
        assert server.requests()[start].param("cursor") is None, "started from the first page"
        assert outcome.details["resumed"] is False and "changed" in outcome.details["resume_reason"]
        assert outcome.load.rows_loaded == 97 and spools(tmp_path) == []

        server.add_fault("/cursor", 503, times=None, match={"cursor": server._token(60)})
        with pytest.raises(HubError):
            materialize_source(spec, "items", window=None, run_id="failed")
        server._faults.clear()
        start = len(server.requests())
        outcome = materialize_source(spec, "items", window=None, run_id="full", full_refresh=True)
        assert server.requests()[start].param("cursor") is None
        assert outcome.details["resumed"] is False and "full refresh" in outcome.details["resume_reason"]
        assert spools(tmp_path) == []


def test_a_stale_spool_is_not_resumed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with RestTestServer() as server:
        spec = rest_spec(server, tmp_path, "wh.duckdb", path="/cursor", params={"n": 45, "size": 10},
                         paginate=CURSOR)
        server.add_fault("/cursor", 503, times=None, match={"cursor": server._token(30)})
        with pytest.raises(HubError):
            materialize_source(spec, "items", window=None, run_id="failed")
        server._faults.clear()
        monkeypatch.setenv("HUB_CHECKPOINT_TTL", "0")
        start = len(server.requests())
        outcome = materialize_source(spec, "items", window=None, run_id="late")
        assert server.requests()[start].param("cursor") is None
        assert outcome.details["resumed"] is False and "h old" in outcome.details["resume_reason"]
        assert outcome.load.rows_loaded == 45


def test_a_next_url_carrying_a_secret_is_no_resume_point() -> None:
    """Tokens go to disk: a next URL that echoes a credential is not stored (only the position is, otherwise)."""
    register("k3y-0f-the-partner-991")
    paginator = Paginator(PaginateConfig.model_validate({"next_url": {"path": "$.next"}}), "http://x/api",
                          {"api_key": "k3y-0f-the-partner-991"})
    assert paginator.token_for(PageRequest("http://x/api?page=2&api_key=k3y-0f-the-partner-991")) is None
    token = paginator.token_for(PageRequest("http://x/api?page=2"))
    assert token == {"kind": "url", "url": "http://x/api?page=2", "at": "next URL http://x/api?page=2"}
    cursor = Paginator(PaginateConfig.model_validate({"cursor": {"param": "c", "cursor_path": "$.n"}}),
                       "http://x/api", {"api_key": "k3y-0f-the-partner-991"})
    stored = cursor.token_for(PageRequest("http://x/api", {"api_key": "k3y-0f-the-partner-991", "c": "abc"}))
    assert stored is not None and "k3y" not in json.dumps(stored)
    again, _ = cursor.resume(stored)
    assert again is not None and again.params == {"api_key": "k3y-0f-the-partner-991", "c": "abc"}


def test_a_failure_that_is_not_the_sources_drops_the_spool(tmp_path: Path) -> None:
    """Rows that fail the threshold would fail again when replayed: the next attempt reads the source afresh."""
    with RestTestServer() as server:
        # "item-1" is no int64: every row is quarantined, beyond max_bad_rows once the last page is in
        broken = rest_spec(server, tmp_path, "wh.duckdb", path="/cursor", params={"n": 35, "size": 10},
                           paginate=CURSOR, columns={"id": {"type": "int64"}, "name": {"type": "int64"}},
                           max_bad_rows=0)
        with pytest.raises(HubError, match="max_bad_rows"):
            materialize_source(broken, "items", window=None, run_id="bad")
        assert len(server.requests("/cursor")) == 4, "every page was read (and spooled) before the threshold"
        assert spools(tmp_path) == []


# --- SOAP -------------------------------------------------------------------------------------------------

def _page_numbers(bodies: list[bytes]) -> list[int]:
    found = [re.search(rb"Page>(\d+)</", b) for b in bodies]
    return [int(m.group(1)) for m in found if m]


@pytest.fixture
def erp_env(erp: ERPService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ERPService:
    monkeypatch.setenv("HUB_CACHE_DIR", str(tmp_path / "cache"))
    return erp


def _demo(tmp: Path, name: str) -> Any:
    """The demo pipeline with pages of 4 orders (a day takes several), loading into *name*."""
    text = demo_spec_text().replace("      PageSize: 10\n", "      PageSize: 4\n")
    return loads(f"warehouse: duckdb:///{tmp / name}\n{text}", tmp / "demo.yaml")


def test_soap_pages_resume_at_the_failed_page(erp_env: ERPService, tmp_path: Path) -> None:
    erp = erp_env
    clean, faulty = _demo(tmp_path, "clean.duckdb"), _demo(tmp_path, "faulty.duckdb")
    materialize_source(clean, "erp_orders", window=DAY, run_id="clean")
    pages = _page_numbers(erp.requests)
    assert max(pages) >= 5, f"the day needs several pages of 4 orders: {pages}"
    erp.requests.clear()
    erp.fail_next[:] = [None, None, None, 503, 503]  # type: ignore[list-item]  # page 4 and its retry
    with pytest.raises(HubError, match="HTTP 503"):
        materialize_source(faulty, "erp_orders", window=DAY, run_id="failed")
    assert _page_numbers(erp.requests) == [1, 2, 3, 4, 4]
    assert snapshot(tmp_path / "faulty.duckdb") == {}
    erp.requests.clear()
    outcome = materialize_source(faulty, "erp_orders", window=DAY, run_id="resumed")
    assert _page_numbers(erp.requests) == list(range(4, max(pages) + 1)), "pages 1-3 came from the spool"
    assert outcome.details["resumed_from"] == "Page=4" and outcome.details["resumed_batches"] == 3
    assert outcome.details["resumed_rows"] == 12
    assert snapshot(tmp_path / "faulty.duckdb") == snapshot(tmp_path / "clean.duckdb")
    assert spools(tmp_path) == []


@pytest.mark.slow
def test_sigkilled_hub_run_resumes_on_the_rerun(erp_env: ERPService, tmp_path: Path, dagster_home: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """`hub run` killed with SIGKILL while page 4 is on its way; the re-run (through Dagster) replays pages 1-3
    from the spool, fetches the rest, and says so in the materialization's metadata."""
    erp = erp_env
    clean = _demo(tmp_path, "clean.duckdb")
    materialize_source(clean, "erp_orders", window=DAY, run_id="clean")
    last = max(_page_numbers(erp.requests))
    port = urlsplit(erp.url).port
    assert port is not None
    with FaultProxy(port) as proxy:
        address = erp.url.replace(f":{port}", f":{proxy.port}", 1)
        wsdl = '      wsdl: "${HUB_DEMO_ERP_WSDL:-http://127.0.0.1:8802/erp?wsdl}"\n'
        text = demo_spec_text().replace("      PageSize: 10\n", "      PageSize: 4\n").replace(
            wsdl, f"{wsdl}      address: {address}\n")
        spec = tmp_path / "demo.yaml"
        spec.write_text(text)
        faulty = tmp_path / "faulty.duckdb"
        erp.requests.clear()
        # The ERP answers one request per connection: pages 1-3 pass, page 4's answer never comes.
        proxy.inject("stall", skip=3, after=0, seconds=120, times=None)
        env = {**os.environ, "HUB_WAREHOUSE": f"duckdb:///{faulty}"}
        hub = Path(sys.executable).parent / "hub"
        proc = subprocess.Popen([str(hub), "run", str(spec), "--asset", "erp_orders", "--partition", "2024-01-03"],
                                cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

        def spooled_three_pages() -> bool:
            states = spools(tmp_path)
            return bool(states) and json.loads(states[0].read_text())["batches"] == 3 and len(erp.requests) >= 4

        sigkill_when(proc, spooled_three_pages, "the run never spooled pages 1-3")
        proxy.clear()
        assert snapshot(faulty) == {}, "the killed load committed nothing"
        erp.requests.clear()
        monkeypatch.setenv("HUB_WAREHOUSE", f"duckdb:///{faulty}")
        instance = dg.DagsterInstance.ephemeral()
        outcome = run_pipeline(loads(text, spec), instance, assets=["erp_orders"], partitions=["2024-01-03"])[0]
        assert outcome.success, outcome.error
    assert _page_numbers(erp.requests) == list(range(4, last + 1))
    event = instance.get_latest_materialization_event(dg.AssetKey("erp_orders"))
    assert event is not None and event.asset_materialization is not None
    md = event.asset_materialization.metadata
    assert md["hub/resumed"].value is True and md["hub/resumed_from"].value == "Page=4"
    assert md["hub/resumed_batches"].value == 3 and md["hub/resumed_rows"].value == 12
    assert snapshot(faulty) == snapshot(tmp_path / "clean.duckdb")


# --- SFTP -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sftp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, FaultProxy]]:
    """An SFTP server with a fault proxy in front of it, shared by the module's SFTP cases."""
    drop, server = start_embedded(tmp_path_factory.mktemp("sftp"))
    with FaultProxy(drop.port) as proxy:
        yield drop, proxy
    server.stop()


@pytest.fixture
def big_drop(sftp_server: tuple[Any, FaultProxy], tmp_path: Path) -> Iterator[tuple[Any, FaultProxy, int]]:
    """A statement CSV of ~5.5 MB in a folder of its own (``in-<test>``); the proxy is cleared afterwards."""
    drop, proxy = sftp_server
    lines = "".join(f"{i};Payer {i % 977};ORD-{i:08d};{i % 10_000}.{i % 100:02d}\n" for i in range(150_000))
    path = drop.local(f"in-{tmp_path.name}/big_20240103.csv")
    path.write_text("id;payer;reference;amount\n" + lines)
    os.utime(path, (time.time() - 3600, time.time() - 3600))
    yield drop, proxy, path.stat().st_size
    proxy.clear()


def sftp_spec(drop: Any, port: int, tmp: Path, warehouse: str) -> Any:
    system = drop.system(port=port, retries={"max": 1, "backoff": 0.01}, host_key_fingerprint=drop.fingerprint)
    system.pop("known_hosts")  # it names the server's own port; the proxy's differs: the key is pinned instead
    # The embedded server answers concurrent reads in any order. With 4 reads of 256 KB in flight the first
    # block has arrived (and been written) well before the proxy's 2 MB cut; with the default 64, a loaded
    # machine could see the cut before it, leaving an empty (still correct, but untestable) prefix.
    system["concurrency"] = 4
    doc = {
        "pipeline": "files",
        "warehouse": f"duckdb:///{tmp / warehouse}",
        "systems": {"bank": {"sftp": system}},
        "sources": {"statements": {
            "system": "bank", "files": {"path": drop.remote(f"in-{tmp.name}"), "glob": "*.csv", "stable_for": "30s"},
            "format": {"csv": {"delimiter": ";"}}, "primary_key": ["id"]}},
    }
    return loads(yaml.safe_dump(doc), tmp / f"{warehouse}.yaml")


def test_sftp_download_resumes_at_the_byte_offset(big_drop: tuple[Any, FaultProxy, int], tmp_path: Path) -> None:
    drop, proxy, size = big_drop
    name = "big_20240103.csv"
    clean = sftp_spec(drop, drop.port, tmp_path, "clean.duckdb")
    assert ingest_file(clean, "statements", name, run_id="clean").status == "loaded"

    faulty = sftp_spec(drop, proxy.port, tmp_path, "faulty.duckdb")
    # Every connection is reset 2 MB into its responses: the first attempt and its retry both break mid-file
    # (the retry continuing the first one's copy, see the next test).
    proxy.inject("reset", after=2_000_000, times=None)
    with pytest.raises(HubError, match="gave up after 2 attempts"):
        ingest_file(faulty, "statements", name, run_id="failed")
    partial = list((tmp_path / ".spool" / "partial").glob("*.data"))  # named by a hash of source and path
    assert len(partial) == 1
    got = partial[0].stat().st_size
    assert 0 < got < size, "a prefix of the file was kept"
    assert snapshot(tmp_path / "faulty.duckdb") == {}

    proxy.clear()
    before = len(proxy.downstream)
    outcome = ingest_file(faulty, "statements", name, run_id="resumed")
    time.sleep(0.2)  # the proxy records a connection once both sides closed
    sent = sum(proxy.downstream[before:])
    assert outcome.status == "loaded" and outcome.details["resumed_bytes"] == got
    assert outcome.details["resumed_from"] == f"byte {got} of {size}"
    assert sent < size - got + 500_000, f"{sent} bytes forwarded for the {size - got} missing"
    assert snapshot(tmp_path / "faulty.duckdb") == snapshot(tmp_path / "clean.duckdb")
    assert not list((tmp_path / ".spool" / "partial").glob("*")), "nothing left in the spool"


def test_sftp_changed_file_is_copied_from_the_start(big_drop: tuple[Any, FaultProxy, int], tmp_path: Path) -> None:
    drop, proxy, _ = big_drop
    name = "big_20240103.csv"
    faulty = sftp_spec(drop, proxy.port, tmp_path, "wh.duckdb")
    proxy.inject("reset", after=2_000_000, times=None)
    with pytest.raises(HubError):
        ingest_file(faulty, "statements", name, run_id="failed")
    proxy.clear()
    path = drop.local(f"in-{tmp_path.name}/{name}")
    with path.open("a") as fh:  # the partner replaced the file: a new size and mtime
        fh.write("999999;Late;ORD-LATE;1.00\n")
    os.utime(path, (time.time() - 600, time.time() - 600))
    outcome = ingest_file(faulty, "statements", name, run_id="again")
    assert outcome.details["resumed"] is False and outcome.load is not None
    assert outcome.load.rows_loaded == 150_001


def test_sftp_retry_within_the_run_continues_the_copy(big_drop: tuple[Any, FaultProxy, int], tmp_path: Path) -> None:
    """A connection reset mid-file is retried (one retry allowed) from the byte the copy had reached."""
    drop, proxy, size = big_drop
    name = "big_20240103.csv"
    spec = sftp_spec(drop, proxy.port, tmp_path, "wh.duckdb")
    before = len(proxy.downstream)
    proxy.inject("reset", after=4_000_000, times=1)
    outcome = ingest_file(spec, "statements", name, run_id="retried")
    time.sleep(0.2)
    sent = sum(proxy.downstream[before:])
    assert outcome.status == "loaded" and outcome.details["download_resumes"] == 1
    assert outcome.details["resumed"] is False, "nothing was left by an earlier run"
    # Blocks in flight when the connection broke are read again (at most an SSH window, 2 MB); starting over
    # would have cost the 4 MB the first connection had carried.
    assert sent < size + 3_000_000, f"{sent} bytes forwarded for a file of {size}: the copy started over"
    assert outcome.load is not None and outcome.load.rows_loaded == 150_000


# --- SQL --------------------------------------------------------------------------------------------------

_KILL_PG = ("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'hub' "
            "AND datname = current_database() AND pid <> pg_backend_pid()")


@pytest.mark.parametrize("ties", [1, 7], ids=["unique-cursor", "cursor-ties-across-batches"])
def test_sql_incremental_read_resumes_after_the_connection_broke(ties: int, tmp_path: Path) -> None:
    """The backend is killed after the first batch: the restart replays the spool and reads ``seq >= last``
    instead of everything; rows at the boundary are read twice and merged on the key."""
    with scratch_database("postgresql") as url:
        admin = writer(url)
        with admin.begin() as conn:
            conn.execute(sa.text("CREATE TABLE events (id int PRIMARY KEY, seq int, v text)"))
            conn.execute(sa.text(f"INSERT INTO events SELECT g, g / {ties}, md5(g::text) "
                                 "FROM generate_series(1, 20000) g"))
        doc = {"pipeline": "sqlresume", "warehouse": f"duckdb:///{tmp_path / 'wh.duckdb'}",
               "systems": {"db": {"sql": {"url": url, "fast_path": False, "retries": {"max": 3, "backoff": 0.05}}}},
               "sources": {"events": {"system": "db", "table": "events", "incremental": {"cursor": "seq"},
                                      "batch_rows": 1000, "primary_key": ["id"]}}}
        pipeline = loads(yaml.safe_dump(doc), tmp_path / "sql.yaml")
        killed: list[int] = []

        def cut(_name: str, rows: int) -> None:
            if killed or rows < 3000:
                return
            with admin.connect() as conn:
                found = conn.execute(sa.text(_KILL_PG)).fetchall()
            assert found, "the extracting connection was not found"
            killed.append(rows)

        outcome = materialize_source(pipeline, "events", window=None, run_id="r1", progress=cut)
        admin.dispose()
    assert killed and outcome.details["restarts"] == 1
    assert outcome.details["resumed"] is True and outcome.details["resumed_rows"] >= 3000
    last = outcome.details["resumed_from"]
    assert last.startswith("seq >= ")
    boundary = int(last.split(">= ")[1])
    # rows with seq = g // ties >= boundary are those with g >= ties * boundary
    assert outcome.details["rows"] == 20000 - ties * boundary + 1, \
        "the restart read from the last spooled cursor value, not from the start"
    wh = DuckDBWarehouse(f"duckdb:///{tmp_path / 'wh.duckdb'}")
    assert wh.query("SELECT count(*) AS n, count(DISTINCT id) AS d, sum(id) AS s FROM events").to_pylist() == [
        {"n": 20000, "d": 20000, "s": 20000 * 20001 // 2}]
    mark = wh.query("SELECT high_water_mark FROM _hub_state WHERE source = 'events'").to_pylist()
    assert mark == [{"high_water_mark": str(20000 // ties)}]
