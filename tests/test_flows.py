"""Flows (hub/flows, hub/spec/flows.py): spec checks, the delivery ledger's exactly-once behaviour against a
partner API on loopback (lost answers, a killed run, poison items, compensation), dry runs and audit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import duckdb
import pytest

from hub.errors import SpecError
from hub.flows.check import check_actions
from hub.flows.engine import run_flow
from hub.spec.loader import load, locate
from tests.conftest import DEMO_ESTATE, state_env
from tests.flow_support import flow_spec, partner, write_items

REPO = Path(__file__).resolve().parents[1]

ITEMS = [{"ref": "a1", "amount": 10.0}, {"ref": "a2", "amount": 250.0}, {"ref": "a3", "amount": 40.0}]

RECORD_FLOW = """  push:
    input: {table: payments, key: ref}
    steps:
      - name: rec
        call: partner.post_records
        params: {body: {ref: "{{ item.ref }}", amount: "{{ item.amount }}"}}
        output: {id: $.id}
"""


def _project(tmp_path: Path, url: str, flows: str, items: list[dict] | None = None) -> Path:
    spec = flow_spec(tmp_path, url, flows)
    wh = tmp_path / "warehouse.duckdb"
    write_items(wh, items if items is not None else ITEMS, "raw_payments")
    con = duckdb.connect(str(wh))
    con.execute("CREATE OR REPLACE TABLE payments AS SELECT * FROM raw_payments")
    con.close()
    return spec


def _rows(tmp_path: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


# --- the spec ------------------------------------------------------------------------------------------


def test_spec_problems_have_lines(tmp_path: Path) -> None:
    spec = flow_spec(tmp_path, "http://127.0.0.1:9/api", """  push:
    input: {table: nowhere, key: ref}
    steps:
      - name: rec
        call: partner.post_records
        params: {body: {x: "{{ steps.later.id }}", y: "{{ bogus.z }}"}}
      - name: later
        map: {y: "{{ item.ref }}"}
        when: "item.ref == 'a' and"
      - name: rec
        call: nosuch.thing
        on_error: compensate
""")
    with pytest.raises(SpecError) as info:
        load(spec)
    text = str(info.value)
    assert "line 15: flows.push.input.table: 'nowhere' is not a source, child table or model" in text
    assert "line 19: flows.push.steps.0.params.body.x: 'steps.later' is not a step that runs before this one" in text
    assert "unknown name 'bogus'" in text
    assert "line 22: flows.push.steps.1.when: invalid template" in text
    assert "line 23: flows.push.steps.2.name: step 'rec' is defined twice" in text
    assert "line 24: flows.push.steps.2.call: unknown system 'nosuch'" in text
    assert "flows.push.steps.2.on_error: on_error: compensate, but no earlier step" in text


def test_unknown_item_field_is_reported(tmp_path: Path) -> None:
    spec = flow_spec(tmp_path, "http://127.0.0.1:9/api", """  push:
    input: {table: payments, key: ref, fields: [ref, amount]}
    steps:
      - name: rec
        call: partner.post_records
        params: {body: {ref: "{{ item.reff }}", amount: 1}}
""")
    with pytest.raises(SpecError, match=r"line 19: flows\.push\.steps\.0\.params\.body\.ref: 'reff' is not a field "
                                        r"of the item \(fields: ref, amount\)"):
        load(spec)


def test_checks_against_live_actions(tmp_path: Path) -> None:
    with partner() as (url, _):
        spec = flow_spec(tmp_path, url, """  push:
    input: {table: payments, key: ref}
    steps:
      - name: rec
        call: partner.post_record
        params: {body: {ref: x}}
      - name: rec2
        call: partner.post_records
        params: {body: {ref: "{{ item.ref }}", amount: "-", colour: red}, extra: 1}
        retry: {attempts: 3}
      - name: rec3
        call: partner.post_tasks
        params: {body: {ref: "{{ item.ref }}", reason: 5}}
""")
        pipeline = load(spec)
        found, notes = check_actions(pipeline)
    assert notes == []
    text = str(locate(pipeline.path, found))
    assert "line 18: flows.push.steps.0.call: no action named 'partner.post_record'" in text
    assert "did you mean partner.post_records" in text
    assert "flows.push.steps.1.params.body.amount: partner.post_records: amount: '-' is not of type 'number'" in text
    assert "flows.push.steps.1.params.body.colour: 'colour' is not a field of the body of partner.post_records" in text
    assert "flows.push.steps.1.params.extra: 'extra' is not a parameter of partner.post_records" in text
    assert "flows.push.steps.1.retry: partner.post_records is a write without an idempotency key" in text
    assert "flows.push.steps.2.params.body.reason: partner.post_tasks: reason: 5 is not of type 'string'" in text


def test_hub_validate_reports_flow_actions(tmp_path: Path) -> None:
    with partner() as (url, _):
        spec = flow_spec(tmp_path, url, """  push:
    input: {table: payments, key: ref}
    steps:
      - {name: rec, call: partner.post_recordz, params: {body: {ref: x, amount: 1}}}
""")
        out = subprocess.run([sys.executable, "-m", "hub.cli.main", "validate", str(spec)], capture_output=True,
                             text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert out.returncode == 1
    assert "line 17: flows.push.steps.0.call: no action named 'partner.post_recordz'" in out.stderr


# --- runs ----------------------------------------------------------------------------------------------


def test_branches_and_a_second_run_sends_nothing(tmp_path: Path) -> None:
    flows = RECORD_FLOW + """      - name: route
        branch:
          - when: "item.amount > 100"
            steps:
              - name: task
                call: partner.post_tasks
                params: {body: {ref: "{{ item.ref }}", reason: "large payment, record {{ steps.rec.id }}"}}
          - steps:
              - {name: note, map: {small: {value: "{{ item.amount }}", type: int64}}}
      - name: confirm
        when: "item.ref != 'a3'"
        call: partner.post_confirmations
        params: {body: {ref: "{{ item.ref }}"}}
"""
    with partner() as (url, state):
        pipeline = load(_project(tmp_path, url, flows))
        first = run_flow(pipeline, "push")
        assert [i.status for i in first.items] == ["ok", "ok", "ok"]
        assert state.log == ["POST /records a1", "POST /confirmations a1", "POST /records a2", "POST /tasks a2",
                             "POST /confirmations a2", "POST /records a3"]
        assert state.tasks == [{"ref": "a2", "reason": "large payment, record 2"}]
        assert first.items[0].outputs["note"] == {"small": 10}
        assert all(t and t.startswith("00-") for t in state.traceparents)
        second = run_flow(pipeline, "push")
        assert second.sent == 0 and second.skipped == 6
        assert len(state.log) == 6
        dry = run_flow(pipeline, "push", dry_run=True)
        assert {p.ledger for p in dry.planned} == {"skip"} and len(state.log) == 6
    deliveries = _rows(tmp_path, "SELECT step, item_key, status, attempts FROM _hub_deliveries ORDER BY 2, 1")
    assert ("rec", "ref=a2", "ok", 1) in deliveries and ("task", "ref=a2", "ok", 1) in deliveries
    assert _rows(tmp_path, "SELECT count(*) FROM _hub_audit WHERE actor = 'flow' AND outcome = 'ok'") == [(6,)]
    assert _rows(tmp_path, "SELECT count(*) FROM _hub_calls WHERE asset = 'push' AND status = 'ok'") == [(6,)]
    assert _rows(tmp_path, "SELECT item_key, status FROM push ORDER BY 1") == [
        ("ref=a1", "skipped"), ("ref=a2", "skipped"), ("ref=a3", "skipped")]


def test_dry_run_prints_requests_and_sends_nothing(tmp_path: Path) -> None:
    with partner() as (url, state):
        spec = _project(tmp_path, url, RECORD_FLOW)
        out = subprocess.run([sys.executable, "-m", "hub.cli.main", "flow", "run", "push", "--spec", str(spec),
                              "--dry-run", "--limit", "2"], capture_output=True, text=True, cwd=REPO,
                             env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}, timeout=120)
        assert out.returncode == 0, out.stderr
        assert state.log == []
    assert '{"body": {"amount": 10.0, "ref": "a1"}}' in out.stdout
    assert '{"body": {"amount": 250.0, "ref": "a2"}}' in out.stdout
    assert "a3" not in out.stdout
    assert "2 request(s) would be sent, 0 skipped by the ledger; nothing was sent" in out.stdout


def test_changed_payload_is_sent_again_in_upsert_mode_only(tmp_path: Path) -> None:
    flows = RECORD_FLOW + """      - name: task
        call: partner.post_tasks
        mode: insert
        params: {body: {ref: "{{ item.ref }}", reason: "amount {{ item.amount }}"}}
"""
    with partner() as (url, state):
        pipeline = load(_project(tmp_path, url, flows, ITEMS[:1]))
        run_flow(pipeline, "push")
        write_items(tmp_path / "warehouse.duckdb", [{"ref": "a1", "amount": 11.0}], "payments")
        again = run_flow(pipeline, "push")
    assert again.sent == 1
    assert [r["amount"] for r in state.records.values()] == [10.0, 11.0]  # upsert: the new payload went out
    assert state.tasks == [{"ref": "a1", "reason": "amount 10.0"}]  # insert: never twice for a key


def test_request_breaking_the_schema_is_refused_before_sending(tmp_path: Path) -> None:
    items = [{"ref": "a1", "amount": 10.0}, {"ref": "neg", "amount": -5.0}]
    with partner() as (url, state):
        pipeline = load(_project(tmp_path, url, RECORD_FLOW, items))
        report = run_flow(pipeline, "push")
    by = {i.key: i for i in report.items}
    assert by["ref=neg"].status == "failed"
    assert "breaks its schema, so it was not sent" in str(by["ref=neg"].error)
    assert "-5" in str(by["ref=neg"].error) and "minimum of 0" in str(by["ref=neg"].error)
    assert state.refs() == ["a1"]


def test_poison_item_is_dead_lettered_while_the_others_complete(tmp_path: Path) -> None:
    flows = RECORD_FLOW.replace("        output: {id: $.id}\n", "        output: {id: $.id}\n        on_error: "
                                                                  "dead_letter\n")
    with partner() as (url, state):
        state.poison.add("a2")
        pipeline = load(_project(tmp_path, url, flows))
        report = run_flow(pipeline, "push")
        assert [i.status for i in report.items] == ["ok", "dead", "ok"]
        assert state.refs() == ["a1", "a3"]
        again = run_flow(pipeline, "push")  # the dead item is not hammered again
        assert [i.status for i in again.items] == ["skipped", "dead", "skipped"]
    assert _rows(tmp_path, "SELECT step, status, attempts FROM _hub_deliveries WHERE item_key = 'ref=a2' "
                           "ORDER BY 1") == [("__item__", "dead", 0), ("rec", "dead", 1)]


def test_max_failures_stops_the_run(tmp_path: Path) -> None:
    items = [{"ref": f"p{i}", "amount": 1.0} for i in range(6)]
    flows = RECORD_FLOW + "    max_failures: 1\n"
    with partner() as (url, state):
        state.poison.update({"p0", "p1", "p2"})
        pipeline = load(_project(tmp_path, url, flows, items))
        report = run_flow(pipeline, "push")
        assert report.stopped and "max_failures=1" in report.stopped
        assert len(report.items) == 2 and state.refs() == []
        # p2.. were prepared ahead (recorded `sent`) when the run stopped: put back, never parked as unknown
        statuses = dict(_rows(tmp_path, "SELECT item_key, status FROM _hub_deliveries"))
        assert statuses["ref=p0"] == statuses["ref=p1"] == "failed"
        assert "sent" not in statuses.values() and statuses.get("ref=p2") in (None, "pending")
        state.poison.clear()
        again = run_flow(pipeline, "push")  # the withdrawn items are sent like new ones
        assert [i.status for i in again.items] == ["ok"] * 6 and state.refs() == [i["ref"] for i in items]


def test_prepared_items_send_in_key_order_with_batched_ledger_commits(tmp_path: Path) -> None:
    items = [{"ref": f"r{i:02d}", "amount": float(i)} for i in range(12)]
    commits = {}
    for ahead in (0, 4):
        folder = tmp_path / f"ahead{ahead}"
        folder.mkdir()
        with partner() as (url, state):
            state.delay = 0.01
            flows = RECORD_FLOW + f"    prepare_ahead: {ahead}\n"
            report = run_flow(load(_project(folder, url, flows, items)), "push")
            assert [i.status for i in report.items] == ["ok"] * 12
            assert state.log == [f"POST /records {i['ref']}" for i in items]  # one at a time, in key order
        commits[ahead] = report.commits
        assert _rows(folder, "SELECT count(*), min(status), max(status) FROM _hub_deliveries") == [(12, "ok", "ok")]
        assert _rows(folder, "SELECT count(*) FROM _hub_audit") == [(12,)]
    # without preparing ahead every `sent` row is a commit of its own (the outcomes ride along with the next);
    # prepared items' rows share commits
    assert commits[0] >= 12 > commits[4], commits


def test_compensation_runs_in_reverse_order(tmp_path: Path) -> None:
    flows = """  push:
    input: {table: payments, key: ref}
    steps:
      - name: first
        call: partner.post_records
        params: {body: {ref: "{{ item.ref }}", amount: 1}}
        output: {id: $.id}
        compensate: {call: partner.delete_records_by_id, params: {id: "{{ steps.first.id }}"}}
      - name: second
        call: partner.post_records
        params: {body: {ref: "{{ item.ref }}", amount: 2}}
        output: {id: $.id}
        compensate: {call: partner.delete_records_by_id, params: {id: "{{ steps.second.id }}"}}
      - name: confirm
        call: partner.post_confirmations
        params: {body: {ref: "{{ item.ref }}"}}
        on_error: compensate
"""
    with partner() as (url, state):
        state.fail_confirm.add("a1")
        pipeline = load(_project(tmp_path, url, flows, ITEMS[:1]))
        report = run_flow(pipeline, "push")
        assert report.items[0].status == "compensated"
        again = run_flow(pipeline, "push")  # a rolled-back saga is finished: it does not flap on every run
        assert again.items[0].status == "compensated" and again.sent == 0
    assert state.log == ["POST /records a1", "POST /records a1", "DELETE /records/2", "DELETE /records/1"]
    assert state.records == {}
    rows = dict(_rows(tmp_path, "SELECT step, status FROM _hub_deliveries"))
    assert rows == {"first": "compensated", "second": "compensated", "confirm": "failed",
                    "first.compensate#1": "ok", "second.compensate#1": "ok", "__item__": "compensated"}


def test_lost_answer_is_resolved_by_verify(tmp_path: Path) -> None:
    flows = RECORD_FLOW + """        verify:
          call: partner.get_records
          params: {ref: "{{ item.ref }}"}
          found: "result | length > 0"
          output: {id: "{{ result[0].id }}"}
"""
    with partner() as (url, state):
        state.drop_after_commit.add("a2")  # the partner commits a2, then cuts the line
        pipeline = load(_project(tmp_path, url, flows))
        report = run_flow(pipeline, "push")
        assert [i.status for i in report.items] == ["ok", "ok", "ok"]
        assert state.refs() == ["a1", "a2", "a3"]  # exactly one record for a2
        assert report.items[1].outputs["rec"] == {"id": 2}
        assert run_flow(pipeline, "push").sent == 0
    assert _rows(tmp_path, "SELECT status, attempts FROM _hub_deliveries WHERE item_key = 'ref=a2'") == [("ok", 1)]


def test_lost_answer_without_verify_is_parked_for_review(tmp_path: Path) -> None:
    with partner() as (url, state):
        state.drop_after_commit.add("a2")
        spec = _project(tmp_path, url, RECORD_FLOW)
        pipeline = load(spec)
        report = run_flow(pipeline, "push")
        assert [i.status for i in report.items] == ["ok", "unknown", "ok"]
        again = run_flow(pipeline, "push")  # never sent blindly
        assert [i.status for i in again.items] == ["skipped", "unknown", "skipped"] and again.sent == 0
        assert state.refs() == ["a1", "a2", "a3"]
        env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "250"}
        listed = subprocess.run([sys.executable, "-m", "hub.cli.main", "flows", "review", "--spec", str(spec)],
                                capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
        assert "ref=a2" in listed.stdout and "unknown" in listed.stdout
        settled = subprocess.run([sys.executable, "-m", "hub.cli.main", "flows", "review", "--spec", str(spec),
                                  "--resolve", "push:rec:ref=a2", "--as", "ok"], capture_output=True, text=True,
                                 cwd=REPO, env=env, timeout=120)
        assert settled.returncode == 0, settled.stderr
        third = run_flow(load(spec), "push")
        assert [i.status for i in third.items] == ["skipped", "skipped", "skipped"]
        assert state.refs() == ["a1", "a2", "a3"]


def test_idempotency_key_makes_retrying_a_lost_answer_safe(tmp_path: Path) -> None:
    flows = RECORD_FLOW + """        idempotency: {header: Idempotency-Key}
        retry: {attempts: 3, backoff: 0}
"""
    with partner() as (url, state):
        state.drop_after_commit.add("a2")
        report = run_flow(load(_project(tmp_path, url, flows)), "push")
        assert [i.status for i in report.items] == ["ok", "ok", "ok"]
        assert state.refs() == ["a1", "a2", "a3"]
    assert _rows(tmp_path, "SELECT attempts FROM _hub_deliveries WHERE item_key = 'ref=a2'") == [(2,)]


def test_foreach_and_aggregate(tmp_path: Path) -> None:
    items = [{"customer": "c1", "ref": "x1", "amount": 1.0}, {"customer": "c1", "ref": "x2", "amount": 2.0},
             {"customer": "c2", "ref": "x3", "amount": 3.0}]
    flows = """  per_customer:
    input: {table: payments, key: customer, aggregate: {by: customer, collect: lines}}
    steps:
      - name: total
        map: {sum: {value: "{{ item.lines | sum(attribute='amount') }}", type: "decimal(10,2)"}}
      - name: summary
        call: partner.post_tasks
        params: {body: {ref: "{{ item.customer }}", reason: "total {{ steps.total.sum }}"}}
      - name: each_line
        foreach: "{{ item.lines }}"
        key: "{{ each.ref }}"
        max_concurrency: 4
        steps:
          - name: line
            call: partner.post_records
            params: {body: {ref: "{{ each.ref }}", amount: "{{ each.amount }}"}}
"""
    with partner() as (url, state):
        pipeline = load(_project(tmp_path, url, flows, items))
        report = run_flow(pipeline, "per_customer")
        assert [i.status for i in report.items] == ["ok", "ok"]
        assert sorted(t["reason"] for t in state.tasks) == ["total 3.00", "total 3.00"]
        assert state.refs() == ["x1", "x2", "x3"]
        assert run_flow(pipeline, "per_customer").sent == 0
    steps = {r[0] for r in _rows(tmp_path, "SELECT step FROM _hub_deliveries")}
    assert steps == {"summary", "each_line[x1].line", "each_line[x2].line", "each_line[x3].line"}


@pytest.mark.slow
def test_sigkill_mid_flow_then_rerun_delivers_each_effect_once(tmp_path: Path) -> None:
    items = [{"ref": f"k{i:02d}", "amount": float(i)} for i in range(12)]
    flows = RECORD_FLOW + """        idempotency: {header: Idempotency-Key}
"""
    with partner() as (url, state):
        state.delay = 0.15
        spec = _project(tmp_path, url, flows, items)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen([sys.executable, "-m", "hub.cli.main", "flow", "run", "push", "--spec", str(spec)],
                                cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while len(state.traceparents) < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)  # mid-request: the partner may commit what the ledger left as sent
        proc.wait(timeout=30)
        assert 0 < len(state.records) < len(items)
        rerun = subprocess.run([sys.executable, "-m", "hub.cli.main", "flow", "run", "push", "--spec", str(spec)],
                               cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        time.sleep(0.3)  # the killed run's last request may still be finishing on the partner
        assert state.refs() == [i["ref"] for i in items]  # every effect exactly once
    assert _rows(tmp_path, "SELECT count(*) FROM _hub_deliveries WHERE status = 'ok'") == [(12,)]


@pytest.mark.slow
def test_sigkill_without_a_key_parks_the_prepared_items_and_repeats_nothing(tmp_path: Path) -> None:
    items = [{"ref": f"k{i:02d}", "amount": float(i)} for i in range(12)]
    flows = RECORD_FLOW + "    prepare_ahead: 3\n"
    with partner() as (url, state):
        state.delay = 0.15
        spec = _project(tmp_path, url, flows, items)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        cmd = [sys.executable, "-m", "hub.cli.main", "flow", "run", "push", "--spec", str(spec)]
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while len(state.traceparents) < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        time.sleep(0.3)  # the killed run's last request may still be finishing on the partner
        delivered = state.refs()
        assert 0 < len(delivered) < len(items)
        rerun = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert rerun.returncode == 1, rerun.stdout + rerun.stderr  # items left unknown: the run reports them
        refs = [r["ref"] for r in state.records.values()]
        assert len(refs) == len(set(refs))  # nothing sent twice
    rows = dict(_rows(tmp_path, "SELECT item_key, status FROM _hub_deliveries"))
    unknown = sorted(k.split("=")[1] for k, v in rows.items() if v == "unknown")
    assert sorted(set(refs) | set(unknown)) == [i["ref"] for i in items]  # every item sent once or parked
    # parked: the request in flight when killed, and the prepared items whose `sent` rows were committed with it
    assert 1 <= len(unknown) <= 1 + 3 and not set(unknown) & (set(refs) - set(delivered))


# --- other protocols -----------------------------------------------------------------------------------


def test_sql_upsert_on_a_table_declared_writable(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "erp.sqlite"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE paid (ref TEXT PRIMARY KEY, amount REAL NOT NULL)")
    con.execute("CREATE TABLE audit (ref TEXT)")
    con.commit()
    con.close()
    extra = f"""  erpdb:
    sql:
      url: sqlite:///{db}
      writes:
        tables: {{paid: {{key: [ref]}}}}
sources:
  audit_rows: {{system: erpdb, table: audit}}
"""
    flows = """  push:
    input: {table: payments, key: ref}
    steps:
      - name: mark
        call: erpdb.upsert_paid
        params: {ref: "{{ item.ref }}", amount: "{{ item.amount }}"}
        retry: {attempts: 2}
      - name: sneaky
        when: "item.ref == 'a1'"
        call: erpdb.insert_audit
        params: {ref: "{{ item.ref }}"}
        on_error: skip
"""
    spec = flow_spec(tmp_path, "http://127.0.0.1:9/api", flows, extra_sources=extra)
    wh = tmp_path / "warehouse.duckdb"
    write_items(wh, ITEMS, "payments")
    pipeline = load(spec)
    found, _ = check_actions(pipeline)
    text = str(locate(pipeline.path, found)) if found else ""
    assert "flows.push.steps.1.call: no action named 'erpdb.insert_audit'" in text  # audit is not writable
    assert "retry" not in text  # an upsert is idempotent: retrying it is safe
    report = run_flow(pipeline, "push")  # a run refuses it too: a1 fails at that step, nothing is written
    assert [i.status for i in report.items] == ["failed", "ok", "ok"]
    assert "no action named 'erpdb.insert_audit'" in str(report.items[0].error)
    write_items(wh, [{**ITEMS[0], "amount": 99.0}, *ITEMS[1:]], "payments")
    assert run_flow(pipeline, "push").sent == 1  # only the changed row is written again
    con = sqlite3.connect(db)
    assert con.execute("SELECT ref, amount FROM paid ORDER BY ref").fetchall() == [("a1", 99.0), ("a2", 250.0),
                                                                                     ("a3", 40.0)]
    assert con.execute("SELECT count(*) FROM audit").fetchall() == [(0,)]
    con.close()


def test_graphql_mutation(tmp_path: Path) -> None:
    from hub.demo.crm import DEMO_TOKEN, CRMService

    with CRMService() as crm:
        extra = f"""  catalogue:
    graphql:
      endpoint: {crm.url}/graphql
      auth: {{bearer: {DEMO_TOKEN}}}
"""
        flows = """  prices:
    input: {table: payments, key: ref}
    steps:
      - name: price
        call: catalogue.setProductPrice
        params: {sku: "{{ item.ref }}", price: "{{ item.amount }}"}
      - name: check
        lookup: catalogue.product
        params: {sku: "{{ item.ref }}"}
        output: {price: $.price}
"""
        spec = flow_spec(tmp_path, "http://127.0.0.1:9/api", flows, extra_sources=extra)
        write_items(tmp_path / "warehouse.duckdb", [{"ref": "SKU-00001", "amount": 12.5}], "payments")
        pipeline = load(spec)
        report = run_flow(pipeline, "prices")
        assert report.items[0].status == "ok", report.items[0].error
        assert report.items[0].outputs["check"] == {"price": 12.5}
        assert run_flow(pipeline, "prices").sent == 0


# --- Dagster -------------------------------------------------------------------------------------------


def test_flow_is_a_dagster_asset_with_checks(tmp_path: Path) -> None:
    import dagster as dg

    from hub.dagster.definitions import pipeline_definitions

    flows = RECORD_FLOW.replace("    input:", "    checks: {unknown: 0}\n    trigger: {schedule: '0 7 * * *'}\n"
                                                 "    input:") + "        on_error: dead_letter\n"
    with partner() as (url, state):
        state.poison.add("a3")
        pipeline = load(_project(tmp_path, url, flows))
        defs = pipeline_definitions(pipeline)
        assert defs.resolve_job_def("flowtest_push_flow") is not None
        assert [s.name for s in defs.schedules or []] == ["flowtest_push_schedule"]
        assert "push" not in {k.path[-1] for k in defs.resolve_job_def("flowtest_job").asset_layer.
                              executable_asset_keys}  # a pipeline run never starts a flow by accident
        result = dg.materialize([defs.resolve_assets_def("push")], instance=dg.DagsterInstance.ephemeral())
        assert result.success
        checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
        assert checks["push_dead"].passed is False and checks["push_dead"].severity == dg.AssetCheckSeverity.WARN
        assert checks["push_unknown"].passed is True
        mat = result.asset_materializations_for_node("push")[0]
        assert mat.metadata["hub/sent"].value == 2 and mat.metadata["hub/items_dead"].value == 1
        assert state.refs() == ["a1", "a2"]


def test_soap_write_to_the_demo_erp(tmp_path: Path) -> None:
    from hub.demo.erp import DEMO_PASSWORD, DEMO_USER, ERPService

    with ERPService() as erp, partner() as (url, _):
        live = [o for o in erp.data if o["Status"] != "cancelled"]
        normal = next(o for o in live if o["Note"] != "call first")
        held = next(o for o in live if o["Note"] == "call first")
        items = [{"order_id": normal["OrderId"], "amount": float(normal["Amount"]), "ref": "R1"},
                 {"order_id": held["OrderId"], "amount": float(held["Amount"]), "ref": "R2"},
                 {"order_id": normal["OrderId"] + 100_000, "amount": 1.0, "ref": "x" * 80}]
        extra = f"""  erp:
    soap:
      wsdl: {erp.wsdl_url}
      username_token: {{username: {DEMO_USER}, password: {DEMO_PASSWORD}}}
"""
        flows = """  mark:
    input: {table: payments, key: order_id}
    steps:
      - name: paid
        call: erp.MarkOrderPaid
        params: {OrderId: "{{ item.order_id }}", Amount: "{{ item.amount }}", PaymentRef: "{{ item.ref }}"}
        output: {changed: $.Changed, paid: $.Paid}
"""
        spec = flow_spec(tmp_path, url, flows, extra_sources=extra)
        write_items(tmp_path / "warehouse.duckdb", items, "payments")
        pipeline = load(spec)
        assert check_actions(pipeline)[0] == []
        before = len(erp.requests)
        report = run_flow(pipeline, "mark")
        by = {i.key.split("=")[1]: i for i in report.items}
        assert by[str(normal["OrderId"])].status == "ok"
        assert by[str(normal["OrderId"])].outputs["paid"] == {"changed": True, "paid": True}  # a new PaymentRef
        assert normal["Paid"] is True and normal["PaymentRef"] == "R1"
        assert by[str(held["OrderId"])].status == "failed"
        assert "Client.OrderOnHold" in str(by[str(held["OrderId"])].error)
        too_long = by[str(normal["OrderId"] + 100_000)]
        assert too_long.status == "failed" and "breaks its schema, so it was not sent" in str(too_long.error)
        assert len(erp.requests) - before == 2  # the request breaking the WSDL's maxLength never left
        assert all(t and t.startswith("00-") for t in erp.traceparents[-2:])
        again = run_flow(pipeline, "mark")
        assert again.sent == 0 and len(erp.requests) - before == 3  # only the refused order is tried again


AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


def _rabbit_up() -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", 5672)) == 0


@pytest.mark.skipif(not _rabbit_up(), reason="RabbitMQ is not listening on 127.0.0.1:5672")
def test_publish_to_rabbitmq_once(tmp_path: Path) -> None:
    import asyncio
    import uuid

    import aio_pika

    queue = f"flows-test-{uuid.uuid4().hex[:8]}"
    url = "amqp://guest:guest@127.0.0.1:5672/"

    async def declare() -> None:
        async with await aio_pika.connect(url) as conn:
            channel = await conn.channel()
            await channel.declare_queue(queue, auto_delete=False)

    async def drain() -> list[aio_pika.abc.AbstractIncomingMessage]:
        got = []
        async with await aio_pika.connect(url) as conn:
            channel = await conn.channel()
            q = await channel.declare_queue(queue, auto_delete=False)
            while (msg := await q.get(fail=False)) is not None:
                await msg.ack()
                got.append(msg)
            await q.delete()
        return got

    asyncio.run(declare())
    extra = f"""  bus:
    amqp: {{url: "{url}"}}
"""
    flows = f"""  announce:
    input: {{table: payments, key: ref}}
    steps:
      - name: paid
        call: bus.publish
        params:
          routing_key: {queue}
          type: order.paid
          body: {{ref: "{{{{ item.ref }}}}", amount: "{{{{ item.amount }}}}"}}
        idempotency: {{header: message_id}}
"""
    with partner() as (purl, _):
        spec = flow_spec(tmp_path, purl, flows, extra_sources=extra)
        write_items(tmp_path / "warehouse.duckdb", ITEMS, "payments")
        pipeline = load(spec)
        assert check_actions(pipeline)[0] == []
        assert [i.status for i in run_flow(pipeline, "announce").items] == ["ok", "ok", "ok"]
        assert run_flow(pipeline, "announce").sent == 0
    messages = asyncio.run(drain())
    assert sorted(m.body for m in messages) == [b'{"ref":"a1","amount":10.0}', b'{"ref":"a2","amount":250.0}',
                                                b'{"ref":"a3","amount":40.0}']
    keys = {r[0] for r in _rows(tmp_path, "SELECT idempotency_key FROM _hub_deliveries")}
    assert {m.message_id for m in messages} == keys and all(m.type == "order.paid" for m in messages)
    assert all((m.headers or {}).get("traceparent") for m in messages)


def test_events_trigger_names_a_stream_source(tmp_path: Path) -> None:
    import dagster as dg

    from hub.dagster.definitions import pipeline_definitions

    extra = """  bus:
    amqp: {url: "amqp://guest:guest@127.0.0.1:5672/"}
sources:
  orders:
    system: bus
    queue: erp.orders
    format: json
    primary_key: ref
    columns: {ref: ref, amount: {type: float64}}
"""
    flows = """  on_orders:
    trigger: {events: orders}
    input: {table: orders, key: ref}
    steps:
      - {name: rec, call: partner.post_records, params: {body: {ref: "{{ item.ref }}", amount: "{{ item.amount }}"}}}
  wrong:
    trigger: {events: payments}
    input: {table: orders, key: ref}
    steps:
      - {name: rec, map: {x: "{{ item.ref }}"}}
"""
    spec = flow_spec(tmp_path, "http://127.0.0.1:9/api", flows, extra_sources=extra)
    with pytest.raises(SpecError, match=r"flows\.wrong\.trigger\.events: 'payments' is not a stream source of this "
                                        r"pipeline \(stream sources: orders\)"):
        load(spec)
    spec.write_text(spec.read_text().split("  wrong:")[0])
    pipeline = load(spec)
    assert pipeline.flow_deps["on_orders"] == ["orders"]
    flow = pipeline_definitions(pipeline).resolve_assets_def("on_orders")
    key = dg.AssetKey("on_orders")
    assert flow.automation_conditions_by_key[key] is not None  # runs after each absorbed batch
    assert dg.AssetKey("orders") in flow.asset_deps[key]


@pytest.mark.slow
def test_events_trigger_runs_the_flow_after_each_absorbed_batch(tmp_path: Path) -> None:
    """Messages on RabbitMQ → the stream sensor's run absorbs a batch → Dagster's automation requests the flow
    → the flow sends for the new events only; a second batch sends only its own items."""
    import asyncio
    import uuid

    import aio_pika
    import dagster as dg

    from adapters.amqp import publish
    from hub.dagster.definitions import pipeline_definitions

    url = "amqp://guest:guest@127.0.0.1:5672/"
    queue = f"hub_test_{uuid.uuid4().hex[:10]}"

    async def delete() -> None:
        conn = await aio_pika.connect(url)
        async with conn:
            await (await conn.channel()).queue_delete(queue)

    def send(records: list[dict[str, Any]]) -> None:
        import json
        asyncio.run(publish(url, queue, [json.dumps(r).encode() for r in records]))

    extra = f"""  bus:
    amqp: {{url: "{url}", prefetch: 100}}
sources:
  orders:
    system: bus
    queue: {queue}
    declare: true
    id: "$.ref"
    columns: {{ref: ref, amount: {{type: float64}}}}
"""
    flows = """  on_orders:
    trigger: {events: orders}
    input: {table: orders, key: ref}
    steps:
      - {name: rec, call: partner.post_records, params: {body: {ref: "{{ item.ref }}", amount: "{{ item.amount }}"}}}
"""
    async def declare() -> None:
        conn = await aio_pika.connect(url)
        async with conn:
            await (await conn.channel()).declare_queue(queue, durable=True, arguments={"x-queue-type": "quorum"})

    asyncio.run(declare())
    try:
        with partner() as (api, state), dg.instance_for_test() as instance:
            spec = flow_spec(tmp_path, api, flows, extra_sources=extra)
            text = spec.read_text().replace("models:\n  payments:\n    sql: SELECT * FROM raw_payments\n"
                                            "    depends_on: [raw_payments]\n", "")
            spec.write_text(text.replace("pipeline: flowtest\n", "pipeline: flowtest\npartitions: none\n"))
            defs = pipeline_definitions(load(spec))
            sensor = defs.get_sensor_def("orders_sensor")
            cursor: str | None = None
            automation = dg.evaluate_automation_conditions(defs=defs, instance=instance)  # the daemon's first tick
            assert automation.get_num_requested(dg.AssetKey("on_orders")) == 0, "no events yet, no flow run"
            for batch in (ITEMS[:2], ITEMS[2:]):
                send(batch)
                tick = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=cursor))
                cursor = tick.cursor
                assert len(tick.run_requests) == 1, "one run per absorbed batch"
                assert defs.get_job_def("orders_job").execute_in_process(
                    instance=instance, tags=tick.run_requests[0].tags).success
                automation = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=automation.cursor)
                assert automation.get_num_requested(dg.AssetKey("on_orders")) == 1, "the flow runs after the batch"
                assert dg.materialize([defs.resolve_assets_def("on_orders")], instance=instance,
                                      selection=["on_orders"], resources=defs.resources).success
                # the daemon ticks (every 30 s) between the flow's run and the next batch: nothing more to do
                automation = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=automation.cursor)
                assert automation.get_num_requested(dg.AssetKey("on_orders")) == 0
                assert sorted(state.refs()) == sorted(i["ref"] for i in ITEMS[:len(state.refs())])
            assert sorted(state.refs()) == ["a1", "a2", "a3"], "each event's item sent exactly once"
    finally:
        asyncio.run(delete())


def test_rate_limit_holds_under_concurrency(tmp_path: Path) -> None:
    items = [{"ref": f"r{i:02d}", "amount": float(i)} for i in range(12)]
    flows = RECORD_FLOW + "    concurrency: 8\n"
    with partner() as (url, state):
        spec = flow_spec(tmp_path, url, flows, partner_extra="      rate_limit: {per_second: 10, burst: 1}\n")
        write_items(tmp_path / "warehouse.duckdb", items, "payments")
        report = run_flow(load(spec), "push")
        assert [i.status for i in report.items] == ["ok"] * 12
    times = sorted(state.times)
    # 12 requests at 10/s with a burst of 1 are let go at least 1.1 s apart in all; the server sees them arrive
    # with the first one's connection set-up in between (up to ~0.15 s on a loaded machine); unlimited, the 12
    # requests of 8 workers would arrive within a few tens of milliseconds
    assert times[-1] - times[0] >= 0.9
    for i, t in enumerate(times):
        assert sum(1 for u in times[i:] if u - t < 1.0) <= 11  # never more than rate + burst in a second


def test_ledger_on_a_postgresql_warehouse(tmp_path: Path, pg_url: str) -> None:
    import uuid

    import pyarrow as pa

    from hub.warehouse import LoadRequest, connect

    url = f"{pg_url}?schema=flows_{uuid.uuid4().hex[:8]}"
    with partner() as (purl, state):
        state.drop_after_commit.add("a2")
        spec = flow_spec(tmp_path, purl, RECORD_FLOW)
        spec.write_text(spec.read_text().replace(f"warehouse: duckdb:///{tmp_path / 'warehouse.duckdb'}",
                                                 f"warehouse: {url}"))
        connect(url).load(LoadRequest("payments", "replace", "t"), [pa.RecordBatch.from_pylist(ITEMS)])
        pipeline = load(spec)
        first = run_flow(pipeline, "push")
        assert [i.status for i in first.items] == ["ok", "unknown", "ok"]
        again = run_flow(pipeline, "push")
        assert [i.status for i in again.items] == ["skipped", "unknown", "skipped"] and again.sent == 0
        assert state.refs() == ["a1", "a2", "a3"]
    rows = connect(url).query("SELECT step, item_key, status FROM _hub_deliveries ORDER BY 2").to_pylist()
    assert [(r["item_key"], r["status"]) for r in rows] == [("ref=a1", "ok"), ("ref=a2", "unknown"),
                                                             ("ref=a3", "ok")]
    audit = connect(url).query("SELECT outcome, count(*) AS n FROM _hub_audit GROUP BY 1 ORDER BY 1").to_pylist()
    assert audit == [{"outcome": "ok", "n": 2}, {"outcome": "unknown", "n": 1}]


def _paid_queue(purge: bool) -> list[Any]:
    """The demo's ``order.paid`` queue (hub.demo.erp.PAID_QUEUE), bound as ``hub demo`` binds it: emptied
    (*purge*), or drained and its messages returned."""
    import asyncio

    import aio_pika

    from hub.demo import erp

    async def main() -> list[Any]:
        await erp.bind_paid_queue(AMQP_URL)
        got: list[Any] = []
        async with await aio_pika.connect(AMQP_URL) as conn:
            channel = await conn.channel()
            q = await channel.get_queue(erp.PAID_QUEUE)
            if purge:
                await q.purge()
                return got
            while (msg := await q.get(fail=False, timeout=5)) is not None:
                await msg.ack()
                got.append(msg)
        return got

    return asyncio.run(main())


@pytest.mark.slow
@pytest.mark.timeout(600)  # the demo subprocess may take its 540 s on a loaded machine
@pytest.mark.skipif(not _rabbit_up(), reason="RabbitMQ is not listening on 127.0.0.1:5672 (the demo's order.paid)")
@pytest.mark.xdist_group(DEMO_ESTATE)  # counts the order.paid that every `hub demo` on the machine publishes
def test_hub_demo_runs_the_flow_twice_and_the_second_run_sends_nothing(tmp_path: Path) -> None:
    import json

    env = {**os.environ, "PYTHONPATH": str(REPO), "HUB_WAREHOUSE": f"duckdb:///{tmp_path / 'hub.duckdb'}",
           **state_env(tmp_path), "DAGSTER_HOME": str(tmp_path / "dagster"), "COLUMNS": "250",
           "HUB_DEMO_AMQP_URL": AMQP_URL}  # nothing in the checkout's .hub/, reports/ or .dagster/
    _paid_queue(purge=True)
    out = subprocess.run([sys.executable, "-m", "hub.cli.main", "demo"], capture_output=True, text=True, cwd=REPO,
                         env=env, timeout=540)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    first = next(line for line in out.stdout.splitlines() if "reconcile_payments (first run)" in line)
    second = next(line for line in out.stdout.splitlines() if "reconcile_payments (second run)" in line)
    assert "5 compensated" in first and "0 skipped by the delivery ledger" in first
    assert "250 request(s) sent" in first  # 3 per paid order, plus 5 activities undone
    assert "0 request(s) sent" in second and "80 skipped" in second and "240 skipped by the delivery" in second
    con = duckdb.connect(str(tmp_path / "hub.duckdb"), read_only=True)
    try:
        by_status = dict(con.execute("SELECT status, count(*) FROM _hub_deliveries WHERE step = 'activity' "
                                     "GROUP BY 1").fetchall())
        keys = dict(con.execute("SELECT item_key, idempotency_key FROM _hub_deliveries WHERE step = 'announce' "
                                "AND status = 'ok'").fetchall())
        paid = {r[0]: r[1:] for r in con.execute(
            "SELECT order_id, amount, booked_on FROM order_payments WHERE received > 0 AND open_amount = 0"
        ).fetchall()}
    finally:
        con.close()
    assert by_status == {"ok": 80, "compensated": 5}  # the activities of orders on hold were deleted again
    # order.paid: published once per order marked paid (the two runs together), never for one on hold
    messages = _paid_queue(purge=False)
    assert len(messages) == 80 and len(keys) == 80
    bodies = [json.loads(m.body) for m in messages]
    assert sorted(m.message_id for m in messages) == sorted(keys.values())
    assert all(m.type == "order.paid" and m.routing_key == "order.paid" for m in messages)
    for body, m in zip(bodies, messages, strict=True):
        assert body["message_id"] == m.message_id == keys[f"order_id={body['order_id']}"]
        amount, booked_on = paid[body["order_id"]]
        assert body["amount"] == float(amount) and body["booked_on"] == booked_on.isoformat()
    assert len(paid) == 85 and len({b["order_id"] for b in bodies}) == 80


def test_map_converts_bodies_between_json_xml_and_csv() -> None:
    from hub.errors import HubError
    from hub.runtime.expr import evaluate

    item = {"lines": [{"sku": "A", "q": 1}, {"sku": "B", "q": 2}],
            "doc": "<order><id>7</id><line>1</line><line>2</line></order>", "raw": '{"a": [1, 2]}'}
    ctx = {"item": item}
    assert evaluate('{{ {"line": item.lines} | to_xml("order") }}', ctx, field="f") == \
        "<order><line><sku>A</sku><q>1</q></line><line><sku>B</sku><q>2</q></line></order>"
    assert evaluate("{{ item.doc | from_xml }}", ctx, field="f") == {"order": {"id": "7", "line": ["1", "2"]}}
    assert evaluate("{{ item.lines | to_csv }}", ctx, field="f") == "sku,q\nA,1\nB,2\n"
    assert evaluate("{{ (item.lines | to_csv(';')) | from_csv(';') }}", ctx, field="f") == [
        {"sku": "A", "q": "1"}, {"sku": "B", "q": "2"}]
    assert evaluate("{{ item.raw | from_json }}", ctx, field="f") == {"a": [1, 2]}
    with pytest.raises(HubError, match="DTDs and entity declarations are refused"):
        evaluate("{{ item.doc | from_xml }}", {"item": {"doc": '<!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>'}},
                 field="f")


def test_compensation_inside_foreach_uses_the_elements_outputs(tmp_path: Path) -> None:
    items = [{"customer": "c1", "ref": "x1", "amount": 1.0}, {"customer": "c1", "ref": "x2", "amount": 2.0}]
    flows = """  per_customer:
    input: {table: payments, key: customer, aggregate: {by: customer, collect: lines}}
    steps:
      - name: each_line
        foreach: "{{ item.lines }}"
        key: "{{ each.ref }}"
        steps:
          - name: rec
            call: partner.post_records
            params: {body: {ref: "{{ each.ref }}", amount: "{{ each.amount }}"}}
            output: {id: $.id}
            compensate: {call: partner.delete_records_by_id, params: {id: "{{ steps.rec.id }}"}}
          - name: confirm
            call: partner.post_confirmations
            params: {body: {ref: "{{ each.ref }}"}}
            on_error: compensate
"""
    with partner() as (url, state):
        state.fail_confirm.add("x2")
        report = run_flow(load(_project(tmp_path, url, flows, items)), "per_customer")
    assert report.items[0].status == "compensated"
    assert state.refs() == ["x1"]  # x2's record was deleted again (record 2: its own output, not x1's)
    assert state.log[-1] == "DELETE /records/2"


def test_name_paths_evaluate_like_jinja() -> None:
    """Plain name paths skip Jinja (a flow evaluates them for every item): same values, same errors."""
    from hub.runtime import expr

    ctx = {"item": {"a": 1, "b": {"c": [1, 2]}, "keys": "K", "_p": 5, "n": None}, "x": "s"}
    cases = ["{{ item.a }}", "{{ item.b.c }}", "{{ item.keys }}", "{{ item._p }}", "{{ item.n }}", "{{ x }}",
             "{{ item.zz }}", "{{ nope }}", "{{ item.b.c.x }}"]

    def outcome(text: str) -> object:
        try:
            return expr.evaluate(text, ctx, field="f")
        except Exception as exc:  # the error is what is compared
            return f"{type(exc).__name__}: {exc}"

    fast = [outcome(c) for c in cases]
    found = [expr._lookup(expr.single_expression(c) or "", ctx) is not expr._MISSING for c in cases]
    assert found == [True, True, False, True, True, True, False, False, False]  # the fast path was taken
    original = expr._lookup
    expr._lookup = lambda *_: expr._MISSING  # type: ignore[assignment]
    try:
        assert [outcome(c) for c in cases] == fast
    finally:
        expr._lookup = original  # type: ignore[assignment]


def test_deferred_ledger_rows_are_committed_by_the_next_commit_or_in_the_background(tmp_path: Path) -> None:
    from hub.flows.ledger import FLUSH_AFTER, Delivery, Ledger

    ledger = Ledger(f"duckdb:///{tmp_path / 'wh.duckdb'}", "p", "f")

    def committed() -> list[tuple]:
        return ledger._con.execute("SELECT item_key, status FROM _hub_deliveries ORDER BY seq").fetchall()

    try:
        outcome = Delivery("f", "s", "a", "p", "x.y", "h", status="ok")
        ledger.record(outcome, durable=False)
        sent = ledger.record(Delivery("f", "s", "b", "p", "x.y", "h", status="sent"), durable=False)
        assert committed() == [] and ledger.get("s", "a") is outcome  # queued, current in memory
        ledger.commit(sent)  # a sent row at its turn: the outcome queued before it goes in the same transaction
        assert committed() == [("a", "ok"), ("b", "sent")] and ledger.commits == 1
        ledger.record(Delivery("f", "s", "c", "p", "x.y", "h", status="failed"), durable=False)
        time.sleep(FLUSH_AFTER * 2 + 0.3)  # nobody commits: the background flush does
        assert committed()[-1] == ("c", "failed") and ledger.commits == 2
    finally:
        ledger.close()
