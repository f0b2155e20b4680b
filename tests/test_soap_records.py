"""The JSON text of repeated children (order lines kept as one text column), written column by column.

``adapters.soap._records._json_column`` builds the JSON of all-leaf items from whole columns at once; it must
write exactly what the item-by-item walk (``_items_json``, still used for nested items) writes, for good and
odd values alike.
"""

from __future__ import annotations

import orjson
import pyarrow as pa
import pytest

from adapters.soap._records import Columns, _items_json
from adapters.soap._schema import LEAF, REPEATED, FieldPlan, Members, Space

_LEAVES = [("LineNo", "int", pa.int64(), "integer"), ("Sku", "string", pa.string(), "string"),
           ("Price", "decimal", pa.decimal128(12, 2), "decimal"), ("Weight", "float", pa.float64(), "double"),
           ("Ratio", "float", pa.float32(), "float"), ("Gift", "bool", pa.bool_(), "boolean")]


def _lines() -> FieldPlan:
    members = Members(fields=[FieldPlan(name=n, kind=LEAF, slot=i, conv=c, arrow=t, xsd=x)
                              for i, (n, c, t, x) in enumerate(_LEAVES)])
    return FieldPlan(name="Lines", kind=REPEATED, slot=0, item=Space(members, nslots=len(_LEAVES)))


def _reference(f: FieldPlan, values: list[list[list[str | None]] | None]) -> list[str | None]:
    return [None if v is None else orjson.dumps(_items_json(f, v)).decode() for v in values]


GOOD = [
    [["1", "SKU-1", "12.50", "0.1", "0.1", "true"], ["2", 'S"k\\u', "4.75", "1e3", "2.5", "0"]],
    None,
    [[" 3 ", "", "0.00", None, None, "1"]],  # whitespace around an int, an empty string, nulls
    [["1_000", "x", "99.00", "-0.0", "3", "false"]],  # what int()/float() accept and Arrow's cast does not
]


@pytest.mark.parametrize("values", [GOOD, [*GOOD, [["x4", "bad", "1.00", "oops", "1", "TRUE"]]]],
                         ids=["good", "with a bad item"])
def test_json_of_repeated_leaves_matches_the_item_walk(values: list[list[list[str | None]] | None]) -> None:
    f = _lines()
    errors: dict[int, str] = {}
    arr = Columns(set())._repeated(f, tuple(values), errors, "Lines")
    assert arr.type == pa.string()
    assert arr.to_pylist() == _reference(f, values)
    assert sorted(errors) == ([] if len(values) == len(GOOD) else [len(GOOD)])
    assert arr[0].as_py() == ('[{"LineNo":1,"Sku":"SKU-1","Price":"12.50","Weight":0.1,"Ratio":0.1,"Gift":true},'
                              '{"LineNo":2,"Sku":"S\\"k\\\\u","Price":"4.75","Weight":1000.0,"Ratio":2.5,"Gift":false}]')
