"""The event store, absorb, replay and retention (no broker needed); stream spec keys."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from adapters.messages import Message
from hub.errors import SpecError
from hub.events.absorb import absorb_source
from hub.events.payloads import PayloadReader, content_id
from hub.events.replay import replay_source, retain
from hub.events.store import EventStore, Incoming, open_store
from hub.spec import load
from hub.spec.stream import StreamKeys

SPEC = """\
pipeline: ev
partitions: none
warehouse: duckdb:///wh/hub.duckdb
systems:
  erp: {{amqp: {{url: "amqp://guest:guest@127.0.0.1:5672/"}}}}
sources:
  orders:
    system: erp
    queue: orders
    id: "$.id"
{extra}
"""


def _project(tmp_path: Path, extra: str = "") -> Path:
    (tmp_path / "workspace.yaml").write_text("load_from: []\n")
    spec = tmp_path / "ev.yaml"
    spec.write_text(SPEC.format(extra=extra))
    return spec


def _table(pipeline_root: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(pipeline_root / "wh" / "hub.duckdb"), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _incoming(reader: PayloadReader, payload: dict | bytes, *, broker_id: str | None = None,
              attempts: int = 1) -> Incoming:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return reader.incoming(Message(payload=body, stream="orders", id=broker_id, attempts=attempts))


def test_stream_keys_errors_have_lines(tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(SPEC.format(extra="    format: yaml\n    max_deliver: 1\n    keep: soon\n"
                                      "    partitioned: true\n    children: {lines: {path: lines}}\n"
                                      "    primary_key: id\n").replace('id: "$.id"', 'id: "order.id"'))
    with pytest.raises(SpecError) as caught:
        load(spec)
    text = str(caught.value)
    assert "line 11: sources.orders.format: Input should be 'json', 'xml', 'csv' or 'bytes'" in text
    assert "line 12: sources.orders.max_deliver" in text
    assert "line 13: sources.orders.keep: expected a duration" in text
    assert "line 14: sources.orders.partitioned: a stream source is not partitioned" in text
    assert "sources.orders.children: child tables are not supported" in text
    bad_path = tmp_path / "bad2.yaml"
    bad_path.write_text(SPEC.format(extra="").replace('id: "$.id"', 'id: "order.id"'))
    with pytest.raises(SpecError, match=r"line 10: sources.orders.id: 'order.id' is not a JSONPath"):
        load(bad_path)


def test_payload_reader_formats() -> None:
    xml = PayloadReader(StreamKeys(format="xml", id="/order/@id", records="/order/line"), "x")
    doc = xml.parse(b'<order id="7"><line><sku>A</sku><qty>2</qty></line><line><sku>B</sku><qty>1</qty></line>'
                    b"</order>")
    assert xml.message_id(doc, b"", None) == "7"
    assert xml.records(doc) == [{"sku": "A", "qty": "2"}, {"sku": "B", "qty": "1"}]
    csv = PayloadReader(StreamKeys(format="csv", fields=["sku", "qty"], id="sku"), "c")
    doc = csv.parse(b"A,2\nB,1\n")
    assert csv.records(doc) == [{"sku": "A", "qty": "2"}, {"sku": "B", "qty": "1"}]
    assert csv.message_id(doc, b"", None) == "A"
    raw = PayloadReader(StreamKeys(format="bytes"), "b")
    assert raw.records(raw.parse(b"\x00\x01")) == [{"payload": b"\x00\x01"}]
    js = PayloadReader(StreamKeys(records="$.items"), "j")
    assert js.records(js.parse(b'{"items": [{"a": 1}, {"a": 2}]}')) == [{"a": 1}, {"a": 2}]
    # no id anywhere: the content hash
    assert PayloadReader(StreamKeys(), "j").incoming(Message(b'{"a": 1}', "s")).message_id == content_id(b'{"a": 1}')
    bad = PayloadReader(StreamKeys(), "j").incoming(Message(b"{not json", "s", id="m1"))
    assert bad.reason and bad.reason.startswith("payload is not valid json") and bad.message_id == "m1"


def test_store_append_dedupes_and_dead_letters(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "s.sqlite")
    reader = PayloadReader(StreamKeys(id="$.id", max_deliver=3), "sources.orders")
    batch = [_incoming(reader, {"id": i}) for i in range(5)]
    batch.append(_incoming(reader, {"id": 2}))  # re-published duplicate
    batch.append(_incoming(reader, b"<oops>", broker_id="b-1"))  # does not parse
    batch.append(_incoming(reader, {"id": 99}, attempts=3))  # delivered max_deliver times
    done = store.append("orders", batch)
    assert done.outcomes == ["stored"] * 5 + ["duplicate", "dead", "dead"]
    assert (done.first, done.last) == (1, 5)
    again = store.append("orders", [_incoming(reader, {"id": 4}), _incoming(reader, {"id": 5})])
    assert again.outcomes == ["duplicate", "stored"]
    # an event already stored is never dead-lettered, even past max_deliver (its ack was lost)
    assert store.append("orders", [_incoming(reader, {"id": 5}, attempts=7)]).outcomes == ["duplicate"]
    st = store.status(["orders"])[0]
    assert (st.events, st.version, st.duplicates, st.dead) == (6, 6, 3, 2)
    dead = {d.message_id: d for d in store.dead_letters("orders")}
    assert dead["b-1"].attempts == 1 and "not valid json" in dead["b-1"].reason
    assert dead["99"].attempts == 3 and "max_deliver 3" in dead["99"].reason
    versions = [e.version for chunk in store.read("orders", limit=2) for e in chunk]
    assert versions == [1, 2, 3, 4, 5, 6]


def test_absorb_maps_quarantines_and_is_exactly_once(tmp_path: Path) -> None:
    spec = _project(tmp_path, "    primary_key: id\n    columns: {id: {type: int64}, status: status, "
                              "amount: {type: float64}}\n    rules: {amount: {min: 0}}\n")
    pipeline = load(spec)
    store = open_store(pipeline.warehouse_url, pipeline.root)
    assert store.path == tmp_path / "wh" / "hub.events.sqlite"
    reader = PayloadReader(pipeline.sources["orders"].stream, "sources.orders")  # type: ignore[arg-type]
    store.append("orders", [_incoming(reader, {"id": 1, "status": "new", "amount": 10}),
                            _incoming(reader, {"id": 2, "status": "new", "amount": -5}),
                            _incoming(reader, {"id": 3, "status": "new", "amount": "x"})])
    out = absorb_source(pipeline, "orders", run_id="r1")
    assert (out.events, out.first, out.last, out.mark) == (3, 1, 3, 3)
    assert out.load is not None and out.load.rows_loaded == 1 and out.load.rows_quarantined == 2
    assert _table(tmp_path, "SELECT id, status, amount, _hub_position FROM orders") == [(1, "new", 10.0, 1)]
    reasons = _table(tmp_path, "SELECT row_number, reason FROM orders__quarantine ORDER BY row_number")
    assert [r[0] for r in reasons] == [2, 3] and "rules.amount.min" in reasons[0][1]
    # nothing new: nothing happens; a later event of key 1 wins
    assert absorb_source(pipeline, "orders", run_id="r2").events == 0
    store.append("orders", [_incoming(reader, {"id": 4, "status": "shipped", "amount": 10}).__class__(
        message_id="evt-4", payload=json.dumps({"id": 1, "status": "shipped", "amount": 10}).encode())])
    out = absorb_source(pipeline, "orders", run_id="r3")
    assert (out.events, out.mark) == (1, 4)
    assert _table(tmp_path, "SELECT id, status FROM orders") == [(1, "shipped")]
    assert _table(tmp_path, "SELECT high_water_mark FROM _hub_state WHERE source = 'orders'") == [("4",)]
    assert store.status(["orders"])[0].absorbed == 4


def test_replay_rebuilds_deterministically_and_retention_keeps_unabsorbed(tmp_path: Path) -> None:
    spec = _project(tmp_path, "    keep: 1s\n")
    pipeline = load(spec)
    store = open_store(pipeline.warehouse_url, pipeline.root)
    reader = PayloadReader(pipeline.sources["orders"].stream, "sources.orders")  # type: ignore[arg-type]
    store.append("orders", [_incoming(reader, {"id": i, "v": i * 10}) for i in range(1, 21)])
    absorb_source(pipeline, "orders", run_id="a", max_events=8)
    assert _table(tmp_path, "SELECT count(*), max(_hub_position) FROM orders") == [(8, 8)]
    # the mapping is fixed: a column renamed; a full replay rebuilds the table with every event
    spec.write_text(spec.read_text().replace("    keep: 1s\n", "    keep: 1s\n    columns: {id: order_id, v: value}\n"))
    pipeline = load(spec)
    first = replay_source(pipeline, "orders", run_id="replay-1")
    rows = _table(tmp_path, "SELECT order_id, value FROM orders ORDER BY order_id")
    assert first.mark == 20 and rows == [(i, i * 10) for i in range(1, 21)]
    replay_source(pipeline, "orders", run_id="replay-2")  # idempotent
    assert _table(tmp_path, "SELECT order_id, value FROM orders ORDER BY order_id") == rows
    # a range replay merges over the table without duplicating
    out = replay_source(pipeline, "orders", run_id="replay-3", start="5", end="9")
    assert out.events == 5 and _table(tmp_path, "SELECT count(*) FROM orders") == [(20,)]
    # retention: events older than keep go, but only those the table absorbed
    store.append("orders", [_incoming(reader, {"id": 21, "v": 0})])
    import time

    time.sleep(1.2)
    assert retain(pipeline, store) == {"orders": 20}
    assert [e.position for chunk in store.read("orders") for e in chunk] == [21]


def test_events_commands_status_retry_replay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console
    from typer.testing import CliRunner

    from hub.cli import events as events_cli
    from hub.cli.main import app

    monkeypatch.setattr(events_cli, "console", Console(width=300))  # tables unwrapped

    spec = _project(tmp_path, "    max_deliver: 2\nmodels:\n  counted: {sql: 'SELECT count(*) AS n FROM orders'}\n"
                              "  doubled: {sql: 'SELECT n * 2 AS m FROM counted'}\n")
    pipeline = load(spec)
    store = open_store(pipeline.warehouse_url, pipeline.root)
    reader = PayloadReader(pipeline.sources["orders"].stream, "sources.orders")  # type: ignore[arg-type]
    store.append("orders", [_incoming(reader, {"id": 1}), _incoming(reader, {"id": 2}, attempts=2),
                            _incoming(reader, b"<x/>", broker_id="xml-1")])
    runner = CliRunner()
    listed = runner.invoke(app, ["events", "dead-letters", str(spec)])
    assert listed.exit_code == 0 and "xml-1" in listed.output and "max_deliver 2" in listed.output
    # the id-2 message parses: a retry stores it; the XML one stays dead with one more attempt
    retried = runner.invoke(app, ["events", "retry", "orders", str(spec)])
    assert retried.exit_code == 0 and "1 stored, 0 already stored, 1 still dead" in retried.output
    letter = store.dead_letters("orders")[0]
    assert letter.message_id == "xml-1" and letter.attempts == 2
    replayed = runner.invoke(app, ["events", "replay", "orders", str(spec)])
    assert replayed.exit_code == 0 and "replayed 2 event(s) into 2 row(s)" in replayed.output
    assert "rebuilt counted, doubled" in replayed.output  # the models reading the table, in order
    assert _table(tmp_path, "SELECT m FROM doubled") == [(4,)]
    status = runner.invoke(app, ["events", "status", str(spec)])
    assert status.exit_code == 0 and "orders" in status.output
    assert store.status(["orders"])[0].pending == 0
    unknown = runner.invoke(app, ["events", "replay", "nope", str(spec)])
    assert unknown.exit_code == 1 and "no stream source nope" in unknown.output
