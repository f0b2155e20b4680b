"""What flows send joins the consumer-driven contracts for SQL and GraphQL systems too (docs/flows.md): a column a
flow writes into a SQL table declared under ``writes:``, an argument or input field of a GraphQL mutation it
calls, a response field its outputs read — renaming one in the partner's system is a breaking change that
``hub contracts test`` reports with the flow and step, while changes nothing uses stay drift."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from typer.testing import CliRunner

from hub.cli.main import app
from hub.contracts import snapshot, verify
from hub.spec.loader import load
from tests.flow_support import flow_spec


def _contracts_test(spec: Path, *systems: str) -> tuple[int, str]:
    args = ["contracts", "test", str(spec), "--reports", str(spec.parent / "reports")]
    for s in systems:
        args += ["--system", s]
    result = CliRunner().invoke(app, args)
    return result.exit_code, result.output


def test_renaming_a_column_a_flow_writes_is_breaking(tmp_path: Path) -> None:
    db = tmp_path / "erp.sqlite"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE paid (ref TEXT PRIMARY KEY, amount REAL NOT NULL, memo TEXT)")
    con.execute("CREATE TABLE other (x TEXT)")
    con.commit()
    con.close()
    extra = f"""  erpdb:
    sql:
      url: sqlite:///{db}
      writes:
        tables: {{paid: {{key: [ref], modes: [upsert]}}, other: {{modes: [insert]}}}}
"""
    flows = """  push:
    input: {table: payments, key: ref}
    steps:
      - name: mark
        call: erpdb.upsert_paid
        params: {ref: "{{ item.ref }}", amount: "{{ item.amount }}"}
"""
    spec = flow_spec(tmp_path, "http://127.0.0.1:9/api", flows, extra_sources=extra)
    pipeline = load(spec)
    [written] = snapshot(pipeline, systems=["erpdb"])  # a system only a flow writes has a contract
    assert '"paid"' in written.read_text() and '"other"' not in written.read_text()  # what flows write only
    code, output = _contracts_test(spec, "erpdb")
    assert code == 0, output
    con = sqlite3.connect(db)
    con.execute("ALTER TABLE paid RENAME COLUMN memo TO note")  # a column no flow writes: drift
    con.commit()
    [result] = verify(pipeline, systems=["erpdb"])
    assert result.error is None and not result.breaking
    assert [c.what for c in result.changes] == ["renamed to note"]
    con.execute("ALTER TABLE paid RENAME COLUMN amount TO total")
    con.commit()
    con.close()
    [result] = verify(pipeline, systems=["erpdb"])
    [amount] = [c for c in result.changes if c.field == "column amount"]
    assert amount.breaking and amount.what == "renamed to total"
    assert amount.used_by == ["flow push (mark sends amount)"]
    code, output = _contracts_test(spec, "erpdb")
    assert code == 1, output
    assert "column amount" in output and "flow push" in output


SDL = """
type Product { sku: String!  price: Float  id: ID! }
input PriceInput { sku: String!  price: Float!  currency: String }
type Query { product(sku: String!): Product }
type Mutation { setPrice(input: PriceInput!, reason: String): Product }
"""


def test_renaming_a_graphql_mutation_input_field_a_flow_sends_is_breaking(tmp_path: Path) -> None:
    sdl = tmp_path / "catalogue.graphql"
    sdl.write_text(SDL)
    extra = f"""  catalogue:
    graphql:
      endpoint: http://127.0.0.1:9/graphql
      schema: {sdl}
"""
    flows = """  prices:
    input: {table: payments, key: ref}
    steps:
      - name: price
        call: catalogue.setPrice
        params: {input: {sku: "{{ item.ref }}", price: "{{ item.amount }}"}}
        output: {id: $.setPrice.id}
"""
    spec = flow_spec(tmp_path, "http://127.0.0.1:9/api", flows, extra_sources=extra)
    pipeline = load(spec)
    [written] = snapshot(pipeline, systems=["catalogue"])
    assert "setPrice(input.price)" in written.read_text()
    assert _contracts_test(spec, "catalogue")[0] == 0
    sdl.write_text(SDL.replace("currency: String", "currency: String  discount: Float")  # not sent: drift
                   .replace("reason: String", "note: String"))
    [result] = verify(pipeline, systems=["catalogue"])
    assert result.error is None and not result.breaking, [c.message() for c in result.changes]
    sdl.write_text(SDL.replace("price: Float!  currency", "amount: Float!  currency"))
    [result] = verify(pipeline, systems=["catalogue"])
    broken = {c.field: c for c in result.changes if c.breaking}
    assert set(broken) == {"setPrice(input.price)", "setPrice(input)"}, [c.message() for c in result.changes]
    assert broken["setPrice(input.price)"].what == "argument removed"
    assert broken["setPrice(input.price)"].used_by == ["flow prices (price sends setPrice(input.price))"]
    assert broken["setPrice(input)"].what == "new required argument amount"
    code, output = _contracts_test(spec, "catalogue")
    assert code == 1 and "setPrice(input.price)" in output, output
    sdl.write_text(SDL.replace("id: ID!", "ident: ID!"))  # the response field the flow's output reads
    [result] = verify(pipeline, systems=["catalogue"])
    [gone] = [c for c in result.changes if c.breaking]
    assert (gone.field, gone.what) == ("setPrice.id", "removed")
    assert gone.used_by == ["flow prices (price reads setPrice.id)"]
