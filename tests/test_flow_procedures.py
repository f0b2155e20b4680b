"""Flows calling stored procedures on real PostgreSQL and MariaDB servers (``writes: {procedures: [...]}``,
action ``call_<procedure>`` with positional ``args``): the procedure's parameters are read from the database's
``information_schema``, so a call with the wrong number or kind of arguments is refused before it is sent;
every item is called once however often the flow runs; and the procedure joins the consumer-driven contract,
where removing it or changing its parameters breaks the flow while renaming a parameter is drift."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from hub.agent.catalog import build_catalog
from hub.contracts import snapshot, verify
from hub.flows.engine import run_flow
from hub.spec.loader import load
from tests.flow_support import flow_spec, write_items
from tests.sql_servers import scratch_database, writer

ITEMS = [{"ref": "a1", "amount": 10.5}, {"ref": "a2", "amount": 250.0}, {"ref": "a3", "amount": 40.0}]
NOWHERE = "http://127.0.0.1:9/api"

#: Per server: the table, a procedure settle(ref, amount) that inserts a row, and the same procedure changed.
DDL: dict[str, dict[str, list[str]]] = {
    "postgresql": {
        "create": [
            "CREATE TABLE settled (ref text PRIMARY KEY, amount numeric(12,2) NOT NULL)",
            "CREATE PROCEDURE settle(p_ref text, p_amount numeric) LANGUAGE sql "
            "AS $$ INSERT INTO settled VALUES (p_ref, p_amount) $$",
        ],
        "rename_param": [
            "DROP PROCEDURE settle(text, numeric)",
            "CREATE PROCEDURE settle(p_reference text, p_amount numeric) LANGUAGE sql "
            "AS $$ INSERT INTO settled VALUES (p_reference, p_amount) $$",
        ],
        "add_param": [
            "DROP PROCEDURE settle(text, numeric)",
            "CREATE PROCEDURE settle(p_ref text, p_amount numeric, p_memo text) LANGUAGE sql "
            "AS $$ INSERT INTO settled VALUES (p_ref, p_amount) $$",
        ],
    },
    "mariadb": {
        "create": [
            "CREATE TABLE settled (ref varchar(20) PRIMARY KEY, amount decimal(12,2) NOT NULL)",
            "CREATE PROCEDURE settle(IN p_ref varchar(20), IN p_amount decimal(12,2)) "
            "INSERT INTO settled VALUES (p_ref, p_amount)",
        ],
        "rename_param": [
            "DROP PROCEDURE settle",
            "CREATE PROCEDURE settle(IN p_reference varchar(20), IN p_amount decimal(12,2)) "
            "INSERT INTO settled VALUES (p_reference, p_amount)",
        ],
        "add_param": [
            "DROP PROCEDURE settle",
            "CREATE PROCEDURE settle(IN p_ref varchar(20), IN p_amount decimal(12,2), IN p_memo text) "
            "INSERT INTO settled VALUES (p_ref, p_amount)",
        ],
    },
}


def _execute(url: str, statements: list[str]) -> None:
    eng = writer(url)
    try:
        with eng.begin() as conn:
            for statement in statements:
                conn.execute(sa.text(statement))
    finally:
        eng.dispose()


def _settled(url: str) -> list[tuple[Any, ...]]:
    eng = writer(url)
    try:
        with eng.connect() as conn:
            return [(r, float(a)) for r, a in conn.execute(sa.text("SELECT ref, amount FROM settled ORDER BY ref"))]
    finally:
        eng.dispose()


def _spec(tmp_path: Path, url: str, args: str) -> Path:
    system = f"""  ledgerdb:
    sql:
      url: {url}
      writes: {{procedures: [settle]}}
"""
    flows = f"""  settle_all:
    input: {{table: payments, key: ref}}
    steps:
      - name: settle
        call: ledgerdb.call_settle
        params: {{args: {args}}}
"""
    spec = flow_spec(tmp_path, NOWHERE, flows, extra_sources=system)
    write_items(tmp_path / "warehouse.duckdb", ITEMS, "payments")
    return spec


@pytest.mark.parametrize("kind", ["postgresql", "mariadb"])
def test_a_flow_calls_a_procedure_once_per_item_checked_against_its_parameters(tmp_path: Path, kind: str) -> None:
    with scratch_database(kind) as url:
        _execute(url, DDL[kind]["create"])
        spec = _spec(tmp_path, url, '["{{ item.ref }}", "{{ item.amount }}"]')
        pipeline = load(spec)
        [action] = [a for a in build_catalog([pipeline], systems={"ledgerdb"}) if a.name == "ledgerdb.call_settle"]
        args = action.input_schema["properties"]["args"]
        assert (args["minItems"], args["maxItems"]) == (2, 2), args
        assert [i["title"] for i in args["prefixItems"]] == ["p_ref", "p_amount"]
        assert "procedure settle" in action.description

        first = run_flow(pipeline, "settle_all")
        assert first.sent == 3 and first.failed == 0, [i.error for i in first.items]
        assert run_flow(pipeline, "settle_all").sent == 0, "the ledger skips what was called"
        assert _settled(url) == [("a1", 10.5), ("a2", 250.0), ("a3", 40.0)]

        # one argument too few, and a text where the procedure takes a number: refused before anything is sent
        _execute(url, ["DELETE FROM settled"])
        for n, bad in enumerate(('["{{ item.ref }}"]', '["{{ item.ref }}", "lots"]')):
            folder = tmp_path / f"bad{n}"
            folder.mkdir()
            report = run_flow(load(_spec(folder, url, bad)), "settle_all")
            assert report.sent == 0 and report.failed == 3
            assert all("breaks its schema" in str(i.error) for i in report.items), [i.error for i in report.items]
        assert _settled(url) == []


@pytest.mark.parametrize("kind", ["postgresql", "mariadb"])
def test_a_procedure_a_flow_calls_is_in_the_contract(tmp_path: Path, kind: str) -> None:
    with scratch_database(kind) as url:
        _execute(url, DDL[kind]["create"])
        pipeline = load(_spec(tmp_path, url, '["{{ item.ref }}", "{{ item.amount }}"]'))
        [written] = snapshot(pipeline, systems=["ledgerdb"])
        assert '"settle"' in written.read_text() and "p_amount" in written.read_text()
        [result] = verify(pipeline, systems=["ledgerdb"])
        assert result.error is None and not result.changes

        _execute(url, DDL[kind]["rename_param"])  # positional arguments: a renamed parameter is drift
        [result] = verify(pipeline, systems=["ledgerdb"])
        assert result.error is None and not result.breaking
        assert [c.what for c in result.changes] == ["parameter renamed"]

        _execute(url, DDL[kind]["add_param"])  # a third parameter: every call of the flow would fail
        [result] = verify(pipeline, systems=["ledgerdb"])
        assert result.breaking, result.changes
        [change] = result.changes
        assert change.what == "parameters changed" and "p_memo" in change.after
        assert any("settle_all" in s for s in change.sources), change

        _execute(url, ["DROP PROCEDURE settle" + ("(text, numeric, text)" if kind == "postgresql" else "")])
        [result] = verify(pipeline, systems=["ledgerdb"])
        assert result.breaking and [c.what for c in result.changes] == ["procedure removed"]
