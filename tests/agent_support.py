"""Helpers of the agent-layer tests: a partner REST API with write endpoints (the demo CRM only reads),
described by an OpenAPI 3.1 document, and a pipeline spec that declares it with an agent policy."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def partner_openapi() -> dict[str, Any]:
    """OpenAPI 3.1: customers (GET list, POST create, DELETE one), a POST search marked as a read."""
    customer = {"type": "object", "required": ["id", "name"],
                "properties": {"id": {"type": "integer"}, "name": {"type": "string"},
                               "email": {"type": ["string", "null"], "format": "email"}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Partner API", "version": "1"},
        "paths": {
            "/customers": {
                "get": {"operationId": "listCustomers", "summary": "All customers of the partner",
                        "parameters": [{"name": "limit", "in": "query", "schema": {"type": "integer"}}],
                        "responses": {"200": {"description": "ok", "content": {"application/json": {"schema": {
                            "type": "object", "properties": {"items": {"type": "array", "items": {
                                "$ref": "#/components/schemas/Customer"}}}}}}}}},
                "post": {"operationId": "createCustomer", "summary": "Create a customer",
                         "requestBody": {"required": True, "content": {"application/json": {"schema": {
                             "$ref": "#/components/schemas/NewCustomer"}}}},
                         "responses": {"201": {"description": "created", "content": {"application/json": {
                             "schema": {"$ref": "#/components/schemas/Customer"}}}}}},
            },
            "/customers/{id}": {
                "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}],
                "delete": {"operationId": "deleteCustomer", "summary": "Remove a customer",
                           "responses": {"204": {"description": "gone"}}},
            },
            "/customers/search": {
                "post": {"operationId": "searchCustomers", "summary": "Find customers by name",
                         "x-hub-side-effect": "read",
                         "requestBody": {"content": {"application/json": {"schema": {
                             "type": "object", "properties": {"name": {"type": "string"}}}}}},
                         "responses": {"200": {"description": "ok", "content": {"application/json": {"schema": {
                             "type": "array", "items": {"$ref": "#/components/schemas/Customer"}}}}}}},
            },
        },
        "components": {"schemas": {
            "Customer": customer,
            "NewCustomer": {"type": "object", "required": ["name"], "properties": {
                "name": {"type": "string"}, "email": {"type": "string"}}},
        }},
    }


class _Partner(BaseHTTPRequestHandler):
    store: dict[int, dict[str, Any]]
    posts: list[dict[str, Any]]

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, doc: Any) -> None:
        body = json.dumps(doc).encode() if doc is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _authorized(self) -> bool:
        if self.headers.get("Authorization") != "Bearer partner-token":
            self._send(401, {"error": "unauthorized"})
            return False
        return True

    def do_GET(self) -> None:
        if self._authorized():
            self._send(200, {"items": list(self.server.store.values())})  # type: ignore[attr-defined]

    def do_POST(self) -> None:
        if not self._authorized():
            return
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        store = self.server.store  # type: ignore[attr-defined]
        if self.path.startswith("/customers/search"):
            self._send(200, [c for c in store.values() if body.get("name", "") in c["name"]])
            return
        self.server.posts.append(body)  # type: ignore[attr-defined]
        new = {"id": max(store, default=0) + 1, "name": body["name"], "email": body.get("email")}
        store[new["id"]] = new
        self._send(201, new)

    def do_DELETE(self) -> None:
        if self._authorized():
            self.server.store.pop(int(self.path.rsplit("/", 1)[-1]), None)  # type: ignore[attr-defined]
            self._send(204, None)


@contextmanager
def partner_api() -> Iterator[Any]:
    """The partner API on a free loopback port: ``.url``, ``.store``, ``.posts`` (bodies of creates)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Partner)
    server.store = {1: {"id": 1, "name": "Acme", "email": "a@acme.example"},  # type: ignore[attr-defined]
                    2: {"id": 2, "name": "Globex", "email": None}}
    server.posts = []  # type: ignore[attr-defined]
    server.url = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def partner_spec(folder: Path, url: str, *, allow: list[str] | None = None, budget: int | None = None,
                 rate_limit: float | None = None) -> Path:
    """A pipeline spec declaring only the partner API (its OpenAPI document in a file) and its agent policy."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "partner.openapi.json").write_text(json.dumps(partner_openapi()))
    agent = {"allow_writes": allow or []}
    system: dict[str, Any] = {"description": "A partner's customer API",
                              "rest": {"base_url": url, "auth": {"bearer": "${PARTNER_TOKEN}"},
                                       "openapi": str(folder / "partner.openapi.json")}}
    limits = {k: v for k, v in (("budget", budget), ("rate_limit", rate_limit)) if v is not None}
    if limits:
        system["agent"] = limits
    spec = {"pipeline": "partner", "partitions": "none", "systems": {"partner": system}, "agent": agent}
    path = folder / "partner.yaml"
    path.write_text(json.dumps(spec, indent=2))  # JSON is YAML
    return path
