"""A `hub run --dagster` killed outright (SIGKILL, an out-of-memory kill) must not stall the next one on the
same Dagster instance: its run is marked failed and its `hub_duckdb` pool slot freed before the new run waits
on it, and a run that does wait for a live holder says which run holds the slot, uses no CPU and stops at once
on SIGTERM."""

from __future__ import annotations

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

from tests.fault_proxy import sigkill_when
from tests.rest_server import RestTestServer

REPO = Path(__file__).resolve().parents[1]
HUB = [sys.executable, "-m", "hub.cli.main"]


def _spec(tmp_path: Path, url: str, delay: float) -> Path:
    spec = tmp_path / "slow.yaml"
    spec.write_text(f"""\
pipeline: slow
partitions: none
warehouse: duckdb:///{tmp_path}/wh.duckdb
systems:
  api: {{rest: {{base_url: "{url}", retries: {{max: 0}}, concurrency: 1}}}}  # pages one after the other
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


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "DAGSTER_HOME": str(home), "PYTHONPATH": str(REPO)}


def _rows(tmp_path: Path) -> list[tuple[int, int]]:
    con = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)
    try:
        return con.execute("select count(*), count(distinct id) from items").fetchall()
    finally:
        con.close()


@pytest.mark.slow
def test_a_sigkilled_run_neither_blocks_nor_spins_the_next(tmp_path: Path) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    with RestTestServer() as server:
        spec = _spec(tmp_path, server.url, delay=0.3)
        killed = subprocess.Popen([*HUB, "run", str(spec), "--dagster"], cwd=tmp_path, env=_env(home),
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        sigkill_when(killed, lambda: len(server.requests("/pages")) >= 3, "the run never fetched a page")

        # the dead run still says STARTED and holds the DuckDB writer slot
        os.environ["DAGSTER_HOME"] = str(home)
        with dg.DagsterInstance.get() as instance:
            [dead] = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
            info = instance.event_log_storage.get_concurrency_info("hub_duckdb")
            assert [s.run_id for s in info.claimed_slots] == [dead.run_id]

        spec.write_text(spec.read_text().replace("delay: 0.3", "delay: 0"))
        again = subprocess.run([*HUB, "run", str(spec), "--dagster"], cwd=tmp_path, env=_env(home), capture_output=True,
                               text=True, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"run {dead.run_id[:8]}" in again.stdout + again.stderr  # it says what it recovered
    assert _rows(tmp_path) == [(400, 400)]
    with dg.DagsterInstance.get() as instance:
        run = instance.get_run_by_id(dead.run_id)
        assert run is not None and run.status == dg.DagsterRunStatus.FAILURE
        assert instance.event_log_storage.get_concurrency_info("hub_duckdb").claimed_slots == []


@pytest.mark.slow
def test_a_run_waiting_for_a_live_holder_says_who_and_stops_on_sigterm(tmp_path: Path) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    with RestTestServer() as server:
        spec = _spec(tmp_path, server.url, delay=1.0)  # 40 pages of a second: the holder stays alive
        holder = subprocess.Popen([*HUB, "run", str(spec), "--dagster"], cwd=tmp_path, env=_env(home),
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while len(server.requests("/pages")) < 2:
                assert holder.poll() is None and time.monotonic() < deadline, "the first run never started"
                time.sleep(0.05)
            waiter = subprocess.Popen([*HUB, "run", str(spec), "--dagster"], cwd=tmp_path, env=_env(home),
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            lines: list[str] = []
            assert waiter.stdout is not None
            stdout = waiter.stdout
            reader = threading.Thread(target=lambda: lines.extend(iter(stdout.readline, "")), daemon=True)
            reader.start()
            deadline = time.monotonic() + 90
            while not any("waiting for the hub_duckdb pool" in line for line in lines):  # started, now waiting
                assert waiter.poll() is None and time.monotonic() < deadline, "".join(lines)
                time.sleep(0.1)
            assert any("held by run" in line for line in lines), "".join(lines)
            cpu = _cpu_seconds(waiter.pid)
            time.sleep(3)
            assert _cpu_seconds(waiter.pid) - cpu < 0.3, "the waiting run spins a CPU"
            started = time.monotonic()
            waiter.send_signal(signal.SIGTERM)
            waiter.wait(timeout=15)
            assert time.monotonic() - started < 10
            assert waiter.returncode != 0
        finally:
            holder.kill()
            holder.wait(30)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of *pid* and its threads, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
