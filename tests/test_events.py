"""The event store, absorb, replay and retention (no broker needed); stream spec keys.

The store's tests run against both stores: SQLite next to a DuckDB warehouse, and the tables in a PostgreSQL
warehouse's database (127.0.0.1:5432, a schema of its own per test; skipped when the server is absent)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapters.messages import Message
from hub.errors import SpecError
from hub.events.absorb import absorb_source
from hub.events.payloads import PayloadReader, content_id
from hub.events.replay import replay_source, retain
from hub.events.store import Incoming, PostgresEventStore, SqliteEventStore, open_store
from hub.spec import load
from hub.spec.stream import StreamKeys
from hub.warehouse import connect
from tests.conftest import EVENTS_DUCKDB as DUCKDB

SPEC = """\
pipeline: ev
partitions: none
warehouse: {warehouse}
systems:
  erp: {{amqp: {{url: "amqp://guest:guest@127.0.0.1:5672/"}}}}
sources:
  orders:
    system: erp
    queue: orders
    id: "$.id"
{extra}
"""




def _project(tmp_path: Path, extra: str = "", warehouse: str = DUCKDB) -> Path:
    (tmp_path / "workspace.yaml").write_text("load_from: []\n")
    spec = tmp_path / "ev.yaml"
    spec.write_text(SPEC.format(extra=extra, warehouse=warehouse))
    return spec


def _table(spec: Path, sql: str) -> list[tuple]:
    """Rows of *sql* on the warehouse of *spec* (either kind)."""
    table = connect(load(spec).warehouse_url).query(sql)  # by position: PostgreSQL names count(*) and count(x) alike
    return list(zip(*(c.to_pylist() for c in table.columns), strict=True))


def _incoming(reader: PayloadReader, payload: dict | bytes, *, broker_id: str | None = None,
              attempts: int = 1) -> Incoming:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return reader.incoming(Message(payload=body, stream="orders", id=broker_id, attempts=attempts))


def test_stream_keys_errors_have_lines(tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(SPEC.format(warehouse=DUCKDB, extra="    format: yaml\n    max_deliver: 1\n    keep: soon\n"
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
    bad_path.write_text(SPEC.format(warehouse=DUCKDB, extra="").replace('id: "$.id"', 'id: "order.id"'))
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


def test_store_append_dedupes_and_dead_letters(tmp_path: Path, warehouse: str) -> None:
    store = (SqliteEventStore(tmp_path / "s.sqlite") if warehouse == DUCKDB else PostgresEventStore(warehouse))
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


def test_absorb_maps_quarantines_and_is_exactly_once(tmp_path: Path, warehouse: str) -> None:
    spec = _project(tmp_path, "    primary_key: id\n    columns: {id: {type: int64}, status: status, "
                              "amount: {type: float64}}\n    rules: {amount: {min: 0}}\n", warehouse)
    pipeline = load(spec)
    store = open_store(pipeline.warehouse_url, pipeline.root)
    if warehouse == DUCKDB:
        assert isinstance(store, SqliteEventStore) and store.path == tmp_path / "wh" / "hub.events.sqlite"
    else:
        assert isinstance(store, PostgresEventStore) and store.schema == pipeline.warehouse_url.rsplit("=", 1)[1]
    reader = PayloadReader(pipeline.sources["orders"].stream, "sources.orders")  # type: ignore[arg-type]
    store.append("orders", [_incoming(reader, {"id": 1, "status": "new", "amount": 10}),
                            _incoming(reader, {"id": 2, "status": "new", "amount": -5}),
                            _incoming(reader, {"id": 3, "status": "new", "amount": "x"})])
    out = absorb_source(pipeline, "orders", run_id="r1")
    assert (out.events, out.first, out.last, out.mark) == (3, 1, 3, 3)
    assert out.load is not None and out.load.rows_loaded == 1 and out.load.rows_quarantined == 2
    assert _table(spec, "SELECT id, status, amount, _hub_position FROM orders") == [(1, "new", 10.0, 1)]
    reasons = _table(spec, "SELECT row_number, reason FROM orders__quarantine ORDER BY row_number")
    assert [r[0] for r in reasons] == [2, 3] and "rules.amount.min" in reasons[0][1]
    # nothing new: nothing happens; a later event of key 1 wins
    assert absorb_source(pipeline, "orders", run_id="r2").events == 0
    store.append("orders", [_incoming(reader, {"id": 4, "status": "shipped", "amount": 10}).__class__(
        message_id="evt-4", payload=json.dumps({"id": 1, "status": "shipped", "amount": 10}).encode())])
    out = absorb_source(pipeline, "orders", run_id="r3")
    assert (out.events, out.mark) == (1, 4)
    assert _table(spec, "SELECT id, status FROM orders") == [(1, "shipped")]
    assert _table(spec, "SELECT high_water_mark FROM _hub_state WHERE source = 'orders'") == [("4",)]
    assert store.status(["orders"])[0].absorbed == 4


def test_replay_rebuilds_deterministically_and_retention_keeps_unabsorbed(tmp_path: Path, warehouse: str) -> None:
    spec = _project(tmp_path, "    keep: 1s\n", warehouse)
    pipeline = load(spec)
    store = open_store(pipeline.warehouse_url, pipeline.root)
    reader = PayloadReader(pipeline.sources["orders"].stream, "sources.orders")  # type: ignore[arg-type]
    store.append("orders", [_incoming(reader, {"id": i, "v": i * 10}) for i in range(1, 21)])
    absorb_source(pipeline, "orders", run_id="a", max_events=8)
    assert _table(spec, "SELECT count(*), max(_hub_position) FROM orders") == [(8, 8)]
    # the mapping is fixed: a column renamed; a full replay rebuilds the table with every event
    spec.write_text(spec.read_text().replace("    keep: 1s\n", "    keep: 1s\n    columns: {id: order_id, v: value}\n"))
    pipeline = load(spec)
    first = replay_source(pipeline, "orders", run_id="replay-1")
    rows = _table(spec, "SELECT order_id, value FROM orders ORDER BY order_id")
    assert first.mark == 20 and rows == [(i, i * 10) for i in range(1, 21)]
    replay_source(pipeline, "orders", run_id="replay-2")  # idempotent
    assert _table(spec, "SELECT order_id, value FROM orders ORDER BY order_id") == rows
    # a range replay merges over the table without duplicating
    out = replay_source(pipeline, "orders", run_id="replay-3", start="5", end="9")
    assert out.events == 5 and _table(spec, "SELECT count(*) FROM orders") == [(20,)]
    # retention: events older than keep go, but only those the table absorbed
    store.append("orders", [_incoming(reader, {"id": 21, "v": 0})])
    import time

    time.sleep(1.2)
    assert retain(pipeline, store) == {"orders": 20}
    assert [e.position for chunk in store.read("orders") for e in chunk] == [21]


def test_events_commands_status_retry_replay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, warehouse: str) -> None:
    from rich.console import Console
    from typer.testing import CliRunner

    from hub.cli import events as events_cli
    from hub.cli.main import app

    monkeypatch.setattr(events_cli, "console", Console(width=300))  # tables unwrapped

    spec = _project(tmp_path, "    max_deliver: 2\nmodels:\n  counted: {sql: 'SELECT count(*) AS n FROM orders'}\n"
                              "  doubled: {sql: 'SELECT n * 2 AS m FROM counted'}\n", warehouse)
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
    assert _table(spec, "SELECT m FROM doubled") == [(4,)]
    status = runner.invoke(app, ["events", "status", str(spec)])
    assert status.exit_code == 0 and "orders" in status.output
    assert store.status(["orders"])[0].pending == 0
    unknown = runner.invoke(app, ["events", "replay", "nope", str(spec)])
    assert unknown.exit_code == 1 and "no stream source nope" in unknown.output


def test_store_writers_side_by_side(tmp_path: Path, warehouse: str) -> None:
    """Several writers append one source at once (threads: a connection each), with overlapping ids: every id
    is stored once, versions are 1..N without gaps, and positions follow the versions (the order commits
    happened in, which an absorb relies on); time bounds find positions."""
    from concurrent.futures import ThreadPoolExecutor

    store = open_store(warehouse.replace("///wh/", f"///{tmp_path}/wh/"), tmp_path)
    reader = PayloadReader(StreamKeys(id="$.id"), "sources.orders")

    def writer(w: int) -> list[str]:
        outcomes: list[str] = []
        for b in range(10):
            batch = [_incoming(reader, {"id": (w * 7 + b * 13 + i) % 400}) for i in range(40)]
            outcomes += store.append("orders", batch).outcomes
        store.close()
        return outcomes

    with ThreadPoolExecutor(4) as pool:
        outcomes = [o for got in pool.map(writer, range(4)) for o in got]
    events = [e for chunk in store.read("orders", limit=97) for e in chunk]
    assert len({e.message_id for e in events}) == len(events) == outcomes.count("stored")
    assert outcomes.count("stored") + outcomes.count("duplicate") == 4 * 10 * 40
    assert [e.version for e in events] == list(range(1, len(events) + 1))
    assert [e.position for e in events] == sorted(e.position for e in events)
    st = store.status(["orders"])[0]
    assert (st.version, st.duplicates) == (len(events), outcomes.count("duplicate"))
    middle = events[len(events) // 2]
    assert store.position_at("orders", middle.received_at, first=True) <= middle.position
    assert store.position_at("orders", middle.received_at, first=False) >= middle.position
    assert store.latest("orders", 2) == events[-1:-3:-1]


def test_absorb_dead_letters_events_beyond_the_threshold_and_replay_agrees(tmp_path: Path, warehouse: str) -> None:
    """More rejected rows than max_bad_rows: the offending events go to the dead letters (with the rule's
    reason) and the rest lands, instead of the source stopping; within the threshold, bad rows are
    quarantined as usual. A replay (any chunking) rebuilds exactly the same table and quarantine."""
    spec = _project(tmp_path, "    max_bad_rows: 1\n    columns: {id: {type: int64}, amount: {type: float64}}\n"
                              "    rules: {amount: {min: 0}}\n", warehouse)
    pipeline = load(spec)
    store = open_store(pipeline.warehouse_url, pipeline.root)
    reader = PayloadReader(pipeline.sources["orders"].stream, "sources.orders")  # type: ignore[arg-type]
    amounts: list[object] = [1, -1, 3, -4, "x", 6]
    store.append("orders", [_incoming(reader, {"id": i, "amount": a}) for i, a in enumerate(amounts, 1)])
    out = absorb_source(pipeline, "orders", run_id="a1")
    assert out.details["dead_lettered"] == 3 and out.mark == 6
    assert out.load is not None and (out.load.rows_loaded, out.load.rows_quarantined) == (3, 0)
    table = "SELECT id, amount FROM orders ORDER BY id"
    assert _table(spec, table) == [(1, 1.0), (3, 3.0), (6, 6.0)]
    dead = {d.message_id: d for d in store.dead_letters("orders")}
    assert sorted(dead) == ["2", "4", "5"]
    assert "rules.amount.min" in dead["2"].reason and "beyond the threshold of sources.orders" in dead["2"].reason
    assert "3 of 6 rows rejected" in dead["4"].reason and "max_bad_rows=1" in dead["4"].reason
    st = store.status(["orders"])[0]
    assert (st.events, st.dead, st.absorbed, st.pending, st.absorb_error) == (3, 3, 6, 0, None)
    # within the threshold: quarantined, not dead-lettered
    store.append("orders", [_incoming(reader, {"id": 7, "amount": -7}), _incoming(reader, {"id": 8, "amount": 8})])
    out = absorb_source(pipeline, "orders", run_id="a2")
    assert out.details["dead_lettered"] == 0 and out.load is not None and out.load.rows_quarantined == 1
    rows = _table(spec, table)
    quarantine = "SELECT row_number, reason FROM orders__quarantine ORDER BY row_number"
    bad = _table(spec, quarantine)
    assert rows == [(1, 1.0), (3, 3.0), (6, 6.0), (8, 8.0)] and [b[0] for b in bad] == [7]
    # replay, in one chunk and in chunks of two events: the same table, the same quarantine, nothing moved
    for chunk in (50_000, 2):
        again = replay_source(pipeline, "orders", run_id=f"r{chunk}", chunk=chunk)
        assert again.events == 5 and again.mark == 8
        assert _table(spec, table) == rows
        assert [b[0] for b in _table(spec, quarantine)] == [7]
    assert len(store.dead_letters("orders")) == 3 and store.status(["orders"])[0].events == 5


def test_stream_contract_from_stored_events_and_drift(tmp_path: Path, warehouse: str) -> None:
    """`hub contracts snapshot` of a broker system: the schema of the records of the latest stored events
    (never the broker). A field the source's columns use removed or retyped: breaking; a new field or a
    change to an unused field: non-breaking."""
    from hub.contracts.runner import snapshot, verify_system

    spec = _project(tmp_path, "    records: $.lines\n    columns: {sku: sku, qty: {type: int64}}\n", warehouse)
    pipeline = load(spec)
    store = open_store(pipeline.warehouse_url, pipeline.root)
    reader = PayloadReader(pipeline.sources["orders"].stream, "sources.orders")  # type: ignore[arg-type]
    store.append("orders", [_incoming(reader, {"id": i, "lines": [{"sku": f"S{i}", "qty": i, "note": "x"}]})
                            for i in range(5)])
    [path] = snapshot(pipeline, directory=tmp_path / "contracts")
    doc = json.loads(path.read_text())
    assert doc["protocol"] == "amqp"
    entry = doc["amqp"]["streams"]["orders"]
    assert entry["records"] == "$.lines" and entry["sample"] == "the latest 200 stored events"
    assert entry["payload"]["properties"]["qty"] == {"type": "integer"}
    assert sorted(entry["payload"]["required"]) == ["note", "qty", "sku"]
    again = snapshot(pipeline, directory=tmp_path / "again")[0]
    assert again.read_text() == path.read_text()  # nothing run-specific: the same producer, the same document
    assert verify_system(pipeline, "erp", directory=tmp_path / "contracts").status == "passed"
    # the producer now sends qty as text, drops note (unused) and adds a field: newer events are sampled
    store.append("orders", [_incoming(reader, {"id": 100 + i, "lines": [{"sku": "S", "qty": str(i), "new": 1}]})
                            for i in range(200)])
    result = verify_system(pipeline, "erp", directory=tmp_path / "contracts")
    changes = {c.field: c for c in result.changes}
    assert result.status == "failed", [c.message() for c in result.changes]
    assert changes["qty"].breaking and changes["qty"].what == "type changed"
    assert "orders (column qty)" in changes["qty"].used_by
    assert not changes["note"].breaking and changes["note"].what == "removed"
    assert not changes["new"].breaking and changes["new"].what.startswith("added")


@pytest.mark.parametrize("payloads", [
    [b'{"id": 1, "sku": "A", "price": 2.5, "when": "2024-05-01T10:00:00Z", "ok": true}',
     b'{"id": 2, "price": 3, "extra": null, "when": "2024-05-01 10:00:00", "ok": false}',
     b'{\n  "id": 3,\r\n  "nested": {"b": [1, 2], "a": {"when": "2024-05-01"}}, "tags": []\n}',
     b'{"id": 4, "nested": {"a": {"x": 1.5}, "c": "\\u00e9\\n"}, "tags": ["x"], "sku": "caf\xc3\xa9"}'],
    [b'{"id": 1}', b'{"id": "two"}'],  # a column mixing kinds: text on the general path
    [b'{"id": 1, "id": 2}', b'{"id": 3}'],  # a repeated key: marked on the general path
    [b'{"id": 12345678901234567890}'],  # beyond int64
    [b'[1, 2]', b'{"id": 1}'],  # not an object
    [b'{"deep": ' + b'[' * 70 + b']' * 70 + b'}'],
])
def test_fast_json_path_equals_the_general_path(payloads: list[bytes]) -> None:
    """Absorb and replay chunk differently, so whichever path a chunk takes must give the same batch: Arrow's
    JSON reader answers only when it can answer exactly as jsonsafe + records_to_batch."""
    from hub.events.absorb import _records, fast_json, records_of

    reader = PayloadReader(StreamKeys(), "sources.orders")
    events = [(i + 1, f"m{i}", p) for i, p in enumerate(payloads)]
    general, meta, broken = _records(reader, events)
    fast = fast_json(payloads)
    if fast is not None:
        assert fast.equals(general), (fast.schema, general.schema, fast.to_pylist(), general.to_pylist())
    chosen, chosen_meta, chosen_broken = records_of(reader, events)
    assert chosen.equals(general) and chosen_meta.equals(meta) and chosen_broken == broken
    if payloads[0].startswith(b'{"id": 1, "sku"'):
        assert fast is not None  # the ordinary case takes the fast path


def test_acknowledge_terms_dead_letters_first_then_acks_the_batch_once() -> None:
    """AMQP acknowledges a stored batch with one multiple-ack of its last kept delivery; dead letters are
    rejected before it, so the multiple-ack never covers them. Brokers without it get one ack per message."""
    import asyncio

    from hub.events.drain import acknowledge

    calls: list[str] = []

    def message(name: str, through: bool) -> Message:
        async def record(what: str) -> None:
            calls.append(f"{what} {name}")

        async def ack() -> None:
            await record("ack")

        async def term() -> None:
            await record("term")

        async def ack_through() -> None:
            await record("ack-through")

        return Message(b"{}", "q", id=name, _ack=ack, _term=term, _ack_through=ack_through if through else None)

    outcomes = ["stored", "dead", "duplicate", "stored", "dead"]
    asyncio.run(acknowledge([message(f"m{i}", True) for i in range(5)], outcomes))
    assert calls == ["term m1", "term m4", "ack-through m3"]
    calls.clear()
    asyncio.run(acknowledge([message(f"m{i}", False) for i in range(5)], outcomes))
    assert calls == ["term m1", "term m4", "ack m0", "ack m2", "ack m3"]
