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
def test_http_call_to_hub_serve_runs_the_flow_once(tmp_path: Path) -> None:
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
    # hub run's runs (hub/runs.py): in the journal hub runs lists, their materializations reported to Dagster
    from hub.dagster.journal import report_pending
    from hub.runs import read_records

    runs = [r for r in read_records(home) if r["assets"] == ["push"]]
    assert len(runs) == 2 and all(r["status"] == "SUCCESS" for r in runs)
    instance = dg.DagsterInstance.from_config(str(home))
    report_pending(instance, home)  # waits for the detached reporter, or reports itself
    mats = instance.fetch_materializations(dg.AssetKey("push"), limit=10).records
    assert sorted(m.asset_materialization.metadata["hub/sent"].value for m in mats) == [0, 3]


# --- trigger: {after: <partitioned table>} ----------------------------------------------------------------

PARTITIONED = """pipeline: shopflows
warehouse: duckdb:///{root}/warehouse.duckdb
partitions:
  daily: {{start: 2024-01-01, timezone: UTC}}
systems:
  partner:
    rest: {{base_url: "{url}", openapi: "{url}/openapi.json", timeout: 5}}
  shop:
    sql: {{url: "sqlite:///{root}/shop.sqlite"}}
sources:
  orders:
    system: shop
    query: "select ref, amount, day from orders where day = '{{{{ partition.key }}}}'"
    primary_key: [ref]
    columns: {{ref: ref, amount: {{type: float64}}, day: day}}
flows:
  push:
    trigger: {{after: orders}}
    input: {{table: orders, key: ref}}
    steps:
      - name: rec
        call: partner.post_records
        params: {{body: {{ref: "{{{{ item.ref }}}}", amount: "{{{{ item.amount }}}}"}}}}
  big:
    trigger: {{after: orders}}
    input:
      sql: "select ref, amount from orders where _hub_partition = '{{{{ partition.key }}}}' and amount > 100"
      key: ref
    steps:
      - name: task
        call: partner.post_tasks
        params: {{body: {{ref: "{{{{ item.ref }}}}", reason: big}}}}
"""


def _shop(tmp_path: Path, url: str) -> Path:
    import sqlite3

    con = sqlite3.connect(tmp_path / "shop.sqlite")
    con.execute("CREATE TABLE orders (ref TEXT PRIMARY KEY, amount REAL, day TEXT)")
    con.executemany("INSERT INTO orders VALUES (?, ?, ?)", [("a1", 10.0, "2024-01-01"), ("a2", 250.0, "2024-01-01"),
                                                            ("b1", 40.0, "2024-01-02"), ("b2", 500.0, "2024-01-02")])
    con.commit()
    con.close()
    (tmp_path / "pyproject.toml").write_text("[project]\nname='t'\n")
    spec = tmp_path / "shop.yaml"
    spec.write_text(PARTITIONED.format(root=tmp_path, url=url))
    return spec


def test_flow_after_a_partitioned_table_is_partitioned_like_it(tmp_path: Path) -> None:
    import dagster as dg

    from hub.dagster.definitions import pipeline_definitions
    from hub.dagster.run import run_pipeline

    with partner() as (url, state):
        pipeline = load(_shop(tmp_path, url))
        assert pipeline.flow_partitioned("push") and pipeline.flow_partitioned("big")
        defs = pipeline_definitions(pipeline)
        flow, source = defs.resolve_assets_def("push"), defs.resolve_assets_def("orders")
        assert flow.partitions_def == source.partitions_def is not None
        assert defs.resolve_job_def("shopflows_push_flow").partitions_def == source.partitions_def
        instance = dg.DagsterInstance.ephemeral()
        loaded = run_pipeline(pipeline, instance, assets=["orders"], partitions=["2024-01-01", "2024-01-02"])
        assert [o.success for o in loaded] == [True, True], [o.error for o in loaded]
        # Dagster materializes one partition of each flow: only that partition's items are sent
        result = dg.materialize([flow, defs.resolve_assets_def("big")], instance=instance, partition_key="2024-01-02")
        assert result.success
        assert state.refs() == ["b1", "b2"] and [t["ref"] for t in state.tasks] == ["b2"]
        mats = {m.asset_key.to_user_string(): m for m in result.get_asset_materialization_events()}
        assert mats["push"].partition == "2024-01-02"
        wh = tmp_path / "warehouse.duckdb"
        assert _rows(wh, "SELECT item_key, status, _hub_partition FROM push ORDER BY 1") == [
            ("ref=b1", "ok", "2024-01-02"), ("ref=b2", "ok", "2024-01-02")]
        # the same through hub run's path (--asset push --partition 2024-01-01), then that partition again
        for _ in range(2):
            [out] = run_pipeline(pipeline, instance, assets=["push"], partitions=["2024-01-01"])
            assert out.success and out.partition == "2024-01-01", out.error
        assert state.refs() == ["a1", "a2", "b1", "b2"] and len(state.log) == 5  # a partition's re-run sends nothing
        assert _rows(wh, "SELECT _hub_partition, count(*) FROM push GROUP BY 1 ORDER BY 1") == [
            ("2024-01-01", 2), ("2024-01-02", 2)]
    from hub.errors import HubError
    from hub.flows.engine import run_flow

    with pytest.raises(HubError, match="flow push runs per partition of orders: name one"):
        run_flow(pipeline, "push")


def test_partitioned_flow_must_read_only_its_partition(tmp_path: Path) -> None:
    spec = _shop(tmp_path, "http://127.0.0.1:9/api")
    text = spec.read_text()
    spec.write_text(text.replace("where _hub_partition = '{{ partition.key }}' and amount > 100",
                                 "where amount > 100")
                    + """  plain:
    input: {sql: "select ref from orders where day = '{{ partition.start_date }}'", key: ref}
    steps:
      - {name: m, map: {x: "{{ item.ref }}"}}
  typo:
    trigger: {after: orders}
    input: {sql: "select ref from orders where day = '{{ partition.strat }}'", key: ref}
    steps:
      - {name: m, map: {x: "{{ item.ref }}"}}
""")
    with pytest.raises(SpecError) as info:
        load(spec)
    text = str(info.value)
    assert "flows.big.input.sql: the flow runs per partition of orders: the query must select that partition's " \
           "rows" in text
    assert "flows.plain.input.sql: the query uses templates, but the flow has no partitions" in text
    assert "flows.typo.input.sql:" in text and "strat" in text
