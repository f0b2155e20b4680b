"""The DuckDB warehouse: one-transaction loads (partition replace, merge, replace), schema evolution,
rollback on failure, quarantine, atomic models."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pytest

from hub.errors import WarehouseError
from hub.warehouse import DuckDBWarehouse, LoadRequest, connect


def _b(**cols: list[object]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(cols)


def _rows(wh: DuckDBWarehouse, sql: str) -> list[tuple[object, ...]]:
    return [tuple(r.values()) for r in wh.query(sql).to_pylist()]


@pytest.fixture
def wh(tmp_path: Path) -> DuckDBWarehouse:
    return DuckDBWarehouse(f"duckdb:///{tmp_path / 'w.duckdb'}")


def test_partition_replace_is_idempotent(wh: DuckDBWarehouse) -> None:
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


def test_empty_partition_empties_only_that_partition(wh: DuckDBWarehouse) -> None:
    for key in ["a", "b"]:
        wh.load(LoadRequest("t", "replace_partition", "r", partition=key), [_b(id=[1], k=[key])])
    res = wh.load(LoadRequest("t", "replace_partition", "r", partition="a"), [])
    assert (res.rows_loaded, res.rows_deleted) == (0, 1)
    assert _rows(wh, "select k from t") == [("b",)]


def test_merge_upserts_on_primary_key_last_row_wins(wh: DuckDBWarehouse) -> None:
    first = wh.load(LoadRequest("c", "merge", "r1", primary_key=("id",)),
                    [_b(id=[1, 2, 1], name=["a0", "b", "a"])])
    assert (first.rows_loaded, first.table_rows) == (2, 2), "duplicates within the first load are collapsed"
    assert _rows(wh, "select id, name from c order by id") == [(1, "a"), (2, "b")]
    # id 2 updated twice within one load (last wins), id 3 new
    res = wh.load(LoadRequest("c", "merge", "r2", primary_key=("id",)),
                  [_b(id=[2, 3], name=["b1", "c"]), _b(id=[2], name=["b2"])])
    assert _rows(wh, "select id, name from c order by id") == [(1, "a"), (2, "b2"), (3, "c")]
    assert (res.rows_loaded, res.rows_deleted, res.table_rows) == (2, 1, 3)


def test_merge_spanning_many_chunks(wh: DuckDBWarehouse) -> None:
    """Rows arrive in more chunks than one insert takes: the last occurrence of a key still wins."""
    load = wh.begin(LoadRequest("m", "merge", "r", primary_key=("id",)))
    load.chunk_rows = 10  # type: ignore[attr-defined]
    with load:
        for round_ in range(5):
            load.write(_b(id=list(range(25)), round=[round_] * 25))
        result = load.commit()
    assert result.table_rows == 25 and result.rows_loaded == 25
    assert _rows(wh, "select distinct round from m") == [(4,)]


def test_replace_without_key(wh: DuckDBWarehouse) -> None:
    wh.load(LoadRequest("r", "replace", "r"), [_b(x=[1, 2, 3])])
    res = wh.load(LoadRequest("r", "replace", "r"), [_b(x=[7], y=["new column"])])
    assert (res.rows_loaded, res.rows_deleted) == (1, 3)
    assert _rows(wh, "select x, y from r") == [(7, "new column")]
    wh.load(LoadRequest("r", "replace", "r"), [])
    assert _rows(wh, "select count(*) from r") == [(0,)], "an empty reference set empties the table"


def test_new_columns_are_added(wh: DuckDBWarehouse) -> None:
    wh.load(LoadRequest("e", "merge", "r", primary_key=("id",)), [_b(id=[1], a=["x"])])
    wh.load(LoadRequest("e", "merge", "r", primary_key=("id",)), [_b(id=[2], a=["y"]), _b(id=[3], b=[1.5])])
    assert _rows(wh, "select id, a, b from e order by id") == [(1, "x", None), (2, "y", None), (3, None, 1.5)]


def test_types_unify_within_a_first_load(wh: DuckDBWarehouse) -> None:
    """Pages of a new table may disagree: ints then floats widen; a null-only page has no type yet."""
    res = wh.load(LoadRequest("u", "replace", "r"), [
        _b(id=[1], n=[1], z=pa.nulls(1)),
        _b(id=[2], n=[2.5], z=pa.nulls(1)),
        _b(id=[3], n=[3], z=[7]),
        _b(id=[4], n=["text"], z=[8]),
    ])
    types = dict(res.columns)
    assert types["n"] == "VARCHAR", "number then text unifies to text"
    assert types["z"] == "BIGINT", "a column that was NULL so far takes the type of its first values"
    assert _rows(wh, "select id, n, z from u order by id") == [
        (1, "1.0", None), (2, "2.5", None), (3, "3.0", 7), (4, "text", 8)]


def test_existing_column_widens_but_never_changes_kind(wh: DuckDBWarehouse) -> None:
    wh.load(LoadRequest("w", "replace_partition", "r", partition="p1"), [_b(id=[1], n=[10])])
    wh.load(LoadRequest("w", "replace_partition", "r", partition="p2"), [_b(id=[2], n=[2.5])])
    assert _rows(wh, "select distinct typeof(n) from w") == [("DOUBLE",)]
    assert _rows(wh, "select id, n from w order by id") == [(1, 10.0), (2, 2.5)], "int column widened to double"
    wh.load(LoadRequest("w", "replace_partition", "r", partition="p3"), [_b(id=[3], n=pa.nulls(1))])
    assert _rows(wh, "select n from w where id = 3") == [(None,)], "an all-NULL page fits any column"


def test_type_change_of_existing_column_rolls_back(wh: DuckDBWarehouse) -> None:
    wh.load(LoadRequest("f", "replace_partition", "r", partition="p1"), [_b(id=[1, 2], n=[10, 20])])
    # 'n' arrives as text: the existing BIGINT column is not silently turned into text
    with pytest.raises(WarehouseError) as info:
        wh.load(LoadRequest("f", "replace_partition", "r2", partition="p1"), [_b(id=[1, 2], n=["11", "x"])])
    msg = str(info.value)
    assert "loading f into" in msg and "nothing was changed" in msg
    assert "column n of table f is BIGINT, but the new rows have VARCHAR" in msg
    assert _rows(wh, "select id, n from f order by id") == [(1, 10), (2, 20)], "the deleted partition is back"


def test_exception_in_the_middle_rolls_back(wh: DuckDBWarehouse) -> None:
    wh.load(LoadRequest("x", "replace_partition", "r", partition="p"), [_b(id=[1])])

    def batches():  # type: ignore[no-untyped-def]
        yield _b(id=[2])
        raise RuntimeError("source broke")

    with pytest.raises(RuntimeError, match="source broke"):
        wh.load(LoadRequest("x", "replace_partition", "r", partition="p"), batches())
    assert _rows(wh, "select id from x") == [(1,)]


def test_killed_load_leaves_table_unchanged(tmp_path: Path) -> None:
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


def test_quarantine_rows_replace_per_partition(wh: DuckDBWarehouse) -> None:
    bad = [{"row": 3, "column": "n", "value": "x", "reason": "column n: cannot convert", "record": "{}"}]
    for _ in range(2):
        res = wh.load(LoadRequest("g", "replace_partition", "r", partition="p1"), [_b(id=[1])], bad)
    assert res.rows_quarantined == 1
    assert _rows(wh, "select _hub_partition, column_name, reason from g__quarantine") == [
        ("p1", "n", "column n: cannot convert")]
    wh.load(LoadRequest("g", "replace_partition", "r", partition="p1"), [_b(id=[1])])
    assert _rows(wh, "select count(*) from g__quarantine") == [(0,)], "a clean re-run clears the partition's rows"


def test_merge_without_key_column_fails(wh: DuckDBWarehouse) -> None:
    with pytest.raises(WarehouseError, match=r"primary key column\(s\) id are not in the loaded rows"):
        wh.load(LoadRequest("nk", "merge", "r", primary_key=("id",)), [_b(other=[1])])
    assert "nk" not in wh.tables()


def test_model_rebuilds_atomically(wh: DuckDBWarehouse) -> None:
    wh.load(LoadRequest("base", "replace", "r"), [_b(id=[1, 2, 3], g=["a", "a", "b"])])
    res = wh.run_model("agg", "select g, count(*) as n from base group by g")
    assert res.table_rows == 2
    with pytest.raises(WarehouseError, match="model agg"):
        wh.run_model("agg", "select nope from base")
    assert _rows(wh, "select g, n from agg order by g") == [("a", 2), ("b", 1)], "old model kept"
    assert wh.tables() == ["agg", "base"]


def test_url_settings_and_unsupported_url(tmp_path: Path) -> None:
    wh = connect(f"duckdb:///{tmp_path / 's.duckdb'}?threads=1&memory_limit=256MB")
    assert _rows(wh, "select current_setting('threads')") == [(1,)]  # type: ignore[arg-type]
    with pytest.raises(WarehouseError, match="unsupported warehouse URL scheme 'oracle'") as info:
        connect("oracle://scott:tiger-secret@db/x")
    assert "tiger-secret" not in str(info.value)


def _orders_with_lines(wh: DuckDBWarehouse, orders: dict[int, list[str]], *, fail: bool = False) -> None:
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


def test_attached_child_table_commits_with_its_parent(wh: DuckDBWarehouse) -> None:
    _orders_with_lines(wh, {1: ["a", "b"], 2: ["c"]})
    # order 1 is re-loaded with one line fewer, order 2 with none, order 3 is new
    _orders_with_lines(wh, {1: ["a"], 2: [], 3: ["d", "e"]})
    assert _rows(wh, "select order_id, sku from order_lines order by all") == [(1, "a"), (3, "d"), (3, "e")]
    assert _rows(wh, "select order_id, n from orders order by all") == [(1, 1), (2, 0), (3, 2)]
    with pytest.raises(RuntimeError):
        _orders_with_lines(wh, {1: ["x", "y", "z"], 4: ["w"]}, fail=True)
    assert _rows(wh, "select order_id, sku from order_lines order by all") == [(1, "a"), (3, "d"), (3, "e")]
    assert _rows(wh, "select count(*) from orders") == [(3,)], "neither table changed"
