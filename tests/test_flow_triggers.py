"""Flow triggers beyond schedules and manual runs: an authenticated HTTP call to ``hub serve`` starting a flow
through Dagster (``trigger: {http}``), and flows partitioned like the time-partitioned table they run after
(``trigger: {after}``), materialized one partition at a time by Dagster."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import httpx
import pytest

from hub.errors import SpecError
from hub.spec.loader import load
from tests.flow_support import flow_spec, partner, write_items

REPO = Path(__file__).resolve().parents[1]
OPS_KEY = "ops-key-7f3a"
ITEMS = [{"ref": "a1", "amount": 10.0}, {"ref": "a2", "amount": 250.0}, {"ref": "a3", "amount": 40.0}]
HTTP_FLOW = """  push:
    trigger: {http: ops}
    input: {table: payments, key: ref}
    steps:
      - name: rec
        call: partner.post_records
        params: {body: {ref: "{{ item.ref }}", amount: "{{ item.amount }}"}}
        output: {id: $.id}
"""
OPS = """  ops:
    webhook: {auth: {type: api_key, header: X-Ops-Key, key: "${OPS_KEY}"}}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def hub_serve(spec: Path, env: dict[str, str]) -> Iterator[httpx.Client]:
    """``hub serve SPEC`` as a process of its own on a free loopback port."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "hub.cli.main", "serve", str(spec), "--port", str(port),
                             "--no-absorb"], cwd=spec.parent, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=20) as client:
            deadline = time.monotonic() + 90
            while True:
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert proc.poll() is None and time.monotonic() < deadline, proc.stdout and proc.stdout.read()
                time.sleep(0.2)
            yield client
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _finished(client: httpx.Client, url: str, headers: dict[str, str]) -> dict:
    deadline = time.monotonic() + 240
    while (state := client.get(url, headers=headers).json())["status"] == "running":
        assert time.monotonic() < deadline, state
        time.sleep(0.5)
    return state


def _rows(wh: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(wh), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


# --- trigger: {http} -----------------------------------------------------------------------------------


def test_http_trigger_must_name_a_system_that_authenticates_its_calls(tmp_path: Path) -> None:
    spec = flow_spec(tmp_path, "http://127.0.0.1:9/api", HTTP_FLOW.replace("http: ops", "http: partner"),
                     extra_sources=OPS)
    with pytest.raises(SpecError, match=r"flows\.push\.trigger\.http\.system: 'partner' is not a system that calls "
                                        r"the hub .*such systems: ops\): an HTTP trigger is never open"):
        load(spec)
    spec = flow_spec(tmp_path, "http://127.0.0.1:9/api", HTTP_FLOW.replace("http: ops", "http: ops, manual: true"),
                     extra_sources=OPS)
    with pytest.raises(SpecError, match=r"flows\.push\.trigger: .*one of"):
        load(spec)


@pytest.mark.slow
def test_http_call_to_hub_serve_runs_the_flow_through_dagster_once(tmp_path: Path) -> None:
    import dagster as dg

    home = tmp_path / ".dagster"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OPS_KEY": OPS_KEY, "DAGSTER_HOME": str(home)}
    wh = tmp_path / "warehouse.duckdb"
    with partner() as (url, state):
        spec = flow_spec(tmp_path, url, HTTP_FLOW, extra_sources=OPS)
        write_items(wh, ITEMS, "payments")
        key = {"X-Ops-Key": OPS_KEY}
        with hub_serve(spec, env) as client:
            assert client.post("/flows/push/run").status_code == 401  # never an open endpoint
            assert client.post("/flows/push/run", headers={"X-Ops-Key": "wrong"}).status_code == 401
            assert client.post("/flows/nope/run", headers=key).status_code == 404
            assert state.log == [] and not home.joinpath("history").exists()  # nothing started
            doc = client.get("/openapi.json").json()
            assert doc["paths"]["/flows/push/run"]["post"]["security"] == [{"ops_api_key": []}]
            state.delay = 0.5  # the first run takes a while: a call meanwhile is answered 409
            first = client.post("/flows/push/run", headers=key)
            assert first.status_code == 202, first.text
            busy = client.post("/flows/push/run", headers=key)
            assert busy.status_code == 409 and busy.json()["run_id"] == first.json()["run_id"]
            assert client.get(first.json()["url"]).status_code == 401
            done = _finished(client, first.json()["url"], key)
            assert done["status"] == "succeeded", done["log_tail"]
            assert state.refs() == ["a1", "a2", "a3"] and len(state.log) == 3
            state.delay = 0.0
            second = client.post("/flows/push/run", headers=key)
            assert second.status_code == 202
            again = _finished(client, second.json()["url"], key)
            assert again["status"] == "succeeded", again["log_tail"]
            assert len(state.log) == 3  # the second call sent nothing new
            assert client.get("/health").json()["flows"]["push"] == {"started": 2, "refused": 3}
    deliveries = _rows(wh, "SELECT item_key, status, count(*) FROM _hub_deliveries WHERE flow = 'push' "
                           "GROUP BY ALL ORDER BY 1, 2")
    assert {(k, s) for k, s, _ in deliveries} >= {("ref=a1", "ok"), ("ref=a2", "ok"), ("ref=a3", "ok")}
    assert _rows(wh, "SELECT item_key, status, sent, skipped FROM push ORDER BY 1") == [
        ("ref=a1", "skipped", 0, 1), ("ref=a2", "skipped", 0, 1), ("ref=a3", "skipped", 0, 1)]
    instance = dg.DagsterInstance.from_config(str(home))
    runs = [r for r in instance.get_runs() if r.tags.get("hub/assets") == "push"]
    assert len(runs) == 2 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
    mats = instance.fetch_materializations(dg.AssetKey("push"), limit=10).records
    assert sorted(m.asset_materialization.metadata["hub/sent"].value for m in mats) == [0, 3]
