"""The demo estate's CRM: a real HTTP service on loopback, in the shape of a typical SaaS CRM API.

* ``GET /api/customers?page=N&per_page=M`` — page-number pagination with ``total_pages`` in the body;
* ``GET /api/contacts?since=ISO&until=ISO[&cursor=C]`` — customer interactions in a time window,
  cursor pagination (``next_cursor``), the incremental endpoint a daily partition reads;
* every endpoint needs ``Authorization: Bearer <token>``; a wrong token is answered 401;
* ``GET /api/openapi.json`` — the API's OpenAPI 3.0 document (public);
* ``POST /api/graphql`` — the product catalogue, a GraphQL API (:mod:`hub.demo.catalogue`), same token;
* ``POST /api/activities``, ``GET /api/activities?order_id=N``, ``DELETE /api/activities/{id}``,
  ``POST /api/tasks`` — what the demo's payment-reconciliation flow writes; a POST with an
  ``Idempotency-Key`` header that was seen before gets the first answer again and changes nothing.

Test hooks (for contract tests): ``drop_fields`` (dotted record fields left out of every response),
``rewrite`` (a function that alters each response body), ``openapi`` (the document served, mutable) and
``catalogue_sdl`` (the GraphQL schema served).

Data are deterministic (seeded), so every demo run and test sees the same rows.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from graphql import graphql_sync

from hub.demo import catalogue

REGIONS = ["EMEA", "NA", "LATAM", "APAC"]
CITIES = {"EMEA": [("Berlin", "DE"), ("Paris", "FR"), ("Lyon", "FR"), ("Milan", "IT")],
          "NA": [("Toronto", "CA"), ("Austin", "US"), ("Denver", "US")],
          "LATAM": [("Lima", "PE"), ("Bogota", "CO"), ("Santiago", "CL")],
          "APAC": [("Osaka", "JP"), ("Sydney", "AU"), ("Pune", "IN")]}
CHANNELS = ["email", "call", "meeting", "chat"]
ACTIVITY_KINDS = ("payment_received", "note")
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


def openapi_document() -> dict[str, Any]:
    """The CRM's OpenAPI 3.0 description: what a partner publishes and `hub contracts snapshot` records."""
    def ref(name: str) -> dict[str, Any]:
        return {"$ref": f"#/components/schemas/{name}"}

    def param(name: str, where: str, schema: dict[str, Any], required: bool = False,
              description: str = "") -> dict[str, Any]:
        return {"name": name, "in": where, "required": required, "schema": schema, "description": description}

    def page(schema: str) -> dict[str, Any]:
        return {"description": "One page", "content": {"application/json": {"schema": ref(schema)}}}

    unauthorized = {"description": "Missing or wrong bearer token"}
    return {
        "openapi": "3.0.3",
        "info": {"title": "Demo CRM", "version": "1.0.0"},
        "servers": [{"url": "/api"}],
        "security": [{"bearer": []}],
        "paths": {
            "/customers": {"get": {
                "operationId": "listCustomers", "summary": "Every customer, page by page",
                "parameters": [param("page", "query", {"type": "integer", "minimum": 1, "default": 1}),
                               param("per_page", "query", {"type": "integer", "maximum": 200, "default": 50})],
                "responses": {"200": page("CustomerPage"), "401": unauthorized}}},
            "/contacts": {"get": {
                "operationId": "listContacts", "summary": "Customer interactions in a time window",
                "parameters": [param("since", "query", {"type": "string", "format": "date-time"}, True),
                               param("until", "query", {"type": "string", "format": "date-time"}, True),
                               param("cursor", "query", {"type": "string"}),
                               param("limit", "query", {"type": "integer", "maximum": 100, "default": 20})],
                "responses": {"200": page("ContactPage"), "400": {"description": "Bad window"},
                              "401": unauthorized}}},
            "/activities": {
                "post": {"operationId": "createActivity", "summary": "Log an activity on an order (a payment "
                                                                    "received, ...)",
                         "requestBody": {"required": True, "content": {"application/json": {
                             "schema": ref("NewActivity")}}},
                         "responses": {"201": {"description": "Created", "content": {"application/json": {
                             "schema": ref("Activity")}}}, "401": unauthorized}},
                "get": {"operationId": "listActivities", "summary": "The activities logged on an order",
                        "parameters": [param("order_id", "query", {"type": "integer"}, True)],
                        "responses": {"200": {"description": "The order's activities", "content": {
                            "application/json": {"schema": {"type": "object", "required": ["items"],
                                                            "properties": {"items": {"type": "array",
                                                                                     "items": ref("Activity")}}}}}},
                                      "401": unauthorized}}},
            "/activities/{id}": {"delete": {
                "operationId": "deleteActivity", "summary": "Remove an activity",
                "parameters": [param("id", "path", {"type": "integer"}, True)],
                "responses": {"200": {"description": "Deleted", "content": {"application/json": {"schema": {
                    "type": "object", "properties": {"deleted": {"type": "integer"}}}}}},
                              "404": {"description": "No such activity"}, "401": unauthorized}}},
            "/tasks": {"post": {
                "operationId": "createTask", "summary": "Open a task for someone to look at an order",
                "requestBody": {"required": True, "content": {"application/json": {"schema": ref("NewTask")}}},
                "responses": {"201": {"description": "Created", "content": {"application/json": {
                    "schema": ref("Task")}}}, "401": unauthorized}}},
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Address": {"type": "object", "required": ["city", "country"], "properties": {
                    "city": {"type": "string"}, "country": {"type": "string", "minLength": 2, "maxLength": 2}}},
                "Customer": {"type": "object", "required": ["id", "name", "email", "region", "tier", "address",
                                                            "created_at", "annual_revenue"], "properties": {
                    "id": {"type": "integer", "format": "int64"},
                    "name": {"type": "string"},
                    "email": {"type": "string", "format": "email"},
                    "region": {"type": "string", "enum": list(REGIONS)},
                    "tier": {"type": "string", "enum": ["gold", "silver", "bronze"]},
                    "address": ref("Address"),
                    "created_at": {"type": "string", "format": "date-time"},
                    "annual_revenue": {"type": "string", "description": "Decimal, as text"}}},
                "CustomerPage": {"type": "object", "required": ["data", "page", "per_page", "total_pages", "total"],
                                 "properties": {"data": {"type": "array", "items": ref("Customer")},
                                                "page": {"type": "integer"}, "per_page": {"type": "integer"},
                                                "total_pages": {"type": "integer"}, "total": {"type": "integer"}}},
                "Outcome": {"type": "object", "required": ["status", "score"], "properties": {
                    "status": {"type": "string", "enum": ["won", "open", "lost"]},
                    "score": {"type": "integer", "minimum": 1, "maximum": 5}}},
                "Contact": {"type": "object", "required": ["contact_id", "customer_id", "channel", "occurred_at",
                                                           "duration_minutes", "outcome"], "properties": {
                    "contact_id": {"type": "integer", "format": "int64"},
                    "customer_id": {"type": "integer", "format": "int64"},
                    "channel": {"type": "string", "enum": list(CHANNELS)},
                    "occurred_at": {"type": "string", "format": "date-time"},
                    "duration_minutes": {"type": "integer", "nullable": True},
                    "outcome": ref("Outcome")}},
                "ContactPage": {"type": "object", "required": ["items", "next_cursor"], "properties": {
                    "items": {"type": "array", "items": ref("Contact")},
                    "next_cursor": {"type": "string", "nullable": True}}},
                "NewActivity": {"type": "object", "required": ["order_id", "kind", "note"],
                                "additionalProperties": False, "properties": {
                    "order_id": {"type": "integer"}, "kind": {"type": "string", "enum": list(ACTIVITY_KINDS)},
                    "note": {"type": "string", "maxLength": 200}, "amount": {"type": "number"}}},
                "Activity": {"type": "object", "required": ["id", "order_id", "kind", "note"], "properties": {
                    "id": {"type": "integer"}, "order_id": {"type": "integer"}, "kind": {"type": "string"},
                    "note": {"type": "string"}, "amount": {"type": "number", "nullable": True}}},
                "NewTask": {"type": "object", "required": ["order_id", "title"], "additionalProperties": False,
                            "properties": {"order_id": {"type": "integer"}, "title": {"type": "string",
                                                                                     "maxLength": 200},
                                           "amount": {"type": "number"}}},
                "Task": {"type": "object", "required": ["id", "order_id", "title"], "properties": {
                    "id": {"type": "integer"}, "order_id": {"type": "integer"}, "title": {"type": "string"}}},
            },
        },
    }


def _without(record: dict[str, Any], fields: set[str]) -> dict[str, Any]:
    """*record* minus the dotted *fields* (copied where changed)."""
    out = dict(record)
    for path in fields:
        head, _, rest = path.partition(".")
        if head in out:
            if rest and isinstance(out[head], dict):
                out[head] = _without(out[head], {rest})
            elif not rest:
                del out[head]
    return out


@dataclass
class CRMData:
    customers: list[dict[str, Any]]
    contacts: list[dict[str, Any]]
    activities: dict[int, dict[str, Any]] = field(default_factory=dict)  # written by the demo's flow
    tasks: dict[int, dict[str, Any]] = field(default_factory=dict)
    keys: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)  # Idempotency-Key -> first answer
    next_id: int = 1
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _CRMServer

    def log_message(self, format: str, *args: Any) -> None:  # keep test and demo output clean
        pass

    def _send(self, status: int, body: dict[str, Any]) -> None:
        if status == 200 and self.server.rewrite is not None:
            body = self.server.rewrite(urlsplit(self.path).path, body)
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
        self.server.traceparents.append((url.path, self.headers.get("traceparent")))
        fail_after = self.server.fail_after
        if fail_after is not None and self.server.requests > fail_after:
            self._send(500, {"error": "injected failure"})
            return
        if url.path == "/api/openapi.json":  # public, as API descriptions usually are
            self._send(200, self.server.openapi)
            return
        if self.headers.get("Authorization") != f"Bearer {self.server.token}":
            self._send(401, {"error": "invalid or missing bearer token"})
            return
        try:
            if url.path == "/api/customers":
                self._customers(qs)
            elif url.path == "/api/contacts":
                self._contacts(qs)
            elif url.path == "/api/activities":
                order = int(qs.get("order_id") or 0)
                with self.server.data.lock:
                    found = [a for a in self.server.data.activities.values() if a["order_id"] == order]
                self._send(200, {"items": found})
            else:
                self._send(404, {"error": f"no such endpoint {url.path}"})
        except ValueError as exc:
            self._send(400, {"error": str(exc)})

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        self.server.requests += 1
        self.server.traceparents.append((url.path, self.headers.get("traceparent")))
        if url.path in ("/api/activities", "/api/tasks"):
            self._write(url.path)
            return
        if url.path != "/api/graphql":
            self._send(404, {"error": f"no such endpoint {url.path}"})
            return
        if self.headers.get("Authorization") != f"Bearer {self.server.token}":
            self._send(401, {"errors": [{"message": "invalid or missing bearer token"}]})
            return
        try:
            payload = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        except ValueError:
            self._send(400, {"errors": [{"message": "the body is not JSON"}]})
            return
        result = graphql_sync(self.server.catalogue, str(payload.get("query") or ""),
                              variable_values=payload.get("variables"), operation_name=payload.get("operationName"))
        self._send(200, dict(result.formatted))

    def _write(self, path: str) -> None:
        """POST /api/activities or /api/tasks: validated like a real API, deduplicated on Idempotency-Key."""
        if self.headers.get("Authorization") != f"Bearer {self.server.token}":
            self._send(401, {"error": "invalid or missing bearer token"})
            return
        try:
            doc = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        except ValueError:
            self._send(400, {"error": "the body is not JSON"})
            return
        required = ("order_id", "kind", "note") if path == "/api/activities" else ("order_id", "title")
        missing = [k for k in required if k not in doc]
        if not isinstance(doc, dict) or missing or not isinstance(doc.get("order_id"), int):
            self._send(422, {"error": f"invalid body: missing {missing or 'an integer order_id'}"})
            return
        data = self.server.data
        key = self.headers.get("Idempotency-Key")
        with data.lock:
            if key and key in data.keys:
                status, first = data.keys[key]
                self._send(status, first)
                return
            record = {"id": data.next_id, **doc}
            data.next_id += 1
            (data.activities if path == "/api/activities" else data.tasks)[record["id"]] = record
            if key:
                data.keys[key] = (201, record)
        self._send(201, record)

    def do_DELETE(self) -> None:
        url = urlsplit(self.path)
        self.server.requests += 1
        self.server.traceparents.append((url.path, self.headers.get("traceparent")))
        if self.headers.get("Authorization") != f"Bearer {self.server.token}":
            self._send(401, {"error": "invalid or missing bearer token"})
            return
        head, _, ident = url.path.rpartition("/")
        if head != "/api/activities" or not ident.isdigit():
            self._send(404, {"error": f"no such endpoint {url.path}"})
            return
        with self.server.data.lock:
            gone = self.server.data.activities.pop(int(ident), None)
        self._send(200 if gone else 404, {"deleted": int(ident)} if gone else {"error": f"no activity {ident}"})

    def _customers(self, qs: dict[str, str]) -> None:
        page, per_page = int(qs.get("page", 1)), min(int(qs.get("per_page", 50)), 200)
        rows = self.server.data.customers
        total_pages = max(1, -(-len(rows) // per_page))
        chunk = self._records(rows[(page - 1) * per_page: page * per_page])
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
        self._send(200, {"items": self._records(chunk), "next_cursor": nxt})

    def _records(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        drop = self.server.drop_fields
        return [_without(r, drop) for r in rows] if drop else rows


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
        self.traceparents: list[tuple[str, str | None]] = []  # (path, W3C traceparent) of each request
        self.fail_after: int | None = None  # fault injection for tests: answer 500 after N requests
        self.drop_fields: set[str] = set()  # dotted record fields left out of responses (contract tests)
        self.rewrite: Callable[[str, dict[str, Any]], dict[str, Any]] | None = None  # (path, body) -> body
        self.openapi: dict[str, Any] = openapi_document()
        self.products = catalogue.products()
        self.catalogue = catalogue.schema(self.products)


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

    @property
    def traceparents(self) -> list[tuple[str, str | None]]:
        """(path, W3C traceparent header) of every request, for tests of trace propagation."""
        return self._server.traceparents

    @property
    def drop_fields(self) -> set[str]:
        """Dotted record fields (``email``, ``address.city``) left out of every response; mutate in place."""
        return self._server.drop_fields

    @property
    def rewrite(self) -> Callable[[str, dict[str, Any]], dict[str, Any]] | None:
        """A function (URL path, body) -> body applied to every successful response (None: off)."""
        return self._server.rewrite

    @rewrite.setter
    def rewrite(self, fn: Callable[[str, dict[str, Any]], dict[str, Any]] | None) -> None:
        self._server.rewrite = fn

    @property
    def openapi(self) -> dict[str, Any]:
        """The OpenAPI document served at /api/openapi.json (mutable, for tests)."""
        return self._server.openapi

    def serve_catalogue(self, sdl: str = catalogue.SDL) -> None:
        """Serve the product catalogue with another GraphQL schema (a field removed, a type changed)."""
        self._server.catalogue = catalogue.schema(self._server.products, sdl)

    def reset_hooks(self) -> None:
        """Back to the faithful service: no dropped fields, no rewrite, the original OpenAPI document and
        GraphQL schema."""
        self._server.drop_fields.clear()
        self._server.rewrite = None
        self._server.openapi = openapi_document()
        self.serve_catalogue()

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
