"""XML resolution policy and nesting limits, against real loopback HTTP servers (a second server on
another port is a foreign origin) and the embedded SFTP server.

- A WSDL's imports (wsdl:import, xs:import, xs:include) come only from the WSDL's origin (HTTP) or its
  folder (file), or from the system's ``allowed_origins``; a refusal names the WSDL, the import and the
  rule, and never tells whether a refused file exists or what it holds.
- A real-world multi-file layout (a service WSDL importing the bindings' WSDL, which imports XSDs in an
  ``xsd/`` folder that import and include each other) loads from HTTP and from a folder: catalog and calls.
- The WSDL and all its imports share one size cap.
- Deeply nested SOAP responses are refused, deeply nested records of XML files quarantined, fast.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml
from typer.testing import CliRunner

from adapters.soap import SoapSource, SoapSourceConfig, SoapSystemConfig, load_wsdl
from adapters.soap.catalog import describe
from hub.cli.main import app
from hub.errors import AdapterError, ForeignOriginError, HubError, ResponseFormatError, XMLSecurityError
from hub.files import ingest_file
from hub.spec import loads
from hub.warehouse import DuckDBWarehouse
from tests.sftp_servers import Drop, start_embedded

XS = "http://www.w3.org/2001/XMLSchema"
WSDL_NS = "http://schemas.xmlsoap.org/wsdl/"
SOAP_NS = "http://schemas.xmlsoap.org/wsdl/soap/"
ENV = "http://schemas.xmlsoap.org/soap/envelope/"
SECRET = "TopSecretElement"  # the only place this name appears is the secret schema

# --- a vendor's multi-file WSDL --------------------------------------------------------------------------

VENDOR: dict[str, str] = {
    "OrderService.wsdl": f"""<?xml version="1.0" encoding="UTF-8"?>
<wsdl:definitions xmlns:wsdl="{WSDL_NS}" xmlns:soap="{SOAP_NS}" xmlns:b="urn:vendor:orders:binding"
    targetNamespace="urn:vendor:orders:service" name="OrderService">
  <wsdl:import namespace="urn:vendor:orders:binding" location="OrderBinding.wsdl"/>
  <wsdl:service name="OrderService">
    <wsdl:port name="OrderPort" binding="b:OrderBinding"><soap:address location="{{address}}"/></wsdl:port>
  </wsdl:service>
</wsdl:definitions>""",
    "OrderBinding.wsdl": f"""<?xml version="1.0" encoding="UTF-8"?>
<wsdl:definitions xmlns:wsdl="{WSDL_NS}" xmlns:soap="{SOAP_NS}" xmlns:xs="{XS}"
    xmlns:m="urn:vendor:orders:messages" xmlns:tns="urn:vendor:orders:binding"
    targetNamespace="urn:vendor:orders:binding">
  <wsdl:types>
    <xs:schema targetNamespace="urn:vendor:orders:binding:types">
      <xs:import namespace="urn:vendor:orders:messages" schemaLocation="xsd/OrderMessages.xsd"/>
    </xs:schema>
  </wsdl:types>
  <wsdl:message name="GetOrdersIn"><wsdl:part name="parameters" element="m:GetOrders"/></wsdl:message>
  <wsdl:message name="GetOrdersOut"><wsdl:part name="parameters" element="m:GetOrdersResponse"/></wsdl:message>
  <wsdl:portType name="OrderPortType">
    <wsdl:operation name="GetOrders">
      <wsdl:input message="tns:GetOrdersIn"/><wsdl:output message="tns:GetOrdersOut"/>
    </wsdl:operation>
  </wsdl:portType>
  <wsdl:binding name="OrderBinding" type="tns:OrderPortType">
    <soap:binding style="document" transport="http://schemas.xmlsoap.org/soap/http"/>
    <wsdl:operation name="GetOrders">
      <soap:operation soapAction="urn:vendor:orders/GetOrders"/>
      <wsdl:input><soap:body use="literal"/></wsdl:input><wsdl:output><soap:body use="literal"/></wsdl:output>
    </wsdl:operation>
  </wsdl:binding>
</wsdl:definitions>""",
    "xsd/OrderMessages.xsd": f"""<?xml version="1.0" encoding="UTF-8"?>
<xs:schema xmlns:xs="{XS}" xmlns:o="urn:vendor:orders" targetNamespace="urn:vendor:orders:messages"
    elementFormDefault="qualified">
  <xs:import namespace="urn:vendor:orders" schemaLocation="Orders.xsd"/>
  <xs:element name="GetOrders">
    <xs:complexType><xs:sequence><xs:element name="FromDate" type="xs:date"/></xs:sequence></xs:complexType>
  </xs:element>
  <xs:element name="GetOrdersResponse">
    <xs:complexType><xs:sequence><xs:element name="Orders"><xs:complexType><xs:sequence>
      <xs:element name="Order" type="o:Order" minOccurs="0" maxOccurs="unbounded"/>
    </xs:sequence></xs:complexType></xs:element></xs:sequence></xs:complexType>
  </xs:element>
</xs:schema>""",
    "xsd/Orders.xsd": f"""<?xml version="1.0" encoding="UTF-8"?>
<xs:schema xmlns:xs="{XS}" targetNamespace="urn:vendor:orders" elementFormDefault="qualified">
  <xs:include schemaLocation="OrderTypes.xsd"/>
</xs:schema>""",
    "xsd/OrderTypes.xsd": f"""<?xml version="1.0" encoding="UTF-8"?>
<xs:schema xmlns:xs="{XS}" xmlns:o="urn:vendor:orders" xmlns:c="urn:vendor:common"
    targetNamespace="urn:vendor:orders" elementFormDefault="qualified">
  <xs:import namespace="urn:vendor:common" schemaLocation="common/Common.xsd"/>
  <xs:complexType name="Order"><xs:sequence>
    <xs:element name="OrderId" type="xs:long"/>
    <xs:element name="Amount" type="c:Money"/>
    <xs:element name="Currency" type="c:CurrencyCode"/>
    <xs:element name="Category" type="o:Category" minOccurs="0"/>
  </xs:sequence></xs:complexType>
  <xs:complexType name="Category"><xs:sequence>
    <xs:element name="Name" type="xs:string" minOccurs="0"/>
    <xs:element name="Sub" type="o:Category" minOccurs="0"/>
  </xs:sequence></xs:complexType>
</xs:schema>""",
    "xsd/common/Common.xsd": f"""<?xml version="1.0" encoding="UTF-8"?>
<xs:schema xmlns:xs="{XS}" targetNamespace="urn:vendor:common" elementFormDefault="qualified">
  <xs:include schemaLocation="../common/CommonCodes.xsd"/>
  <xs:simpleType name="Money">
    <xs:restriction base="xs:decimal"><xs:totalDigits value="12"/><xs:fractionDigits value="2"/></xs:restriction>
  </xs:simpleType>
</xs:schema>""",
    "xsd/common/CommonCodes.xsd": f"""<?xml version="1.0" encoding="UTF-8"?>
<xs:schema xmlns:xs="{XS}" targetNamespace="urn:vendor:common">
  <xs:simpleType name="CurrencyCode">
    <xs:restriction base="xs:string"><xs:enumeration value="EUR"/><xs:enumeration value="USD"/></xs:restriction>
  </xs:simpleType>
</xs:schema>""",
}

ORDERS = [(1, "12.50", "EUR"), (2, "7.00", "USD")]


def order_xml(order_id: int, amount: str, currency: str, category: str = "") -> str:
    return (f"<m:Order><o:OrderId>{order_id}</o:OrderId><o:Amount>{amount}</o:Amount>"
            f"<o:Currency>{currency}</o:Currency>{category}</m:Order>")


def orders_response(orders: str) -> bytes:
    return (f'<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="{ENV}"><soap:Body>'
            f'<m:GetOrdersResponse xmlns:m="urn:vendor:orders:messages" xmlns:o="urn:vendor:orders"><m:Orders>'
            f"{orders}</m:Orders></m:GetOrdersResponse></soap:Body></soap:Envelope>").encode()


def write_layout(root: Path, address: str) -> Path:
    """The vendor layout below *root*; the service WSDL's path."""
    for rel, text in VENDOR.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.replace("{address}", address))
    return root / "OrderService.wsdl"


# --- loopback HTTP servers ---------------------------------------------------------------------------------

class Server(ThreadingHTTPServer):
    root: Path
    response: bytes
    gets: list[str]
    posts: list[str]
    post_redirect: str | None = None
    redirects: dict[str, str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.gets.append(self.path)
        rel = self.path.split("?")[0].lstrip("/")
        if rel in self.server.redirects:
            self.send_response(302)
            self.send_header("Location", self.server.redirects[rel])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path = self.server.root / rel
        if ".." in rel.split("/") or not path.is_file():
            self.send_error(404)
            return
        self._send(path.read_bytes())

    def do_POST(self) -> None:
        self.server.posts.append(self.path)
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.server.post_redirect:
            self.send_response(307)
            self.send_header("Location", self.server.post_redirect)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._send(self.server.response)

    def _send(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/xml; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _serve(root: Path) -> Iterator[Server]:
    root.mkdir(parents=True, exist_ok=True)
    server = Server(("127.0.0.1", 0), _Handler)
    server.root, server.gets, server.posts, server.redirects = root, [], [], {}
    server.response = orders_response("".join(order_xml(*o) for o in ORDERS))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def origin(tmp_path: Path) -> Iterator[Server]:
    """The WSDL's server."""
    yield from _serve(tmp_path / "origin")


@pytest.fixture
def foreign(tmp_path: Path) -> Iterator[Server]:
    """Another origin: the same host, another port."""
    yield from _serve(tmp_path / "foreign")


def secret_schema(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'<xs:schema xmlns:xs="{XS}" targetNamespace="urn:secret">'
                    f'<xs:element name="{SECRET}" type="xs:string"/></xs:schema>')
    return path


def hostile_wsdl(kind: str, location: str) -> str:
    """A WSDL whose types import (or include, or whose definitions import) *location*."""
    ref = {"xs:import": f'<xs:import namespace="urn:secret" schemaLocation="{location}"/>',
           "xs:include": f'<xs:include schemaLocation="{location}"/>'}.get(kind, "")
    imp = f'<wsdl:import namespace="urn:secret" location="{location}"/>' if kind == "wsdl:import" else ""
    return (f'<?xml version="1.0"?><wsdl:definitions xmlns:wsdl="{WSDL_NS}" xmlns:xs="{XS}" '
            f'targetNamespace="urn:hostile">{imp}<wsdl:types><xs:schema targetNamespace="urn:secret">{ref}'
            "</xs:schema></wsdl:types></wsdl:definitions>")


KINDS = ["xs:import", "xs:include", "wsdl:import"]


def refusal(wsdl: str, **system: Any) -> str:
    with pytest.raises(XMLSecurityError) as info:
        load_wsdl(SoapSystemConfig.model_validate({"wsdl": wsdl, **system}))
    return str(info.value)


# --- an HTTP WSDL: its own origin only -----------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_http_wsdl_cannot_read_local_files(origin: Server, tmp_path: Path, kind: str) -> None:
    secret = secret_schema(tmp_path / "private" / "secret.xsd")
    missing = tmp_path / "private" / "missing.xsd"
    messages = []
    for target in (secret, missing):
        (origin.root / "evil.wsdl").write_text(hostile_wsdl(kind, target.as_uri()))
        msg = refusal(f"{origin.url}/evil.wsdl")
        assert f"WSDL {origin.url}/evil.wsdl: import of {target.as_uri()} refused" in msg
        assert "may import only documents of that origin" in msg and "allowed_origins" in msg
        assert SECRET not in msg
        messages.append(msg.replace(target.as_uri(), "<target>"))
    assert messages[0] == messages[1], "the refusal does not tell whether the file exists"


def test_redefine_reads_nothing(origin: Server, tmp_path: Path) -> None:
    """zeep does not support xs:redefine: the WSDL is refused before anything is read (were it supported, it
    would go through the same check in the transport)."""
    secret = secret_schema(tmp_path / "private" / "secret.xsd")
    (origin.root / "evil.wsdl").write_text(hostile_wsdl("xs:import", "x").replace(
        '<xs:import namespace="urn:secret" schemaLocation="x"/>', f'<xs:redefine schemaLocation="{secret.as_uri()}"/>'))
    with pytest.raises(AdapterError, match="redefine") as info:
        load_wsdl(SoapSystemConfig(wsdl=f"{origin.url}/evil.wsdl"))
    assert SECRET not in str(info.value)


def test_http_wsdl_cannot_read_etc_passwd_and_the_catalog_shows_nothing(origin: Server) -> None:
    (origin.root / "evil.wsdl").write_text(hostile_wsdl("xs:import", "file:///etc/passwd"))
    res = CliRunner().invoke(app, ["catalog", "soap", f"{origin.url}/evil.wsdl"])
    assert res.exit_code == 1 and "import of file:///etc/passwd refused" in res.output, res.output
    assert "root:" not in res.output
    (origin.root / "evil.wsdl").write_text(hostile_wsdl("xs:include", "/etc/passwd"))  # a path: on the origin
    with pytest.raises(HubError, match="HTTP 404") as info:
        load_wsdl(SoapSystemConfig(wsdl=f"{origin.url}/evil.wsdl"))
    assert f"GET {origin.url}/etc/passwd" in str(info.value) and "root:" not in str(info.value)
    assert origin.gets[-1] == "/etc/passwd"


def test_http_wsdl_cannot_import_from_another_port(origin: Server, foreign: Server) -> None:
    secret_schema(foreign.root / "secret.xsd")
    (origin.root / "evil.wsdl").write_text(hostile_wsdl("xs:import", f"{foreign.url}/secret.xsd"))
    msg = refusal(f"{origin.url}/evil.wsdl")
    assert f"import of {foreign.url}/secret.xsd refused" in msg and SECRET not in msg
    assert foreign.gets == [], "nothing was requested from the other origin"
    # the system may trust it explicitly
    wsdl = load_wsdl(SoapSystemConfig(wsdl=f"{origin.url}/evil.wsdl", allowed_origins=[foreign.url]))
    assert any(SECRET.encode() in content for _, content in wsdl.transport.documents)


def test_redirect_to_another_origin_is_refused(origin: Server, foreign: Server) -> None:
    secret_schema(foreign.root / "secret.xsd")
    origin.redirects["moved.xsd"] = f"{foreign.url}/secret.xsd"
    (origin.root / "evil.wsdl").write_text(hostile_wsdl("xs:import", "moved.xsd"))
    msg = refusal(f"{origin.url}/evil.wsdl")
    assert f"GET {origin.url}/moved.xsd redirects to {foreign.url}/secret.xsd, refused" in msg
    assert foreign.gets == []


def test_a_remote_wsdl_cannot_send_the_calls_elsewhere(origin: Server, foreign: Server) -> None:
    """The WSDL's soap:address is an address taken from a response: calls carrying WS-Security or basic-auth
    credentials go there only when it is the WSDL's origin, an allowed origin, or the spec's own address."""
    wsdl_url = f"{origin.url}/{write_layout(origin.root, foreign.url + '/orders').name}"
    system = {"wsdl": wsdl_url, "basic": {"username": "u", "password": "pw-Soap-Endpoint-9"}}
    src = SoapSource(SoapSystemConfig.model_validate(system),
                     SoapSourceConfig(operation="GetOrders", params={"FromDate": "2024-01-01"}, records="Order"))
    with pytest.raises(ForeignOriginError, match="allowed_origins"):
        list(src.batches())
    assert foreign.posts == []
    for extra in ({"allowed_origins": [foreign.url]}, {"address": f"{foreign.url}/orders"}):
        ok = SoapSource(SoapSystemConfig.model_validate({**system, **extra}),
                        SoapSourceConfig(operation="GetOrders", params={"FromDate": "2024-01-01"}, records="Order"))
        assert sum(b.num_rows for b in ok.batches()) == len(ORDERS)
    assert foreign.posts == ["/orders", "/orders"]


def test_a_soap_call_redirected_to_another_origin_is_refused(origin: Server, foreign: Server) -> None:
    wsdl_url = f"{origin.url}/{write_layout(origin.root, origin.url + '/orders').name}"
    origin.post_redirect = f"{foreign.url}/orders"
    src = SoapSource(SoapSystemConfig.model_validate({"wsdl": wsdl_url, "retries": {"max": 0}}),
                     SoapSourceConfig(operation="GetOrders", params={"FromDate": "2024-01-01"}, records="Order"))
    with pytest.raises(ForeignOriginError):
        list(src.batches())
    assert foreign.posts == []


def test_http_multi_file_vendor_wsdl_loads_and_is_called(origin: Server) -> None:
    wsdl_url = f"{origin.url}/{write_layout(origin.root, origin.url + '/orders').name}"
    check_vendor_wsdl(wsdl_url)
    assert sorted(origin.gets) == sorted(2 * ["/" + rel for rel in VENDOR]), "each document once per load (2)"
    res = CliRunner().invoke(app, ["catalog", "soap", wsdl_url])
    assert res.exit_code == 0 and "GetOrders(FromDate: date)" in res.output, res.output


def check_vendor_wsdl(wsdl: str, **system: Any) -> None:
    """The catalog lists GetOrders with the types of the imported and included schemas, and a source
    calls it."""
    catalog = describe(load_wsdl(SoapSystemConfig.model_validate({"wsdl": wsdl, **system})))
    [service] = catalog["services"]
    [port] = service["ports"]
    [op] = port["operations"]
    assert (service["name"], port["name"], op["name"]) == ("OrderService", "OrderPort", "GetOrders")
    assert op["input"]["properties"]["FromDate"]["format"] == "date"
    order = op["output"]["properties"]["Orders"]["properties"]["Order"]["items"]["properties"]
    assert (order["Amount"]["x-precision"], order["Amount"]["x-scale"]) == (12, 2), "facets of an imported XSD"
    assert order["Currency"]["enum"] == ["EUR", "USD"], "a type from an included XSD"
    src = SoapSource(SoapSystemConfig.model_validate({"wsdl": wsdl, **system}),
                     SoapSourceConfig(operation="GetOrders", params={"FromDate": "2024-01-01"}, records="Order"))
    batches = list(src.batches())
    assert batches[0].schema.field("Amount").type == pa.decimal128(12, 2)
    got = [(r["OrderId"], r["Amount"], r["Currency"]) for b in batches for r in b.to_pylist()]
    assert got == [(i, Decimal(a), c) for i, a, c in ORDERS]


# --- a local WSDL: its own folder only -----------------------------------------------------------------------

def test_local_multi_file_vendor_wsdl_loads_and_is_called(origin: Server, tmp_path: Path) -> None:
    wsdl = write_layout(tmp_path / "vendor" / "wsdl", origin.url + "/orders")
    check_vendor_wsdl(str(wsdl))
    check_vendor_wsdl(wsdl.as_uri())
    res = CliRunner().invoke(app, ["catalog", "soap", str(wsdl), "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["services"][0]["name"] == "OrderService"


@pytest.mark.parametrize("how", ["dotdot", "absolute", "file-url", "symlink"])
def test_local_wsdl_cannot_read_outside_its_folder(tmp_path: Path, how: str) -> None:
    folder = tmp_path / "vendor"
    folder.mkdir()
    messages = []
    for name in ("outside.xsd", "missing.xsd"):
        target = tmp_path / name
        if name == "outside.xsd":
            secret_schema(target)
        location = {"dotdot": f"../{name}", "absolute": str(target), "file-url": target.as_uri(),
                    "symlink": f"link-{name}"}[how]
        if how == "symlink":
            (folder / location).symlink_to(target)
        (folder / "local.wsdl").write_text(hostile_wsdl("xs:import", location))
        msg = refusal(str(folder / "local.wsdl"))
        assert f"WSDL {folder / 'local.wsdl'}: import of " in msg
        assert f"may import only files inside its folder {folder.resolve()}" in msg and SECRET not in msg
        messages.append(msg.replace(name, "<name>"))
    assert messages[0] == messages[1], "the refusal does not tell whether the file exists"


def test_local_wsdl_fetches_nothing_over_http_unless_allowed(origin: Server, tmp_path: Path) -> None:
    secret_schema(origin.root / "types.xsd")
    folder = tmp_path / "vendor"
    folder.mkdir()
    (folder / "local.wsdl").write_text(hostile_wsdl("xs:import", f"{origin.url}/types.xsd"))
    assert f"import of {origin.url}/types.xsd refused" in refusal(str(folder / "local.wsdl"))
    assert origin.gets == []
    wsdl = load_wsdl(SoapSystemConfig(wsdl=str(folder / "local.wsdl"), allowed_origins=[origin.url]))
    assert origin.gets == ["/types.xsd"] and len(wsdl.transport.documents) == 2


def test_allowed_folder_widens_a_local_wsdl(tmp_path: Path) -> None:
    secret_schema(tmp_path / "shared" / "types.xsd")
    (tmp_path / "wsdl").mkdir()
    (tmp_path / "wsdl" / "local.wsdl").write_text(hostile_wsdl("xs:import", "../shared/types.xsd"))
    assert "refused" in refusal(str(tmp_path / "wsdl" / "local.wsdl"))
    load_wsdl(SoapSystemConfig(wsdl="wsdl/local.wsdl", allowed_origins=["shared"]), base_dir=tmp_path)


def test_allowed_origins_must_be_origins_or_folders() -> None:
    with pytest.raises(ValueError, match="without a path"):
        SoapSystemConfig(wsdl="x.wsdl", allowed_origins=["https://schemas.example.com/xsd/"])
    with pytest.raises(ValueError, match="neither an http"):
        SoapSystemConfig(wsdl="x.wsdl", allowed_origins=["ftp://schemas.example.com"])


# --- one size cap for the WSDL and its imports ---------------------------------------------------------------

def test_size_cap_holds_for_the_wsdl_and_its_imports_together(origin: Server, tmp_path: Path) -> None:
    write_layout(origin.root, origin.url + "/orders")
    local = write_layout(tmp_path / "vendor", origin.url + "/orders")
    total = sum(p.stat().st_size for p in (tmp_path / "vendor").rglob("*") if p.is_file())
    largest = max(p.stat().st_size for p in (tmp_path / "vendor").rglob("*") if p.is_file())
    assert largest < total - 1
    for wsdl in (f"{origin.url}/OrderService.wsdl", str(local)):
        with pytest.raises(ResponseFormatError) as info:
            load_wsdl(SoapSystemConfig(wsdl=wsdl, max_response_bytes=total - 1))
        assert f"exceeds max_response_bytes={total - 1} while loading the WSDL" in str(info.value)
        assert "the WSDL and all its imports together" in str(info.value)
        load_wsdl(SoapSystemConfig(wsdl=wsdl, max_response_bytes=total))


# --- nesting depth -------------------------------------------------------------------------------------------

def nested_category(depth: int) -> str:
    return "<o:Category>" + "<o:Sub>" * depth + "</o:Sub>" * depth + "</o:Category>"


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_deeply_nested_soap_response_is_refused_fast(origin: Server, tmp_path: Path, depth: int) -> None:
    wsdl = write_layout(tmp_path / "vendor", origin.url + "/orders")
    origin.response = orders_response(order_xml(1, "1.00", "EUR") + order_xml(2, "2.00", "EUR", nested_category(depth)))
    src = SoapSource(SoapSystemConfig(wsdl=str(wsdl), retries={"max": 0}),  # type: ignore[arg-type]
                     SoapSourceConfig(operation="GetOrders", params={"FromDate": "2024-01-01"}, records="Order"))
    started = time.monotonic()
    with pytest.raises(ResponseFormatError) as info:
        list(src.batches())
    assert time.monotonic() - started < 5
    msg = str(info.value)
    assert "GetOrders" in msg and origin.url in msg
    if depth < 2048:  # the hub's limit; deeper, libxml2's own (2048 levels) stops the parse first
        assert isinstance(info.value, XMLSecurityError)
        assert "element <Sub> at line 1 is nested more than 256 levels deep (max_xml_depth=256)" in msg
    else:
        assert "Excessive depth in document: 2048" in msg


def test_max_xml_depth_is_configurable(origin: Server, tmp_path: Path) -> None:
    wsdl = str(write_layout(tmp_path / "vendor", origin.url + "/orders"))
    origin.response = orders_response(order_xml(1, "1.00", "EUR", nested_category(10)))
    source = SoapSourceConfig(operation="GetOrders", params={"FromDate": "2024-01-01"}, records="Order")
    assert len(list(SoapSource(SoapSystemConfig(wsdl=wsdl), source).batches())) == 1
    with pytest.raises(XMLSecurityError, match=r"nested more than 12 levels deep \(max_xml_depth=12\)"):
        list(SoapSource(SoapSystemConfig(wsdl=wsdl, max_xml_depth=12), source).batches())


@pytest.fixture(scope="module")
def drop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Drop]:
    server, embedded = start_embedded(tmp_path_factory.mktemp("embedded"))
    yield server
    embedded.stop()


def test_deeply_nested_record_of_an_xml_file_is_quarantined_fast(drop: Drop, tmp_path: Path) -> None:
    folder = f"deep-{tmp_path.name}"
    deep = "<Memo>" + "<a>" * 1_000 + "x" + "</a>" * 1_000 + "</Memo>"
    content = ('<?xml version="1.0"?><Batch><Payment id="1"><Amount>10.5</Amount></Payment>'
               f'<Payment id="2"><Amount>3</Amount>{deep}</Payment><Payment id="3"><Amount>4</Amount></Payment>'
               "</Batch>")
    path = drop.local(f"{folder}/pay_1.xml")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    old = time.time() - 3600
    import os

    os.utime(path, (old, old))
    doc = {"pipeline": "files", "warehouse": f"duckdb:///{tmp_path / 'wh.duckdb'}",
           "systems": {"bank": {"sftp": drop.system()}},
           "sources": {"payments": {"system": "bank", "files": {"path": drop.remote(folder), "glob": "pay_*.xml",
                                                              "stable_for": "30s"},
                                    "format": {"xml": {"records": "Payment"}}, "max_bad_rows": 1,
                                    "columns": {"id": {"name": "id", "type": "int"}, "Amount": "amount"}}}}
    pipeline = loads(yaml.safe_dump(doc), tmp_path / "files.yaml")
    started = time.monotonic()
    out = ingest_file(pipeline, "payments", "pay_1.xml", run_id="r1")
    assert time.monotonic() - started < 5, "refused before the record is walked"
    assert out.load is not None and out.load.rows_loaded == 2 and out.rejected == 1
    wh = DuckDBWarehouse(f"duckdb:///{tmp_path / 'wh.duckdb'}")
    assert [r["id"] for r in wh.query("select id from payments order by id").to_pylist()] == [1, 3]
    [bad] = wh.query("select reason from payments__quarantine").to_pylist()
    assert bad["reason"].startswith("pay_1.xml: record: element <a> at line 1 is nested more than 256 levels deep "
                                    "(xml.max_depth=256)"), bad


def test_hostile_documents_raise_hub_errors_only(origin: Server) -> None:
    """A refused import is a HubError with the WSDL named (what `hub run` and the catalog show)."""
    (origin.root / "evil.wsdl").write_text(hostile_wsdl("wsdl:import", "file:///etc/shadow"))
    with pytest.raises(HubError, match=r"WSDL http://127\.0\.0\.1:\d+/evil\.wsdl: import of file:///etc/shadow"):
        load_wsdl(SoapSystemConfig(wsdl=f"{origin.url}/evil.wsdl"))
