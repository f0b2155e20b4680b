"""Propose a starting expectation suite from the rows already loaded (``hub contracts suggest``).

The proposal describes the data as it is: every column exists; columns without nulls are not null;
numbers, dates and timestamps stay within the observed range; text with few distinct values stays within
them; the primary key is unique. It is a starting point for a person to review (ranges and value sets
that describe today's data may be too tight for tomorrow's), and it passes on the data it came from.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from hub.errors import HubError
from hub.validation.runner import read_rows
from hub.validation.suite import Expectation, check_name, dump_suite

if TYPE_CHECKING:
    from hub.spec.loader import Pipeline

#: Text columns with at most this many distinct values get an allowed-values expectation.
MAX_SET = 20


def suggest(pipeline: Pipeline, asset: str, partition: str | None = None) -> tuple[list[Expectation], int]:
    """The proposed expectations for *asset* (a source, child table or model of *pipeline*) and the number
    of rows they were drawn from (all rows, or those of *partition*)."""
    if asset not in pipeline.tables() and asset not in pipeline.spec.models:
        raise HubError(f"{pipeline.path}: no source, child table or model named {asset} "
                       f"(tables: {', '.join([*pipeline.tables(), *pipeline.spec.models])})")
    table = read_rows(pipeline.warehouse_url, asset, partition)
    if table.num_rows == 0:
        where = f" in partition {partition}" if partition else ""
        run = f" --partition {partition}" if partition else ""  # a file drop's partition is its file: same flag
        raise HubError(f"no rows of {asset}{where} in {pipeline.warehouse_url}: run the pipeline first "
                       f"(hub run {pipeline.path} --asset {asset}{run})")
    out: list[Expectation] = []

    def add(type_: str, **kwargs: Any) -> None:
        out.append(Expectation(type_, kwargs, name=check_name(type_, kwargs)))

    source = pipeline.sources.get(asset)
    key = list(source.spec.primary_key) if source is not None else []
    for name in table.column_names:
        add("expect_column_to_exist", column=name)
    for name in table.column_names:
        col = table.column(name)
        if col.null_count == len(col):
            continue
        if col.null_count == 0:
            add("expect_column_values_to_not_be_null", column=name)
        bounds = _range(col)
        if bounds is not None:
            add("expect_column_values_to_be_between", column=name, min_value=bounds[0], max_value=bounds[1])
        elif pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            values = pc.unique(col.drop_null())
            if len(values) <= MAX_SET and len(values) < table.num_rows:
                add("expect_column_values_to_be_in_set", column=name, value_set=sorted(values.to_pylist()))
    if len(key) == 1 and key[0] in table.column_names:
        add("expect_column_values_to_be_unique", column=key[0])
    elif len(key) > 1 and all(k in table.column_names for k in key):
        add("expect_compound_columns_to_be_unique", column_list=key)
    return out, table.num_rows


def _range(col: pa.ChunkedArray) -> tuple[Any, Any] | None:
    """(min, max) as the suite writes them: numbers as numbers (decimals as the float the validation
    sees), dates as dates, timestamps as ISO 8601 text (with the offset when zoned)."""
    typ = col.type
    if pa.types.is_decimal(typ):
        col = col.cast(pa.float64())
    elif not (pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_date(typ)
              or pa.types.is_timestamp(typ)):
        return None
    found = pc.min_max(col)
    low, high = found["min"].as_py(), found["max"].as_py()
    if isinstance(low, datetime) and isinstance(high, datetime):
        if low.tzinfo is not None:
            low, high = low.astimezone(UTC), high.astimezone(UTC)
        return low.isoformat(), high.isoformat()
    return low, high


def suggest_yaml(pipeline: Pipeline, asset: str, partition: str | None = None) -> str:
    """The proposal as a suite file, with a header saying where it came from."""
    expectations, rows = suggest(pipeline, asset, partition)
    scope = f"partition {partition}" if partition else "all partitions" if pipeline.sources.get(asset) is not None \
        and pipeline.sources[asset].partitioned else "the whole table"
    header = (f"# Expectation suite for {asset}, suggested by `hub contracts suggest` on "
              f"{datetime.now(UTC):%Y-%m-%d} from {rows:,} rows ({scope}).\n"
              "# Review it before use: the ranges and value sets describe the data as it is today. Give a\n"
              "# check `severity: warn` to report without blocking downstream assets. Wire it into the spec:\n"
              f"#   checks: {{{asset}: contracts/<system>/{asset}.suite.yaml}}\n")
    return dump_suite(expectations, header)
