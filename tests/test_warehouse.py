"""The warehouses: one-transaction loads (partition replace, merge, replace), schema evolution, rollback
on failure, quarantine, atomic models. The shared tests run against DuckDB and PostgreSQL (a fresh schema
of the session's database per test); the tests after them are specific to one backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from hub.errors import WarehouseError
from hub.warehouse import DuckDBWarehouse, LoadRequest, Warehouse, connect
from hub.warehouse.postgres import PostgresWarehouse


def _b(**cols: list[object]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(cols)


def _rows(wh: Warehouse, sql: str) -> list[tuple[object, ...]]:
    return [tuple(r.values()) for r in wh.query(sql).to_pylist()]


def _fresh_pg(pg_url: str) -> PostgresWarehouse:
    """A PostgreSQL warehouse in a schema of its own (created by its first load)."""
    return PostgresWarehouse(f"{pg_url}?schema=t_{uuid.uuid4().hex[:12]}")


@pytest.fixture(params=["duckdb", "postgres"])
def wh(request: pytest.FixtureRequest, tmp_path: Path) -> Warehouse:
    if request.param == "duckdb":
        return DuckDBWarehouse(f"duckdb:///{tmp_path / 'w.duckdb'}")
    return _fresh_pg(request.getfixturevalue("pg_url"))


@pytest.fixture
def pg(pg_url: str) -> PostgresWarehouse:
    return _fresh_pg(pg_url)


def _is_duckdb(wh: Warehouse) -> bool:
    return isinstance(wh, DuckDBWarehouse)


def test_partition_replace_is_idempotent(wh: Warehouse) -> None:
    for key, ids in [("2024-01-01", [1, 2, 3]), ("2024-01-02", [4, 5])]:
        wh.load(LoadRequest("t", "replace_partition", "run1", partition=key),
                [_b(id=ids, v=[f"{key}-{i}" for i in ids])])
    # re-run day 1 with one row changed and one gone: exactly that partition is replaced
    result = wh.load(LoadRequest("t", "replace_partition", "run2", partition="2024-01-01"),
                     [_b(id=[1, 2], v=["new-1", "new-2"])])
    assert (result.rows_loaded, result.rows_deleted, result.table_rows) == (2, 3, 4)
    assert _rows(wh, "select id, v, _hub_partition from t order by id") == [
        (1, "new-1", "2024-01-01"), (2, "new-2", "2024-01-01"),
        (4, "2024-01-02-4", "2024-01-02"), (5, "2024-01-02-5", "2024-01-02")]
    again = wh.load(LoadRequest("t", "replace_partition", "run3", partition="2024-01-01"),
                    [_b(id=[1, 2], v=["new-1", "new-2"])])
    assert again.table_rows == 4
    assert [c for c, _ in again.columns] == ["id", "v", "_hub_partition", "_hub_run_id", "_hub_loaded_at"]


def test_empty_partition_empties_only_that_partition(wh: Warehouse) -> None:
    for key in ["a", "b"]:
        wh.load(LoadRequest("t", "replace_partition", "r", partition=key), [_b(id=[1], k=[key])])
    res = wh.load(LoadRequest("t", "replace_partition", "r", partition="a"), [])
    assert (res.rows_loaded, res.rows_deleted) == (0, 1)
    assert _rows(wh, "select k from t") == [("b",)]


def test_merge_upserts_on_primary_key_last_row_wins(wh: Warehouse) -> None:
    first = wh.load(LoadRequest("c", "merge", "r1", primary_key=("id",)),
                    [_b(id=[1, 2, 1], name=["a0", "b", "a"])])
    assert (first.rows_loaded, first.table_rows) == (2, 2), "duplicates within the first load are collapsed"
    assert _rows(wh, "select id, name from c order by id") == [(1, "a"), (2, "b")]
    # id 2 updated twice within one load (last wins), id 3 new
    res = wh.load(LoadRequest("c", "merge", "r2", primary_key=("id",)),
                  [_b(id=[2, 3], name=["b1", "c"]), _b(id=[2], name=["b2"])])
    assert _rows(wh, "select id, name from c order by id") == [(1, "a"), (2, "b2"), (3, "c")]
    assert (res.rows_loaded, res.rows_deleted, res.table_rows) == (2, 1, 3)


def test_merge_spanning_many_chunks(wh: Warehouse) -> None:
    """Rows arrive in more chunks than one insert takes: the last occurrence of a key still wins."""
    load = wh.begin(LoadRequest("m", "merge", "r", primary_key=("id",)))
    load.chunk_rows = 10  # type: ignore[attr-defined]
    with load:
        for round_ in range(5):
            load.write(_b(id=list(range(25)), round=[round_] * 25))
        result = load.commit()
    assert result.table_rows == 25 and result.rows_loaded == 25
    assert _rows(wh, "select distinct round from m") == [(4,)]


def test_replace_without_key(wh: Warehouse) -> None:
    wh.load(LoadRequest("r", "replace", "r"), [_b(x=[1, 2, 3])])
    res = wh.load(LoadRequest("r", "replace", "r"), [_b(x=[7], y=["new column"])])
    assert (res.rows_loaded, res.rows_deleted) == (1, 3)
    assert _rows(wh, "select x, y from r") == [(7, "new column")]
    wh.load(LoadRequest("r", "replace", "r"), [])
    assert _rows(wh, "select count(*) from r") == [(0,)], "an empty reference set empties the table"


def test_new_columns_are_added(wh: Warehouse) -> None:
    wh.load(LoadRequest("e", "merge", "r", primary_key=("id",)), [_b(id=[1], a=["x"])])
    wh.load(LoadRequest("e", "merge", "r", primary_key=("id",)), [_b(id=[2], a=["y"]), _b(id=[3], b=[1.5])])
    assert _rows(wh, "select id, a, b from e order by id") == [(1, "x", None), (2, "y", None), (3, None, 1.5)]


def test_types_unify_within_a_first_load(wh: Warehouse) -> None:
    """Pages of a new table may disagree: ints then floats widen; a null-only page has no type yet."""
    res = wh.load(LoadRequest("u", "replace", "r"), [
        _b(id=[1], n=[1], z=pa.nulls(1)),
        _b(id=[2], n=[2.5], z=pa.nulls(1)),
        _b(id=[3], n=[3], z=[7]),
        _b(id=[4], n=["text"], z=[8]),
    ])
    types = dict(res.columns)
    text, bigint = ("VARCHAR", "BIGINT") if _is_duckdb(wh) else ("text", "bigint")
    assert types["n"] == text, "number then text unifies to text"
    assert types["z"] == bigint, "a column that was NULL so far takes the type of its first values"
    # the numbers were doubles when they became text: DuckDB writes 1.0, PostgreSQL 1
    one, three = ("1.0", "3.0") if _is_duckdb(wh) else ("1", "3")
    assert _rows(wh, "select id, n, z from u order by id") == [
        (1, one, None), (2, "2.5", None), (3, three, 7), (4, "text", 8)]


def test_existing_column_widens_but_never_changes_kind(wh: Warehouse) -> None:
    wh.load(LoadRequest("w", "replace_partition", "r", partition="p1"), [_b(id=[1], n=[10])])
    res = wh.load(LoadRequest("w", "replace_partition", "r", partition="p2"), [_b(id=[2], n=[2.5])])
    assert dict(res.columns)["n"] == ("DOUBLE" if _is_duckdb(wh) else "double precision")
    assert _rows(wh, "select id, n from w order by id") == [(1, 10.0), (2, 2.5)], "int column widened to double"
    wh.load(LoadRequest("w", "replace_partition", "r", partition="p3"), [_b(id=[3], n=pa.nulls(1))])
    assert _rows(wh, "select n from w where id = 3") == [(None,)], "an all-NULL page fits any column"


def test_type_change_of_existing_column_rolls_back(wh: Warehouse) -> None:
    wh.load(LoadRequest("f", "replace_partition", "r", partition="p1"), [_b(id=[1, 2], n=[10, 20])])
    # 'n' arrives as text: the existing BIGINT column is not silently turned into text
    with pytest.raises(WarehouseError) as info:
        wh.load(LoadRequest("f", "replace_partition", "r2", partition="p1"), [_b(id=[1, 2], n=["11", "x"])])
    msg = str(info.value)
    assert "loading f into" in msg and "nothing was changed" in msg
    if _is_duckdb(wh):
        assert "column n of table f is BIGINT, but the new rows have VARCHAR" in msg
    else:
        assert "column n of table f is bigint, but the new rows have text" in msg
        assert "partition p1" in msg
    assert _rows(wh, "select id, n from f order by id") == [(1, 10), (2, 20)], "the deleted partition is back"


def test_exception_in_the_middle_rolls_back(wh: Warehouse) -> None:
    wh.load(LoadRequest("x", "replace_partition", "r", partition="p"), [_b(id=[1])])

    def batches():  # type: ignore[no-untyped-def]
        yield _b(id=[2])
        raise RuntimeError("source broke")

    with pytest.raises(RuntimeError, match="source broke"):
        wh.load(LoadRequest("x", "replace_partition", "r", partition="p"), batches())
    assert _rows(wh, "select id from x") == [(1,)]


def test_killed_duckdb_load_leaves_table_unchanged(tmp_path: Path) -> None:
    """A process killed mid-load (no rollback, no close) leaves the committed state behind."""
    db = tmp_path / "k.duckdb"
    wh = DuckDBWarehouse(f"duckdb:///{db}")
    wh.load(LoadRequest("k", "replace_partition", "r", partition="p"), [_b(id=[1, 2])])
    script = textwrap.dedent(f"""
        import os, pyarrow as pa
        from hub.warehouse import DuckDBWarehouse, LoadRequest
        wh = DuckDBWarehouse("duckdb:///{db}")
        load = wh.begin(LoadRequest("k", "replace_partition", "r2", partition="p"))
        load.chunk_rows = 1
        load.write(pa.RecordBatch.from_pydict({{"id": list(range(100, 200))}}))
        os.kill(os.getpid(), 9)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -9, proc.stderr
    assert _rows(wh, "select id from k order by id") == [(1,), (2,)]


def test_quarantine_rows_replace_per_partition(wh: Warehouse) -> None:
    bad = [{"row": 3, "column": "n", "value": "x", "reason": "column n: cannot convert", "record": "{}"}]
    for _ in range(2):
        res = wh.load(LoadRequest("g", "replace_partition", "r", partition="p1"), [_b(id=[1])], bad)
    assert res.rows_quarantined == 1
    assert _rows(wh, "select _hub_partition, column_name, reason from g__quarantine") == [
        ("p1", "n", "column n: cannot convert")]
    wh.load(LoadRequest("g", "replace_partition", "r", partition="p1"), [_b(id=[1])])
    assert _rows(wh, "select count(*) from g__quarantine") == [(0,)], "a clean re-run clears the partition's rows"


def test_merge_without_key_column_fails(wh: Warehouse) -> None:
    with pytest.raises(WarehouseError, match=r"primary key column\(s\) id are not in the loaded rows"):
        wh.load(LoadRequest("nk", "merge", "r", primary_key=("id",)), [_b(other=[1])])
    assert "nk" not in wh.tables()


def test_model_rebuilds_atomically(wh: Warehouse) -> None:
    wh.load(LoadRequest("base", "replace", "r"), [_b(id=[1, 2, 3], g=["a", "a", "b"])])
    res = wh.run_model("agg", "select g, count(*) as n from base group by g")
    assert res.table_rows == 2
    with pytest.raises(WarehouseError, match="model agg"):
        wh.run_model("agg", "select nope from base")
    assert _rows(wh, "select g, n from agg order by g") == [("a", 2), ("b", 1)], "old model kept"
    assert wh.tables() == ["agg", "base"]


def test_duckdb_url_settings_and_unsupported_url(tmp_path: Path) -> None:
    wh = connect(f"duckdb:///{tmp_path / 's.duckdb'}?threads=1&memory_limit=256MB")
    assert _rows(wh, "select current_setting('threads')") == [(1,)]
    with pytest.raises(WarehouseError, match="unsupported warehouse URL scheme 'oracle'") as info:
        connect("oracle://scott:tiger-secret@db/x")
    assert "tiger-secret" not in str(info.value)


def _threads_during_load(url: str) -> int:
    wh = connect(url)
    with wh.begin(LoadRequest("t", "replace", "r")) as load:
        load.write(_b(a=[1]))
        seen = load._live().execute("select current_setting('threads')").fetchall()[0][0]  # type: ignore[attr-defined]
        load.commit()
    return int(seen)


def test_duckdb_load_threads(tmp_path: Path) -> None:
    """Loads run DuckDB with load_threads (half the CPUs unless the URL says otherwise): more threads only
    compete with the adapter's loop for the cores and each keeps its own allocator cache."""
    from hub.warehouse.duckdb import default_load_threads

    assert default_load_threads() == max(1, (os.cpu_count() or 2) // 2)
    assert _threads_during_load(f"duckdb:///{tmp_path / 'a.duckdb'}") == default_load_threads()
    assert _threads_during_load(f"duckdb:///{tmp_path / 'b.duckdb'}?threads=3") == 3  # the URL's choice
    assert _threads_during_load(f"duckdb:///{tmp_path / 'c.duckdb'}?threads=3&load_threads=2") == 2
    for bad in ("0", "many"):
        with pytest.raises(WarehouseError, match="load_threads"):
            connect(f"duckdb:///{tmp_path / 'd.duckdb'}?load_threads={bad}")


def test_duckdb_appending_loads_cap_the_buffer_pool(tmp_path: Path) -> None:
    """A load that only appends runs DuckDB with append_memory_limit (the blocks it wrote stayed cached up to the
    limit: a 1 GB file's load grew by the whole load_memory_limit); merges keep load_memory_limit, and so does a
    load once the hub runs its own SQL in it (hub/files_csv.py reads and sorts there)."""

    def limit(load: Any) -> str:
        return str(load._live().execute("select current_setting('memory_limit')").fetchall()[0][0])

    wh = connect(f"duckdb:///{tmp_path / 'a.duckdb'}?load_memory_limit=200MB&append_memory_limit=48MB")
    with wh.begin(LoadRequest("t", "replace_partition", "r", partition="p")) as load:
        load.write(_b(a=[1]))
        appending = limit(load)
        ledger = load.attach(LoadRequest("l", "merge", "r", primary_key=("a",)))
        ledger.write(_b(a=[1]))
        ledger.commit()
        load.sql("SELECT 1")
        after_sql = limit(load)
        load.commit()
    with wh.begin(LoadRequest("m", "merge", "r", primary_key=("a",))) as load:
        load.write(_b(a=[1]))
        merging = limit(load)
        load.commit()
    assert (appending, after_sql, merging) == ("45.7 MiB", "190.7 MiB", "190.7 MiB")  # 48 MB, 200 MB
    assert _rows(wh, "select count(*) from t") == [(1,)] and _rows(wh, "select count(*) from l") == [(1,)]


def _orders_with_lines(wh: Warehouse, orders: dict[int, list[str]], *, fail: bool = False) -> None:
    with wh.begin(LoadRequest("orders", "merge", "r", primary_key=("order_id",))) as load:
        lines = load.attach(LoadRequest("order_lines", "replace_keys", "r", primary_key=("order_id",)))
        load.write(_b(order_id=list(orders), n=[len(v) for v in orders.values()]))
        lines.cover(_b(order_id=list(orders)))
        lines.write(_b(order_id=[o for o, ls in orders.items() for _ in ls],
                       sku=[s for ls in orders.values() for s in ls]))
        if fail:
            raise RuntimeError("extraction broke after the lines were written")
        lines.commit()
        load.commit()


def test_attached_child_table_commits_with_its_parent(wh: Warehouse) -> None:
    _orders_with_lines(wh, {1: ["a", "b"], 2: ["c"]})
    # order 1 is re-loaded with one line fewer, order 2 with none, order 3 is new
    _orders_with_lines(wh, {1: ["a"], 2: [], 3: ["d", "e"]})
    assert _rows(wh, "select order_id, sku from order_lines order by all") == [(1, "a"), (3, "d"), (3, "e")]
    assert _rows(wh, "select order_id, n from orders order by all") == [(1, 1), (2, 0), (3, 2)]
    with pytest.raises(RuntimeError):
        _orders_with_lines(wh, {1: ["x", "y", "z"], 4: ["w"]}, fail=True)
    assert _rows(wh, "select order_id, sku from order_lines order by all") == [(1, "a"), (3, "d"), (3, "e")]
    assert _rows(wh, "select count(*) from orders") == [(3,)], "neither table changed"


def test_covered_keys_without_rows_lose_their_rows(wh: Warehouse) -> None:
    """replace_keys: a parent re-loaded with no children at all (no row in the whole load) loses them."""
    wh.load(LoadRequest("lines", "replace_keys", "r", primary_key=("o",)), [_b(o=[1, 1, 2], s=["a", "b", "c"])])
    with wh.begin(LoadRequest("lines", "replace_keys", "r", primary_key=("o",))) as load:
        load.cover(_b(o=[1]))
        res = load.commit()
    assert (res.rows_loaded, res.rows_deleted, res.table_rows) == (0, 2, 1)
    assert _rows(wh, "select o, s from lines") == [(2, "c")]


def test_stream_is_bounded_and_tables_hide_bookkeeping(wh: Warehouse) -> None:
    load = wh.begin(LoadRequest("big", "replace", "r"))
    load.chunk_rows = 1000  # type: ignore[attr-defined]
    with load:
        for start in range(0, 5000, 700):
            load.write(_b(id=list(range(start, min(start + 700, 5000)))))
        assert load.commit().table_rows == 5000
    batches = list(wh.stream("select id from big order by id", batch_rows=1024))
    assert max(b.num_rows for b in batches) <= 1024 and sum(b.num_rows for b in batches) == 5000
    wh.load(LoadRequest("_hub_files", "replace", "r"), [_b(x=[1])])
    assert wh.tables() == ["big"] and wh.tables(internal=True) == ["_hub_files", "big"]


# --- PostgreSQL -------------------------------------------------------------------------------------------


def test_pg_killed_load_leaves_table_unchanged(pg: PostgresWarehouse) -> None:
    """A process killed mid-load (after DELETE, CREATE, COPY; no rollback, no close): the server aborts
    its transaction when the connection drops."""
    pg.load(LoadRequest("k", "replace_partition", "r", partition="p"), [_b(id=[1, 2])])
    script = textwrap.dedent(f"""
        import os, pyarrow as pa
        from hub.warehouse.postgres import PostgresWarehouse
        from hub.warehouse import LoadRequest
        wh = PostgresWarehouse({pg.url!r})
        load = wh.begin(LoadRequest("k", "replace_partition", "r2", partition="p"))
        load.chunk_rows = 1
        load.write(pa.RecordBatch.from_pydict({{"id": list(range(100, 200)), "extra": ["new column"] * 100}}))
        other = wh.begin(LoadRequest("k2", "replace", "r2"))
        other.write(pa.RecordBatch.from_pydict({{"id": [1]}}))
        other.commit()  # another load of this process commits: the killed one must not
        print("written", flush=True)
        os.kill(os.getpid(), 9)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -9 and "written" in proc.stdout, proc.stderr
    assert _rows(pg, "select id, _hub_partition, _hub_run_id from k order by id") == [(1, "p", "r"), (2, "p", "r")]
    assert [c for c in pg.query("select * from k").column_names] == [
        "id", "_hub_partition", "_hub_run_id", "_hub_loaded_at"], "the added column went with the transaction"
    assert _rows(pg, "select id from k2") == [(1,)]


def test_pg_type_round_trip(pg: PostgresWarehouse) -> None:
    berlin = timezone(timedelta(hours=1))
    batch = pa.RecordBatch.from_pydict({
        "id": pa.array([1, 2, 3], pa.int32()),
        "s": pa.array(["", None, 'quote " comma , newline \n backslash \\ \\N NULL'], pa.string()),
        "i8": pa.array([-128, None, 127], pa.int8()),
        "i16": pa.array([-32768, None, 32767], pa.int16()),
        "i64": pa.array([-(2**63), None, 2**63 - 1], pa.int64()),
        "f32": pa.array([1.5, None, float("inf")], pa.float32()),
        "f64": pa.array([0.1, None, float("nan")], pa.float64()),
        "ok": pa.array([True, None, False]),
        "money": pa.array([Decimal("0.10"), None, Decimal("-99999999.99")], pa.decimal128(10, 2)),
        "big": pa.array([Decimal("1234567890123456789012345678.0123456789"), None, Decimal("0E-10")],
                        pa.decimal128(38, 10)),
        "day": pa.array([date(2024, 2, 29), None, date(1, 1, 1)], pa.date32()),
        "naive": pa.array([datetime(2024, 3, 31, 2, 30, 0, 123456), None, datetime(1999, 12, 31, 23, 59, 59)],
                          pa.timestamp("us")),
        "aware": pa.array([datetime(2024, 1, 1, 12, tzinfo=berlin), None, datetime(2024, 7, 1, 0, tzinfo=UTC)],
                          pa.timestamp("us", tz="Europe/Berlin")),
        "nanos": pa.array([1_700_000_000_123_456_000, None, 0], pa.timestamp("ns", tz="UTC")),
        "blob": pa.array([bytes(range(256)), None, b""], pa.binary()),
        "lines": pa.array([[{"sku": "a", "qty": 2, "price": Decimal("1.50")}], None, []],
                          pa.list_(pa.struct([("sku", pa.string()), ("qty", pa.int64()),
                                              ("price", pa.decimal128(5, 2))]))),
        "address": pa.array([{"city": "Zürich", "zip": None}, None, {"city": "", "zip": "8000"}]),
        "tags": pa.array([{"k": 1}, None, {}], pa.map_(pa.string(), pa.int64())),
        "took": pa.array([timedelta(days=2, microseconds=7), None, timedelta(0)], pa.duration("us")),
    })
    res = pg.load(LoadRequest("types", "replace", "r"), [batch])
    assert dict(res.columns) == {
        "id": "integer", "s": "text", "i8": "smallint", "i16": "smallint", "i64": "bigint", "f32": "real",
        "f64": "double precision", "ok": "boolean", "money": "numeric(10,2)", "big": "numeric(38,10)",
        "day": "date", "naive": "timestamp without time zone", "aware": "timestamp with time zone",
        "nanos": "timestamp with time zone", "blob": "bytea", "lines": "jsonb", "address": "jsonb", "tags": "jsonb",
        "took": "interval", "_hub_partition": "text", "_hub_run_id": "text",
        "_hub_loaded_at": "timestamp with time zone"}
    table = pg.query("select * from types order by id")
    assert {f.name: f.type for f in table.schema if not f.name.startswith("_hub_")} == {
        "id": pa.int32(), "s": pa.string(), "i8": pa.int16(), "i16": pa.int16(), "i64": pa.int64(),
        "f32": pa.float32(), "f64": pa.float64(), "ok": pa.bool_(), "money": pa.decimal128(10, 2),
        "big": pa.decimal128(38, 10), "day": pa.date32(), "naive": pa.timestamp("us"),
        "aware": pa.timestamp("us", tz="UTC"), "nanos": pa.timestamp("us", tz="UTC"), "blob": pa.binary(),
        "lines": pa.string(), "address": pa.string(), "tags": pa.string(), "took": pa.duration("us")}
    rows = table.to_pylist()
    first, nulls, last = rows
    assert all(v is None for k, v in nulls.items() if k not in ("id", "_hub_run_id", "_hub_loaded_at"))
    assert first["s"] == "" and last["s"] == 'quote " comma , newline \n backslash \\ \\N NULL'
    assert _rows(pg, "select count(*) filter (where s = '') as empty, count(*) filter (where s is null) as null "
                     "from types") == [(1, 1)], "NULL and the empty string stay apart"
    assert (first["i8"], last["i8"], first["i16"], last["i16"], first["i64"], last["i64"]) == (
        -128, 127, -32768, 32767, -(2**63), 2**63 - 1)
    assert (first["f32"], last["f32"], first["f64"]) == (1.5, float("inf"), 0.1) and last["f64"] != last["f64"]
    assert (first["ok"], last["ok"]) == (True, False)
    assert (first["money"], last["money"]) == (Decimal("0.10"), Decimal("-99999999.99"))
    assert first["big"] == Decimal("1234567890123456789012345678.0123456789") and last["big"] == 0
    assert (first["day"], last["day"]) == (date(2024, 2, 29), date(1, 1, 1))
    assert first["naive"] == datetime(2024, 3, 31, 2, 30, 0, 123456), "naive timestamps are not shifted"
    assert first["aware"] == datetime(2024, 1, 1, 11, tzinfo=UTC) and last["aware"] == datetime(2024, 7, 1, tzinfo=UTC)
    assert first["nanos"] == datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=UTC)
    assert (first["blob"], last["blob"]) == (bytes(range(256)), b"")
    assert json.loads(first["lines"]) == [{"sku": "a", "qty": 2, "price": "1.50"}], "decimals in JSON stay exact"
    assert last["lines"] == "[]"
    assert json.loads(first["address"]) == {"city": "Zürich", "zip": None}
    assert (json.loads(first["tags"]), json.loads(last["tags"])) == ({"k": 1}, {})
    assert (first["took"], last["took"]) == (timedelta(days=2, microseconds=7), timedelta(0))
    # nested values are jsonb: queried with DuckDB's JSON operators, translated
    assert _rows(pg, "select address->>'city' as city, lines->0->>'sku' as sku, (lines->0->>'qty')::int as qty "
                     "from types where id = 1") == [("Zürich", "a", 2)]
    assert _rows(pg, "select count(*) filter (where aware > '2024-06-01 00:00:00+00'::timestamptz) from types") \
        == [(1,)]


def test_pg_many_chunks_and_merge_last_row_wins(pg: PostgresWarehouse) -> None:
    load = pg.begin(LoadRequest("m", "merge", "r", primary_key=("a", "b")))
    load.chunk_rows = 100  # type: ignore[attr-defined]
    with load:
        for round_ in range(3):
            load.write(_b(a=[i % 7 for i in range(250)], b=[str(i % 5) for i in range(250)],
                          round=[round_ * 1000 + i for i in range(250)]))
        res = load.commit()
    assert res.rows_loaded == res.table_rows == 35
    # the last row of (0, '0') is i = 245 of round 2
    assert _rows(pg, "select round from m where a = 0 and b = '0'") == [(2245,)]


def test_pg_numeric_columns_widen(pg: PostgresWarehouse) -> None:
    def load(partition: str, values: pa.Array) -> str:
        res = pg.load(LoadRequest("n", "replace_partition", "r", partition=partition),
                      [pa.RecordBatch.from_arrays([pa.array([partition]), values], names=["p", "v"])])
        return dict(res.columns)["v"]

    assert load("a", pa.array([1], pa.int32())) == "integer"
    assert load("b", pa.array([2**40], pa.int64())) == "bigint"
    assert load("c", pa.array([Decimal("1.25")], pa.decimal128(5, 2))) == "numeric(21,2)"
    assert load("d", pa.array([1], pa.int16())) == "numeric(21,2)", "narrower values fit as they are"
    assert load("e", pa.array([0.5])) == "double precision"
    assert _rows(pg, "select p, v from n order by p") == [
        ("a", 1.0), ("b", 2.0**40), ("c", 1.25), ("d", 1.0), ("e", 0.5)]
    with pytest.raises(WarehouseError, match="column v of table n is double precision, but the new rows have date"):
        load("f", pa.array([date(2024, 1, 1)]))


def test_pg_result_types(pg: PostgresWarehouse) -> None:
    pg.load(LoadRequest("q", "replace", "r"), [_b(g=["a", "a", "b"], n=[1, 2, 3])])
    table = pg.query("select *, cast('2024-01-01 00:00:00+02' as timestamptz) as at, gen_random_uuid() as id, "
                     "array[1, 2] as arr, interval '1 day 2 hours' as span from (select g, sum(n) as total, "
                     "avg(n) as mean, cast(sum(n) as decimal(12, 2)) as exact from q group by all) order by g")
    assert {f.name: f.type for f in table.schema} == {
        "g": pa.string(), "total": pa.float64(), "mean": pa.float64(), "exact": pa.decimal128(12, 2),
        "at": pa.timestamp("us", tz="UTC"), "id": pa.string(), "arr": pa.string(), "span": pa.duration("us")}
    first = table.to_pylist()[0]
    assert (first["g"], first["total"], first["mean"], first["exact"]) == ("a", 3.0, 1.5, Decimal("3.00"))
    assert first["at"] == datetime(2023, 12, 31, 22, tzinfo=UTC) and first["arr"] == "[1,2]"
    assert first["span"] == timedelta(days=1, hours=2) and len(first["id"]) == 36
    empty = pg.query("select g, n from q where false")
    assert empty.num_rows == 0 and empty.schema.types == [pa.string(), pa.int64()]


def test_pg_model_in_duckdb_dialect(pg: PostgresWarehouse) -> None:
    pg.load(LoadRequest("sales", "replace", "r"), [_b(region=["n", "n", "s", "s", "s"], amount=[5, 50, 7, 70, 700],
                                                    **{"Mixed Case": ["x"] * 5})])
    res = pg.run_model("by_region", """
        select region, count(*) as n, count(*) FILTER (WHERE amount > 10) as big, sum(amount)::bigint as total,
               max("Mixed Case") as mixed
        from sales group by all order by all""")
    assert res.table_rows == 2 and [c for c, _ in res.columns] == ["region", "n", "big", "total", "mixed"]
    assert _rows(pg, "select * from by_region order by all") == [("n", 2, 1, 55, "x"), ("s", 3, 2, 777, "x")]
    again = pg.run_model("by_region", "select region from sales group by all")
    assert again.table_rows == 2 and pg.tables() == ["by_region", "sales"], "replaced, no leftover tables"


def test_pg_untranslatable_sql_is_refused_clearly(pg: PostgresWarehouse) -> None:
    pg.load(LoadRequest("base", "replace", "r"), [_b(g=["a"], v=[1])])
    pg.run_model("m", "select g from base")
    with pytest.raises(WarehouseError, match=r"model m: cannot translate the SQL from DuckDB's dialect to "
                                             r"PostgreSQL's: PIVOT unsupported; the previous table is kept"):
        pg.run_model("m", "pivot base on g using sum(v)")
    with pytest.raises(WarehouseError, match=r"SELECT \* EXCEPT has no PostgreSQL equivalent"):
        pg.query("select * exclude (v) from base")
    with pytest.raises(WarehouseError, match="expected one SQL statement, got 2"):
        pg.query("select 1; select 2")
    with pytest.raises(WarehouseError, match=r"model m: SQL failed in postgresql://\*\*\*@.*, the previous table "
                                             r"is kept: .*typeof"):
        pg.run_model("m", "select typeof(v) from base")  # translated, but PostgreSQL has no such function
    assert _rows(pg, "select g from m") == [("a",)]


def test_pg_replace_keeps_readers_and_loads_of_a_table_take_turns(pg: PostgresWarehouse) -> None:
    pg.load(LoadRequest("ref", "replace", "r"), [_b(x=[1, 2, 3])])
    with pg.begin(LoadRequest("ref", "replace", "r2")) as load:
        load.write(_b(x=[9]))
        load.chunk_rows = 1  # type: ignore[attr-defined]
        load.write(_b(x=[10]))  # flushed: the new table exists, uncommitted
        assert _rows(pg, "select count(*) from ref") == [(3,)], "readers see the old table and are not blocked"
        load.commit()
    assert _rows(pg, "select x from ref order by x") == [(9,), (10,)]
    # two first loads of a new table: the second waits for the first instead of failing to create it
    first = pg.begin(LoadRequest("new", "replace_partition", "r", partition="a"))
    first.chunk_rows = 1  # type: ignore[attr-defined]
    first.write(_b(k=["a"]))
    errors: list[BaseException] = []

    def second() -> None:
        try:
            pg.load(LoadRequest("new", "replace_partition", "r", partition="b"), [_b(k=["b"])])
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=second)
    thread.start()
    time.sleep(0.5)
    assert thread.is_alive(), "the second load waits for the first"
    first.commit()
    thread.join(30)
    assert not errors and _rows(pg, "select k from new order by k") == [("a",), ("b",)]


def test_pg_urls_and_errors_without_secrets(pg_url: str) -> None:
    for url in (pg_url, pg_url.replace("postgresql://", "postgresql+psycopg://"),
                pg_url.replace("postgresql://", "postgres://")):
        wh = connect(f"{url}?schema=urls")
        assert isinstance(wh, PostgresWarehouse) and wh.schema == "urls"
        assert wh.sa_url.drivername == "postgresql+psycopg"
    assert connect(pg_url).schema == "public"  # type: ignore[attr-defined]
    wh = connect("postgresql://hub:s3cret-pw-123@127.0.0.1:1/nowhere?connect_timeout=2")
    with pytest.raises(WarehouseError, match="cannot connect to the PostgreSQL warehouse") as info:
        wh.load(LoadRequest("t", "replace", "r"), [_b(x=[1])])
    with pytest.raises(WarehouseError) as info2:
        wh.query("select 1")
    for exc in (info.value, info2.value):
        assert "s3cret-pw-123" not in str(exc) and "127.0.0.1:1/nowhere" in str(exc)
    with pytest.raises(WarehouseError, match="unsupported warehouse URL scheme 'postgresql\\+asyncpg'"):
        connect("postgresql+asyncpg://u:p@h/db")
