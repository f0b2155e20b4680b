"""The SOAP adapter against the demo ERP (spyne, on loopback) and real-world WSDLs: typing, paging,
SOAP 1.1/1.2, WS-Security, basic auth, client certificates, faults, retries, contract mismatches,
XML attacks, discovery."""

from __future__ import annotations

import base64
import json
import ssl
import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import trustme
from typer.testing import CliRunner

from adapters.soap import SoapSource, SoapSourceConfig, SoapSystemConfig, load_wsdl
from adapters.soap.catalog import describe
from hub.cli.main import app
from hub.demo.erp import DEMO_PASSWORD, DEMO_USER, TOKEN_BATCH, ERPService, orders_for
from hub.errors import AdapterError, HTTPStatusError, ResponseFormatError, SoapFault, TransportError, XMLSecurityError
from tests.conftest import REPO

DATA = REPO / "tests" / "data" / "wsdl"
DAY1, DAY3 = "2024-01-01T00:00:00+00:00", "2024-01-03T00:00:00+00:00"
EXPECTED = orders_for(date(2024, 1, 1), date(2024, 1, 3))
FAST = {"max": 3, "backoff": 0.01}


def system(erp: ERPService, **kw: Any) -> SoapSystemConfig:
    ut = kw.pop("username_token", {"username": DEMO_USER, "password": DEMO_PASSWORD, "digest": True})
    return SoapSystemConfig.model_validate({"wsdl": erp.wsdl_url, "username_token": ut, "retries": FAST, **kw})


def orders_source(erp: ERPService, *, operation: str = "GetOrders", params: dict[str, Any] | None = None,
                  paginate: dict[str, Any] | None = None, lists: frozenset[str] = frozenset(), records: str = "Order",
                  batch_size: int = 10_000, **kw: Any) -> SoapSource:
    src = SoapSourceConfig.model_validate({
        "operation": operation, "records": records,
        "params": {"FromDate": DAY1, "ToDate": DAY3, **(params if params is not None else {"PageSize": 20})},
        "paginate": paginate if paginate is not None else {"page_number": {"param": "Page"}}})
    return SoapSource(system(erp, **kw), src, lists=lists, batch_size=batch_size)


def rows(src: SoapSource) -> list[dict[str, Any]]:
    return [r for b in src.batches() for r in b.to_pylist()]


# --- records and types ----------------------------------------------------------------------------------

def test_orders_are_typed_by_the_wsdl(erp: ERPService) -> None:
    src = orders_source(erp)
    batches = list(src.batches())
    schema = batches[0].schema
    assert schema.field("OrderId").type == pa.int64()
    assert schema.field("OrderDate").type == pa.timestamp("us", tz="UTC")
    assert schema.field("Amount").type == pa.decimal128(14, 2), "precision from totalDigits/fractionDigits"
    assert schema.field("Paid").type == pa.bool_() and schema.field("ShipDate").type == pa.date32()
    assert schema.field("Status").type == pa.string(), "enumerations are strings"
    assert schema.field("Attachment").type == pa.binary()
    assert schema.field("Customer").type == pa.struct([("Id", pa.int64()), ("Name", pa.string()),
                                                       ("Region", pa.string())])
    got = [r for b in batches for r in b.to_pylist()]
    assert [r["OrderId"] for r in got] == [o["OrderId"] for o in EXPECTED]
    first, want = got[0], EXPECTED[0]
    assert first["OrderDate"] == want["OrderDate"].astimezone(UTC), "offsets normalized to UTC"
    assert first["Amount"] == want["Amount"] and isinstance(first["Amount"], Decimal)
    assert first["Customer"] == want["Customer"]
    nil_note = next(r for r, o in zip(got, EXPECTED, strict=True) if o["Note"] is None)
    assert nil_note["Note"] is None, "xsi:nil is NULL"
    with_attachment = next(r for r, o in zip(got, EXPECTED, strict=True) if o["Attachment"])
    assert with_attachment["Attachment"] == f"order-{with_attachment['OrderId']}".encode(), "base64Binary decoded"
    # repeated children default to a JSON column
    lines = json.loads(first["Lines"]["OrderLine"])
    assert lines == [{**ln, "UnitPrice": str(ln["UnitPrice"])} for ln in want["Lines"]]
    assert src.stats.pages == 5 and src.stats.records == len(EXPECTED), "page 5 is the empty one"


def test_repeated_children_kept_as_lists_for_child_tables(erp: ERPService) -> None:
    src = orders_source(erp, lists=frozenset({"Lines.OrderLine"}))
    batch = next(iter(src.batches()))
    line_type = batch.schema.field("Lines").type.field("OrderLine").type
    assert line_type == pa.list_(pa.struct([("LineNo", pa.int64()), ("Sku", pa.string()),
                                            ("Quantity", pa.int64()), ("UnitPrice", pa.decimal128(12, 2))]))


def test_continuation_token_paging(erp: ERPService) -> None:
    src = orders_source(erp, operation="ListOrders", params={},
                        paginate={"token": {"param": "ContinuationToken", "element": "ContinuationToken"}})
    assert [r["OrderId"] for r in rows(src)] == [o["OrderId"] for o in EXPECTED]
    assert src.stats.pages == -(-len(EXPECTED) // TOKEN_BATCH)


def test_offset_paging_survives_a_capped_page_size(erp: ERPService) -> None:
    src = orders_source(erp, operation="GetOrdersFrom", params={},
                        paginate={"offset": {"param": "Offset", "limit_param": "Limit", "limit": 100}})
    assert [r["OrderId"] for r in rows(src)] == [o["OrderId"] for o in EXPECTED], \
        "the service returns 40 when asked for 100: paging goes on until an empty page"


def test_small_batches_and_max_pages(erp: ERPService) -> None:
    src = orders_source(erp, batch_size=7)
    assert all(b.num_rows <= 7 for b in src.batches())
    stop = orders_source(erp, paginate={"page_number": {"param": "Page"}, "max_pages": 2})
    with pytest.raises(ResponseFormatError, match=r"more than paginate\.max_pages=2 pages"):
        rows(stop)


def test_soap_12_port(erp: ERPService) -> None:
    src = orders_source(erp, soap_version="1.2")
    assert len(rows(src)) == len(EXPECTED)
    assert src.stats.url.endswith("/erp12")
    assert all(ct.startswith("application/soap+xml") for ct in erp.content_types)


# --- security ---------------------------------------------------------------------------------------------

def test_username_token_plain_text_with_timestamp(erp: ERPService) -> None:
    src = orders_source(erp, username_token={"username": DEMO_USER, "password": DEMO_PASSWORD})
    assert len(rows(src)) == len(EXPECTED)
    sent = erp.requests[0].decode()
    assert "#PasswordText" in sent and "wsu:Timestamp" in sent and "wsu:Expires" in sent


def test_username_token_digest_never_sends_the_password(erp: ERPService) -> None:
    assert len(rows(orders_source(erp))) == len(EXPECTED)
    assert all(DEMO_PASSWORD.encode() not in body for body in erp.requests)
    assert b"#PasswordDigest" in erp.requests[0] and b"Nonce" in erp.requests[0]


@pytest.mark.parametrize("token", [
    {"username": DEMO_USER, "password": "wrong-password-1", "digest": True},
    {"username": DEMO_USER, "password": DEMO_PASSWORD, "timestamp": False},
])
def test_failed_authentication_is_a_fault_and_not_retried(erp: ERPService, token: dict[str, Any]) -> None:
    src = orders_source(erp, username_token=token)
    with pytest.raises(SoapFault) as info:
        rows(src)
    assert info.value.code == "wsse:FailedAuthentication" and info.value.operation == "GetOrders"
    assert "authentication failed" in str(info.value) and "wrong-password-1" not in str(info.value)
    assert len(erp.requests) == 1, "a fault saying the request is wrong is not retried"


def test_http_basic_auth() -> None:
    with ERPService(basic=("svc", "basic-pw-42")) as erp:
        assert len(rows(orders_source(erp, basic={"username": "svc", "password": "basic-pw-42"}))) == len(EXPECTED)
        with pytest.raises(HTTPStatusError) as info:
            rows(orders_source(erp, basic={"username": "svc", "password": "nope-nope"}))
        assert info.value.status == 401 and "/erp" in str(info.value) and "nope-nope" not in str(info.value)


def test_client_certificate_over_tls(tmp_path: Path) -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    ca.configure_trust(server_ctx)
    server_ctx.verify_mode = ssl.CERT_REQUIRED  # no client certificate, no TLS session
    ca_file, client_pem = tmp_path / "ca.pem", tmp_path / "client.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    client = ca.issue_cert("hub-client@example.test")
    client.private_key_and_cert_chain_pem.write_to_path(str(client_pem))
    with ERPService(tls=server_ctx) as erp:
        wsdl_file = tmp_path / "erp.wsdl"
        wsdl_file.write_bytes(erp.wsdl())  # the service publishes its WSDL; here it is a file
        ok = orders_source(erp, wsdl=str(wsdl_file), address=erp.url, verify=str(ca_file),
                           client_cert={"cert": str(client_pem)})
        assert len(rows(ok)) == len(EXPECTED)
        without = orders_source(erp, wsdl=str(wsdl_file), address=erp.url, verify=str(ca_file),
                                retries={"max": 0})
        with pytest.raises(TransportError, match=r"GetOrders at https://127\.0\.0\.1"):
            rows(without)
        untrusted = orders_source(erp, wsdl=str(wsdl_file), address=erp.url, client_cert={"cert": str(client_pem)},
                                  retries={"max": 0})
        with pytest.raises(TransportError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
            rows(untrusted)


# --- faults, retries, errors ----------------------------------------------------------------------------

def test_client_fault_names_operation_code_reason_and_detail(erp: ERPService) -> None:
    src = orders_source(erp, params={"FromDate": DAY3, "ToDate": DAY1})
    with pytest.raises(SoapFault) as info:
        rows(src)
    fault = info.value
    assert fault.code.endswith("Client.InvalidRange") and fault.reason == "FromDate must be before ToDate"
    assert fault.detail is not None and "FromDate=2024-01-03T00:00:00+00:00" in fault.detail
    assert str(fault).startswith("SOAP Fault from operation GetOrders at http://127.0.0.1")
    assert len(erp.requests) == 1


def test_5xx_is_retried(erp: ERPService) -> None:
    erp.fail_next.extend([503, 502])
    src = orders_source(erp)
    assert [r["OrderId"] for r in rows(src)] == [o["OrderId"] for o in EXPECTED]
    assert src.stats.retries == 2


def test_http_error_names_url_and_status(erp: ERPService) -> None:
    erp.fail_next.extend([404])
    with pytest.raises(HTTPStatusError, match=r"GetOrders: POST http://127\.0\.0\.1:\d+/erp: HTTP 404") as info:
        rows(orders_source(erp))
    assert info.value.status == 404
    erp.fail_next.extend([500] * 4)
    with pytest.raises(HTTPStatusError, match=r"HTTP 500 Injected \(gave up after 4 attempts\)"):
        rows(orders_source(erp))


def test_read_timeout(erp: ERPService) -> None:
    erp.delay_next.extend([2.0])
    src = orders_source(erp, timeout={"connect": 2, "read": 0.3}, retries={"max": 0})
    started = time.monotonic()
    with pytest.raises(TransportError, match=r"GetOrders at .*ReadTimeout"):
        rows(src)
    assert time.monotonic() - started < 1.9


def test_renamed_element_names_the_element_path(erp: ERPService) -> None:
    erp.rewrite = lambda body: body.replace(b"tns:Order>", b"tns:PurchaseOrder>")
    try:
        with pytest.raises(ResponseFormatError) as info:
            rows(orders_source(erp))
    finally:
        erp.rewrite = None
    msg = str(info.value)
    assert "response does not match the WSDL: unexpected element " \
           "Envelope/Body/GetOrdersResponse/GetOrdersResult/PurchaseOrder (expected one of: Order)" in msg


def test_value_that_breaks_its_type_marks_only_its_record(erp: ERPService) -> None:
    bad_id = EXPECTED[1]["OrderId"]
    needle = f"<tns:OrderId>{bad_id}</tns:OrderId>".encode()

    erp.rewrite = lambda body: _corrupt_amount(body, needle) if needle in body else body
    try:
        got = rows(orders_source(erp))
    finally:
        erp.rewrite = None
    errors = {r["OrderId"]: r["_hub_error"] for r in got if r.get("_hub_error")}
    assert list(errors) == [bad_id]
    assert errors[bad_id].startswith("Amount: 'twelve' is not a valid xsd:Order_AmountType")
    assert len(got) == len(EXPECTED), "the other records are intact"


def test_unknown_operation_records_and_parameters(erp: ERPService) -> None:
    with pytest.raises(AdapterError, match=r"operation GetInvoices is not in port ERP .*GetOrders"):
        rows(orders_source(erp, operation="GetInvoices"))
    with pytest.raises(AdapterError, match="its response has no element named 'Invoice'"):
        rows(orders_source(erp, records="Invoice"))
    with pytest.raises(AdapterError, match=r"parameters .*'Pagesize'.* do not fit the WSDL"):
        rows(orders_source(erp, params={"Pagesize": 3}))


# --- XML attacks -------------------------------------------------------------------------------------------

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>
<tns:GetOrdersResponse xmlns:tns="urn:hub:demo:erp"><tns:GetOrdersResult><tns:Order>
<tns:OrderId>1</tns:OrderId><tns:Note>&xxe;</tns:Note></tns:Order></tns:GetOrdersResult>
</tns:GetOrdersResponse></soap:Body></soap:Envelope>"""

LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">]>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><x>&lol4;</x></soap:Body>
</soap:Envelope>"""


@pytest.mark.parametrize("payload", [XXE, LAUGHS], ids=["xxe", "billion-laughs"])
def test_hostile_responses_are_refused(erp: ERPService, payload: bytes) -> None:
    erp.rewrite = lambda body: payload
    try:
        with pytest.raises(XMLSecurityError, match="the document has a DTD") as info:
            rows(orders_source(erp))
    finally:
        erp.rewrite = None
    assert "root:" not in str(info.value), "no file content leaks"


def test_hostile_wsdl_is_refused(tmp_path: Path) -> None:
    wsdl = tmp_path / "evil.wsdl"
    wsdl.write_text('<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                    '<definitions xmlns="http://schemas.xmlsoap.org/wsdl/">&x;</definitions>')
    with pytest.raises(XMLSecurityError, match="refused"):
        load_wsdl(SoapSystemConfig(wsdl=str(wsdl)))


# --- WSDL loading and discovery -----------------------------------------------------------------------------

def test_wsdl_is_cached(erp: ERPService, tmp_path: Path) -> None:
    before = erp.wsdl_gets
    for _ in range(3):
        rows(SoapSource(system(erp), SoapSourceConfig(operation="GetCustomer", params={"CustomerId": 5},
                                                      records="GetCustomerResult"), cache_dir=tmp_path))
    assert erp.wsdl_gets - before == 1, "downloaded once, then read from the cache"
    rows(SoapSource(system(erp, wsdl_cache_ttl=0), SoapSourceConfig(operation="GetCustomer", params={"CustomerId": 5},
                                                                    records="GetCustomerResult"), cache_dir=tmp_path))
    assert erp.wsdl_gets - before == 2, "wsdl_cache_ttl: 0 always downloads"


def test_catalog_of_the_erp(erp: ERPService) -> None:
    catalog = describe(load_wsdl(system(erp)))
    [service] = catalog["services"]
    assert service["name"] == "ERPService"
    assert {(p["name"], p["soap_version"]) for p in service["ports"]} == {("ERP", "1.1"), ("ERP12", "1.2")}
    ops = {op["name"]: op for op in service["ports"][0]["operations"]}
    assert set(ops) == {"GetOrders", "ListOrders", "GetOrdersFrom", "GetCustomer", "MarkOrderPaid"}

    def prop(schema: dict[str, Any], *names: str) -> dict[str, Any]:
        for name in names:
            schema = schema["properties"][name]
            schema = schema["anyOf"][0] if "anyOf" in schema else schema  # nillable: [type, null]
        return schema

    assert prop(ops["GetOrders"]["input"], "FromDate")["format"] == "date-time"
    order = prop(ops["GetOrders"]["output"], "GetOrdersResult", "Order")
    assert order["type"] == "array"
    assert prop(order["items"], "Status")["enum"] == ["open", "shipped", "cancelled"]
    amount = prop(order["items"], "Amount")
    assert (amount["type"], amount["x-precision"], amount["x-scale"]) == ("number", 14, 2)
    assert prop(order["items"], "Lines", "OrderLine")["type"] == "array"


def test_catalog_of_real_world_wsdls() -> None:
    country = describe(load_wsdl(SoapSystemConfig(wsdl=str(DATA / "oorsprong-CountryInfoService.wsdl"))))
    [service] = country["services"]
    versions = {p["name"]: p["soap_version"] for p in service["ports"]}
    assert versions == {"CountryInfoServiceSoap": "1.1", "CountryInfoServiceSoap12": "1.2"}
    for port in service["ports"]:
        assert len(port["operations"]) == 21
    ops = {op["name"]: op for op in service["ports"][0]["operations"]}
    full = ops["FullCountryInfo"]["output"]["properties"]["FullCountryInfoResult"]["properties"]
    assert set(full) >= {"sISOCode", "sName", "sCapitalCity", "sPhoneCode", "sContinentCode", "Languages"}
    vies = describe(load_wsdl(SoapSystemConfig(wsdl=str(DATA / "eu-vies-checkVatService.wsdl"))))
    check = vies["services"][0]["ports"][0]["operations"][0]
    assert check["name"] == "checkVat" and check["input"]["required"] == ["countryCode", "vatNumber"]
    assert check["output"]["properties"]["requestDate"]["format"] == "date"


def test_cli_catalog(erp: ERPService) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["catalog", "soap", str(DATA / "eu-vies-checkVatService.wsdl"), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["services"][0]["name"] == "checkVatService"
    res = runner.invoke(app, ["catalog", "soap", erp.wsdl_url])
    assert res.exit_code == 0 and "GetOrders(FromDate: dateTime?, ToDate: dateTime?" in res.output
    res = runner.invoke(app, ["catalog", "soap", "/nonexistent.wsdl"])
    assert res.exit_code == 1 and "cannot read WSDL /nonexistent.wsdl" in res.output


# --- a WSDL written by others, served on loopback ------------------------------------------------------------

COUNTRY_NS = "http://www.oorsprong.org/websamples.countryinfo"
COUNTRIES = [("DE", "Germany"), ("FR", "France"), ("JP", "Japan")]


class _CountryInfo(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        soap12 = self.headers.get("Content-Type", "").startswith("application/soap+xml")
        env = "http://www.w3.org/2003/05/soap-envelope" if soap12 else "http://schemas.xmlsoap.org/soap/envelope/"
        items = "".join(f"<m:tCountryCodeAndName><m:sISOCode>{c}</m:sISOCode><m:sName>{n}</m:sName>"
                        "</m:tCountryCodeAndName>" for c, n in COUNTRIES)
        body = (f'<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="{env}"><soap:Body>'
                f'<m:ListOfCountryNamesByNameResponse xmlns:m="{COUNTRY_NS}"><m:ListOfCountryNamesByNameResult>'
                f"{items}</m:ListOfCountryNamesByNameResult></m:ListOfCountryNamesByNameResponse>"
                "</soap:Body></soap:Envelope>").encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/soap+xml; charset=utf-8" if soap12 else "text/xml; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def country_info() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _CountryInfo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/websamples.countryinfo/CountryInfoService.wso"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_real_world_wsdl_end_to_end(country_info: str, version: str) -> None:
    sys_cfg = SoapSystemConfig(wsdl=str(DATA / "oorsprong-CountryInfoService.wsdl"), address=country_info,
                               soap_version=version)  # type: ignore[arg-type]
    src = SoapSource(sys_cfg, SoapSourceConfig(operation="ListOfCountryNamesByName", records="tCountryCodeAndName"))
    assert [(r["sISOCode"], r["sName"]) for r in rows(src)] == COUNTRIES


def test_soap_headers_the_wsdl_does_not_declare(erp: ERPService) -> None:
    src = SoapSource(system(erp), SoapSourceConfig(
        operation="GetCustomer", params={"CustomerId": 5}, records="GetCustomerResult",
        soap_headers={"Tenant": "acme", "{urn:example:session}SessionId": "s-42"}))
    assert rows(src)[0]["Id"] == 5
    from lxml import etree

    header = etree.fromstring(erp.requests[0]).find("{http://schemas.xmlsoap.org/soap/envelope/}Header")
    assert header is not None
    assert header.findtext("{urn:hub:demo:erp}Tenant") == "acme"
    assert header.findtext("{urn:example:session}SessionId") == "s-42"
    assert header.find("{http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd}Security") \
        is not None, "WS-Security still applies"


def test_dates_render_for_the_partition_window(erp: ERPService) -> None:
    src = orders_source(erp, params={"FromDate": datetime(2024, 1, 2, tzinfo=UTC).isoformat(), "ToDate": DAY3,
                                     "PageSize": 50})
    got = rows(src)
    assert got and all(r["OrderDate"] >= datetime(2024, 1, 2, tzinfo=UTC) for r in got)
    sent = erp.requests[0].decode()
    assert "2024-01-02T00:00:00+00:00" in sent and base64.b64encode(DEMO_PASSWORD.encode()).decode() not in sent


# --- the demo pipeline: ERP orders and their lines, per day, through Dagster ------------------------------

@pytest.mark.slow
def test_demo_pipeline_lands_orders_lines_and_revenue(crm: Any, erp: ERPService, warehouse_path: Path,
                                                      tmp_path: Path) -> None:
    import dagster as dg

    from hub.dagster.run import run_pipeline
    from hub.spec import loads
    from hub.warehouse import DuckDBWarehouse
    from tests.conftest import demo_spec_text

    pipeline = loads(demo_spec_text(), tmp_path / "demo.yaml")
    instance = dg.DagsterInstance.ephemeral()
    outcomes = run_pipeline(pipeline, instance, partitions=["2024-01-02", "2024-01-03"])
    assert all(o.success for o in outcomes), [o.error for o in outcomes]
    wh = DuckDBWarehouse(f"duckdb:///{warehouse_path}")

    def q(sql: str) -> list[tuple[Any, ...]]:
        return [tuple(r.values()) for r in wh.query(sql).to_pylist()]

    expected = orders_for(date(2024, 1, 2), date(2024, 1, 4))
    assert q("select order_id from erp_orders order by 1") == [(o["OrderId"],) for o in expected]
    lines = sorted((o["OrderId"], ln["LineNo"], ln["Sku"], ln["Quantity"], ln["UnitPrice"])
                   for o in expected for ln in o["Lines"])
    assert q("select order_id, line_no, sku, quantity, unit_price from erp_order_lines order by all") == lines
    assert outcomes[0].row_counts["erp_order_lines"] == sum(
        len(o["Lines"]) for o in expected if o["OrderDate"].astimezone(UTC).date() == date(2024, 1, 2))
    region = {c["id"]: c["region"] for c in crm.data.customers}
    revenue: dict[str, Decimal] = {}
    for o in expected:
        if o["Status"] != "cancelled":
            key = region[o["Customer"]["Id"]]
            revenue[key] = revenue.get(key, Decimal(0)) + o["Amount"]
    assert dict(q("select region, sum(revenue) from revenue_by_region group by 1")) == revenue
    before = q("select * exclude (_hub_run_id, _hub_loaded_at) from erp_order_lines order by all")

    # a re-run of one day changes nothing
    again = run_pipeline(pipeline, instance, assets=["erp_orders"], partitions=["2024-01-02"])
    assert again[0].success and set(again[0].assets) == {"erp_orders", "erp_order_lines"}
    assert q("select * exclude (_hub_run_id, _hub_loaded_at) from erp_order_lines order by all") == before

    # an order whose Amount breaks its type goes to quarantine, with its lines left out
    bad = next(o for o in expected if o["OrderDate"].astimezone(UTC).date() == date(2024, 1, 3))
    needle = f"<tns:OrderId>{bad['OrderId']}</tns:OrderId>".encode()
    erp.rewrite = lambda body: _corrupt_amount(body, needle) if needle in body else body
    res = run_pipeline(pipeline, instance, assets=["erp_orders"], partitions=["2024-01-03"])
    erp.rewrite = None
    assert res[0].success, res[0].error
    assert q(f"select count(*) from erp_orders where order_id = {bad['OrderId']}") == [(0,)]
    assert q(f"select count(*) from erp_order_lines where order_id = {bad['OrderId']}") == [(0,)]
    [(reason, record)] = q("select reason, record from erp_orders__quarantine")
    assert reason.startswith("Amount: 'twelve' is not a valid xsd:Order_AmountType")
    assert str(bad["OrderId"]) in record


def _corrupt_amount(body: bytes, needle: bytes) -> bytes:
    head, tail = body.split(needle, 1)
    start = tail.index(b"<tns:Amount>") + len(b"<tns:Amount>")
    end = tail.index(b"</tns:Amount>")
    return head + needle + tail[:start] + b"twelve" + tail[end:]
