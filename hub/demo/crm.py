"""The demo estate's CRM: a real HTTP service on loopback, in the shape of a typical SaaS CRM API.

* ``GET /api/customers?page=N&per_page=M`` — page-number pagination with ``total_pages`` in the body;
* ``GET /api/contacts?since=ISO&until=ISO[&cursor=C]`` — customer interactions in a time window,
  cursor pagination (``next_cursor``), the incremental endpoint a daily partition reads;
* every endpoint needs ``Authorization: Bearer <token>``; a wrong token is answered 401.

Data are deterministic (seeded), so every demo run and test sees the same rows.
"""

from __future__ import annotations

import json
import random
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

REGIONS = ["EMEA", "NA", "LATAM", "APAC"]
CITIES = {"EMEA": [("Berlin", "DE"), ("Paris", "FR"), ("Lyon", "FR"), ("Milan", "IT")],
          "NA": [("Toronto", "CA"), ("Austin", "US"), ("Denver", "US")],
          "LATAM": [("Lima", "PE"), ("Bogota", "CO"), ("Santiago", "CL")],
          "APAC": [("Osaka", "JP"), ("Sydney", "AU"), ("Pune", "IN")]}
CHANNELS = ["email", "call", "meeting", "chat"]
DEMO_TOKEN = "demo-crm-token-3f9a"  # the demo's own credential, exported as CRM_TOKEN by `hub demo`
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)


def customers(n: int = 300) -> list[dict[str, Any]]:
    rng = random.Random(42)
    out = []
    for i in range(1, n + 1):
        region = REGIONS[i % len(REGIONS)]
        city, country = rng.choice(CITIES[region])
        created = EPOCH - timedelta(days=rng.randint(30, 900))
        out.append({
            "id": i,
            "name": f"Customer {i:04d}",
            "email": f"contact{i}@customer{i:04d}.example",
            "region": region,
            "tier": rng.choice(["gold", "silver", "bronze"]),
            "address": {"city": city, "country": country},
            "created_at": created.isoformat().replace("+00:00", "Z"),
            "annual_revenue": str(round(rng.uniform(10_000, 5_000_000), 2)),
        })
    return out


def contacts(days: int = 60, customers_n: int = 300) -> list[dict[str, Any]]:
    rng = random.Random(7)
    out = []
    cid = 0
    for day in range(days):
        for _ in range(rng.randint(25, 45)):
            cid += 1
            at = EPOCH + timedelta(days=day, seconds=rng.randint(0, 86_399))
            out.append({
                "contact_id": cid,
                "customer_id": rng.randint(1, customers_n),
                "channel": rng.choice(CHANNELS),
                "occurred_at": at.isoformat().replace("+00:00", "Z"),
                "duration_minutes": rng.choice([None, 5, 15, 30, 45, 60]),
                "outcome": {"status": rng.choice(["won", "open", "lost"]), "score": rng.randint(1, 5)},
            })
    return out


@dataclass
class CRMData:
    customers: list[dict[str, Any]]
    contacts: list[dict[str, Any]]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _CRMServer

    def log_message(self, format: str, *args: Any) -> None:  # keep test and demo output clean
        pass

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        qs = {k: v[-1] for k, v in parse_qs(url.query).items()}
        self.server.requests += 1
        fail_after = self.server.fail_after
        if fail_after is not None and self.server.requests > fail_after:
            self._send(500, {"error": "injected failure"})
            return
        if self.headers.get("Authorization") != f"Bearer {self.server.token}":
            self._send(401, {"error": "invalid or missing bearer token"})
            return
        try:
            if url.path == "/api/customers":
                self._customers(qs)
            elif url.path == "/api/contacts":
                self._contacts(qs)
            else:
                self._send(404, {"error": f"no such endpoint {url.path}"})
        except ValueError as exc:
            self._send(400, {"error": str(exc)})

    def _customers(self, qs: dict[str, str]) -> None:
        page, per_page = int(qs.get("page", 1)), min(int(qs.get("per_page", 50)), 200)
        rows = self.server.data.customers
        total_pages = max(1, -(-len(rows) // per_page))
        chunk = rows[(page - 1) * per_page: page * per_page]
        self._send(200, {"data": chunk, "page": page, "per_page": per_page, "total_pages": total_pages,
                         "total": len(rows)})

    def _contacts(self, qs: dict[str, str]) -> None:
        since = _parse_time(qs.get("since"), "since")
        until = _parse_time(qs.get("until"), "until")
        limit = min(int(qs.get("limit", 20)), 100)
        after = int(qs.get("cursor", 0))
        rows = [r for r in self.server.data.contacts
                if r["contact_id"] > after and since <= _parse_time(r["occurred_at"], "occurred_at") < until]
        chunk = rows[:limit]
        nxt = str(chunk[-1]["contact_id"]) if len(rows) > limit else None
        self._send(200, {"items": chunk, "next_cursor": nxt})


def _parse_time(value: str | None, name: str) -> datetime:
    if not value:
        raise ValueError(f"query parameter {name} is required (ISO 8601)")
    ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


class _CRMServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, addr: tuple[str, int], data: CRMData, token: str) -> None:
        super().__init__(addr, _Handler)
        self.data, self.token, self.requests = data, token, 0
        self.fail_after: int | None = None  # fault injection for tests: answer 500 after N requests


class CRMService:
    """Start/stop the CRM on a loopback port (0 picks a free one)."""

    def __init__(self, port: int = 0, token: str = DEMO_TOKEN, host: str = "127.0.0.1") -> None:
        self.data = CRMData(customers(), contacts())
        self._host = host
        self._server = _CRMServer((host, port), self.data, token)
        self._thread = threading.Thread(target=self._server.serve_forever, name="demo-crm", daemon=True)

    @property
    def url(self) -> str:
        port = self._server.server_address[1]
        return f"http://{self._host}:{port}/api"

    @property
    def requests(self) -> int:
        return self._server.requests

    def fail_after(self, n: int | None) -> None:
        """From request number *n* + 1 on, answer 500 (None heals). For failure tests."""
        self._server.requests = 0
        self._server.fail_after = n

    def start(self) -> CRMService:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> CRMService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
