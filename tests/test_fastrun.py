"""`hub run` without Dagster (hub/runs.py): it imports neither Dagster nor pandas, two runs on one DuckDB file
take turns on the writer lock (the waiter names the holder, uses no CPU, stops on SIGTERM), a SIGKILLed run
leaves no lock and nothing half-loaded, and every run shows in `hub runs` and, as materializations, in the
Dagster instance. The partition arithmetic gives Dagster's answers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

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
