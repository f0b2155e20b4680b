"""The JSON text of repeated children (adapters.soap._records): the Arrow-built column says exactly what
orjson says of the XML values one item at a time, for every kind of value, odd spellings and escapes
included."""

from __future__ import annotations

from typing import Any

import orjson
import pyarrow as pa

from adapters.soap._records import Columns, _items_json
from adapters.soap._schema import LEAF, REPEATED, FieldPlan, Members, Space


def _leaf(name: str, slot: int, conv: str, arrow: pa.DataType) -> FieldPlan:
    return FieldPlan(name=name, kind=LEAF, slot=slot, conv=conv, arrow=arrow, xsd=conv)


def _space(fields: list[FieldPlan]) -> Space:
    members = Members(fields=fields)
    return Space(members, nslots=len(fields))


ITEM = _space([_leaf("i", 0, "int", pa.int64()), _leaf("s", 1, "string", pa.string()),
               _leaf("b", 2, "bool", pa.bool_()), _leaf("f", 3, "float", pa.float64()),
               _leaf("d", 4, "decimal", pa.decimal128(12, 2)), _leaf("t", 5, "datetime", pa.timestamp("us", "UTC")),
               _leaf('q"x', 6, "string", pa.string())])
LINES = FieldPlan(name="Line", kind=REPEATED, slot=0, item=ITEM)
TAGS = FieldPlan(name="Tag", kind=REPEATED, slot=1, item=_space([_leaf("value", 0, "string", pa.string())]),
                 leaf_item=True)
NUMS = FieldPlan(name="Num", kind=REPEATED, slot=2, item=_space([_leaf("value", 0, "int", pa.int32())]),
                 leaf_item=True)
RECORD = Space(Members(fields=[LINES, TAGS, NUMS]), nslots=3)

INTS = ["7", "-0", "007", "+7", " 7", "0x10", "1_0", "abc", "", None, "2147483648", "-9223372036854775808",
        "99999999999999999999", "-9223372036854775809"]  # beyond 64 bits: orjson refused them, failing the read
TEXTS = ["plain", "", None, 'say "hi"', "back\\slash", "tab\there", "nl\n", "\x01", "\x7f", "é ü 漢", "\u2028",
         "<&>", "12.50"]
BOOLS = ["true", "false", "1", "0", "True", " true", "yes", "", None]
FLOATS = ["1.5", "1e20", "-0", "NaN", "INF", "0.1", "x", None, "  2 "]
DECIMALS = ["12.50", "1.234", "abc", None, "-0.00"]
STAMPS = ["2024-01-01T00:00:00Z", "2024-01-01T01:00:00+01:00", "2024-01-01", "bad", None]


def _rows() -> list[list[Any]]:
    """Records with every value of the lists above in some item (lengths differ, so they combine)."""
    rows: list[list[Any]] = []
    for r in range(20):
        items = []
        for k in range(r % 4):
            j = r * 4 + k
            items.append([INTS[j % len(INTS)], TEXTS[j % len(TEXTS)], BOOLS[j % len(BOOLS)], FLOATS[j % len(FLOATS)],
                          DECIMALS[j % len(DECIMALS)], STAMPS[j % len(STAMPS)], TEXTS[(j + 3) % len(TEXTS)]])
        tags = None if r % 5 == 0 else [[TEXTS[(r + k) % len(TEXTS)]] for k in range(r % 3)]
        nums = None if r % 7 == 0 else [[INTS[(r + k) % len(INTS)]] for k in range(1 + r % 3)]
        rows.append([items or None, tags, nums])
    return rows


def _expected(f: FieldPlan, values: list[Any]) -> list[str | None]:
    return [None if v is None else orjson.dumps(_items_json(f, v)).decode() for v in values]


def test_json_columns_match_orjson_of_each_item() -> None:
    rows = _rows()
    errors: dict[int, str] = {}
    arrays, fields = Columns(set()).build(RECORD, rows, errors)
    assert [f.name for f in fields] == ["Line", "Tag", "Num"]
    assert all(a.type == pa.string() for a in arrays)
    for arr, plan in zip(arrays, (LINES, TAGS, NUMS), strict=True):
        assert arr.to_pylist() == _expected(plan, [row[plan.slot] for row in rows]), plan.name
    assert errors, "the bad values still mark their records"


def test_json_of_every_value_alone() -> None:
    """Each value of the lists above as the only item of its record (no neighbour hides a difference)."""
    rows = [[[[i, t, b, f, d, s, t]], [[t]], [[i]]]
            for i, t, b, f, d, s in zip(INTS * 2, TEXTS * 2, BOOLS * 3, FLOATS * 3, DECIMALS * 5, STAMPS * 5,
                                    strict=False)]
    arrays, _ = Columns(set()).build(RECORD, rows, {})
    for arr, plan in zip(arrays, (LINES, TAGS, NUMS), strict=True):
        assert arr.to_pylist() == _expected(plan, [row[plan.slot] for row in rows]), plan.name


def test_bad_items_mark_the_records_that_hold_them() -> None:
    rows = _rows()
    expected: dict[int, str] = {}
    for plan in (LINES, TAGS, NUMS):
        assert plan.item is not None
        flat = [(i, item) for i, row in enumerate(rows) for item in row[plan.slot] or []]
        item_errors: dict[int, str] = {}
        Columns(set()).build(plan.item, [item for _, item in flat], item_errors, f"{plan.name}.")
        for j, message in item_errors.items():
            expected.setdefault(flat[j][0], message)
    errors: dict[int, str] = {}
    Columns(set()).build(RECORD, rows, errors)
    assert errors == expected
    assert len(errors) > 3
