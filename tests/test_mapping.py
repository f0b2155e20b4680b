"""Field mapping and coercion on Arrow batches, with bad rows split off to quarantine."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pyarrow as pa

from hub.runtime.records import records_to_batch
from hub.transform.mapping import Mapper

RECORDS = [
    {"id": "1", "name": "Ada", "address": {"city": "Paris", "geo": {"lat": 48.8}}, "paid": "12.50",
     "at": "2024-01-01T10:00:00Z", "day": "2024-01-01", "vip": "yes", "tags": ["a", "b"]},
    {"id": 2, "name": "Bob", "address": {"city": "Lyon"}, "paid": 3, "at": "2024-01-01T12:00:00+02:00",
     "day": "2024-01-02", "vip": "no", "tags": []},
    {"id": "three", "name": None, "address": None, "paid": None, "at": None, "day": None, "vip": None},
]

COLUMNS = [("id", None, "int64"), ("name", "full_name", None), ("address.city", "city", None),
           ("address.geo.lat", "lat", "float64"), ("paid", None, "decimal(10,2)"), ("at", None, "timestamptz"),
           ("day", None, "date"), ("vip", None, "bool"), ("tags", None, "json")]


def test_pick_rename_cast_and_quarantine() -> None:
    batch = records_to_batch(RECORDS)
    assert batch.num_rows == 3
    mapped = Mapper(COLUMNS).apply(batch)
    out = mapped.batch
    assert out.schema.names == ["id", "full_name", "city", "lat", "paid", "at", "day", "vip", "tags"]
    assert out.schema.field("id").type == pa.int64()
    assert out.schema.field("paid").type == pa.decimal128(10, 2)
    assert out.schema.field("at").type == pa.timestamp("us", tz="UTC")
    rows = out.to_pylist()
    assert len(rows) == 2, "the row with id 'three' is quarantined, not loaded"
    assert rows[0]["id"] == 1 and rows[0]["city"] == "Paris" and rows[0]["lat"] == 48.8
    assert rows[1]["lat"] is None, "a missing nested field is null"
    assert rows[0]["paid"] == Decimal("12.50") and rows[1]["paid"] == Decimal("3.00")
    assert rows[0]["at"] == datetime(2024, 1, 1, 10, tzinfo=UTC)
    assert rows[1]["at"] == datetime(2024, 1, 1, 10, tzinfo=UTC), "offsets normalize to UTC"
    assert rows[0]["day"] == date(2024, 1, 1) and rows[0]["vip"] is True and rows[1]["vip"] is False
    assert rows[0]["tags"] == '["a", "b"]'
    [bad] = mapped.quarantine
    assert bad["row"] == 2 and bad["column"] == "id" and "cannot convert 'three'" in bad["reason"]
    assert '"three"' in bad["record"]


def test_no_columns_keeps_everything() -> None:
    batch = records_to_batch([{"a": 1, "b": {"c": 2}}, {"a": 2, "d": "x"}])
    assert Mapper(None).apply(batch).batch.schema.names == ["a", "b", "d"]


def test_mixed_types_fall_back_to_text_per_column() -> None:
    batch = records_to_batch([{"a": 1, "b": 1}, {"a": "x", "b": 2}])
    assert batch.schema.field("a").type == pa.string()
    assert batch.schema.field("b").type == pa.int64(), "only the mixed column becomes text"
    assert batch.column(0).to_pylist() == ["1", "x"]


def test_scalar_records_are_wrapped() -> None:
    batch = records_to_batch([1, 2, 3])
    assert batch.schema.names == ["value"] and batch.column(0).to_pylist() == [1, 2, 3]
