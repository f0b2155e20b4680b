"""The demo estate's bank: a partner SFTP drop with one statement file per day.

Statements are CSV the way German banks write them: Windows-1252 (cp1252), ``;`` as delimiter, dates as
``31.01.2024``, amounts with a decimal comma (``1813,80``), and umlauts in names. Each day's file
(``/outbox/statements_YYYYMMDD.csv``) books the payments for the demo ERP's paid orders of the day
before (reference ``ORD-<OrderId>``) and, now and then, a bank fee without a reference.

Served over real SFTP by :class:`hub.demo.sftpd.EmbeddedSftpServer`, password protected, with a host key
generated at start (the demo spec pins its fingerprint through ``BANK_HOST_KEY_FINGERPRINT``).
"""

from __future__ import annotations

import os
import random
import tempfile
import threading
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from hub.demo.erp import orders
from hub.demo.sftpd import EmbeddedSftpServer

DEMO_USER, DEMO_PASSWORD = "hub", "demo-bank-pass-51c0"  # the demo's own credentials
#: The secret the bank signs its payment webhooks with (Stripe style), exported as BANK_WEBHOOK_SECRET.
DEMO_WEBHOOK_SECRET = "demo-bank-webhook-7d21"
HEADER = "Buchungstag;Valuta;Auftraggeber;Verwendungszweck;Betrag;Währung;Referenz"
FIRST_DAY = date(2024, 1, 2)
PAYERS = ["Müller & Söhne GmbH", "Bäckerei Groß", "Jürgen Weiß e.K.", "Société Générale Düsseldorf", "Zoë Åström"]


def _amount(value: Any) -> str:
    return f"{value:.2f}".replace(".", ",")


def statement(day: date, data: list[dict[str, Any]] | None = None) -> str:
    """The statement of *day*: payments of the paid orders placed the day before, and the odd fee."""
    rng = random.Random(day.toordinal())
    previous = day - timedelta(days=1)
    lines = [HEADER]
    booked = day.strftime("%d.%m.%Y")
    for o in orders() if data is None else data:
        if o["Paid"] and o["OrderDate"].astimezone(UTC).date() == previous:
            lines.append(";".join([booked, booked, rng.choice(PAYERS), f"Zahlung Auftrag {o['OrderId']}",
                                   _amount(o["Amount"]), "EUR", f"ORD-{o['OrderId']}"]))
    if day.day % 3 == 0:
        lines.append(";".join([booked, booked, "Demo Bank AG", "Kontoführungsgebühr", "-12,50", "EUR", ""]))
    return "\r\n".join(lines) + "\r\n"


def payment_notifications(start: date, end: date, data: list[dict[str, Any]] | None = None
                          ) -> list[dict[str, Any]]:
    """The payment notifications the bank sends (its webhook) for the days [start, end]: one per booked
    payment of the statements, as soon as it is booked, so the hub knows before the day's file is dropped."""
    out = []
    for o in orders() if data is None else data:
        day = o["OrderDate"].astimezone(UTC).date() + timedelta(days=1)
        if o["Paid"] and start <= day <= end:
            booked = datetime(day.year, day.month, day.day, 9, tzinfo=UTC) + timedelta(seconds=o["OrderId"] % 3600)
            out.append({"payment_id": o["OrderId"], "reference": f"ORD-{o['OrderId']}", "amount": _amount(o["Amount"])
                        .replace(",", "."), "currency": "EUR", "booked_at": booked.isoformat().replace("+00:00", "Z"),
                        "status": "booked"})
    return out


def call_webhook(url: str, secret: str, notifications: list[dict[str, Any]]) -> dict[str, int]:
    """POST each notification to *url* the way a payment provider does (JSON body, ``Stripe-Signature``
    over it, a delivery id and an event type in headers); the hub's answers counted by status."""
    import json

    import httpx

    from adapters.webhook import sign_stripe

    counts: dict[str, int] = {}
    with httpx.Client(timeout=10) as client:
        for note in notifications:
            body = json.dumps(note).encode()
            response = client.post(url, content=body, headers={
                "Content-Type": "application/json", "Stripe-Signature": sign_stripe(secret, body),
                "X-Delivery-Id": f"pay-{note['payment_id']}", "X-Event-Type": "payment.booked"})
            response.raise_for_status()
            status = str(response.json().get("status"))
            counts[status] = counts.get(status, 0) + 1
    return counts


class BankService:
    """The bank's SFTP drop on a loopback port (0 picks a free one), with *days* statements in /outbox."""

    def __init__(self, port: int = 0, days: int = 7, root: Path | None = None,
                 username: str = DEMO_USER, password: str = DEMO_PASSWORD) -> None:
        self._tmp = None if root is not None else tempfile.TemporaryDirectory(prefix="hub-demo-bank-")
        self.root = Path(root) if root is not None else Path(self._tmp.name)  # type: ignore[union-attr]
        self.outbox = self.root / "outbox"
        self.outbox.mkdir(parents=True, exist_ok=True)
        self._data = orders()
        self.dropped: list[date] = []
        for n in range(days):
            self.drop(FIRST_DAY + timedelta(days=n))
        self.server = EmbeddedSftpServer(self.root, port=port, username=username, password=password)
        self._stop = threading.Event()
        self._drip: threading.Thread | None = None

    def drop(self, day: date, *, mtime: datetime | None = None) -> Path:
        """Write *day*'s statement the way the bank does: under a temporary name, then renamed."""
        final = self.outbox / f"statements_{day:%Y%m%d}.csv"
        temp = self.outbox / f"{final.name}.filepart"
        temp.write_bytes(statement(day, self._data).encode("cp1252"))
        when = (mtime or datetime(day.year, day.month, day.day, 6, tzinfo=UTC)).timestamp()
        os.utime(temp, (when, when))
        temp.replace(final)
        self.dropped.append(day)
        return final

    def drip(self, every: float) -> None:
        """Drop the next day's statement every *every* seconds (for the UI: the sensor picks them up)."""
        def loop() -> None:
            while not self._stop.wait(every):
                self.drop(max(self.dropped) + timedelta(days=1), mtime=datetime.now(UTC))

        self._drip = threading.Thread(target=loop, name="demo-bank-drip", daemon=True)
        self._drip.start()

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def fingerprint(self) -> str:
        return self.server.fingerprint

    def start(self) -> BankService:
        self.server.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.server.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> BankService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
