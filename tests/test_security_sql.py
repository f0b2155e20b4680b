"""SQL sources that only read for real, and user SQL in the warehouse sandboxed (the security issue's SQL part).

Against this machine's PostgreSQL and MariaDB servers (skipped, with the reason, when one is not reachable),
SQLite files and DuckDB warehouses: dangerous functions are refused before anything reaches the database,
statements stop at the system's statement timeout, a hub told to stop (SIGTERM, Ctrl-C) cancels its query on
the server, models cannot read the hub's files, and a spec cannot put its warehouse anywhere on the disk.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa
import yaml

from adapters.sql import SqlSource, SqlSourceConfig, SqlSystemConfig, WriteRefused
from hub.errors import AdapterError, SpecError, WarehouseError
from hub.spec import loads
from hub.warehouse import DuckDBWarehouse, LoadRequest
from hub.warehouse.postgres import PostgresWarehouse
from tests.sql_servers import scratch_database, writer

REPO = Path(__file__).resolve().parents[1]


def _source(url: str, query: str, **system: Any) -> SqlSource:
    return SqlSource(SqlSystemConfig.model_validate({"url": url, **system}),
                     SqlSourceConfig.model_validate({"query": query}), name="probe")


def _read(url: str, query: str, **system: Any) -> pa.Table:
    return pa.Table.from_batches(list(_source(url, query, **system).batches()))


def _until(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds}s: {what}")
        time.sleep(0.1)


@contextmanager
def _locked(url: str, kind: str) -> Iterator[sa.Connection]:
    """A table ``locked`` (one row) that another session holds exclusively: a SELECT of it waits, on the
    server, until the lock goes — a long query that costs no CPU."""
    eng = writer(url)
    with eng.begin() as conn:
        conn.execute(sa.text("CREATE TABLE locked (id integer)"))
        conn.execute(sa.text("INSERT INTO locked VALUES (1)"))
    conn = eng.connect()
    try:
        if kind == "postgresql":
            conn.execute(sa.text("BEGIN"))
            conn.execute(sa.text("LOCK TABLE locked IN ACCESS EXCLUSIVE MODE"))
        else:
            conn.execute(sa.text("LOCK TABLES locked WRITE"))
        yield conn
    finally:
        if kind != "postgresql":
            conn.execute(sa.text("UNLOCK TABLES"))
        conn.close()
        eng.dispose()


# --- dangerous functions are refused before anything runs ----------------------------------------------


@pytest.mark.parametrize("fast", [True, False], ids=["adbc", "dbapi"])
def test_pg_terminate_backend_of_another_session_is_refused(fast: bool) -> None:
    """The tester's finding: a read-only transaction does not stop pg_terminate_backend."""
    with scratch_database("postgresql") as url:
        eng = writer(url)
        with eng.connect() as victim:
            pid = victim.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
            with pytest.raises(WriteRefused, match=r"sources\.probe\.query: .*pg_terminate_backend\(\).*other "
                                                   r"sessions"):
                _read(url, f"SELECT pg_terminate_backend(pid) AS killed FROM pg_stat_activity WHERE pid = {pid}",
                      fast_path=fast)
            assert victim.execute(sa.text("SELECT 1")).scalar_one() == 1  # still alive
        eng.dispose()


@pytest.mark.parametrize("query", [
    "SELECT pg_read_file('/etc/passwd') AS f",
    "SELECT pg_catalog.pg_sleep(30) AS s",
    "SELECT set_config('default_transaction_read_only', 'off', false) AS s",
    "SELECT pg_advisory_lock(42) AS l",
    "SELECT * FROM dblink('dbname=postgres', 'DELETE FROM t') AS t(x int)",
    "SELECT query_to_xml('DELETE FROM t RETURNING *', true, true, '') AS x",
    "SELECT lo_import('/etc/passwd') AS oid",
])
def test_postgres_side_effect_functions_are_refused(query: str) -> None:
    with pytest.raises(WriteRefused, match=r"calls .*\(\), which .*nothing was run"):
        _source("postgresql://nobody@127.0.0.1:9/none", query)


def test_a_denied_function_in_a_spec_is_a_spec_error(tmp_path: Path) -> None:
    doc = {"pipeline": "p", "systems": {"db": {"sql": {"url": "postgresql://u@h/db"}}},
           "sources": {"t": {"system": "db", "query": "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"}}}
    with pytest.raises(SpecError, match=r"sources\.t\.query.*pg_terminate_backend"):
        loads(yaml.safe_dump(doc), tmp_path / "p.yaml")


@pytest.mark.parametrize("query", ["SELECT SLEEP(30) AS s", "SELECT LOAD_FILE('/etc/passwd') AS f",
                                   "SELECT BENCHMARK(100000000, MD5('x')) AS b", "SELECT GET_LOCK('hub', 10) AS l",
                                   "SELECT 1 INTO OUTFILE '/tmp/hub-outfile'"])
def test_mariadb_sleep_and_load_file_are_refused(query: str) -> None:
    with scratch_database("mariadb") as url:
        started = time.monotonic()
        with pytest.raises(WriteRefused, match=r"sources\.probe\.query: .*(calls|cannot be parsed)"):
            _read(url, query)
        assert time.monotonic() - started < 5


@pytest.mark.parametrize("query", ["SELECT readfile('/etc/passwd') AS f", "SELECT load_extension('/tmp/x.so') AS e",
                                   "SELECT writefile('/tmp/hub-x', 'y') AS w"])
def test_sqlite_file_functions_are_refused(tmp_path: Path, query: str) -> None:
    with pytest.raises(WriteRefused, match=r"calls (readfile|load_extension|writefile)\(\)"):
        _read(f"sqlite:///{tmp_path / 's.sqlite'}", query)


# --- statement timeouts -------------------------------------------------------------------------------


@pytest.mark.parametrize("fast", [True, False], ids=["adbc", "dbapi"])
def test_pg_statement_timeout_stops_a_long_query(fast: bool) -> None:
    with scratch_database("postgresql") as url, _locked(url, "postgresql"):
        started = time.monotonic()
        with pytest.raises(AdapterError, match=r"statement timeout.*statement_timeout of 1s"):
            _read(url, "SELECT * FROM locked", statement_timeout="1s", fast_path=fast)
        assert time.monotonic() - started < 8


def test_mariadb_statement_timeout_stops_a_long_query() -> None:
    with scratch_database("mariadb") as url:
        heavy = ("SELECT count(*) AS n FROM information_schema.columns a, information_schema.columns b, "
                 "information_schema.columns c, information_schema.columns d")
        started = time.monotonic()
        with pytest.raises(AdapterError, match=r"max_statement_time|maximum statement execution time"):
            _read(url, heavy, statement_timeout="1s")
        assert time.monotonic() - started < 8


def test_sqlite_statement_timeout_interrupts_a_runaway_query(tmp_path: Path) -> None:
    endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) AS n FROM c"
    started = time.monotonic()
    with pytest.raises(AdapterError, match=r"interrupted.*statement_timeout of 1s"):
        _read(f"sqlite:///{tmp_path / 's.sqlite'}", endless, statement_timeout="1s")
    assert time.monotonic() - started < 8


def test_the_default_statement_timeout_is_fifteen_minutes_and_zero_turns_it_off() -> None:
    assert SqlSystemConfig(url="sqlite://").statement_timeout_s == 900
    assert SqlSystemConfig(url="sqlite://", statement_timeout=0).statement_timeout_s == 0
    with pytest.raises(ValueError, match="duration"):
        SqlSystemConfig(url="sqlite://", statement_timeout="soon")


# --- SIGTERM / Ctrl-C cancel the query on the server ------------------------------------------------------

_READER = textwrap.dedent("""
    import sys
    from adapters.sql import SqlSource, SqlSourceConfig, SqlSystemConfig
    source = SqlSource(SqlSystemConfig(url=sys.argv[1], fast_path=sys.argv[2] == "1"),
                       SqlSourceConfig(query=sys.argv[3]), name="slow")
    for batch in source.batches():
        pass
    print("finished", flush=True)
""")


#: Long queries: PostgreSQL waits for the lock of ``locked`` (no CPU, and a killed client is not noticed
#: while waiting); MariaDB does notice a vanished client during a lock wait, so it computes (a cross join
#: that would run for hours on one core) and notices nothing until it has a row to send.
_LONG = {"postgresql": "SELECT id AS hub_probe FROM locked",
         "mariadb": "SELECT count(*) AS hub_probe FROM information_schema.columns a, information_schema.columns b, "
                    "information_schema.columns c, information_schema.columns d"}


def _probes(url: str, kind: str, *, kill: bool = False) -> int:
    """How many sessions other than the test's run the probe query on the server (*kill*: and stop them)."""
    eng = writer(url)
    with eng.connect() as conn:
        if kind == "postgresql":
            sql = (f"SELECT {'pg_cancel_backend(pid)' if kill else 'pid'} FROM pg_stat_activity WHERE datname = "
                   "current_database() AND state = 'active' AND query LIKE '%hub_probe%' AND pid <> pg_backend_pid()")
        else:
            sql = ("SELECT id FROM information_schema.processlist WHERE db = database() AND command = 'Query' "
                   "AND info LIKE '%hub_probe%' AND id <> connection_id()")
        found = conn.execute(sa.text(sql)).fetchall()
        if kill and kind != "postgresql":
            for (pid,) in found:
                conn.execute(sa.text(f"KILL QUERY {int(pid)}"))
    eng.dispose()
    return len(found)


@pytest.mark.parametrize(("kind", "fast", "signum"), [
    ("postgresql", True, signal.SIGTERM), ("postgresql", False, signal.SIGTERM),
    ("postgresql", True, signal.SIGINT), ("mariadb", False, signal.SIGTERM)],
    ids=["pg-adbc-sigterm", "pg-dbapi-sigterm", "pg-adbc-sigint", "mariadb-sigterm"])
def test_a_stopped_hub_cancels_its_query_on_the_server(kind: str, fast: bool, signum: int) -> None:
    with scratch_database(kind) as url, _locked(url, kind):
        proc = subprocess.Popen([sys.executable, "-c", _READER, url, "1" if fast else "0", _LONG[kind]], cwd=REPO,
                                env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            _until(lambda: _probes(url, kind) == 1 or proc.poll() is not None, 30, "the query runs on the server")
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            proc.send_signal(signum)
            out, err = proc.communicate(timeout=10)  # the process exits promptly ...
            assert "finished" not in out
            assert proc.returncode != 0, err[-2000:]
            # ... and its query is gone from the server (before the lock is released, which would end it too)
            _until(lambda: _probes(url, kind) == 0, 2, f"the query was cancelled on the server:\n{err[-2000:]}")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            _probes(url, kind, kill=True)  # whatever the outcome, no query is left burning the server


# --- the warehouse: user SQL sandboxed ---------------------------------------------------------------------


def _duckdb_with_a_table(tmp_path: Path) -> DuckDBWarehouse:
    wh = DuckDBWarehouse(f"duckdb:///{tmp_path / 'wh.duckdb'}")
    wh.load(LoadRequest(table="base", mode="replace", run_id="r1"), [pa.record_batch({"g": ["a", "b"], "n": [1, 2]})])
    return wh


@pytest.mark.parametrize("sql", ["SELECT * FROM read_csv('/etc/passwd')", "SELECT * FROM read_text('/etc/passwd')",
                                 "SELECT * FROM glob('/etc/*')",
                                 "SELECT * FROM read_csv_auto('/etc/hostname') UNION ALL SELECT * FROM base"])
def test_duckdb_model_cannot_read_files(tmp_path: Path, sql: str) -> None:
    wh = _duckdb_with_a_table(tmp_path)
    with pytest.raises(WarehouseError, match=r"model leak: .*(file system operations are disabled|Permission)"):
        wh.run_model("leak", sql)
    assert "leak" not in wh.tables()


@pytest.mark.parametrize("sql", [
    "SELECT 1 AS x; SET enable_external_access = true; SELECT * FROM read_csv('/etc/passwd')",
    "SET enable_external_access = true",
    "SELECT 1 AS x; ATTACH '/tmp/hub-attached.duckdb' AS other",
])
def test_duckdb_model_cannot_turn_the_sandbox_off(tmp_path: Path, sql: str) -> None:
    wh = _duckdb_with_a_table(tmp_path)
    with pytest.raises(WarehouseError, match=r"model leak: expected exactly one SELECT"):
        wh.run_model("leak", sql)
    assert "leak" not in wh.tables()
    con = wh.open(sandboxed=True)
    try:
        with pytest.raises(Exception, match="configuration has been locked"):
            con.execute("SET enable_external_access = true")
    finally:
        con.close()


def test_duckdb_models_and_loads_alternate_in_one_process(tmp_path: Path) -> None:
    """The sandboxed connection does not leak into the hub's own loads (SET memory_limit, Arrow relations)."""
    wh = _duckdb_with_a_table(tmp_path)
    assert wh.run_model("by_g", "SELECT g, sum(n) AS n FROM base GROUP BY g").table_rows == 2
    wh.load(LoadRequest(table="base", mode="replace", run_id="r2"), [pa.record_batch({"g": ["c"], "n": [3]})])
    assert wh.run_model("by_g", "SELECT g, sum(n) AS n FROM base GROUP BY g").table_rows == 1
    assert wh.query("SELECT count(*) AS n FROM base", sandboxed=True).column("n")[0].as_py() == 1


def test_duckdb_export_query_is_sandboxed(tmp_path: Path) -> None:
    wh = _duckdb_with_a_table(tmp_path)
    with pytest.raises(WarehouseError, match="file system operations are disabled"):
        list(wh.stream("SELECT * FROM read_csv('/etc/passwd')", sandboxed=True))


@pytest.mark.parametrize("sql", ["SELECT pg_read_file('/etc/passwd') AS secret",
                                 "SELECT pg_ls_dir('/') AS f",
                                 "SELECT lo_import('/etc/passwd') AS oid"])
def test_postgres_model_cannot_read_server_files(pg_url: str, sql: str) -> None:
    wh = PostgresWarehouse(f"{pg_url}?schema=sec_{os.getpid()}")
    wh.load(LoadRequest(table="base", mode="replace", run_id="r1"), [pa.record_batch({"g": ["a"]})])
    with pytest.raises(WarehouseError, match=r"model leak: the query calls (pg_read_file|pg_ls_dir|lo_import)\(\), "
                                             r"which reads or writes files on the database server"):
        wh.run_model("leak", sql)
    assert "leak" not in wh.tables()
    with pytest.raises(WarehouseError, match="pg_read_file"):
        wh.query("SELECT pg_read_file('/etc/passwd') AS secret", sandboxed=True)


# --- where a spec may put its DuckDB warehouse -----------------------------------------------------------------


def _spec(tmp_path: Path, warehouse: str) -> str:
    return yaml.safe_dump({"pipeline": "p", "warehouse": warehouse,
                           "systems": {"db": {"sql": {"url": f"sqlite:///{tmp_path / 's.sqlite'}"}}},
                           "sources": {"t": {"system": "db", "table": "t"}}})


def test_a_spec_cannot_put_its_warehouse_outside_the_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HUB_WAREHOUSE_DIRS", raising=False)
    with pytest.raises(SpecError, match=r"line \d+: warehouse: the DuckDB file /etc/x\.duckdb is outside the project"):
        loads(_spec(tmp_path, "duckdb:////etc/x.duckdb"), tmp_path / "p.yaml")
    assert not Path("/etc/x.duckdb").exists()


def test_relative_and_allowed_warehouse_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HUB_WAREHOUSE_DIRS", raising=False)
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text("")
    (project / "pipelines").mkdir()
    spec = project / "pipelines" / "p.yaml"
    relative = loads(_spec(tmp_path, "duckdb:///warehouse/x.duckdb?threads=2"), spec)
    assert relative.warehouse_url == f"duckdb:///{project / 'warehouse' / 'x.duckdb'}?threads=2"
    elsewhere = "/var/lib/hub-security-test/x.duckdb"  # not created: only the URL is resolved
    with pytest.raises(SpecError, match="HUB_WAREHOUSE_DIRS"):
        loads(_spec(tmp_path, f"duckdb:///{elsewhere}"), spec)
    monkeypatch.setenv("HUB_WAREHOUSE_DIRS", "/var/lib/hub-security-test")
    assert loads(_spec(tmp_path, f"duckdb:///{elsewhere}"), spec).warehouse_url == f"duckdb:///{elsewhere}"
