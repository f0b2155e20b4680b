"""The SQL adapter against real databases: SQLite, and this machine's PostgreSQL and MariaDB servers."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa
import yaml

from adapters.sql import SqlSource, SqlSourceConfig, SqlSystemConfig, WriteRefused
from adapters.sql.catalog import describe
from hub.errors import AdapterError, SpecError
from hub.materialize import materialize_source
from hub.spec import loads
from hub.warehouse import connect
from tests.sql_servers import scratch_database, writer

KINDS = ["sqlite", "postgresql", "mariadb"]


@pytest.fixture(params=KINDS)
def source_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(kind, url) of an empty source database."""
    if request.param == "sqlite":
        yield "sqlite", f"sqlite:///{tmp_path / 'source.sqlite'}"
        return
    with scratch_database(request.param) as url:
        yield request.param, url


def _typed_table(url: str) -> sa.Table:
    meta = sa.MetaData()
    table = sa.Table(
        "typed", meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("small", sa.SmallInteger), sa.Column("big", sa.BigInteger),
        sa.Column("amount", sa.Numeric(12, 2)), sa.Column("ratio", sa.Double),
        sa.Column("flag", sa.Boolean), sa.Column("code", sa.CHAR(6)), sa.Column("name", sa.String(40)),
        sa.Column("note", sa.Text), sa.Column("day", sa.Date), sa.Column("at", sa.DateTime),
        sa.Column("tm", sa.Time), sa.Column("blob", sa.LargeBinary))
    eng = writer(url)
    meta.create_all(eng)
    with eng.begin() as conn:
        conn.execute(table.insert(), [
            {"id": 1, "small": -7, "big": 9_000_000_000_123, "amount": Decimal("12345678.91"), "ratio": 0.125,
             "flag": True, "code": "AB", "name": "Zoë's “quoted” name", "note": "", "day": dt.date(2024, 2, 29),
             "at": dt.datetime(2024, 3, 31, 1, 30, 5), "tm": dt.time(23, 59, 58), "blob": b"\x00\xffbin"}])
        conn.execute(table.insert(), [{"id": 2}])
    eng.dispose()
    return table


def _read(url: str, **source: Any) -> tuple[pa.Table, SqlSource]:
    system = {"url": url, **source.pop("system", {})}
    adapter = SqlSource(SqlSystemConfig.model_validate(system), SqlSourceConfig.model_validate(source), name="t")
    batches = list(adapter.batches())
    return pa.Table.from_batches(batches), adapter


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "dbapi"])
def test_types_round_trip(source_db: tuple[str, str], fast: bool) -> None:
    kind, url = source_db
    if fast and kind != "postgresql":
        pytest.skip("the fast path (ADBC) is PostgreSQL's")
    _typed_table(url)
    table, adapter = _read(url, table="typed", trim_char=True, system={"fast_path": fast})
    assert adapter.details()["reader"].startswith("adbc" if fast else "sqlalchemy")
    schema = dict(zip(table.schema.names, table.schema.types, strict=True))
    assert schema["id"] == pa.int32() and schema["small"] == pa.int16() and schema["big"] == pa.int64()
    assert schema["amount"] == pa.decimal128(12, 2)  # exact, never a float
    assert schema["ratio"] == pa.float64()
    assert schema["flag"] == (pa.int8() if kind == "mariadb" else pa.bool_())  # MySQL BOOL is TINYINT(1)
    assert schema["day"] == pa.date32() and schema["at"] == pa.timestamp("us") and schema["tm"] == pa.time64("us")
    assert schema["blob"] == pa.binary()
    for name in ("code", "name", "note"):
        assert schema[name] == pa.string()
    rows = sorted(table.to_pylist(), key=lambda r: r["id"])
    first = rows[0]
    assert first["amount"] == Decimal("12345678.91") and first["big"] == 9_000_000_000_123
    assert first["code"] == "AB"  # CHAR(6) padding stripped (trim_char)
    assert first["name"] == "Zoë's “quoted” name" and first["note"] == ""  # empty text is not NULL
    assert first["day"] == dt.date(2024, 2, 29) and first["at"] == dt.datetime(2024, 3, 31, 1, 30, 5)
    assert first["tm"] == dt.time(23, 59, 58) and first["blob"] == b"\x00\xffbin"
    assert bool(first["flag"]) is True
    assert all(v is None for k, v in rows[1].items() if k != "id")


def test_postgres_specific_types(tmp_path: Path) -> None:
    with scratch_database("postgresql") as url:
        eng = writer(url)
        with eng.begin() as conn:
            conn.execute(sa.text(
                "CREATE TABLE pg (id int primary key, at timestamptz, wall timestamp, doc jsonb, uid uuid, "
                "free numeric, wide numeric(50, 4), tags text[], span interval, code char(4), "
                "cents numeric(18, 3), big numeric(18, 0))"))
            conn.execute(sa.text(
                "INSERT INTO pg VALUES (1, '2024-03-31 01:30:00+02', '2024-03-30 02:30:00', '{\"a\": [1, 2]}', "
                "'3bc202a3-f6dd-4003-bd06-a3e06c56c677', 1.000000000000000000001, 12345678901234567890123.4567, "
                "'{x,y}', '1 day 2 hours', 'ab', -123456789012345.678, 999999999999999999)"))
            conn.execute(sa.text("INSERT INTO pg (id, cents) VALUES (2, NULL), (3, 0.001), (4, -0.001)"))
        eng.dispose()
        for fast in (True, False):
            table, _ = _read(url, table="pg", system={"fast_path": fast, "timezone": "Europe/Berlin"})
            rows = sorted(table.to_pylist(), key=lambda r: r["id"])
            row = rows[0]
            schema = dict(zip(table.schema.names, table.schema.types, strict=True))
            # NUMERIC(p <= 18, s) is read as a scaled integer on the fast path: exact, signs and NULLs kept
            assert schema["cents"] == pa.decimal128(18, 3) and schema["big"] == pa.decimal128(18, 0)
            assert [r["cents"] for r in rows] == [Decimal("-123456789012345.678"), None, Decimal("0.001"),
                                                 Decimal("-0.001")]
            assert row["big"] == Decimal("999999999999999999")
            assert schema["at"] == pa.timestamp("us", tz="UTC")
            assert row["at"] == dt.datetime(2024, 3, 30, 23, 30, tzinfo=dt.UTC)
            # a naive timestamp declared to be Berlin time becomes the UTC instant (02:30 CET = 01:30 UTC)
            assert schema["wall"] == pa.timestamp("us", tz="UTC")
            assert row["wall"] == dt.datetime(2024, 3, 30, 1, 30, tzinfo=dt.UTC)
            assert schema["free"] == pa.string() and row["free"] == "1.000000000000000000001"  # every digit
            assert schema["wide"] == pa.string() and row["wide"] == "12345678901234567890123.4567"
            assert row["doc"].replace(" ", "") == '{"a":[1,2]}'
            assert row["uid"] == "3bc202a3-f6dd-4003-bd06-a3e06c56c677"
            assert row["tags"].replace(" ", "") in ('["x","y"]', "{x,y}")
            assert schema["span"] == pa.duration("us") and row["span"] == dt.timedelta(days=1, hours=2)
            assert row["code"] == "ab  "  # padding kept unless trim_char


def test_legacy_text_encoding_is_decoded(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'legacy.sqlite'}"
    eng = writer(url)
    with eng.begin() as conn:
        conn.execute(sa.text("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)"))
        conn.execute(sa.text("INSERT INTO customers VALUES (1, :n)"), {"n": "Müller & Söhne \u2013 €".encode("cp1252")})
    eng.dispose()
    table, _ = _read(url, table="customers", system={"text_encoding": "cp1252"})
    assert table.column("name").to_pylist() == ["Müller & Söhne \u2013 €"]
    with pytest.raises(AdapterError, match=r"column name: bytes that are not utf-8 text.*text_encoding"):
        _read(url, table="customers")


@pytest.mark.parametrize("query", [
    "DELETE FROM typed",
    "UPDATE typed SET name = 'x'",
    "SELECT 1; DROP TABLE typed",
    "SELECT * FROM typed FOR UPDATE",
    "CREATE TABLE x AS SELECT * FROM typed",
    "INSERT INTO typed (id) VALUES (99)",
])
def test_writes_are_refused_before_reaching_the_database(source_db: tuple[str, str], query: str) -> None:
    _kind, url = source_db
    _typed_table(url)
    with pytest.raises(WriteRefused, match=r"nothing was run|not run"):
        _read(url, query=query)
    with writer(url).connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM typed")).scalar_one() == 2
        assert conn.execute(sa.text("SELECT name FROM typed WHERE id = 1")).scalar_one() == "Zoë's “quoted” name"


def test_the_session_itself_is_read_only() -> None:
    """A SELECT with a side effect the parser cannot see (a user function that writes; nextval() itself is
    refused by the guard's function deny-list) passes the parser; the read-only transaction stops it."""
    with scratch_database("postgresql") as url:
        with writer(url).begin() as conn:
            conn.execute(sa.text("CREATE TABLE log (n integer)"))
            conn.execute(sa.text("CREATE FUNCTION bump() RETURNS integer LANGUAGE sql AS "
                                 "'INSERT INTO log VALUES (1) RETURNING n'"))
        for fast in (True, False):
            with pytest.raises(AdapterError, match="read-only transaction"):
                _read(url, query="SELECT bump() AS n", system={"fast_path": fast})
        with writer(url).connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM log")).scalar_one() == 0


def test_a_write_query_in_a_spec_is_a_spec_error(tmp_path: Path) -> None:
    doc = {"pipeline": "p", "systems": {"db": {"sql": {"url": "postgresql://u@h/db"}}},
           "sources": {"t": {"system": "db", "query": "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d"}}}
    with pytest.raises(SpecError, match=r"sources\.t\.query.*DELETE"):
        loads(yaml.safe_dump(doc), tmp_path / "p.yaml")
    doc["sources"]["t"] = {"system": "db", "table": "t", "incremental": {"cursor": "updated_at"}}
    with pytest.raises(SpecError, match="incremental source needs primary_key"):
        loads(yaml.safe_dump(doc), tmp_path / "p.yaml")


def test_unknown_table_and_column_name_what_exists(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.sqlite'}"
    _typed_table(url)
    with pytest.raises(AdapterError, match=r"no table or view 'nope'.*found: typed"):
        _read(url, table="nope")
    with pytest.raises(AdapterError, match=r"select: no column bogus in typed \(columns: id, small"):
        _read(url, table="typed", select=["id", "bogus"])


def test_query_with_bound_parameters_and_bounded_batches(source_db: tuple[str, str]) -> None:
    _kind, url = source_db
    eng = writer(url)
    with eng.begin() as conn:
        conn.execute(sa.text("CREATE TABLE nums (id INTEGER PRIMARY KEY, v DECIMAL(10, 3))"))
        conn.execute(sa.text("INSERT INTO nums VALUES (:i, :v)"), [{"i": i, "v": i / 8} for i in range(1, 1001)])
    eng.dispose()
    adapter = SqlSource(SqlSystemConfig(url=url), SqlSourceConfig(
        query="SELECT id, v FROM nums WHERE id > :low ORDER BY id", params={"low": 100}, batch_rows=100), name="q")
    batches = list(adapter.batches())
    assert sum(b.num_rows for b in batches) == 900
    assert max(b.num_rows for b in batches) <= 100  # streamed in bounded batches
    assert len({b.schema for b in batches}) == 1
    table = pa.Table.from_batches(batches)
    assert table.column("v").to_pylist()[0] == Decimal("12.625")


def test_catalog_lists_tables_keys_and_schemas() -> None:
    with scratch_database("postgresql") as url:
        with writer(url).begin() as conn:
            conn.execute(sa.text("CREATE TABLE warehouses (id int PRIMARY KEY, name text NOT NULL)"))
            conn.execute(sa.text("CREATE TABLE stock (warehouse_id int REFERENCES warehouses(id), sku varchar(16), "
                                 "qty int, cost numeric(10,2), PRIMARY KEY (warehouse_id, sku))"))
            conn.execute(sa.text("COMMENT ON TABLE stock IS 'On-hand stock'"))
            conn.execute(sa.text("CREATE VIEW low_stock AS SELECT * FROM stock WHERE qty < 10"))
        catalog = describe(SqlSystemConfig(url=url))
    tables = {t["name"]: t for t in catalog["tables"]}
    assert set(tables) == {"warehouses", "stock", "low_stock"}
    stock = tables["stock"]
    assert stock["primary_key"] == ["warehouse_id", "sku"] and stock["description"] == "On-hand stock"
    assert stock["foreign_keys"][0]["columns"] == ["warehouse_id"]
    assert stock["foreign_keys"][0]["references"] == "warehouses"
    props = stock["schema"]["properties"]
    assert props["cost"]["anyOf"][0] == {"type": "string", "format": "decimal", "x-precision": 10, "x-scale": 2}
    assert set(stock["schema"]["required"]) == {"warehouse_id", "sku"}
    assert tables["low_stock"]["kind"] == "view"
    assert tables["warehouses"]["schema"]["properties"]["name"] == {"type": "string"}


# --- incremental loads through the hub -------------------------------------------------------------------

def _spec(tmp_path: Path, url: str, lookback: str | None = "10m", **extra: Any) -> Any:
    incremental: dict[str, Any] = {"cursor": "updated_at"}
    if lookback:
        incremental["lookback"] = lookback
    doc = {"pipeline": "inc", "warehouse": f"duckdb:///{tmp_path / 'wh.duckdb'}",
           "systems": {"db": {"sql": {"url": url, "retries": {"max": 3, "backoff": 0.01}}}},
           "sources": {"stock": {"system": "db", "table": "stock", "incremental": incremental,
                                 "primary_key": ["id"], **extra}}}
    return loads(yaml.safe_dump(doc), tmp_path / "inc.yaml")


def _stock(url: str, rows: list[tuple[int, int, dt.datetime]], *, create: bool = False) -> None:
    eng = writer(url)
    with eng.begin() as conn:
        if create:
            conn.execute(sa.text("CREATE TABLE stock (id INTEGER PRIMARY KEY, qty INTEGER, updated_at TIMESTAMP)"))
        for i, qty, at in rows:
            conn.execute(sa.text("DELETE FROM stock WHERE id = :i"), {"i": i})
            conn.execute(sa.text("INSERT INTO stock VALUES (:i, :q, :a)"), {"i": i, "q": qty, "a": at})
    eng.dispose()


def _landed(tmp_path: Path) -> dict[int, int]:
    rows = connect(f"duckdb:///{tmp_path / 'wh.duckdb'}").query("SELECT id, qty FROM stock").to_pylist()
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), "duplicated rows"
    return {r["id"]: r["qty"] for r in rows}


def test_incremental_reads_changes_and_late_rows_without_duplicates(source_db: tuple[str, str],
                                                                    tmp_path: Path) -> None:
    _kind, url = source_db
    t0 = dt.datetime(2024, 5, 1, 12, 0, 0)
    _stock(url, [(i, 10 * i, t0 + dt.timedelta(minutes=i)) for i in range(1, 11)], create=True)
    pipeline = _spec(tmp_path, url)
    first = materialize_source(pipeline, "stock", window=None, run_id="r1")
    assert first.load.rows_loaded == 10 and _landed(tmp_path) == {i: 10 * i for i in range(1, 11)}
    assert first.details["high_water_mark"].startswith("2024-05-01T12:10")

    # a change after the mark, and a row committed late (stamped 5 minutes before the mark)
    _stock(url, [(3, 333, t0 + dt.timedelta(minutes=20)), (11, 110, t0 + dt.timedelta(minutes=5))])
    second = materialize_source(pipeline, "stock", window=None, run_id="r2")
    # read: rows stamped >= mark - 10m: ids 1..10 stamped 12:01..12:10 -> 12:00.. -> all of 1..10? no:
    # mark 12:10 - 10m = 12:00, so the window holds ids 1..10 plus the late 11 and the changed 3
    assert second.details["read_from"].startswith("2024-05-01T12:00")
    landed = _landed(tmp_path)
    assert landed[3] == 333 and landed[11] == 110 and len(landed) == 11

    # nothing changed: a re-run reads the lookback window again and changes nothing
    third = materialize_source(pipeline, "stock", window=None, run_id="r3")
    assert _landed(tmp_path) == landed and third.load.table_rows == 11
    assert third.details["high_water_mark"].startswith("2024-05-01T12:20")


def test_without_lookback_a_late_row_is_missed_until_a_full_refresh(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.sqlite'}"
    t0 = dt.datetime(2024, 5, 1, 12, 0, 0)
    _stock(url, [(i, i, t0 + dt.timedelta(hours=i)) for i in range(1, 6)], create=True)
    pipeline = _spec(tmp_path, url, lookback=None)
    materialize_source(pipeline, "stock", window=None, run_id="r1")
    _stock(url, [(6, 6, t0)])  # committed late, stamped before the mark
    again = materialize_source(pipeline, "stock", window=None, run_id="r2")
    assert again.load.rows_loaded == 1  # only the row at the mark itself (inclusive bound)
    assert 6 not in _landed(tmp_path)
    # a full refresh reads everything and replaces the table: rows deleted in the source go too
    eng = writer(url)
    with eng.begin() as conn:
        conn.execute(sa.text("DELETE FROM stock WHERE id = 1"))
    eng.dispose()
    full = materialize_source(pipeline, "stock", window=None, run_id="r3", full_refresh=True)
    assert full.details["full_refresh"] is True
    assert set(_landed(tmp_path)) == {2, 3, 4, 5, 6}


def test_mark_is_not_advanced_when_the_run_fails(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.sqlite'}"
    t0 = dt.datetime(2024, 5, 1, 12, 0, 0)
    _stock(url, [(1, 1, t0)], create=True)
    pipeline = _spec(tmp_path, url, lookback=None, columns={"id": "id", "qty": {"type": "int64"},
                                                             "updated_at": "updated_at"})
    materialize_source(pipeline, "stock", window=None, run_id="r1")
    _stock(url, [(2, 2, t0 + dt.timedelta(hours=1))])

    def die(_name: str, _rows: int) -> None:  # the run fails after reading the new row
        raise RuntimeError("run cancelled")

    with pytest.raises(RuntimeError, match="cancelled"):
        materialize_source(pipeline, "stock", window=None, run_id="r2", progress=die)
    wh = connect(f"duckdb:///{tmp_path / 'wh.duckdb'}")
    state = wh.query("SELECT high_water_mark FROM _hub_state WHERE source = 'stock'").to_pylist()
    assert state[0]["high_water_mark"].startswith("2024-05-01T12:00")  # still the first run's mark
    assert _landed(tmp_path) == {1: 1}
    materialize_source(pipeline, "stock", window=None, run_id="r3")  # the next run picks the row up
    assert _landed(tmp_path) == {1: 1, 2: 2}


# --- a connection dropped mid-extract ------------------------------------------------------------------

_SLOW = {  # a query that keeps streaming for a while, so the connection can be cut in the middle
    "postgresql": "SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 60000) g "
                  "WHERE g % 15000 <> 0 OR hub_pause() IS NOT NULL",
    "mariadb": "SELECT seq AS id, md5(seq) AS v FROM seq_1_to_60000 WHERE seq % 15000 <> 0 OR hub_pause() = 0",
}
#: The pause, as a function of the database: a source may not call pg_sleep() / SLEEP() itself (the guard's
#: function deny-list), a function the database's owner created is the database's business.
_PAUSE = {
    "postgresql": "CREATE FUNCTION hub_pause() RETURNS integer LANGUAGE sql AS 'SELECT 0 FROM pg_sleep(0.3)'",
    "mariadb": "CREATE FUNCTION hub_pause() RETURNS integer NOT DETERMINISTIC NO SQL RETURN SLEEP(0.3)",
}
_KILL = {
    "postgresql": "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'hub' "
                  "AND datname = current_database() AND pid <> pg_backend_pid()",
    "mariadb": "SELECT id FROM information_schema.processlist WHERE info LIKE '%seq_1_to_60000%' "
               "AND id <> CONNECTION_ID()",
}


# PyMySQL's unbuffered cursor of the killed connection complains when it is garbage-collected
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("kind,fast", [("postgresql", True), ("postgresql", False), ("mariadb", False)],
                         ids=["postgresql-fast", "postgresql-dbapi", "mariadb"])
def test_connection_dropped_mid_extract_restarts_without_duplicates(kind: str, fast: bool, tmp_path: Path) -> None:
    with scratch_database(kind) as url:
        with writer(url).begin() as conn:
            conn.execute(sa.text(_PAUSE[kind]))
        doc = {"pipeline": "drop", "warehouse": f"duckdb:///{tmp_path / 'wh.duckdb'}",
               "systems": {"db": {"sql": {"url": url, "fast_path": fast, "retries": {"max": 3, "backoff": 0.05}}}},
               "sources": {"big": {"system": "db", "query": _SLOW[kind], "batch_rows": 1000, "primary_key": ["id"]}}}
        pipeline = loads(yaml.safe_dump(doc), tmp_path / "drop.yaml")
        killed = threading.Event()
        admin = writer(url)

        def cut(_name: str, rows: int) -> None:
            if killed.is_set() or rows == 0:
                return
            with admin.connect() as conn:
                found = conn.execute(sa.text(_KILL[kind])).fetchall()
                if kind == "mariadb":
                    for (pid,) in found:
                        conn.execute(sa.text(f"KILL {int(pid)}"))
            assert found, "the extracting connection was not found"
            killed.set()

        outcome = materialize_source(pipeline, "big", window=None, run_id="r1", progress=cut)
        admin.dispose()
    assert killed.is_set()
    assert outcome.details.get("restarts") == 1
    rows = connect(f"duckdb:///{tmp_path / 'wh.duckdb'}").query(
        "SELECT count(*) AS n, count(DISTINCT id) AS d FROM big").to_pylist()[0]
    assert rows == {"n": 60000, "d": 60000}


@pytest.mark.parametrize("kind", ["postgresql", "mariadb"])
def test_demo_inventory_runs_on_a_server_database(kind: str, tmp_path: Path) -> None:
    """The demo inventory works where HUB_DEMO_INVENTORY_URL points, and its ticks are read incrementally."""
    from hub.demo.inventory import InventoryDb

    with scratch_database(kind) as url:
        db = InventoryDb(url).start()
        try:
            system = SqlSystemConfig(url=url, timezone="UTC")
            source = SqlSourceConfig.model_validate({"table": "stock_levels",
                                                     "incremental": {"cursor": "updated_at"}})
            first = SqlSource(system, source, name="levels")
            assert sum(b.num_rows for b in first.batches()) == 20
            moved = db.tick(3)
            later = SqlSource(system, source, name="levels", high_water_mark=first.high_water_mark)
            rows = pa.Table.from_batches(list(later.batches())).to_pylist()
            got = {(r["warehouse_id"], r["sku"]) for r in rows}
            assert got - set(moved) <= {(4, "SKU-500")}, "only the moved levels, and the one at the mark (inclusive)"
            assert set(moved) <= got
            warehouses, _ = _read(url, table="warehouses", trim_char=True)
            assert warehouses.column("code").to_pylist() == ["WH01", "WH02", "WH03", "WH04"]
        finally:
            db.stop()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_query_source_partitioned_by_the_window(kind: str, tmp_path: Path) -> None:
    from hub.runtime.window import Window

    def run(url: str) -> None:
        t0 = dt.datetime(2024, 5, 1, 23, 30)
        _stock(url, [(i, i, t0 + dt.timedelta(minutes=20 * i)) for i in range(6)], create=True)
        doc = {"pipeline": "win", "warehouse": f"duckdb:///{tmp_path / 'wh.duckdb'}",
               "partitions": {"daily": {"start": "2024-05-01"}},
               "systems": {"db": {"sql": {"url": url}}},
               "sources": {"day": {"system": "db", "primary_key": ["id"],
                                   "query": "SELECT id, qty, updated_at FROM stock "
                                            "WHERE updated_at >= :start AND updated_at < :end",
                                   "params": {"start": "{{ partition.start }}", "end": "{{ partition.end }}"}}}}
        pipeline = loads(yaml.safe_dump(doc), tmp_path / "win.yaml")
        assert pipeline.sources["day"].partitioned
        for day in ("2024-05-01", "2024-05-02"):
            start = dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC)
            materialize_source(pipeline, "day", window=Window(day, start, start + dt.timedelta(days=1)),
                               run_id=day)
        rows = connect(f"duckdb:///{tmp_path / 'wh.duckdb'}").query(
            "SELECT _hub_partition AS p, list(id ORDER BY id) AS ids FROM day GROUP BY 1 ORDER BY 1").to_pylist()
        assert rows == [{"p": "2024-05-01", "ids": [0, 1]}, {"p": "2024-05-02", "ids": [2, 3, 4, 5]}]

    if kind == "sqlite":
        run(f"sqlite:///{tmp_path / 's.sqlite'}")
    else:
        with scratch_database(kind) as url:
            run(url)
