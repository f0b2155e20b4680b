"""Validation overhead benchmark: one hop (loopback REST source -> DuckDB) with and without validation.

Usage::

    .venv/bin/python bench/validation_bench.py [--records 1000000] [--page-size 1000] [--repeat 3] [--out FILE]

The API server of ``bench/rest_bench.py`` runs in its own process on loopback (every page pre-rendered at
start-up; records of 10 fields, one nested). Each run is a fresh subprocess that loads the spec (imports and
Great Expectations' own start-up are outside the timer, as in a Dagster code location), then times the hop:

* **plain** - ``materialize_source``: extract, map (typed columns), load one daily partition in one
  transaction; no ``rules:``, no ``checks:``;
* **validated** - the same spec plus validation: row rules on every batch before the load (``not_null``,
  ``min``/``max``, ``in``, and primary-key uniqueness across the load), then the partition's expectation
  suite of 10 expectations (read back from the warehouse, validated by an ephemeral Great Expectations
  context, Data Docs written), i.e. what the Dagster asset does.

Modes run interleaved (plain, validated, validated, plain, ...), each ``--repeat`` times; the medians are
compared. Target: validation adds at most 30% to the hop. Every run checks that all ids arrived exactly once,
and the validated run that every rule and expectation passed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

TARGET_OVERHEAD = 0.30
MODES = ("plain", "validated")

SPEC = """\
pipeline: vbench
warehouse: duckdb:///{db}
partitions: {{daily: {{start: 2024-01-01}}}}
systems:
  api: {{rest: {{base_url: "http://127.0.0.1:{port}", concurrency: 16}}}}
sources:
  items:
    system: api
    request: {{path: /items, params: {{day: "{{{{ partition.key }}}}"}}}}
    records: $.data[*]
    paginate: {{page_number: {{param: page, total_pages: $.total_pages}}}}
    primary_key: [id]
    columns:
      id: {{type: int64}}
      name: name
      email: email
      status: status
      country: country
      amount: {{type: float64}}
      is_active: {{type: bool}}
      created_at: {{type: timestamptz}}
      description: description
      address.city: city
{validation}"""

RULES = """\
    rules:
      id: {not_null: true}
      amount: {min: 0, max: 10000}
      status: {in: [active, pending, suspended, closed]}
      country: {in: [DE, PT, JP, CA, KE, PE, "NO", US, IN, FR]}
checks:
  items: SUITE
"""

SUITE = """\
- expect_column_values_to_not_be_null: {column: id}
- expect_column_values_to_be_unique: {column: id}
- expect_column_values_to_be_between: {column: amount, min_value: 0, max_value: 10000}
- expect_column_values_to_be_in_set: {column: status, value_set: [active, pending, suspended, closed]}
- expect_column_values_to_be_in_set: {column: country, value_set: [DE, PT, JP, CA, KE, PE, "NO", US, IN, FR]}
- expect_column_values_to_match_regex: {column: email, regex: '^[^@\\s]+@[^@\\s]+$'}
- expect_column_values_to_not_be_null: {column: created_at}
- expect_column_values_to_be_between: {column: created_at, min_value: '2022-01-01T00:00:00+00:00',
                                       max_value: '2025-01-01T00:00:00+00:00'}
- expect_column_value_lengths_to_be_between: {column: name, min_value: 3, max_value: 40}
- expect_table_row_count_to_be_between: {min_value: 1}
"""

PARTITION = "2024-01-01"


# --------------------------------------------------------------------------------------------------------
# One run (inside its own subprocess: `validation_bench.py --worker MODE ...`)
# --------------------------------------------------------------------------------------------------------

def worker(mode: str, port: int, tmp: Path, records: int) -> dict[str, Any]:
    from datetime import UTC, datetime, timedelta

    import duckdb

    from hub.materialize import materialize_source
    from hub.runtime.window import Window
    from hub.spec import loads
    from hub.validation.runner import validate

    db = tmp / "bench.duckdb"
    validation = ""
    if mode == "validated":
        suite = tmp / "items.suite.yaml"
        suite.write_text(SUITE)
        validation = RULES.replace("SUITE", str(suite))
    pipeline = loads(SPEC.format(db=db, port=port, validation=validation), tmp / "vbench.yaml")  # GX loads here
    start = datetime(2024, 1, 1, tzinfo=UTC)
    window = Window(key=PARTITION, start=start, end=start + timedelta(days=1))
    os.environ["HUB_REPORTS_DIR"] = str(tmp / "reports")

    started = time.perf_counter()
    outcome = materialize_source(pipeline, "items", window=window, run_id="bench-run")
    loaded = time.perf_counter()
    suite_run = validate(pipeline, "items", PARTITION, run_id="bench-run") if mode == "validated" else None
    elapsed = time.perf_counter() - started

    with duckdb.connect(str(db), read_only=True) as con:
        total, distinct = con.execute("SELECT count(*), count(DISTINCT id) FROM items").fetchone()  # type: ignore[misc]
    ok = total == records and distinct == records and outcome.load.rows_quarantined == 0
    detail = f"rows_loaded={outcome.load.rows_loaded}"
    if suite_run is not None:
        ok = ok and suite_run.success and len(suite_run.outcomes) == 10 and suite_run.docs is not None
        detail += f", {sum(o.passed for o in suite_run.outcomes)}/{len(suite_run.outcomes)} expectations passed"
    return {"seconds": elapsed, "load_s": loaded - started, "suite_s": elapsed - (loaded - started),
            "rows": int(total), "distinct": int(distinct), "ok": bool(ok), "detail": detail}


def run_worker(mode: str, port: int, records: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"vbench-{mode}-") as tmp:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--worker", mode, "--port", str(port), "--records",
                               str(records), "--tmp", tmp], capture_output=True, text=True, timeout=1800)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"{mode} run failed:\n{proc.stdout}\n{proc.stderr}")
        result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
        result["process_s"] = wall
        return result


# --------------------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--page-size", type=int, default=1000)
    ap.add_argument("--latency-ms", type=float, default=0.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--worker", choices=MODES)
    ap.add_argument("--port", type=int)
    ap.add_argument("--tmp", type=Path)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.port, args.tmp, args.records)))
        return 0

    from rest_bench import start_server

    print(f"rendering {args.records:,} records in pages of {args.page_size} ...", flush=True)
    server, port = start_server(args.records, args.page_size, args.latency_ms)
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    try:
        for i in range(args.repeat):
            for mode in (MODES if i % 2 == 0 else MODES[::-1]):  # interleaved, alternating who goes first
                result = run_worker(mode, port, args.records)
                runs[mode].append(result)
                print(f"  {mode:9s} run {i + 1}: hop {result['seconds']:.2f}s (load {result['load_s']:.2f}s, "
                      f"suite {result['suite_s']:.2f}s), process {result['process_s']:.2f}s, "
                      f"{result['detail']}, ok={result['ok']}", flush=True)
    finally:
        server.terminate()
        server.join(10)
    report = render(args, runs)
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)
    ok = all(r["ok"] for rs in runs.values() for r in rs)
    overhead = _median(runs["validated"], "seconds") / _median(runs["plain"], "seconds") - 1
    return 0 if ok and overhead <= TARGET_OVERHEAD else 1


def _median(results: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in results)


def render(args: argparse.Namespace, runs: dict[str, list[dict[str, Any]]]) -> str:
    import duckdb
    import great_expectations
    import pyarrow

    plain, validated = _median(runs["plain"], "seconds"), _median(runs["validated"], "seconds")
    overhead = validated / plain - 1
    lines = [
        f"{args.records:,} records, pages of {args.page_size}, {args.latency_ms:g} ms latency per page, one daily "
        f"partition; median of {args.repeat} interleaved run(s) per mode. Python {platform.python_version()}, "
        f"duckdb {duckdb.__version__}, pyarrow {pyarrow.__version__}, great_expectations "
        f"{great_expectations.__version__}; {date.today().isoformat()}.",
        "",
        "| mode | median hop s | records/s | load s (median) | suite s (median) | runs (s) | process s (median) "
        "| verified |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: | --- |",
    ]
    for mode, label in (("plain", "plain (extract, map, load)"),
                        ("validated", "validated (+ 4 row rules and primary-key uniqueness, + suite of 10 "
                                      "expectations, Data Docs)")):
        rs = runs[mode]
        med = _median(rs, "seconds")
        lines.append(
            f"| {label} | {med:.2f} | {args.records / med:,.0f} | {_median(rs, 'load_s'):.2f} | "
            f"{_median(rs, 'suite_s'):.2f} | {', '.join(format(r['seconds'], '.2f') for r in rs)} | "
            f"{_median(rs, 'process_s'):.2f} | {rs[0]['rows']:,} rows, {rs[0]['distinct']:,} distinct ids"
            + (f"; {rs[0]['detail'].split(', ', 1)[1]}" if mode == "validated" else "") + " |")
    verdict = "PASS" if overhead <= TARGET_OVERHEAD else "FAIL"
    lines += ["", "| target | measured | result |", "| --- | --- | --- |",
              f"| validation adds <= {TARGET_OVERHEAD:.0%} to the hop (validated / plain - 1) | {overhead:+.1%} | "
              f"{verdict} |", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
