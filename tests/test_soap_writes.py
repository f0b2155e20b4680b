"""SOAP writes (``SoapSource.send``, what flows call). The compiled envelopes and reply readers
(adapters/soap/_compiled.py) against zeep itself: every operation of the real-world WSDLs and of the demo ERP
serialized both ways (the same bytes, the same canonical XML), replies read both ways (the same dicts), live calls
to the ERP with and without the plans, and what the plans leave to zeep. The wire (adapters/_stdhttp.py): TLS with
a client certificate, and each network failure classified for the ledger as before (nothing sent, or unknown)."""

from __future__ import annotations

import copy
import datetime as dt
import socket
import ssl
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trustme
import zeep
from lxml import etree
from zeep.helpers import serialize_object
from zeep.wsdl.utils import etree_to_string
from zeep.wsse.username import UsernameToken

from adapters.soap import SoapSource, SoapSourceConfig, SoapSystemConfig
from adapters.soap._compiled import Fallback, Node, ReplyPlan, RequestPlan
from hub.demo.erp import DEMO_PASSWORD, DEMO_USER, ERPService
from hub.errors import AdapterError, DeliveryFailed, DeliveryUnknown
from tests.conftest import REPO
from tests.fault_proxy import FaultProxy

DATA = REPO / "tests" / "data" / "wsdl"
SHARED = Path("/work/shared/realworld/wsdl")  # the team's folder the test data was copied from, when present
WSDLS = sorted({p.name: p for p in [*DATA.glob("*.wsdl"), *SHARED.glob("*.wsdl")]}.values())


def _simple(t: Any, name: str, variant: int) -> Any:
    names = {c.__name__ for c in type(t).__mro__}
    if "Boolean" in names:
        return variant % 2 == 0
    if "Integer" in names:
        return 42 + variant
    if "Decimal" in names:
        return Decimal("12.34") + variant
    if names & {"Double", "Float"}:
        return 1.5 + variant
    if "DateTime" in names:
        return dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.UTC)
    if "Date" in names:
        return dt.date(2024, 5, 6)
    if "Time" in names:
        return dt.time(7, 8, 9)
    if names & {"Base64Binary", "HexBinary"}:
        return b"\x00\x01hi"
    return f"v-{name}-{variant} <&>"  # text that needs escaping


def sample(node: Node, variant: int = 0) -> dict[str, Any]:
    """Values for every element of *node*: variant 0 fills all, 1 leaves optional ones out and repeated ones
    empty (where the schema allows), 2 repeats what may repeat three times."""
    out: dict[str, Any] = {}
    for f in node.fields:
        if variant == 1 and f.optional:
            continue
        value = _simple(f.simple, f.name, variant) if f.node is None else sample(f.node, variant)
        if f.many:
            count = max(f.min_occurs, 0 if variant == 1 else 3 if variant == 2 else 1)
            if f.max_occurs is not None:
                count = min(count, f.max_occurs)
            value = [copy.deepcopy(value) for _ in range(count)]
        out[f.name] = value
    return out


def operations(client: zeep.Client) -> Iterator[tuple[str, Any, Any]]:
    for service in client.wsdl.services.values():
        for port in service.ports.values():
            binding = port.binding
            for name, operation in getattr(binding, "_operations", {}).items():
                yield f"{port.name}.{name}", binding, operation


def c14n(envelope: Any) -> bytes:
    return etree.tostring(envelope, method="c14n")


def fixed_token() -> UsernameToken:
    """zeep's own UsernameToken with a fixed nonce, clock and timestamp: both paths apply the same object."""
    from zeep.wsse import utils

    stamp = utils.WSU.Timestamp(utils.WSU.Created("2024-05-06T07:08:09Z"), utils.WSU.Expires("2024-05-06T07:13:09Z"))
    return UsernameToken("alice", "s3cret", use_digest=True, nonce="fixed-nonce", zulu_timestamp=True,
                         created=dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.UTC), timestamp_token=stamp)


def check_requests(client: zeep.Client) -> tuple[int, list[str]]:
    """Serialize every operation's sample parameters with the plan and with zeep; (compiled, refused)."""
    compiled, refused = 0, []
    for label, binding, operation in operations(client):
        plan = RequestPlan.compile(client, binding, operation, "http://partner.test/soap")
        if plan is None:
            refused.append(label)
            continue
        compiled += 1
        for variant in (0, 1, 2):
            params = sample(plan.node, variant)
            if client.wsse is not None:  # the token's timestamp element moves into the envelope it is applied to
                client.wsse.timestamp_token = copy.deepcopy(fixed_token().timestamp_token)
            ours, headers = plan.envelope(copy.deepcopy(params))
            if client.wsse is not None:
                client.wsse.timestamp_token = copy.deepcopy(fixed_token().timestamp_token)
            theirs, their_headers = binding._create(operation.name, (), copy.deepcopy(params), client=client)
            assert etree_to_string(ours) == etree_to_string(theirs), (label, variant)
            assert c14n(ours) == c14n(theirs), (label, variant)
            assert headers == their_headers, (label, variant)
    return compiled, refused


def check_replies(client: zeep.Client) -> tuple[int, list[str]]:
    """Read sample replies (rendered by zeep from the output message) with the plan and with zeep."""
    compiled, refused = 0, []
    for label, binding, operation in operations(client):
        plan = ReplyPlan.compile(client, operation)
        if plan is None:
            refused.append(label)
            continue
        compiled += 1
        for variant in (0, 1, 2):
            content = etree_to_string(operation.output.serialize(**sample(plan.node, variant)).content)
            reply = SimpleNamespace(status_code=200, content=content, headers={"Content-Type": "text/xml"},
                                    encoding="utf-8")
            expected = serialize_object(binding.process_reply(client, operation, reply), dict)
            assert plan.read(200, content, "text/xml; charset=utf-8") == expected, (label, variant)
    return compiled, refused


@pytest.mark.parametrize("path", WSDLS, ids=[p.name for p in WSDLS])
def test_every_real_world_operation_serializes_and_reads_as_zeep_does(path: Path) -> None:
    for wsse in (None, fixed_token()):
        client = zeep.Client(str(path), wsse=wsse)
        compiled, refused = check_requests(client)
        # operations without parameters (an empty complexType) and with them alike
        assert compiled > 0 and refused == [], refused
    compiled, refused = check_replies(zeep.Client(str(path)))
    assert compiled > 0 and refused == [], refused


def test_every_demo_erp_operation_serializes_and_reads_as_zeep_does(erp: ERPService) -> None:
    for wsse in (None, fixed_token()):
        client = zeep.Client(erp.wsdl_url, wsse=wsse)
        assert check_requests(client) == (10, [])  # 5 operations, SOAP 1.1 and 1.2
    assert check_replies(zeep.Client(erp.wsdl_url)) == (10, [])


def test_live_demo_erp_replies_read_as_zeep_reads_them(erp: ERPService) -> None:
    """What spyne really answers (xsi:nil notes, nested customers and lines, decimals, dates, base64, enums,
    empty arrays) through the plans and through zeep."""
    from adapters.soap._wsse import UsernameTokenWithTimestamp

    client = zeep.Client(erp.wsdl_url, wsse=UsernameTokenWithTimestamp(DEMO_USER, DEMO_PASSWORD, digest=True,
                                                                        timestamp_ttl=300))
    order = erp.data[0]
    day = [dt.datetime(2024, 1, d, tzinfo=dt.UTC) for d in (1, 2, 3)]
    calls = {
        "GetOrders": {"FromDate": day[0], "ToDate": day[2], "Page": 1, "PageSize": 30},
        "GetOrdersFrom": {"FromDate": day[0] - dt.timedelta(days=365), "ToDate": day[1] - dt.timedelta(days=365)},
        "ListOrders": {"FromDate": day[0], "ToDate": day[1]},
        "MarkOrderPaid": {"OrderId": order["OrderId"], "Amount": order["Amount"], "PaymentRef": "T-1"},
        "GetCustomer": {"CustomerId": order["Customer"]["Id"]},
    }
    binding = client.service._binding
    nils = 0
    for name, params in calls.items():
        operation = binding._operations[name]
        with client.settings(raw_response=True):
            response = getattr(client.service, name)(**params)
        assert response.status_code == 200, response.content[:300]
        nils += response.content.count(b'nil="true"')
        plan = ReplyPlan.compile(client, operation)
        assert plan is not None
        expected = serialize_object(binding.process_reply(client, operation, response), dict)
        assert plan.read(200, response.content, response.headers.get("Content-Type")) == expected, name
    assert nils > 0  # the replies did hold xsi:nil elements


@pytest.fixture
def sender(erp: ERPService) -> Iterator[Any]:
    def make(operation: str = "MarkOrderPaid", **token: Any) -> SoapSource:
        system = SoapSystemConfig.model_validate({
            "wsdl": erp.wsdl_url, "retries": {"max": 0},
            "username_token": {"username": DEMO_USER, "password": DEMO_PASSWORD, "digest": True, **token}})
        return SoapSource(system, SoapSourceConfig.model_validate({"operation": operation,
                                                                   "records": operation + "Response"}))
    yield make


def zeep_only(source: SoapSource) -> SoapSource:
    source._send_binding()
    source._plans = (None, None)
    return source


def test_send_through_the_plans_is_the_send_through_zeep(erp: ERPService, sender: Any) -> None:
    """The same answers, the same request bodies (up to the WS-Security nonce and times), faults and refusals
    alike, with WS-Security UsernameToken (digest) and a timestamp the ERP checks."""
    fast, slow = sender(), zeep_only(sender())
    fast._send_binding()
    assert all(p is not None for p in fast._plans)
    live = [o for o in erp.data if o["Status"] != "cancelled" and o["Note"] != "call first"]
    held = next(o for o in erp.data if o["Status"] != "cancelled" and o["Note"] == "call first")
    for i, order in enumerate(live[:5]):
        params = {"OrderId": order["OrderId"], "Amount": order["Amount"], "PaymentRef": f"P-{i}"}
        erp.requests.clear()
        first = fast.send(dict(params))
        second = slow.send(dict(params))
        assert first == (200, {"OrderId": order["OrderId"], "Paid": True, "PaymentRef": f"P-{i}", "Changed": True})
        assert second == (200, {**first[1], "Changed": False})
        a, b = (etree.fromstring(body) for body in erp.requests)
        for doc in (a, b):
            for el in doc.iter("{*}Nonce", "{*}Password", "{*}Created", "{*}Expires"):
                el.text = "-"
        assert c14n(a) == c14n(b)
        assert a.find(".//{*}Security/{*}UsernameToken") is not None and a.find(".//{*}Security/{*}Timestamp") \
            is not None
    bad = {"OrderId": held["OrderId"], "Amount": held["Amount"], "PaymentRef": "X"}
    errors = []
    for source in (fast, slow):
        with pytest.raises(DeliveryFailed) as info:
            source.send(dict(bad))
        errors.append(str(info.value))
    assert errors[0] == errors[1] and "Client.OrderOnHold: order" in errors[0]
    outcomes = []
    for params in ({"OrderId": 1, "Amount": 1, "PaymentRef": "x", "Nope": 1}, {"Amount": 1, "PaymentRef": "x"}):
        for source in (fast, slow):  # left to zeep: it refuses the unknown parameter, and sends the missing one nil
            before = len(erp.requests)
            with pytest.raises((AdapterError, DeliveryFailed)) as refused:
                source.send(dict(params))
            outcomes.append((type(refused.value).__name__, str(refused.value), len(erp.requests) - before))
    assert outcomes[0] == outcomes[1] and outcomes[2] == outcomes[3]
    assert outcomes[0][0] == "AdapterError" and outcomes[0][2] == 0 and "Nope" in outcomes[0][1]
    assert outcomes[2][0] == "DeliveryFailed" and outcomes[2][2] == 1 and "no order None" in outcomes[2][1]


def test_authentication_failure_reads_the_same_through_both(erp: ERPService, sender: Any) -> None:
    order = next(o for o in erp.data if o["Status"] != "cancelled" and o["Note"] != "call first")
    params = {"OrderId": order["OrderId"], "Amount": order["Amount"], "PaymentRef": "A"}
    errors = []
    for source in (sender(password="not-it"), zeep_only(sender(password="not-it"))):
        with pytest.raises(DeliveryFailed) as info:
            source.send(dict(params))
        errors.append(str(info.value))
    assert errors[0] == errors[1] and "wsse:FailedAuthentication" in errors[0]


def test_what_the_plans_leave_to_zeep(erp: ERPService) -> None:
    client = zeep.Client(erp.wsdl_url)
    binding = client.service._binding
    operation = binding._operations["MarkOrderPaid"]
    plan = RequestPlan.compile(client, binding, operation, "http://x")
    assert plan is not None
    for params in ({"OrderId": 1, "Amount": 2}, {"OrderId": None, "Amount": 2, "PaymentRef": "x"},
                   {"OrderId": 1, "Amount": 2, "PaymentRef": "x", "Other": 1},
                   {"OrderId": [1], "Amount": 2, "PaymentRef": "x"},
                   {"OrderId": {"a": 1}, "Amount": 2, "PaymentRef": "x"}):
        with pytest.raises(Fallback):
            plan.envelope(params)
    reply = ReplyPlan.compile(client, operation)
    assert reply is not None
    ns = "urn:hub:demo:erp"
    env = "http://schemas.xmlsoap.org/soap/envelope/"

    def answer(inner: str) -> bytes:
        return (f'<e:Envelope xmlns:e="{env}" xmlns:t="{ns}"><e:Body><t:MarkOrderPaidResponse><t:MarkOrderPaidResult>'
                f"{inner}</t:MarkOrderPaidResult></t:MarkOrderPaidResponse></e:Body></e:Envelope>").encode()

    good = answer("<t:OrderId>7</t:OrderId><t:Paid>true</t:Paid>")
    assert reply.read(200, good, "text/xml") == {"OrderId": 7, "Paid": True, "PaymentRef": None, "Changed": None}
    with pytest.raises(Fallback):  # MTOM/XOP parts: zeep's
        reply.read(200, good, 'Multipart/Related; type="application/xop+xml"; boundary=x')
    for status, body in [
        (500, good),  # not 200: zeep's process_error
        (200, answer("<t:OrderId>7</t:OrderId><t:Unknown>1</t:Unknown>")),  # strict zeep refuses it
        (200, answer("<t:Paid>true</t:Paid><t:OrderId>7</t:OrderId>")),  # out of order
        (200, answer('<t:OrderId xmlns:x="http://www.w3.org/2001/XMLSchema-instance" x:type="x:long">7</t:OrderId>')),
        (200, answer("<t:OrderId>seven</t:OrderId>")),  # zeep logs and reads None
        (200, answer("<OrderId>7</OrderId>")),  # unqualified: zeep matches by local name
        (200, f'<e:Envelope xmlns:e="{env}"><e:Body><e:Fault><faultcode>e:Server</faultcode><faultstring>x'
              "</faultstring></e:Fault></e:Body></e:Envelope>".encode()),
        (200, b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]>' + good[0:]),
        (200, b"not xml"),
    ]:
        with pytest.raises(Fallback):
            reply.read(status, body, "text/xml")


CHOICE_WSDL = """<?xml version="1.0"?>
<definitions xmlns="http://schemas.xmlsoap.org/wsdl/" xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/"
    xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:t="urn:t" targetNamespace="urn:t">
  <types><xs:schema targetNamespace="urn:t" elementFormDefault="qualified">
    <xs:element name="Pick"><xs:complexType><xs:choice><xs:element name="A" type="xs:string"/>
      <xs:element name="B" type="xs:int"/></xs:choice></xs:complexType></xs:element>
    <xs:element name="Tagged"><xs:complexType><xs:sequence><xs:element name="V" type="xs:string"/></xs:sequence>
      <xs:attribute name="lang" type="xs:string"/></xs:complexType></xs:element>
    <xs:element name="Open"><xs:complexType><xs:sequence><xs:any processContents="lax"/></xs:sequence>
      </xs:complexType></xs:element>
    <xs:element name="Defaulted"><xs:complexType><xs:sequence>
      <xs:element name="Mode" type="xs:string" default="fast"/></xs:sequence></xs:complexType></xs:element>
  </xs:schema></types>
  <message name="PickIn"><part name="p" element="t:Pick"/></message>
  <message name="TaggedIn"><part name="p" element="t:Tagged"/></message>
  <message name="OpenIn"><part name="p" element="t:Open"/></message>
  <message name="DefaultedIn"><part name="p" element="t:Defaulted"/></message>
  <portType name="P">
    <operation name="Pick"><input message="t:PickIn"/><output message="t:TaggedIn"/></operation>
    <operation name="Tagged"><input message="t:TaggedIn"/><output message="t:OpenIn"/></operation>
    <operation name="Open"><input message="t:OpenIn"/><output message="t:PickIn"/></operation>
    <operation name="Defaulted"><input message="t:DefaultedIn"/><output message="t:DefaultedIn"/></operation>
  </portType>
  <binding name="B" type="t:P"><soap:binding transport="http://schemas.xmlsoap.org/soap/http"/>
    <operation name="Pick"><soap:operation soapAction="pick"/><input><soap:body use="literal"/></input>
      <output><soap:body use="literal"/></output></operation>
    <operation name="Tagged"><soap:operation soapAction="tagged"/><input><soap:body use="literal"/></input>
      <output><soap:body use="literal"/></output></operation>
    <operation name="Open"><soap:operation soapAction="open"/><input><soap:body use="literal"/></input>
      <output><soap:body use="literal"/></output></operation>
    <operation name="Defaulted"><soap:operation soapAction="d"/><input><soap:body use="literal"/></input>
      <output><soap:body use="literal"/></output></operation>
  </binding>
  <service name="S"><port name="Port" binding="t:B"><soap:address location="http://partner.test/soap"/></port>
  </service>
</definitions>
"""


def test_shapes_the_compiler_does_not_cover_are_left_to_zeep(tmp_path: Path) -> None:
    """xsd:choice, attributes, xsd:any and schema defaults: no plan, zeep builds and reads those messages."""
    path = tmp_path / "shapes.wsdl"
    path.write_text(CHOICE_WSDL)
    client = zeep.Client(str(path))
    binding = client.service._binding
    for name in ("Pick", "Tagged", "Open", "Defaulted"):
        operation = binding._operations[name]
        assert RequestPlan.compile(client, binding, operation, "http://x") is None, name
        assert ReplyPlan.compile(client, operation) is None, name


def _paid(erp: ERPService, ref: str) -> dict[str, Any]:
    order = next(o for o in erp.data if o["Status"] != "cancelled" and o["Note"] != "call first")
    return {"OrderId": order["OrderId"], "Amount": order["Amount"], "PaymentRef": ref}


def _through(erp: ERPService, port: int, **system: Any) -> SoapSource:
    config = SoapSystemConfig.model_validate({
        "wsdl": erp.wsdl_url, "address": f"http://127.0.0.1:{port}/erp", "retries": {"max": 0},
        "username_token": {"username": DEMO_USER, "password": DEMO_PASSWORD, "digest": True}, **system})
    return SoapSource(config, SoapSourceConfig.model_validate({"operation": "MarkOrderPaid",
                                                               "records": "MarkOrderPaidResponse"}))


def test_network_failures_are_classified_for_the_ledger(erp: ERPService) -> None:
    """A request that reached the partner without a complete answer may have taken effect (unknown); one that
    never left, or that a proxy refused, did not (failed, retryable)."""
    port = erp.url.rsplit(":", 1)[1].split("/")[0]
    with FaultProxy(int(port)) as proxy:
        # a read timeout generous enough for a loaded CI machine (0.5 s once timed out a healthy call), and a
        # stall well past it
        source = _through(erp, proxy.port, timeout=2.0)
        assert source.send(_paid(erp, "ok-1"))[0] == 200
        faults: list[tuple[str, dict[str, Any]]] = [  # in the head, in the body, and a read timeout
            ("reset", {"after": 20}), ("truncate", {"after": 60}), ("truncate", {"after": 300}),
            ("stall", {"after": 10, "seconds": 3.0})]
        for kind, kw in faults:
            proxy.inject(kind, **kw)
            before = len(erp.requests)
            with pytest.raises(DeliveryUnknown, match="may have taken effect"):
                source.send(_paid(erp, f"{kind}-1"))
            assert len(erp.requests) == before + 1  # it did reach the ERP
        time.sleep(1.2)  # the stalled connection ends before the next calls, which must not wait behind it
        proxy.inject("http_503")
        with pytest.raises(DeliveryFailed) as refused:
            source.send(_paid(erp, "503-1"))
        assert refused.value.retryable and refused.value.status == 503
        assert source.send(_paid(erp, "ok-2"))[0] == 200
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    gone = free.getsockname()[1]
    free.close()
    with pytest.raises(DeliveryFailed, match="nothing was sent") as down:
        _through(erp, gone).send(_paid(erp, "down-1"))
    assert down.value.retryable


def test_send_over_tls_with_a_client_certificate(tmp_path: Path) -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    ca.configure_trust(server_ctx)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    ca_file, client_pem = tmp_path / "ca.pem", tmp_path / "client.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    ca.issue_cert("hub-client@example.test").private_key_and_cert_chain_pem.write_to_path(str(client_pem))
    with ERPService(tls=server_ctx) as erp:
        wsdl_file = tmp_path / "erp.wsdl"
        wsdl_file.write_bytes(erp.wsdl())

        def source(**kw: Any) -> SoapSource:
            config = SoapSystemConfig.model_validate({
                "wsdl": str(wsdl_file), "address": erp.url, "retries": {"max": 0},
                "username_token": {"username": DEMO_USER, "password": DEMO_PASSWORD}, **kw})
            return SoapSource(config, SoapSourceConfig.model_validate({"operation": "MarkOrderPaid",
                                                                       "records": "MarkOrderPaidResponse"}))

        status, answer = source(verify=str(ca_file), client_cert={"cert": str(client_pem)}).send(_paid(erp, "tls"))
        assert status == 200 and answer["Paid"] is True and answer["PaymentRef"] == "tls"
        for kw in ({"verify": str(ca_file)}, {"client_cert": {"cert": str(client_pem)}}):  # no cert; untrusted CA
            with pytest.raises((DeliveryFailed, DeliveryUnknown)):
                source(**kw).send(_paid(erp, "tls-2"))


@pytest.mark.parametrize("digest", [True, False])
@pytest.mark.parametrize("ttl", [300, None])
def test_ws_security_header_built_directly_is_the_one_zeep_builds(monkeypatch: pytest.MonkeyPatch, digest: bool,
                                                                   ttl: int | None) -> None:
    """The header UsernameTokenWithTimestamp builds itself into an envelope without one, byte for byte the one
    zeep's UsernameToken.apply builds (into an envelope whose empty header it finds), at a fixed clock and nonce."""
    import types

    import zeep.wsse.username
    import zeep.wsse.utils

    import adapters.soap._wsse as wsse

    class Frozen(dt.datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Frozen:
            return cls(2024, 5, 6, 7, 8, 9, 123456, tzinfo=tz)

    monkeypatch.setattr(wsse, "datetime", Frozen)
    monkeypatch.setattr(zeep.wsse.utils, "datetime", types.SimpleNamespace(datetime=Frozen, timezone=dt.timezone))
    monkeypatch.setattr(wsse.os, "urandom", lambda n: b"\x01" * n)
    monkeypatch.setattr(zeep.wsse.username.os, "urandom", lambda n: b"\x01" * n)
    token = wsse.UsernameTokenWithTimestamp("user", "pw <&>", digest=digest, timestamp_ttl=ttl)
    env = "http://schemas.xmlsoap.org/soap/envelope/"

    def envelope(header: bool) -> Any:
        doc = etree.fromstring(f'<e:Envelope xmlns:e="{env}" xmlns:ns0="urn:x"><e:Body><ns0:A/></e:Body></e:Envelope>')
        if header:
            doc.insert(0, etree.Element(f"{{{env}}}Header"))
        return doc

    direct, _ = token.apply(envelope(False), {})
    by_zeep, _ = token.apply(envelope(True), {})
    assert etree_to_string(direct) == etree_to_string(by_zeep)
    assert (b"Timestamp" in etree_to_string(direct)) == bool(ttl)
    assert (b"#PasswordDigest" in etree_to_string(direct)) == digest


def test_ws_security_timestamp_is_made_after_the_rate_limit_wait(erp: ERPService, sender: Any) -> None:
    """The rate limiter is waited for before the envelope is built, as zeep's path always did: a long wait must
    not age the request's wsu:Timestamp (a partner refuses a stale one)."""
    source = sender()
    waited: list[float] = []

    class SlowLimiter:
        def acquire(self) -> None:
            time.sleep(1.2)
            waited.append(time.time())

    source.limiter = SlowLimiter()
    erp.requests.clear()
    assert source.send(_paid(erp, "limited"))[0] == 200
    doc = etree.fromstring(erp.requests[-1])
    created = doc.find(".//{*}Timestamp/{*}Created").text
    stamp = dt.datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()
    assert stamp >= int(waited[0])  # made after the wait (whole seconds), not before it
