"""`hub run` without Dagster (hub/runs.py): it imports neither Dagster nor pandas, two runs on one DuckDB file
take turns on the writer lock (the waiter names the holder, uses no CPU, stops on SIGTERM), a SIGKILLed run
leaves no lock and nothing half-loaded, and every run shows in `hub runs` and, as materializations, in the
Dagster instance, exactly once even when the reporter dies midway. Expectation suites, SFTP file drops and
flows (`--asset FLOW`) run on the fast path with their checks; `hub listen` backs off from a held lock. The
partition arithmetic gives Dagster's answers."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest

from hub.dagster.definitions import partitions_def
from hub.spec import partitions as P
from hub.spec.models import PartitionsConfig
from tests.fault_proxy import sigkill_when
from tests.rest_server import RestTestServer

REPO = Path(__file__).resolve().parents[1]
HUB = [sys.executable, "-m", "hub.cli.main"]


def _spec(tmp_path: Path, url: str, delay: float, name: str = "fast") -> Path:
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(f"""\
pipeline: {name}
partitions: none
warehouse: duckdb:///{tmp_path}/wh.duckdb
systems:
  api: {{rest: {{base_url: "{url}", retries: {{max: 0}}}}}}
sources:
  items:
    system: api
    request: {{path: /pages, params: {{n: 400, per_page: 10, delay: {delay}}}}}
    records: $.data[*]
    paginate: {{page_number: {{param: page, total_pages: $.total_pages}}, max_pages: 100}}
    primary_key: [id]
    columns: {{id: {{type: int64}}, name: name}}
""")
    return spec


def _env(home: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "DAGSTER_HOME": str(home), "PYTHONPATH": str(REPO), "COLUMNS": "200", **extra}


def _rows(tmp_path: Path) -> list[tuple[int, int]]:
    con = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)
    try:
        return con.execute("select count(*), count(distinct id) from items").fetchall()
    finally:
        con.close()


def _runs(tmp_path: Path, home: Path) -> list[dict[str, object]]:
    out = subprocess.run([*HUB, "runs", "--json"], cwd=tmp_path, env=_env(home), capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_run_imports_neither_dagster_nor_pandas_and_is_reported(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with RestTestServer() as server:
        spec = _spec(tmp_path, server.url, delay=0)
        code = ("import sys\nfrom typer.testing import CliRunner\nfrom hub.cli.main import app\n"
                f"r = CliRunner().invoke(app, ['run', {str(spec)!r}])\n"
                "assert r.exit_code == 0, r.output\nprint(r.output)\n"
                "print('IMPORTED', ','.join(m for m in ('dagster', 'pandas', 'great_expectations') "
                "if m in sys.modules))\n")
        out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                             env=_env(home, HUB_REPORT_RUNS="defer"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "items=400" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "IMPORTED", "hub run imported " + out.stdout.splitlines()[-1]
    run_id = out.stdout.split("(run ", 1)[1][:8]
    # hub runs lists it (and reports it into the instance: the reporter was deferred)
    [listed] = _runs(tmp_path, home)
    assert listed["run_id"][:8] == run_id and listed["status"] == "SUCCESS"  # type: ignore[index]
    assert listed["pipeline"] == "fast" and listed["assets"] == ["items"] and listed["duration_s"] >= 0  # type: ignore[operator]
    os.environ["DAGSTER_HOME"] = str(home)
    with dg.DagsterInstance.get() as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey("items"))
        assert event is not None and event.asset_materialization is not None
        mat = event.asset_materialization
        assert mat.metadata["dagster/row_count"].value == 400
        assert mat.tags is not None and mat.tags["hub/run_id"].startswith(run_id)
        assert isinstance(mat.metadata["dagster/column_schema"], dg.TableSchemaMetadataValue)
    again = _runs(tmp_path, home)
    assert len(again) == 1, "reported once, listed once"


def test_a_failed_run_is_listed_with_its_reason_and_the_reporter_runs_detached(tmp_path: Path) -> None:
    home = tmp_path / "home"
    spec = tmp_path / "bad.yaml"
    spec.write_text(f"""\
pipeline: bad
partitions: none
warehouse: duckdb:///{tmp_path}/wh.duckdb
systems:
  api: {{rest: {{base_url: "http://127.0.0.1:9", retries: {{max: 0}}}}}}
sources:
  items: {{system: api, request: {{path: /x}}, records: "$[*]"}}
""")
    out = subprocess.run([*HUB, "run", str(spec)], cwd=tmp_path, env=_env(home), capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 1
    assert out.stderr.startswith("✗ unpartitioned failed (run ") and "items: " in out.stderr, out.stderr
    journal = home / "hub-runs"
    deadline = time.monotonic() + 60  # the detached reporter marks the record reported
    while not all(json.loads(p.read_text())["reported"] for p in journal.glob("*.json")):
        assert time.monotonic() < deadline, "the detached reporter never reported the run"
        time.sleep(0.2)
    [listed] = _runs(tmp_path, home)
    assert listed["status"] == "FAILURE" and str(listed["reason"]).startswith("items: ")


@pytest.mark.slow
def test_two_runs_take_turns_the_waiter_names_the_holder_and_stops_on_sigterm(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with RestTestServer() as server:
        spec = _spec(tmp_path, server.url, delay=1.0)  # 40 pages: 40 s, time for the waiters to start
        (tmp_path / "quick").mkdir()
        quick = _spec(tmp_path / "quick", server.url, delay=0)  # the same pipeline and warehouse, no delay
        quick.write_text(quick.read_text().replace(f"{tmp_path}/quick/wh.duckdb", f"{tmp_path}/wh.duckdb"))
        holder = subprocess.Popen([*HUB, "run", str(spec)], cwd=tmp_path, env=_env(home), stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 60
            while len(server.requests("/pages")) < 2:
                assert holder.poll() is None and time.monotonic() < deadline, "the first run never started"
                time.sleep(0.05)
            waiters: list[subprocess.Popen[str]] = []
            lines: list[list[str]] = [[], []]
            for out in lines:  # one after the other, each seen waiting while the holder still loads
                w = subprocess.Popen([*HUB, "run", str(quick)], cwd=tmp_path, env=_env(home), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
                waiters.append(w)
                stream = w.stdout
                assert stream is not None
                threading.Thread(target=lambda s=stream, o=out: o.extend(iter(s.readline, "")), daemon=True).start()
                deadline = time.monotonic() + 60
                while not any("waiting for the warehouse" in line for line in out):
                    assert time.monotonic() < deadline and w.poll() is None, (lines, holder.poll())
                    time.sleep(0.1)
                assert holder.poll() is None, "the holder ended before the waiter waited: make it slower"
            said = next(line for line in lines[0] if "waiting for the warehouse" in line)
            assert f"held by pid {holder.pid}" in said and "hub run of pipeline fast" in said, said
            cpu = _cpu_seconds(waiters[1].pid)
            time.sleep(2)
            assert _cpu_seconds(waiters[1].pid) - cpu < 0.3, "the waiting run spins a CPU"
            started = time.monotonic()
            waiters[1].send_signal(signal.SIGTERM)
            waiters[1].wait(timeout=15)
            assert time.monotonic() - started < 10 and waiters[1].returncode != 0
            assert holder.wait(timeout=120) == 0
            assert waiters[0].wait(timeout=120) == 0, "".join(lines[0])
        finally:
            holder.kill()
            holder.wait(30)
    assert _rows(tmp_path) == [(400, 400)]
    runs = _runs(tmp_path, home)
    statuses = sorted(str(r["status"]) for r in runs)
    assert statuses == ["SUCCESS", "SUCCESS"], runs  # the run stopped while waiting never started


@pytest.mark.slow
def test_a_sigkilled_run_leaves_no_lock_and_no_rows_and_shows_as_failed(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with RestTestServer() as server:
        spec = _spec(tmp_path, server.url, delay=0.3)
        killed = subprocess.Popen([*HUB, "run", str(spec)], cwd=tmp_path, env=_env(home),
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        sigkill_when(killed, lambda: len(server.requests("/pages")) >= 3, "the run never fetched a page")
        con = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)
        try:
            assert "items" not in {r[0] for r in con.execute("select table_name from information_schema.tables")
                                   .fetchall()}, "nothing of the killed load is committed"
        finally:
            con.close()
        spec.write_text(spec.read_text().replace("delay: 0.3", "delay: 0"))
        started = time.monotonic()
        again = subprocess.run([*HUB, "run", str(spec)], cwd=tmp_path, env=_env(home), capture_output=True,
                               text=True, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "waiting for the warehouse" not in again.stdout, "the kernel released the dead run's lock"
    assert time.monotonic() - started < 60
    assert _rows(tmp_path) == [(400, 400)]
    runs = _runs(tmp_path, home)
    assert [r["status"] for r in runs] == ["SUCCESS", "FAILURE"]
    assert f"pid {killed.pid}" in str(runs[1]["reason"]) and "is gone" in str(runs[1]["reason"])


@pytest.mark.slow
def test_what_a_sigkilled_run_committed_is_reported_into_dagster(tmp_path: Path) -> None:
    """A run of two sources killed while loading the second: the first one's committed load still reaches the
    Dagster instance as a materialization of that run, and the run is listed as failed."""
    home = tmp_path / "home"
    with RestTestServer() as server:
        spec = _spec(tmp_path, server.url, delay=0.3)
        text = spec.read_text()
        first = text.split("sources:\n", 1)[1].replace("items:", "early:", 1).replace("n: 400", "n: 25") \
            .replace("delay: 0.3", "delay: 0")
        spec.write_text(text.replace("sources:\n", "sources:\n" + first, 1))
        killed = subprocess.Popen([*HUB, "run", str(spec)], cwd=tmp_path, env=_env(home, HUB_REPORT_RUNS="defer"),
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

        def early_on_record() -> bool:
            for path in (home / "hub-runs").glob("*.json"):
                with contextlib.suppress(OSError, ValueError):
                    if json.loads(path.read_text())["materializations"]:
                        return len(server.requests("/pages")) >= 6  # and the second source is loading
            return False

        sigkill_when(killed, early_on_record, "the run never committed its first source")
    runs = _runs(tmp_path, home)  # lists the dead run as failed, and reports it into the instance
    [dead] = runs
    assert dead["status"] == "FAILURE" and f"pid {killed.pid}" in str(dead["reason"]), dead
    os.environ["DAGSTER_HOME"] = str(home)
    with dg.DagsterInstance.get() as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey("early"))
        assert event is not None and event.asset_materialization is not None, "the committed load is not in Dagster"
        mat = event.asset_materialization
        assert mat.tags is not None and mat.tags["hub/run_id"] == dead["run_id"]
        assert mat.metadata["dagster/row_count"].value == 25
        assert instance.get_latest_materialization_event(dg.AssetKey("items")) is None, "items was never committed"
    assert len(_runs(tmp_path, home)) == 1, "reported once, listed once"


@pytest.mark.parametrize("kind", ["daily", "monthly"])
@pytest.mark.parametrize("start", ["2024-01-01", "2024-01-15", "2025-12-31"])
@pytest.mark.parametrize("tz", ["UTC", "Pacific/Kiritimati", "America/Los_Angeles"])
@pytest.mark.parametrize("offset", [0, 2])
def test_partitions_are_dagsters(kind: str, start: str, tz: str, offset: int) -> None:
    cfg = PartitionsConfig.model_validate({kind: {"start": start, "timezone": tz, "end_offset": offset}})
    d = partitions_def(cfg)
    assert d is not None
    first, last = d.get_first_partition_key(), d.get_last_partition_key()
    assert P.last_key(cfg) == last and P._first(cfg).strftime(P.FMT) == first
    assert first is not None and last is not None
    assert P.keys_in_range(cfg, first, last) == list(d.get_partition_keys_in_range(dg.PartitionKeyRange(first, last)))
    window = d.time_window_for_partition_key(last)
    assert (P.window(cfg, last).start, P.window(cfg, last).end) == (window.start, window.end)
    for key in ("2024-01-01", "2024-02-01", "2024-1-5", "2025-13-01", "2024-01-15", last, "2099-01-01"):
        assert P._valid(cfg, key) == d.has_partition_key(key), key


# --- what the fast path runs besides REST sources: expectation suites, file drops, flows --------------------

def _hub(tmp_path: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HUB, *args], cwd=tmp_path, env=_env(home, HUB_REPORT_RUNS="defer"), capture_output=True,
                          text=True, timeout=300)


def _query(warehouse: Path, sql: str) -> list[tuple[object, ...]]:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _suite_spec(tmp_path: Path, url: str, path: str, *, severity: str = "error") -> Path:
    (tmp_path / "orders.suite.yaml").write_text(f"""\
- expect_column_values_to_not_be_null: {{column: order_id}}
- expect_column_values_to_be_between: {{column: amount, min_value: 0, max_value: 100}}
  severity: {severity}
""")
    spec = tmp_path / "vt.yaml"
    spec.write_text(f"""\
pipeline: vt
partitions: none
warehouse: duckdb:///{tmp_path}/wh.duckdb
systems:
  api: {{rest: {{base_url: "{url}", retries: {{max: 0}}}}}}
sources:
  orders:
    system: api
    request: {{path: {path}}}
    records: $.items[*]
    primary_key: [order_id]
    columns: {{order_id: {{type: int64}}, amount: {{type: float64}}}}
models:
  order_totals: {{sql: "select count(*) as n, sum(amount) as total from orders"}}
checks:
  orders: {tmp_path / "orders.suite.yaml"}
""")
    return spec


def _instance(home: Path, monkeypatch: pytest.MonkeyPatch) -> dg.DagsterInstance:
    from hub.dagster.instance import local_instance

    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return local_instance(home)


def _events(instance: dg.DagsterInstance, kind: str) -> list[object]:
    from dagster._core.event_api import EventRecordsFilter
    from dagster._core.events import DagsterEventType

    records = instance.event_log_storage.get_event_records(
        EventRecordsFilter(event_type=DagsterEventType(kind)), limit=1000, ascending=True)
    return [r.event_log_entry.dagster_event.event_specific_data for r in records  # type: ignore[union-attr]
            if r.event_log_entry.dagster_event is not None]


def test_a_failed_blocking_expectation_fails_the_command_in_one_line(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    with RestTestServer() as server:
        orders = [{"order_id": i, "amount": 10.0 * i} for i in range(1, 5)] + [{"order_id": 5, "amount": 500.0}]
        server.add_json("/orders", {"items": orders})
        out = _hub(tmp_path, home, "run", str(_suite_spec(tmp_path, server.url, "/orders")))
        assert out.returncode == 1, out.stdout + out.stderr
        failure = [line for line in out.stderr.splitlines() if line.strip()]
        assert len(failure) == 1, out.stderr
        assert failure[0].startswith("✗ unpartitioned failed (run ") and \
            "orders: blocking expectation(s) failed: expect_column_values_to_be_between__amount" in failure[0], \
            failure[0]
        assert "Traceback" not in out.stdout + out.stderr
        wh = tmp_path / "wh.duckdb"
        assert _query(wh, "select count(*) from orders") == [(5,)], "the rows are loaded"
        assert "order_totals" not in {r[0] for r in _query(wh, "select table_name from information_schema.tables")}, \
            "what depends on them is skipped"
        [listed] = _runs(tmp_path, home)
        assert listed["status"] == "FAILURE" and "expect_column_values_to_be_between__amount" in str(listed["reason"])
        instance = _instance(home, monkeypatch)
        evals = {e.check_name: e for e in _events(instance, "ASSET_CHECK_EVALUATION")}  # type: ignore[attr-defined]
        assert evals["expect_column_values_to_be_between__amount"].passed is False
        assert evals["expect_column_values_to_be_between__amount"].severity == dg.AssetCheckSeverity.ERROR
        assert evals["expect_column_values_to_not_be_null__order_id"].passed is True
        # a warning does not fail the command
        (tmp_path / "warn").mkdir()
        warn = _hub(tmp_path, home, "run", str(_suite_spec(tmp_path / "warn", server.url, "/orders",
                                                           severity="warn")))
        assert warn.returncode == 0, warn.stdout + warn.stderr


def test_reporting_is_exactly_once_when_the_reporter_dies_midway(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from hub.dagster.journal import report_pending

    home = tmp_path / "home"
    with RestTestServer() as server:
        server.add_json("/orders", {"items": [{"order_id": i, "amount": 1.0 * i} for i in range(1, 4)]})
        out = _hub(tmp_path, home, "run", str(_suite_spec(tmp_path, server.url, "/orders")))
    assert out.returncode == 0, out.stdout + out.stderr
    instance = _instance(home, monkeypatch)
    real = instance.report_runless_asset_event
    written: list[object] = []

    def dies_after_two(event: object) -> None:  # the reporter's process dies after its second event
        if len(written) == 2:
            raise KeyboardInterrupt
        written.append(event)
        real(event)  # type: ignore[arg-type]

    monkeypatch.setattr(instance, "report_runless_asset_event", dies_after_two)
    with pytest.raises(KeyboardInterrupt):
        report_pending(instance, home)
    monkeypatch.setattr(instance, "report_runless_asset_event", real)
    # two runs (the source with its suite: 3 events; the model: 1); the first died after 2 of its 3 events
    first, second = [json.loads(p.read_text()) for p in sorted((home / "hub-runs").glob("*.json"))]
    assert first["reporting"] and not first["reported"] and not second.get("reporting")
    assert report_pending(instance, home) == 2
    assert report_pending(instance, home) == 0, "reported: nothing is pending"
    mats = [m.materialization for m in _events(instance, "ASSET_MATERIALIZATION")]  # type: ignore[attr-defined]
    assert [(m.asset_key.to_user_string(), m.tags["hub/run_id"]) for m in mats] == [
        ("orders", first["run_id"]), ("order_totals", second["run_id"])], "each once"
    evals = _events(instance, "ASSET_CHECK_EVALUATION")
    assert sorted(e.check_name for e in evals) == [  # type: ignore[attr-defined]
        "expect_column_values_to_be_between__amount", "expect_column_values_to_not_be_null__order_id"], "each once"


def _statement_drop(tmp_path: Path, text: Callable[[int], str]) -> tuple[Any, Any]:
    """An embedded SFTP server with two statement files, ``in/st_1.csv`` and ``in/st_2.csv`` (*text(i)*),
    written an hour ago so they are stable: (the drop, the server to stop)."""
    from tests.sftp_servers import start_embedded

    (tmp_path / "sftp").mkdir()
    drop, server = start_embedded(tmp_path / "sftp")
    folder = drop.local("in/st_1.csv").parent
    old = time.time() - 3600
    for i in (1, 2):
        (folder / f"st_{i}.csv").write_text(text(i))
        os.utime(folder / f"st_{i}.csv", (old + i, old + i))
    return drop, server


def test_a_file_drop_runs_one_run_per_file_and_registers_the_files(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    drop, server = _statement_drop(tmp_path, lambda i: f"id;amount\n{i}0;1.5\n{i}1;2.5\n")
    try:
        spec = tmp_path / "files.yaml"
        system = json.dumps(drop.system())
        spec.write_text(f"""\
pipeline: files
warehouse: duckdb:///{tmp_path}/wh.duckdb
systems:
  bank: {{sftp: {system}}}
sources:
  statements:
    system: bank
    files: {{path: "{drop.remote("in")}", glob: "st_*.csv", stable_for: 30s}}
    format: {{csv: {{delimiter: ";"}}}}
    columns: {{id: {{type: int64}}, amount: {{type: float64}}}}
""")
        out = _hub(tmp_path, home, "run", str(spec))
        assert out.returncode == 0, out.stdout + out.stderr
        assert "file st_1.csv" in out.stdout and "file st_2.csv" in out.stdout, out.stdout
        assert _query(tmp_path / "wh.duckdb", "select _hub_partition, count(*) from statements group by 1 order by 1") \
            == [("st_1.csv", 2), ("st_2.csv", 2)]
        again = _hub(tmp_path, home, "run", str(spec), "--asset", "statements", "--partition", "st_1.csv")
        assert again.returncode == 0, again.stdout + again.stderr
    finally:
        server.stop()
    runs = _runs(tmp_path, home)
    assert [(r["status"], r["partition"]) for r in runs] == [
        ("SUCCESS", "st_1.csv"), ("SUCCESS", "st_2.csv"), ("SUCCESS", "st_1.csv")]
    instance = _instance(home, monkeypatch)
    assert sorted(instance.get_dynamic_partitions("statements_files")) == ["st_1.csv", "st_2.csv"]
    mats = [m.materialization for m in _events(instance, "ASSET_MATERIALIZATION")]  # type: ignore[attr-defined]
    assert [(m.partition, m.metadata["hub/status"].value) for m in mats] == [
        ("st_1.csv", "loaded"), ("st_2.csv", "loaded"), ("st_1.csv", "already loaded")]


def test_a_flow_runs_through_hub_run_asset_and_its_blocking_check_fails_it(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.flow_support import flow_spec, partner, write_items

    home = tmp_path / "home"
    flows = """  push:
    checks: {dead: 0}
    input: {table: payments, key: ref}
    steps:
      - name: rec
        call: partner.post_records
        params: {body: {ref: "{{ item.ref }}", amount: "{{ item.amount }}"}}
        output: {id: $.id}
        on_error: dead_letter
"""
    with partner() as (url, state):
        spec = flow_spec(tmp_path, url, flows)
        write_items(tmp_path / "warehouse.duckdb", [{"ref": f"a{i}", "amount": 10.0 * i} for i in (1, 2, 3)],
                    "raw_payments")
        models = _hub(tmp_path, home, "run", str(spec))  # the flow's input; a flow never runs unless named
        assert models.returncode == 0, models.stdout + models.stderr
        assert state.log == []
        state.poison.add("a3")
        out = _hub(tmp_path, home, "run", str(spec), "--asset", "push")
        assert out.returncode == 1, out.stdout + out.stderr
        assert state.refs() == ["a1", "a2"]
        failure = [line for line in out.stderr.splitlines() if line.strip()]
        assert len(failure) == 1 and "push: blocking check(s) failed: push_dead" in failure[0], out.stderr
        sent = len(state.log)
        again = _hub(tmp_path, home, "run", str(spec), "--asset", "push")
        assert again.returncode == 1 and len(state.log) == sent, "the ledger: nothing is sent twice"
    assert _query(tmp_path / "warehouse.duckdb", "select item_key, status from push order by 1") == [
        ("ref=a1", "skipped"), ("ref=a2", "skipped"), ("ref=a3", "dead")]
    runs = _runs(tmp_path, home)
    assert [(r["status"], r["assets"]) for r in runs] == [("FAILURE", ["push"]), ("FAILURE", ["push"]),
                                                          ("SUCCESS", ["payments"])]
    instance = _instance(home, monkeypatch)
    mats = [m.materialization for m in _events(instance, "ASSET_MATERIALIZATION")]  # type: ignore[attr-defined]
    push = [m for m in mats if m.asset_key.to_user_string() == "push"]
    assert [m.metadata["hub/sent"].value for m in push] == [2, 0]
    dead = [e for e in _events(instance, "ASSET_CHECK_EVALUATION") if e.check_name == "push_dead"]  # type: ignore[attr-defined]
    assert [e.passed for e in dead] == [False, False]  # type: ignore[attr-defined]


def test_a_flow_after_a_file_drop_runs_per_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A flow triggered after a source loaded per file is partitioned like it: `--partition FILE` sends that
    file's rows only; without it, every file the table holds runs (the ledger skips what was sent); in Dagster
    the flow's partitions are the source's files."""
    from hub.dagster.definitions import pipeline_definitions
    from hub.spec.loader import load
    from tests.flow_support import partner

    home = tmp_path / "home"
    drop, server = _statement_drop(tmp_path, lambda i: f"ref;amount\nr{i}0;1.5\nr{i}1;2.5\n")
    try:
        with partner() as (url, state):
            spec = tmp_path / "files.yaml"
            spec.write_text(f"""\
pipeline: files
warehouse: duckdb:///{tmp_path}/wh.duckdb
systems:
  bank: {{sftp: {json.dumps(drop.system())}}}
  partner: {{rest: {{base_url: "{url}", openapi: "{url}/openapi.json"}}}}
sources:
  statements:
    system: bank
    files: {{path: "{drop.remote("in")}", glob: "st_*.csv", stable_for: 30s}}
    format: {{csv: {{delimiter: ";"}}}}
    columns: {{ref: ref, amount: {{type: float64}}}}
flows:
  pay:
    trigger: {{after: statements}}
    input: {{table: statements, key: ref}}
    steps:
      - name: rec
        call: partner.post_records
        params: {{body: {{ref: "{{{{ item.ref }}}}", amount: "{{{{ item.amount }}}}"}}}}
""")
            out = _hub(tmp_path, home, "run", str(spec))
            assert out.returncode == 0, out.stdout + out.stderr
            assert state.log == [], "a flow runs only when named"
            one = _hub(tmp_path, home, "run", str(spec), "--asset", "pay", "--partition", "st_2.csv")
            assert one.returncode == 0, one.stdout + one.stderr
            assert state.refs() == ["r20", "r21"], "that file's rows only"
            every = _hub(tmp_path, home, "run", str(spec), "--asset", "pay")
            assert every.returncode == 0, every.stdout + every.stderr
            assert "file st_1.csv" in every.stdout and "file st_2.csv" in every.stdout, every.stdout
            assert sorted(state.refs()) == ["r10", "r11", "r20", "r21"], "st_2's rows were not sent again"
            sent = len(state.log)
            dagster = _hub(tmp_path, home, "run", str(spec), "--asset", "pay", "--partition", "st_1.csv", "--dagster")
            assert dagster.returncode == 0, dagster.stdout + dagster.stderr  # the Dagster asset of file st_1.csv
            assert len(state.log) == sent, "the ledger: nothing is sent twice"
    finally:
        server.stop()
    assert _query(tmp_path / "wh.duckdb", "select _hub_partition, count(*) from pay group by 1 order by 1") == [
        ("st_1.csv", 2), ("st_2.csv", 2)]
    instance = _instance(home, monkeypatch)  # every run's check reported, st_2.csv's twice (one per run)
    evals = [e for e in _events(instance, "ASSET_CHECK_EVALUATION") if e.check_name == "pay_failed"]  # type: ignore[attr-defined]
    assert sorted(str(e.metadata["hub/partition"].value) for e in evals if "hub/partition" in e.metadata) == [  # type: ignore[attr-defined]
        "st_1.csv", "st_2.csv", "st_2.csv"]
    defs = pipeline_definitions(load(spec))
    parts = defs.resolve_assets_def("pay").partitions_def
    assert isinstance(parts, dg.DynamicPartitionsDefinition) and parts.name == "statements_files"


def test_hub_listen_does_not_wait_for_the_writer_lock_it_backs_off(tmp_path: Path) -> None:
    from hub.errors import WarehouseError
    from hub.events.listen import _locked
    from hub.warehouse.lock import writer_lock

    url = f"duckdb:///{tmp_path}/wh.duckdb"
    code = ("import sys, time\nfrom hub.warehouse.lock import writer_lock\n"
            f"with writer_lock({url!r}, what='hub run of pipeline x'):\n    print('held', flush=True)\n"
            "    sys.stdin.read()\n")
    holder = subprocess.Popen([sys.executable, "-c", code], env=_env(tmp_path), stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        with pytest.raises(WarehouseError) as info, writer_lock(url, what="hub listen absorbing x", wait=False):
            pass
        assert time.monotonic() - started < 1, "it did not wait"
        assert f"held by pid {holder.pid}" in str(info.value) and "hub run of pipeline x" in str(info.value)
        assert _locked(info.value), "the listener takes it for a busy warehouse: backs off, keeps consuming"
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(30)
    with writer_lock(url, wait=False):  # released with the holder
        pass
