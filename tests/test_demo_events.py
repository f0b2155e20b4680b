"""The demo estate speaks events: the ERP's order events over RabbitMQ and the inventory's stock movements over
MQTT land in the event store through the sensor's drain, and the demo goes on without a broker that is down."""

from __future__ import annotations

import socket
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pytest

from hub.demo import events as demo_events
from hub.demo.bank import DEMO_WEBHOOK_SECRET
from hub.demo.erp import order_events, orders
from hub.demo.inventory import stock_movements
from hub.events.absorb import absorb_source
from hub.events.store import open_store
from hub.spec import loads
from hub.warehouse import connect
from tests.conftest import demo_spec_text

WEEK = (date(2024, 1, 1), date(2024, 1, 7))


def _up(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def test_demo_events_are_deterministic() -> None:
    from datetime import UTC, datetime

    events = order_events(orders(), datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 8, tzinfo=UTC))
    assert events == order_events(orders(), datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 8, tzinfo=UTC))
    kinds = {kind for _, kind, _ in events}
    assert kinds == {"order.created", "order.shipped"}
    assert len({mid for mid, _, _ in events}) == len(events)
    assert stock_movements() == stock_movements() and len({m["movement_id"] for m in stock_movements()}) == 24


def test_demo_goes_on_without_brokers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BANK_WEBHOOK_SECRET", DEMO_WEBHOOK_SECRET)
    monkeypatch.setenv("HUB_DEMO_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/")
    monkeypatch.setenv("HUB_DEMO_MQTT_HOST", "127.0.0.9")  # nothing listens there
    pipeline = loads(demo_spec_text(), tmp_path / "demo.yaml")
    said: list[str] = []
    landed = demo_events.land(pipeline, *WEEK, said.append)
    assert set(landed) == {"bank_payment_events"}  # the bank's webhook needs no broker
    assert len(said) == 3 and all("skipped" in line and "is not reachable" in line for line in said[:2])
    assert "RabbitMQ (amqp://***@127.0.0.1:1/ queue demo.erp.orders)" in said[0]
    assert "MQTT (mqtt://127.0.0.9:1883 topic demo/inventory/movements)" in said[1]
    store = open_store(pipeline.warehouse_url, pipeline.root)
    assert [s.events for s in store.status(["erp_order_events", "inventory_movements"])] == [0, 0]


@pytest.mark.slow
@pytest.mark.skipif(not (_up(5672) and _up(1883)), reason="RabbitMQ (:5672) and Mosquitto (:1883) are needed")
def test_demo_events_land_once_and_absorb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         demo_brokers: Callable[[str], str]) -> None:
    monkeypatch.setenv("BANK_WEBHOOK_SECRET", DEMO_WEBHOOK_SECRET)
    pipeline = loads(demo_brokers(demo_spec_text()), tmp_path / "demo.yaml")
    said: list[str] = []
    landed = demo_events.land(pipeline, *WEEK, said.append)
    assert set(landed) == {"erp_order_events", "inventory_movements", "bank_payment_events"}, said
    store = open_store(pipeline.warehouse_url, pipeline.root)
    streams = ["erp_order_events", "inventory_movements", "bank_payment_events"]
    counts = {s.source: s.events for s in store.status(streams)}
    assert counts == {"erp_order_events": 292, "inventory_movements": 24, "bank_payment_events": 68}
    assert landed["bank_payment_events"].stored == 68  # signed, answered 202 after the commit
    again = demo_events.land(pipeline, *WEEK, said.append)  # the same batch again: stored once
    assert again["erp_order_events"].stored == 0 and again["erp_order_events"].duplicates >= 292
    assert again["inventory_movements"].stored == 0
    assert again["bank_payment_events"].stored == 0 and again["bank_payment_events"].duplicates == 68
    for name in counts:
        absorb_source(pipeline, name, run_id="demo-test")
    wh = connect(pipeline.warehouse_url)
    kinds = wh.query("SELECT event, count(*) AS n FROM erp_order_events GROUP BY event ORDER BY event").to_pylist()
    assert [k["event"] for k in kinds] == ["order.created", "order.shipped"] and sum(k["n"] for k in kinds) == 292
    moved = wh.query("SELECT count(DISTINCT movement_id) AS n, count(*) AS rows FROM inventory_movements").to_pylist()
    assert moved == [{"n": 24, "rows": 24}]
    paid = wh.query("SELECT count(*) AS n, min(reference) AS first FROM bank_payment_events").to_pylist()
    assert paid[0]["n"] == 68 and paid[0]["first"].startswith("ORD-")
