"""Tracing and the call audit: the demo pipeline exported over OTLP/HTTP to a real loopback collector, the
``traceparent`` the demo CRM and ERP received, the ``_hub_calls`` rows, and the console exporter.

The collector is a plain HTTP server that decodes each ``ExportTraceServiceRequest`` (protobuf) the SDK's
exporter posts; nothing in the hub is mocked.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from hub.dagster.run import run_pipeline
from hub.demo.crm import DEMO_TOKEN, CRMService
from hub.demo.erp import DEMO_PASSWORD, ERPService
from hub.materialize import materialize_source
from hub.runtime import tracing
from hub.runtime.window import Window
from hub.spec import loads
from hub.warehouse import DuckDBWarehouse
from tests.conftest import demo_spec_text

pytestmark = pytest.mark.slow


@dataclass
class SpanRecord:
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]
    status_code: int  # 0 unset, 1 ok, 2 error
    service: str


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


class _Collector(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _CollectorHandler)
        self.spans: list[SpanRecord] = []
        self.bodies: list[bytes] = []
        self.paths: list[str] = []
        self.lock = threading.Lock()


class _CollectorHandler(BaseHTTPRequestHandler):
    server: _Collector

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        spans = []
        for rs in request.resource_spans:
            service = next((_value(a.value) for a in rs.resource.attributes if a.key == "service.name"), "")
            for ss in rs.scope_spans:
                for s in ss.spans:
                    spans.append(SpanRecord(s.name, s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(),
                                            {a.key: _value(a.value) for a in s.attributes}, s.status.code, service))
        with self.server.lock:
            self.server.spans.extend(spans)
            self.server.bodies.append(body)
            self.server.paths.append(self.path)
        out = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


@pytest.fixture
def collector(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Collector]:
    """A loopback OTLP/HTTP collector, and tracing configured to export to it (reset to off afterwards)."""
    server = _Collector()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "hub-test")
    assert tracing.configure(force=True) == ("otlp",)
    try:
        yield server
    finally:
        monkeypatch.delenv("OTEL_TRACES_EXPORTER")
        tracing.configure(force=True)
        server.shutdown()
        server.server_close()


def _calls(warehouse_path: Path, run_id: str) -> list[dict[str, Any]]:
    wh = DuckDBWarehouse(f"duckdb:///{warehouse_path}")
    return wh.query(f"select * from _hub_calls where run_id = '{run_id}' order by started_at").to_pylist()


def _traceparent(header: str | None) -> tuple[str, str]:
    assert header is not None, "the request carried no traceparent"
    version, trace_id, span_id, flags = header.split("-")
    assert version == "00" and len(trace_id) == 32 and len(span_id) == 16 and flags in ("00", "01")
    return trace_id, span_id


def test_demo_run_is_traced_and_every_call_audited(crm: CRMService, erp: ERPService, warehouse_path: Path,
                                                   tmp_path: Path, collector: _Collector) -> None:
    pipeline = loads(demo_spec_text(), tmp_path / "demo.yaml")
    instance = dg.DagsterInstance.ephemeral()
    crm.traceparents.clear()
    erp.traceparents.clear()
    outcomes = run_pipeline(pipeline, instance, assets=["crm_customers", "crm_contacts", "erp_orders",
                                                        "inventory_levels", "bank_statements", "contacts_by_region",
                                                        "order_payments", "open_orders_to_bank"],
                            partitions=["2024-01-02"], files=["statements_20240102.csv"])
    assert [o.success for o in outcomes] == [True, True, True], [o.error for o in outcomes]
    first, by_file, models = outcomes
    spans = list(collector.spans)
    assert collector.paths and set(collector.paths) == {"/v1/traces"}
    assert {s.service for s in spans} == {"hub-test"}

    # -- one trace per run: the run span (ids derived from the run id), asset spans under it, calls under those
    for outcome in outcomes:
        trace_id, run_span_id = (format(i, f"0{n}x") for i, n in zip(tracing.run_ids(outcome.run_id), (32, 16),
                                                                           strict=True))
        in_trace = [s for s in spans if s.trace_id == trace_id]
        runs = [s for s in in_trace if s.name.startswith("run ")]
        assert len(runs) == 1 and runs[0].span_id == run_span_id and runs[0].parent_id == ""
        assert runs[0].attributes["hub.run_id"] == outcome.run_id and runs[0].attributes["hub.status"] == "ok"
        assets = [s for s in in_trace if s.name.startswith("asset ")]
        assert {s.attributes["hub.asset"] for s in assets} == {a for a in outcome.assets if a != "erp_order_lines"}
        assert all(s.parent_id == run_span_id and s.attributes["hub.run_id"] == outcome.run_id for s in assets)
        asset_ids = {s.span_id for s in assets}
        calls = [s for s in in_trace if s not in runs and s not in assets]
        assert all(c.parent_id in asset_ids for c in calls), "every call span hangs from its asset's span"

    trace_id = format(tracing.run_ids(first.run_id)[0], "032x")
    spans_of = {s.attributes["hub.asset"]: s for s in spans if s.name.startswith("asset ")}
    customers = spans_of["crm_customers"]
    assert "hub.partition" not in customers.attributes and customers.attributes["hub.rows"] == 300  # reference data
    assert spans_of["crm_contacts"].attributes["hub.partition"] == "2024-01-02"
    assert customers.attributes["hub.calls"] == 6 and customers.attributes["hub.status"] == "ok"
    assert spans_of["contacts_by_region"].attributes["hub.asset_kind"] == "model"
    assert spans_of["bank_statements"].attributes["hub.partition"] == "statements_20240102.csv"

    def children(asset: str) -> list[SpanRecord]:
        return [s for s in spans if s.parent_id == spans_of[asset].span_id]

    # -- REST: one span per page request (6 pages of 50 customers), with the standard HTTP attributes
    pages = children("crm_customers")
    assert len(pages) == 6
    for page in pages:
        a = page.attributes
        assert (a["hub.system"], a["hub.operation"], a["hub.status"], a["hub.retries"], a["hub.rows"]) == \
            ("crm", "GET", "ok", 0, 50)
        assert a["hub.bytes"] > 1000 and a["http.response.status_code"] == 200 and a["http.request.method"] == "GET"
        assert a["url.full"].startswith(crm.url) and "/customers" in a["url.full"] and page.status_code != 2
    # ... and the CRM received each page request with that call's span as traceparent
    received = [_traceparent(h) for path, h in crm.traceparents if path == "/api/customers"]
    assert sorted(received) == sorted((trace_id, p.span_id) for p in pages)
    contacts = children("crm_contacts")
    assert {_traceparent(h) for path, h in crm.traceparents if path == "/api/contacts"} == \
        {(trace_id, c.span_id) for c in contacts}
    assert sum(c.attributes["hub.rows"] for c in contacts) == spans_of["crm_contacts"].attributes["hub.rows"]

    # -- SOAP: one span per operation call (page), the ERP saw their ids
    soap = [s for s in children("erp_orders") if s.attributes["hub.operation"] != "wsdl"]
    (wsdl,) = [s for s in children("erp_orders") if s.attributes["hub.operation"] == "wsdl"]  # cached afterwards
    assert wsdl.attributes["hub.system"] == "erp" and wsdl.attributes["hub.bytes"] > 0
    assert soap and all(s.attributes["hub.system"] == "erp" and s.attributes["hub.operation"] == "GetOrders"
                        and s.attributes["rpc.system"] == "soap" for s in soap)
    assert sum(s.attributes["hub.rows"] for s in soap) == spans_of["erp_orders"].attributes["hub.rows"] > 0
    assert sorted(_traceparent(h) for h in erp.traceparents) == sorted((trace_id, s.span_id) for s in soap)
    assert all(h is not None and h.endswith("-01") for h in erp.traceparents), "sampled"

    # -- SQL: the query; SFTP: the operations of one file (find, download, archive)
    (query,) = children("inventory_levels")
    assert (query.attributes["hub.system"], query.attributes["hub.operation"], query.attributes["hub.protocol"]) == \
        ("inventory", "query", "sql")
    assert query.attributes["hub.rows"] == spans_of["inventory_levels"].attributes["hub.rows"]
    sftp = children("bank_statements")
    ops = [s.attributes["hub.operation"] for s in sftp]
    assert "download" in ops and all(s.attributes["hub.system"] == "bank" for s in sftp)
    download = next(s for s in sftp if s.attributes["hub.operation"] == "download")
    assert download.attributes["hub.bytes"] > 0 and download.trace_id == format(tracing.run_ids(by_file.run_id)[0],
                                                                                 "032x")
    assert not children("contacts_by_region"), "a model makes no external call"

    # -- _hub_calls: one row per call span, same ids, counts and status
    rows = _calls(warehouse_path, first.run_id)
    call_spans = {s.span_id: s for s in spans if s.trace_id == trace_id and s.name.split(" ")[0] not in ("run",
                                                                                                         "asset")}
    assert {r["span_id"] for r in rows} == set(call_spans) and len(rows) == len(call_spans)
    for r in rows:
        span = call_spans[r["span_id"]]
        assert r["trace_id"] == trace_id and r["asset"] == span.attributes.get("hub.asset", r["asset"])
        assert (r["system"], r["operation"], r["status"], r["rows"], r["retries"]) == (
            span.attributes["hub.system"], span.attributes["hub.operation"], "ok", span.attributes.get("hub.rows"),
            span.attributes["hub.retries"])
        assert r["error"] is None and r["attempts"] == 1 and r["duration_ms"] >= 0
        assert r["started_at"] <= datetime.now(UTC)
    by_asset: dict[str, int] = {}
    for r in rows:
        by_asset[r["asset"]] = by_asset.get(r["asset"], 0) + 1
    assert by_asset["crm_customers"] == 6 and by_asset["crm_contacts"] == len(contacts)
    assert by_asset["erp_orders"] == len(soap) + 1 and by_asset["inventory_levels"] == 1
    assert {r["partition_key"] for r in rows if r["asset"] == "crm_contacts"} == {"2024-01-02"}
    assert {r["partition_key"] for r in rows if r["asset"] == "crm_customers"} == {None}
    assert [r["asset"] for r in _calls(warehouse_path, by_file.run_id)] == ["bank_statements"] * len(sftp)
    # the export (after the models, in the last run): its SFTP upload is a call of the export asset
    exported = _calls(warehouse_path, models.run_id)
    assert [(r["asset"], r["system"], r["operation"], r["status"]) for r in exported] == \
        [("open_orders_to_bank", "bank", "upload", "ok")]
    assert spans_of["open_orders_to_bank"].attributes["hub.asset_kind"] == "export"
    assert "***@" in exported[0]["target"] and "upload /" in exported[0]["target"]

    # -- a failed run: the CRM answers 500 after the first page; retried once (fast retries), then the load
    # rolls back, but its calls are still recorded, the failing one as an error with a masked message
    collector.spans.clear()
    crm.fail_after(1)
    try:
        bad = run_pipeline(pipeline, instance, assets=["crm_contacts"], partitions=["2024-01-02"])[0]
    finally:
        crm.fail_after(None)
    assert not bad.success and bad.error is not None and "HTTP 500" in bad.error
    failed = _calls(warehouse_path, bad.run_id)
    assert [r["status"] for r in failed] == ["ok", "error"]
    err = failed[-1]
    assert err["http_status"] == 500 and err["attempts"] == 2 and err["retries"] == 1 and err["rows"] is None
    assert "HTTPStatusError" in err["error"] and "HTTP 500" in err["error"] and "/api/contacts" in err["target"]
    bad_trace = format(tracing.run_ids(bad.run_id)[0], "032x")
    spans = list(collector.spans)
    (run_span,) = [s for s in spans if s.trace_id == bad_trace and s.name.startswith("run ")]
    assert run_span.status_code == 2 and run_span.attributes["hub.status"] == "error"
    (asset_span,) = [s for s in spans if s.trace_id == bad_trace and s.name == "asset crm_contacts"]
    assert asset_span.status_code == 2 and asset_span.attributes["hub.status"] == "error"
    error_span = next(s for s in spans if s.span_id == err["span_id"])
    assert error_span.status_code == 2 and error_span.attributes["hub.retries"] == 1
    assert error_span.attributes["hub.status"] == "error" and error_span.attributes["error.type"] == "HTTPStatusError"

    # -- no secret in the audit table nor in anything exported
    everything = json.dumps(_calls(warehouse_path, first.run_id) + failed, default=str).encode() + \
        b"".join(collector.bodies)
    for secret in (DEMO_TOKEN, DEMO_PASSWORD, "demo-bank-pass-51c0"):
        assert secret.encode() not in everything


def test_calls_are_audited_with_tracing_off(crm: CRMService, warehouse_path: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Off (the default), nothing is exported, but every call is a row of ``_hub_calls`` and the partner still
    receives a (not sampled) traceparent in the run's trace, whose span id is the row's."""
    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
    assert tracing.configure(force=True) == () and not tracing.enabled()
    pipeline = loads(demo_spec_text(), tmp_path / "demo.yaml")
    crm.traceparents.clear()
    window = Window(key="2024-01-02", start=datetime(2024, 1, 2, tzinfo=UTC), end=datetime(2024, 1, 3, tzinfo=UTC))
    outcome = materialize_source(pipeline, "crm_customers", window=window, run_id="run-off")
    assert outcome.load.rows_loaded == 300
    rows = _calls(warehouse_path, "run-off")
    trace_id = format(tracing.run_ids("run-off")[0], "032x")
    assert len(rows) == 6 and {r["status"] for r in rows} == {"ok"} and {r["trace_id"] for r in rows} == {trace_id}
    assert sum(r["rows"] for r in rows) == 300 and all(r["bytes"] > 0 for r in rows)
    headers = [h for path, h in crm.traceparents if path == "/api/customers"]
    assert sorted(_traceparent(h) for h in headers) == sorted((trace_id, r["span_id"]) for r in rows)
    assert all(h is not None and h.endswith("-00") for h in headers), "not sampled: nothing is recorded"


def test_console_exporter_prints_spans(crm: CRMService, warehouse_path: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    try:
        assert tracing.configure(force=True) == ("console",)
        pipeline = loads(demo_spec_text(), tmp_path / "demo.yaml")
        window = Window(key="2024-01-02", start=datetime(2024, 1, 2, tzinfo=UTC),
                        end=datetime(2024, 1, 3, tzinfo=UTC))
        materialize_source(pipeline, "crm_customers", window=window, run_id="run-console")
        first = capsys.readouterr().err
        line = "      concurrency: 4\n"
        with_cache = demo_spec_text().replace(line, line + "      cache: {ttl: 1h}\n")
        cached = loads(with_cache, tmp_path / "demo.yaml")
        for run in ("run-fill", "run-cached"):
            materialize_source(cached, "crm_customers", window=window, run_id=run)
    finally:
        monkeypatch.delenv("OTEL_TRACES_EXPORTER")
        tracing.configure(force=True)
    printed = [json.loads(line) for line in first.splitlines() if line.startswith("{")]
    names = [p["name"] for p in printed]
    assert names.count("crm GET") == 6 and names.count("asset crm_customers") == 1
    asset = next(p for p in printed if p["name"] == "asset crm_customers")
    assert asset["attributes"]["hub.rows"] == 300 and asset["context"]["trace_id"] == \
        "0x" + format(tracing.run_ids("run-console")[0], "032x")
    assert DEMO_TOKEN not in json.dumps(printed)
    # a page served from the HTTP cache is still a call (and an audit row), marked on its span
    later = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    cache = [(p["attributes"].get("hub.cache"), p["context"]["trace_id"]) for p in later if p["name"] == "crm GET"]
    fill, hit = ("0x" + format(tracing.run_ids(r)[0], "032x") for r in ("run-fill", "run-cached"))
    assert sorted(cache, key=str) == sorted([(None, fill)] * 6 + [("hit", hit)] * 6, key=str)
    rows = _calls(warehouse_path, "run-cached")
    assert len(rows) == 6 and {(r["status"], r["http_status"]) for r in rows} == {("ok", 200)}


def test_run_span_of_a_dagster_launched_run(crm: CRMService, warehouse_path: Path, tmp_path: Path,
                                            collector: _Collector) -> None:
    """A run launched by Dagster itself (UI, schedule): the daemon's run status sensor emits the run span, with
    the ids the asset spans (emitted by the step) point to; ``hub run``'s runs are left to ``hub run``."""
    from hub.dagster.definitions import pipeline_assets
    from hub.dagster.tracing import run_trace_sensors

    pipeline = loads(demo_spec_text(), tmp_path / "demo.yaml")
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(pipeline_assets(pipeline), instance=instance, selection=["crm_customers"],
                            tags={"hub/pipeline": pipeline.name})
    assert result.success
    trace_id, run_span_id = tracing.run_ids(result.run_id)
    (asset,) = [s for s in collector.spans if s.name == "asset crm_customers"]
    assert asset.parent_id == format(run_span_id, "016x") and asset.trace_id == format(trace_id, "032x")
    assert not [s for s in collector.spans if s.name.startswith("run ")], "the step does not emit the run span"

    sensors = {s.name: s for s in run_trace_sensors()}
    assert set(sensors) == {"hub_run_traces", "hub_run_traces_failed"}
    run = instance.get_run_by_id(result.run_id)
    assert run is not None
    context = dg.build_run_status_sensor_context(sensor_name="hub_run_traces", dagster_instance=instance,
                                                 dagster_run=run, dagster_event=result.get_run_success_event())
    sensors["hub_run_traces"](context)
    (run_span,) = [s for s in collector.spans if s.name.startswith("run ")]
    assert (run_span.trace_id, run_span.span_id, run_span.parent_id) == (asset.trace_id, asset.parent_id, "")
    assert run_span.attributes["hub.launched_by"] == "dagster" and run_span.attributes["hub.status"] == "ok"
    assert run_span.attributes["hub.pipeline"] == pipeline.name

    cli_run = instance.get_run_by_id(run_pipeline(pipeline, instance, assets=["crm_customers"])[0].run_id)
    assert cli_run is not None
    before = len([s for s in collector.spans if s.name.startswith("run ")])
    sensors["hub_run_traces"](dg.build_run_status_sensor_context(
        sensor_name="hub_run_traces", dagster_instance=instance, dagster_run=cli_run,
        dagster_event=result.get_run_success_event()))
    tracing.flush()
    assert len([s for s in collector.spans if s.name.startswith("run ")]) == before, "no second span for hub run"


def test_calls_are_audited_in_postgresql_for_good_and_failed_loads(crm: CRMService, tmp_path: Path, pg_url: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from hub.errors import HubError
    from hub.warehouse import connect

    url = f"{pg_url}?schema=tracing"
    monkeypatch.setenv("HUB_WAREHOUSE", url)
    pipeline = loads(demo_spec_text(), tmp_path / "demo.yaml")
    assert pipeline.warehouse_kind == "postgres"
    window = Window(key="2024-01-02", start=datetime(2024, 1, 2, tzinfo=UTC), end=datetime(2024, 1, 3, tzinfo=UTC))
    materialize_source(pipeline, "crm_customers", window=window, run_id="pg-good")
    crm.fail_after(1)
    try:
        with pytest.raises(HubError, match="HTTP 500"):
            materialize_source(pipeline, "crm_contacts", window=window, run_id="pg-bad")
    finally:
        crm.fail_after(None)
    wh = connect(url)
    assert "crm_contacts" not in wh.tables(), "the failed load rolled back"
    rows = wh.query("SELECT run_id, status, rows, retries, error FROM _hub_calls "
                    "ORDER BY run_id, started_at").to_pylist()
    good = [r for r in rows if r["run_id"] == "pg-good"]
    bad = [r for r in rows if r["run_id"] == "pg-bad"]
    assert len(good) == 6 and sum(r["rows"] for r in good) == 300 and {r["status"] for r in good} == {"ok"}
    assert [r["status"] for r in bad] == ["ok", "error"] and bad[-1]["retries"] == 1
    assert "HTTP 500" in bad[-1]["error"] and DEMO_TOKEN not in json.dumps(rows)


def test_an_unreachable_collector_does_not_stall_every_asset(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK's flush waits out the exporter's retries; the hub waits a bounded time once, then pauses flushing."""
    import socket
    import time

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "2")
    try:
        tracing.configure(force=True)
        with tracing.call("crm", "GET", "GET http://127.0.0.1/x", protocol="rest"):
            pass
        started = time.monotonic()
        tracing.flush(timeout_ms=300)
        assert time.monotonic() - started < 1.5
        started = time.monotonic()
        with tracing.asset_scope("a", run_id="r") as scope, \
                tracing.call("crm", "GET", "GET http://127.0.0.1/y", protocol="rest"):
            pass
        assert time.monotonic() - started < 0.5, "flushing is paused after a failed export"
        assert len(scope.calls) == 1 and scope.calls[0].status == "ok"
    finally:
        monkeypatch.delenv("OTEL_TRACES_EXPORTER")
        tracing.configure(force=True)
