"""Helpers of the flow tests: a partner REST API that records writes (payments, activities, tasks) on a
loopback port, with the failures a real partner has — a write committed and then the connection dropped,
a poison record refused, a server error — and a pipeline spec with a warehouse table of items."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pyarrow as pa


def openapi() -> dict[str, Any]:
    record = {"type": "object", "required": ["ref", "amount"], "additionalProperties": False,
              "properties": {"ref": {"type": "string"}, "amount": {"type": "number", "minimum": 0},
                             "note": {"type": "string", "maxLength": 40}}}
    task = {"type": "object", "required": ["ref", "reason"], "additionalProperties": False,
            "properties": {"ref": {"type": "string"}, "reason": {"type": "string"}}}
    ok = {"description": "ok", "content": {"application/json": {"schema": {"type": "object"}}}}
    return {
        "openapi": "3.0.3", "info": {"title": "Flow partner", "version": "1"},
        "paths": {
            "/records": {
                "post": {"operationId": "createRecord", "requestBody": {"required": True, "content": {
                    "application/json": {"schema": record}}}, "responses": {"201": ok}},
                "get": {"operationId": "findRecords", "parameters": [
                    {"name": "ref", "in": "query", "required": True, "schema": {"type": "string"}}],
                        "responses": {"200": {"description": "ok", "content": {"application/json": {"schema": {
                            "type": "object", "properties": {"items": {"type": "array", "items": {
                                "type": "object"}}}}}}}}}},
            "/records/{id}": {
                "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}],
                "delete": {"operationId": "deleteRecord", "responses": {"200": ok}}},
            "/tasks": {"post": {"operationId": "createTask", "requestBody": {"required": True, "content": {
                "application/json": {"schema": task}}}, "responses": {"201": ok}}},
            "/confirmations": {"post": {"operationId": "confirm", "requestBody": {"required": True, "content": {
                "application/json": {"schema": {"type": "object", "required": ["ref"], "properties": {
                    "ref": {"type": "string"}}}}}}, "responses": {"201": ok}}},
        },
    }


@dataclass
class PartnerState:
    records: dict[int, dict[str, Any]] = field(default_factory=dict)
    tasks: list[dict[str, Any]] = field(default_factory=list)
    log: list[str] = field(default_factory=list)  # every write, in order: "POST /records a1", "DELETE /records/3"
    keys: dict[str, tuple[int, Any]] = field(default_factory=dict)  # Idempotency-Key -> first answer
    drop_after_commit: set[str] = field(default_factory=set)  # refs whose write is committed, then the line cut
    drop_once: bool = True
    poison: set[str] = field(default_factory=set)  # refs refused with 422
    fail_confirm: set[str] = field(default_factory=set)  # refs whose confirmation fails with 500
    delay: float = 0.0  # seconds every write takes (for the SIGKILL test)
    traceparents: list[str | None] = field(default_factory=list)
    times: list[float] = field(default_factory=list)  # monotonic arrival time of every POST
    next_id: int = 1
    lock: threading.Lock = field(default_factory=threading.Lock)

    def refs(self) -> list[str]:
        return sorted(r["ref"] for r in self.records.values())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, doc: Any) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _drop(self) -> None:
        self.close_connection = True
        self.connection.shutdown(2)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        st = self.server.state
        if url.path == "/api/openapi.json":
            self._send(200, openapi())
            return
        if url.path == "/api/records":
            ref = parse_qs(url.query).get("ref", [""])[-1]
            with st.lock:
                items = [r for r in st.records.values() if r["ref"] == ref]
            self._send(200, {"items": items})
            return
        self._send(404, {"error": url.path})

    def do_POST(self) -> None:
        import time

        url = urlsplit(self.path)
        st = self.server.state
        doc = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        st.traceparents.append(self.headers.get("traceparent"))
        st.times.append(time.monotonic())
        key = self.headers.get("Idempotency-Key")
        answer: Any = None
        if st.delay:
            time.sleep(st.delay)
        with st.lock:
            if key and key in st.keys:  # the first answer per key, as Stripe does
                status, first = st.keys[key]
                self._send(status, first)
                return
            ref = str(doc.get("ref"))
            if ref in st.poison:
                self._send(422, {"error": f"record {ref} is refused"})
                return
            if url.path == "/api/records":
                rid = st.next_id
                st.next_id += 1
                st.records[rid] = {"id": rid, **doc}
                st.log.append(f"POST /records {ref}")
                answer = {"id": rid, "ref": ref}
            elif url.path == "/api/tasks":
                st.tasks.append(doc)
                st.log.append(f"POST /tasks {ref}")
                answer = {"task": len(st.tasks), "ref": ref}
            elif url.path == "/api/confirmations":
                if ref in st.fail_confirm:
                    self._send(500, {"error": "confirmation service down"})
                    return
                st.log.append(f"POST /confirmations {ref}")
                answer = {"confirmed": ref}
            else:
                self._send(404, {"error": url.path})
                return
            if key:
                st.keys[key] = (201, answer)
            drop = ref in st.drop_after_commit
            if drop and st.drop_once:
                st.drop_after_commit.discard(ref)
        if drop:
            self._drop()  # committed, and the answer is lost
            return
        self._send(201, answer)

    def do_DELETE(self) -> None:
        url = urlsplit(self.path)
        st = self.server.state
        rid = int(url.path.rsplit("/", 1)[-1])
        with st.lock:
            gone = st.records.pop(rid, None)
            st.log.append(f"DELETE /records/{rid}")
        self._send(200 if gone else 404, {"deleted": rid})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: PartnerState


@contextmanager
def partner() -> Iterator[tuple[str, PartnerState]]:
    """The partner on a free loopback port: (its /api URL, its state)."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.state = PartnerState()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api", server.state
    finally:
        server.shutdown()
        server.server_close()


def write_items(warehouse: Path, rows: list[dict[str, Any]], table: str = "payments") -> None:
    """The flow's input table, written straight into the DuckDB warehouse."""
    import duckdb

    warehouse.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(warehouse))
    try:
        data = pa.Table.from_pylist(rows)  # noqa: F841 - read by DuckDB's replacement scan
        con.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM data")
    finally:
        con.close()


def flow_spec(folder: Path, url: str, flows: str, *, extra_sources: str = "", partner_extra: str = "") -> Path:
    """A pipeline spec with the partner as system ``partner`` and a model ``payments`` over the items table
    ``raw_payments`` (a model, so the spec knows the table), plus *flows* (YAML text under ``flows:``)."""
    (folder / "pyproject.toml").write_text("[project]\nname='t'\n")
    spec = folder / "flows.yaml"
    spec.write_text(f"""pipeline: flowtest
warehouse: duckdb:///{folder / 'warehouse.duckdb'}
systems:
  partner:
    rest:
      base_url: {url}
      openapi: {url}/openapi.json
      timeout: 5
{partner_extra}{extra_sources}models:
  payments:
    sql: SELECT * FROM raw_payments
    depends_on: [raw_payments]
flows:
{flows}""")
    return spec
