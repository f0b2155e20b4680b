"""The demo inventory: a legacy stock database read over SQL.

Warehouses (one per CRM region, with blank-padded CHAR codes) and stock levels per warehouse and ERP
SKU, each row stamped with ``updated_at``. :meth:`InventoryDb.tick` moves stock the way a warehouse
system would between two runs — a few levels change and get a new ``updated_at`` — so the demo's
incremental source has something new to read each time. A SQLite file by default; any SQLAlchemy URL
(PostgreSQL, MariaDB) when ``HUB_DEMO_INVENTORY_URL`` points there before the estate starts.
"""

from __future__ import annotations

import random
import tempfile
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from adapters.sql import with_default_driver
from hub.demo.erp import REGIONS, SKUS

_meta = sa.MetaData()
WAREHOUSES = sa.Table(
    "warehouses", _meta,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("code", sa.CHAR(8), nullable=False, comment="Legacy blank-padded code"),
    sa.Column("name", sa.String(80), nullable=False),
    sa.Column("region", sa.String(16), nullable=False),
    sa.Column("opened_on", sa.Date),
    comment="Distribution centres, one per sales region")
STOCK = sa.Table(
    "stock_levels", _meta,
    sa.Column("warehouse_id", sa.Integer, sa.ForeignKey("warehouses.id"), primary_key=True),
    sa.Column("sku", sa.String(16), primary_key=True),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("unit_cost", sa.Numeric(10, 2), nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False, comment="UTC, set on every change"),
    comment="On-hand stock per warehouse and SKU")
CITIES = {"EMEA": "Rotterdam", "NA": "Memphis", "LATAM": "Sao Paulo", "APAC": "Singapore"}


class InventoryDb:
    """The inventory database at *url*, created and filled on :meth:`start` (idempotent)."""

    def __init__(self, url: str | None = None, root: Path | None = None, seed: int = 11) -> None:
        self._tmp = None
        if url is None:
            if root is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="hub-demo-inventory-")
                root = Path(self._tmp.name)
            root.mkdir(parents=True, exist_ok=True)
            url = f"sqlite:///{root / 'inventory.sqlite'}"
        self.url = url
        self.engine = sa.create_engine(with_default_driver(make_url(url)), poolclass=NullPool)
        self.rng = random.Random(seed)
        self._drip: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> InventoryDb:
        _meta.create_all(self.engine)
        with self.engine.begin() as conn:
            if conn.execute(sa.select(sa.func.count()).select_from(WAREHOUSES)).scalar_one() == 0:
                conn.execute(WAREHOUSES.insert(), [
                    {"id": i + 1, "code": f"WH{i + 1:02d}", "name": f"{CITIES[r]} DC", "region": r,
                     "opened_on": datetime(2015 + i, 3, 1).date()} for i, r in enumerate(REGIONS)])
                # last changed over the past day, one level an hour, the newest an hour ago
                newest = datetime.now(UTC).replace(tzinfo=None, microsecond=0) - timedelta(hours=1)
                pairs = [(w + 1, sku, price) for w in range(len(REGIONS)) for sku, price in SKUS]
                conn.execute(STOCK.insert(), [
                    {"warehouse_id": w, "sku": sku, "quantity": self.rng.randint(0, 500),
                     "unit_cost": (price * Decimal("0.6")).quantize(Decimal("0.01")),
                     "updated_at": newest - timedelta(hours=len(pairs) - 1 - n)}
                    for n, (w, sku, price) in enumerate(pairs)])
        return self

    def tick(self, changes: int = 3) -> list[tuple[int, str]]:
        """Change the stock of *changes* (warehouse, SKU) pairs now; returns which."""
        now = datetime.now(UTC).replace(tzinfo=None)
        picked = self.rng.sample([(w + 1, sku) for w in range(len(REGIONS)) for sku, _ in SKUS], changes)
        with self.engine.begin() as conn:
            for warehouse_id, sku in picked:
                conn.execute(STOCK.update().where(STOCK.c.warehouse_id == warehouse_id, STOCK.c.sku == sku)
                             .values(quantity=self.rng.randint(0, 500), updated_at=now))
        return picked

    def drip(self, every: float) -> None:
        """Tick every *every* seconds in the background (for the UI)."""

        def loop() -> None:
            while not self._stop.wait(every):
                self.tick()

        self._drip = threading.Thread(target=loop, name="demo-inventory-drip", daemon=True)
        self._drip.start()

    def stop(self) -> None:
        self._stop.set()
        if self._drip is not None:
            self._drip.join(timeout=5)
        self.engine.dispose()
        if self._tmp is not None:
            self._tmp.cleanup()

    def rows(self, table: str = "stock_levels") -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.select(_meta.tables[table]))]


# --- events: the inventory announces its stock movements over MQTT ----------------------------------------

#: The topic the demo inventory publishes stock movements to (QoS 1).
MOVEMENTS_TOPIC = "demo/inventory/movements"


def stock_movements(count: int = 24, seed: int = 7) -> list[dict[str, Any]]:
    """*count* deterministic stock movements (receipts and picks) over the demo week, one an hour from
    2024-01-01: the same ids every time, so publishing twice stores each once."""
    rng = random.Random(seed)
    start = datetime(2024, 1, 1, 8, tzinfo=UTC)
    out = []
    for n in range(count):
        sku, _ = rng.choice(SKUS)
        out.append({"movement_id": f"MV-{n + 1:05d}", "warehouse_id": rng.randint(1, len(REGIONS)), "sku": sku,
                    "delta": rng.choice([-1, 1]) * rng.randint(1, 40), "reason": rng.choice(["receipt", "pick"]),
                    "at": (start + timedelta(hours=n * 7)).isoformat()})
    return out


def publish_movements(host: str, port: int, movements: list[dict[str, Any]], topic: str = MOVEMENTS_TOPIC,
                      timeout: float = 10.0) -> int:
    """Publish *movements* as JSON with QoS 1 (MQTT 5), each confirmed by the broker; how many. A broker that
    cannot be reached raises :class:`OSError`."""
    import json

    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    client.connect(host, port, keepalive=30)
    client.loop_start()
    try:
        for m in movements:
            client.publish(topic, json.dumps(m).encode(), qos=1).wait_for_publish(timeout)
    finally:
        client.disconnect()
        client.loop_stop()
    return len(movements)
