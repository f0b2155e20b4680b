"""Run an expectation suite on exactly the rows one materialization loaded, with Great Expectations.

The rows are read back from the warehouse (``WHERE _hub_partition = <key>`` for a partitioned source or a
file of a drop; the whole table for reference sources and models), as one pandas DataFrame, and validated
by an ephemeral Great Expectations context (nothing is kept between runs but the Data Docs). Each
expectation's outcome is returned Dagster-free (:class:`CheckOutcome`); :mod:`hub.dagster.validation` turns
them into asset check results.

Data Docs (HTML) go to ``$HUB_REPORTS_DIR/data_docs`` (default ``<project root>/reports/data_docs``): one
page per validation under ``validations/<asset>/<partition>__<run>/``, plus the suite's page and an index of
the latest validation.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from hub.validation.suite import Expectation, Suite, expectation_class
from hub.warehouse import connect
from hub.warehouse.base import LOADED_AT_COLUMN, PARTITION_COLUMN, RUN_COLUMN

if TYPE_CHECKING:
    import pandas as pd

    from hub.spec.loader import Pipeline

SAMPLE_ROWS = 10
DOCS_SITE = "hub"


@dataclass
class CheckOutcome:
    """One expectation's verdict on the rows of one materialization."""

    expectation: Expectation
    passed: bool
    observed: Any = None
    element_count: int | None = None
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    unexpected_values: list[Any] = field(default_factory=list)
    sample_rows: list[dict[str, Any]] = field(default_factory=list)  # up to SAMPLE_ROWS failing rows, whole
    error: str | None = None  # the expectation could not be evaluated (e.g. a missing column)


@dataclass
class SuiteRun:
    asset: str
    partition: str | None
    rows: int
    outcomes: list[CheckOutcome]
    duration_s: float
    docs: Path | None = None  # this validation's Data Docs page

    @property
    def success(self) -> bool:
        return all(o.passed for o in self.outcomes)


def reports_dir(root: Path) -> Path:
    """``$HUB_REPORTS_DIR``, default ``<project root>/reports``."""
    return Path(os.environ.get("HUB_REPORTS_DIR") or root / "reports")


def validate(pipeline: Pipeline, asset: str, partition: str | None, *, run_id: str = "") -> SuiteRun | None:
    """Run *asset*'s suite (``checks:``) on the rows of *partition* (None: the whole table); None without
    a suite."""
    suite = pipeline.suites.get(asset)
    if suite is None:
        return None
    table = read_rows(pipeline.warehouse_url, asset, partition)
    return run_suite(suite, table, partition=partition, run_id=run_id,
                     docs_dir=reports_dir(pipeline.root) / "data_docs")


def read_rows(url: str, table: str, partition: str | None) -> pa.Table:
    """The rows of *table* in *partition* (None: all of them), without the hub's bookkeeping columns."""
    wh = connect(url)
    if table not in wh.tables():
        return pa.table({})
    sql = f'SELECT * FROM "{table}"'
    if partition is not None:
        sql += f""" WHERE "{PARTITION_COLUMN}" = '{partition.replace("'", "''")}'"""
    rows = wh.query(sql)
    return rows.drop_columns([c for c in (PARTITION_COLUMN, RUN_COLUMN, LOADED_AT_COLUMN) if c in rows.column_names])


def to_frame(table: pa.Table) -> pd.DataFrame:
    """The DataFrame Great Expectations sees: decimals as float64 (pandas would hold Decimal objects, one
    Python object per value), dates as ``datetime.date``, timestamps as datetime64 (UTC when zoned)."""
    columns = [c.cast(pa.float64()) if pa.types.is_decimal(c.type) else c for c in table.columns]
    return pa.Table.from_arrays(columns, names=table.column_names).to_pandas()


def _gx() -> Any:
    import great_expectations as gx
    from great_expectations.execution_engine import pandas_execution_engine

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    # Great Expectations fingerprints every DataFrame under 1 GB (an MD5 over pandas' hash of every row) for
    # its batch markers: 1.5 s per million rows of work the hub never reads. Frames of any size skip it.
    pandas_execution_engine.HASH_THRESHOLD = 0
    return gx


def run_suite(suite: Suite, table: pa.Table, *, partition: str | None = None, run_id: str = "",
              docs_dir: Path | None = None) -> SuiteRun:
    """Validate *table* against *suite*; with *docs_dir*, (re)build the Data Docs site there."""
    started = time.monotonic()
    gx = _gx()
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )
    from great_expectations.expectations.metadata_types import FailureSeverity

    # in-memory stores, no default docs site in a temporary folder, no progress bars on the run's log
    context = gx.get_context(mode="ephemeral", project_config=DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        progress_bars=ProgressBarsConfig(globally=False), analytics_enabled=False))
    if docs_dir is not None:
        docs_dir.mkdir(parents=True, exist_ok=True)
        context.add_data_docs_site(DOCS_SITE, {
            "class_name": "SiteBuilder", "show_how_to_buttons": False,
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
            "site_index_builder": {"class_name": "KeepingSiteIndexBuilder", "module_name": "hub.validation._docs"}})
    batch = context.data_sources.add_pandas("hub").add_dataframe_asset(suite.asset) \
        .add_batch_definition_whole_dataframe(partition or "all")
    gx_suite = context.suites.add(gx.ExpectationSuite(name=suite.asset))
    by_name: dict[str, Expectation] = {}
    for exp in suite.expectations:
        severity = FailureSeverity.CRITICAL if exp.blocking else FailureSeverity.WARNING
        gx_suite.add_expectation(expectation_class(exp.type)(**exp.kwargs, severity=severity,
                                                              meta={"hub_check": exp.name}))
        by_name[exp.name] = exp
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=suite.asset, data=batch, suite=gx_suite))
    run_name = _safe(f"{partition or 'all'}__{run_id[:8]}" if run_id else partition or "all")
    frame = to_frame(table)
    result = definition.run(batch_parameters={"dataframe": frame},
                            result_format={"result_format": "SUMMARY", "partial_unexpected_count": SAMPLE_ROWS},
                            run_id=RunIdentifier(run_name=run_name, run_time=datetime.now(UTC)))
    del frame
    outcomes = [_outcome(by_name[r.expectation_config.meta["hub_check"]], r, table) for r in result.results]
    order = {e.name: i for i, e in enumerate(suite.expectations)}
    outcomes.sort(key=lambda o: order[o.expectation.name])
    docs = None
    if docs_dir is not None:
        context.build_data_docs(site_names=[DOCS_SITE])
        pages = sorted((docs_dir / "validations" / suite.asset / run_name).glob("**/*.html"))
        docs = pages[-1] if pages else None
    return SuiteRun(asset=suite.asset, partition=partition, rows=table.num_rows, outcomes=outcomes,
                    duration_s=time.monotonic() - started, docs=docs)


def _outcome(exp: Expectation, r: Any, table: pa.Table) -> CheckOutcome:
    res = dict(r.result or {})
    error = _error(r.exception_info)
    rows: list[dict[str, Any]] = []
    index = [i for i in res.get("partial_unexpected_index_list") or [] if isinstance(i, int)][:SAMPLE_ROWS]
    if index and table.num_rows:
        rows = json.loads(json.dumps(table.take(pa.array(index)).to_pylist(), default=str))
    values = _plain(list(res.get("partial_unexpected_list") or [])[:SAMPLE_ROWS])
    return CheckOutcome(
        expectation=exp, passed=bool(r.success), observed=_plain(res.get("observed_value")),
        element_count=res.get("element_count"), unexpected_count=res.get("unexpected_count"),
        unexpected_percent=res.get("unexpected_percent"), unexpected_values=values, sample_rows=rows,
        error=error)


def _error(info: Any) -> str | None:
    """The message of an exception Great Expectations caught while evaluating (its shape varies)."""
    if not isinstance(info, dict):
        return None
    if info.get("raised_exception"):
        return str(info.get("exception_message") or "error")
    for value in info.values():
        if isinstance(value, dict) and value.get("raised_exception"):
            return str(value.get("exception_message") or "error")
    return None


def _plain(value: Any) -> Any:
    """A JSON-safe copy of a value Great Expectations reports (NaN, the pandas null, becomes None)."""
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        value = value.item()
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return None if value != value else value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_plain(v) for v in value]
    try:
        import pandas as pd

        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
