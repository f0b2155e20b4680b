"""The DuckDB warehouse: atomic partition replace, merge on key, schema evolution, rollback on failure."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from hub.errors import WarehouseError
from hub.warehouse import DuckDBWarehouse, LoadRequest, Stage


def _stage(tmp_path: Path, *batches: dict[str, list[object]]) -> Stage:
    stage = Stage(tmp_path / "stage")
    for b in batches:
        stage.write(pa.RecordBatch.from_pydict(b))
    return stage


def _rows(wh: DuckDBWarehouse, sql: str) -> list[tuple[object, ...]]:
    return [tuple(r.values()) for r in wh.query(sql).to_pylist()]


@pytest.fixture
def wh(tmp_path: Path) -> DuckDBWarehouse:
    return DuckDBWarehouse(f"duckdb:///{tmp_path / 'w.duckdb'}")


def test_partition_replace_is_idempotent(wh: DuckDBWarehouse, tmp_path: Path) -> None:
    for key, ids in [("2024-01-01", [1, 2, 3]), ("2024-01-02", [4, 5])]:
        with _stage(tmp_path, {"id": ids, "v": [f"{key}-{i}" for i in ids]}) as st:
            wh.load(LoadRequest("t", "replace_partition", "run1", partition=key), st)
    # re-run day 1 with one row changed and one gone: exactly that partition is replaced
    with _stage(tmp_path, {"id": [1, 2], "v": ["new-1", "new-2"]}) as st:
        result = wh.load(LoadRequest("t", "replace_partition", "run2", partition="2024-01-01"), st)
    assert (result.rows_loaded, result.rows_deleted, result.table_rows) == (2, 3, 4)
    assert _rows(wh, "select id, v, _hub_partition from t order by id") == [
        (1, "new-1", "2024-01-01"), (2, "new-2", "2024-01-01"),
        (4, "2024-01-02-4", "2024-01-02"), (5, "2024-01-02-5", "2024-01-02")]
    # the same load again changes nothing
    with _stage(tmp_path, {"id": [1, 2], "v": ["new-1", "new-2"]}) as st:
        again = wh.load(LoadRequest("t", "replace_partition", "run3", partition="2024-01-01"), st)
    assert again.table_rows == 4


def test_empty_partition_empties_only_that_partition(wh: DuckDBWarehouse, tmp_path: Path) -> None:
    for key in ["a", "b"]:
        with _stage(tmp_path, {"id": [1], "k": [key]}) as st:
            wh.load(LoadRequest("t", "replace_partition", "r", partition=key), st)
    with Stage(tmp_path / "stage") as empty:
        wh.load(LoadRequest("t", "replace_partition", "r", partition="a"), empty)
    assert _rows(wh, "select k from t") == [("b",)]


def test_merge_upserts_on_primary_key(wh: DuckDBWarehouse, tmp_path: Path) -> None:
    with _stage(tmp_path, {"id": [1, 2], "name": ["a", "b"]}) as st:
        wh.load(LoadRequest("c", "merge", "r1", primary_key=("id",)), st)
    # id 2 updated twice within one load (last wins), id 3 new
    with _stage(tmp_path, {"id": [2, 3], "name": ["b1", "c"]}, {"id": [2], "name": ["b2"]}) as st:
        res = wh.load(LoadRequest("c", "merge", "r2", primary_key=("id",)), st)
    assert _rows(wh, "select id, name from c order by id") == [(1, "a"), (2, "b2"), (3, "c")]
    assert (res.rows_loaded, res.rows_deleted, res.table_rows) == (2, 1, 3)


def test_replace_without_key(wh: DuckDBWarehouse, tmp_path: Path) -> None:
    for vals in ([1, 2, 3], [7]):
        with _stage(tmp_path, {"x": vals}) as st:
            wh.load(LoadRequest("r", "replace", "r"), st)
    assert _rows(wh, "select x from r") == [(7,)]


def test_new_columns_are_added(wh: DuckDBWarehouse, tmp_path: Path) -> None:
    with _stage(tmp_path, {"id": [1], "a": ["x"]}) as st:
        wh.load(LoadRequest("e", "merge", "r", primary_key=("id",)), st)
    with _stage(tmp_path, {"id": [2], "a": ["y"]}, {"id": [3], "b": [1.5]}) as st:
        wh.load(LoadRequest("e", "merge", "r", primary_key=("id",)), st)
    assert _rows(wh, "select id, a, b from e order by id") == [(1, "x", None), (2, "y", None), (3, None, 1.5)]


def test_failed_load_leaves_table_unchanged(wh: DuckDBWarehouse, tmp_path: Path) -> None:
    with _stage(tmp_path, {"id": [1, 2], "n": [10, 20]}) as st:
        wh.load(LoadRequest("f", "replace_partition", "r", partition="p1"), st)
    # 'n' arrives as text that cannot become the table's BIGINT: the whole load must roll back
    with _stage(tmp_path, {"id": [1, 2], "n": ["11", "not a number"]}) as st, pytest.raises(WarehouseError) as info:
        wh.load(LoadRequest("f", "replace_partition", "r2", partition="p1"), st)
    assert "loading f into" in str(info.value)
    assert _rows(wh, "select id, n from f order by id") == [(1, 10), (2, 20)]


def test_quarantine_rows_replace_per_partition(wh: DuckDBWarehouse, tmp_path: Path) -> None:
    bad = [{"row": 3, "column": "n", "value": "x", "reason": "column n: cannot convert", "record": "{}"}]
    for _ in range(2):
        with _stage(tmp_path, {"id": [1]}) as st:
            res = wh.load(LoadRequest("g", "replace_partition", "r", partition="p1", quarantine=bad), st)
    assert res.rows_quarantined == 1
    assert _rows(wh, "select _hub_partition, column_name, reason from g__quarantine") == [
        ("p1", "n", "column n: cannot convert")]


def test_model_rebuilds_atomically(wh: DuckDBWarehouse, tmp_path: Path) -> None:
    with _stage(tmp_path, {"id": [1, 2, 3], "g": ["a", "a", "b"]}) as st:
        wh.load(LoadRequest("base", "replace", "r"), st)
    res = wh.run_model("agg", "select g, count(*) as n from base group by g")
    assert res.table_rows == 2
    with pytest.raises(WarehouseError, match="model agg"):
        wh.run_model("agg", "select nope from base")
    assert _rows(wh, "select g, n from agg order by g") == [("a", 2), ("b", 1)], "old model kept"


def test_unsupported_url() -> None:
    from hub.warehouse import connect

    with pytest.raises(WarehouseError, match="unsupported warehouse URL scheme 'oracle'"):
        connect("oracle://x")
