"""The demo estate's ERP: a real SOAP service on loopback, built with spyne (which writes its own WSDL).

Operations (namespace ``urn:hub:demo:erp``):

* ``GetOrders(FromDate, ToDate, Page, PageSize)`` — orders with ``OrderDate`` in ``[FromDate, ToDate)``,
  page-number paging (an empty page ends it); ``FromDate >= ToDate`` is a ``Client`` SOAP Fault;
* ``ListOrders(FromDate, ToDate, ContinuationToken)`` — the same orders in batches of 25 with a
  continuation token in the response (absent on the last batch);
* ``GetOrdersFrom(FromDate, ToDate, Offset, Limit)`` — the same orders, offset paging (at most 40);
* ``GetCustomer(CustomerId)`` — one customer (a ``Client.NotFound`` fault for unknown ids).

Orders carry a nested ``Customer``, repeated ``Lines`` (``OrderLine``), ``Amount`` as
``xsd:decimal`` (totalDigits 14, fractionDigits 2), ``OrderDate`` as ``xsd:dateTime`` with an offset,
``Status`` as an enumeration, ``Paid`` as ``xsd:boolean``, ``ShipDate`` as ``xsd:date``, ``Note`` as a
nillable string (``xsi:nil`` on some orders) and ``Attachment`` as ``xsd:base64Binary``.

Every request must carry a WS-Security ``UsernameToken`` (PasswordText or PasswordDigest) with a fresh
``wsu:Timestamp``; otherwise the answer is a ``wsse:FailedAuthentication`` fault. The service speaks
SOAP 1.1 at ``/erp`` and SOAP 1.2 at ``/erp12``; ``/erp?wsdl`` describes both (spyne writes the 1.1
binding, a 1.2 binding and port are added to it).

Data are deterministic (seeded): the same orders on every run, customer ids matching the demo CRM.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D
from io import BytesIO
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from lxml import etree

NS = "urn:hub:demo:erp"
WSSE_NS = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU_NS = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
PASSWORD_DIGEST = "#PasswordDigest"
DEMO_USER, DEMO_PASSWORD = "hub", "demo-erp-pass-7d21"  # the demo's own credentials (exported by `hub demo`)
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
DAYS = 120
SKUS = [("SKU-100", D("12.50")), ("SKU-200", D("99.00")), ("SKU-300", D("4.75")), ("SKU-400", D("250.00")),
        ("SKU-500", D("18.20"))]
REGIONS = ["EMEA", "NA", "LATAM", "APAC"]
TOKEN_BATCH = 25
MAX_CLOCK_SKEW = timedelta(minutes=5)


def orders(days: int = DAYS, customers_n: int = 300) -> list[dict[str, Any]]:
    """Deterministic orders over *days* days from 2024-01-01."""
    rng = random.Random(11)
    out = []
    oid = 100_000
    for day in range(days):
        for _ in range(rng.randint(15, 35)):
            oid += 1
            at = EPOCH + timedelta(days=day, seconds=rng.randint(0, 86_399))
            offset = timedelta(hours=rng.choice([0, 1, 2, -5]))
            lines: list[dict[str, Any]] = []
            amount = D("0.00")
            for n in range(1, rng.randint(1, 4) + 1):
                sku, price = rng.choice(SKUS)
                quantity = rng.randint(1, 9)
                lines.append({"LineNo": n, "Sku": sku, "Quantity": quantity, "UnitPrice": price})
                amount += price * quantity
            status = rng.choice(["open", "shipped", "shipped", "cancelled"])
            cid = rng.randint(1, customers_n)
            out.append({
                "OrderId": oid,
                "OrderDate": at.astimezone(_tz(offset)),
                "Status": status,
                "Customer": {"Id": cid, "Name": f"Customer {cid:04d}", "Region": REGIONS[cid % len(REGIONS)]},
                "Amount": amount,
                "Currency": "EUR",
                "Paid": status == "shipped" and rng.random() < 0.9,
                "ShipDate": (at + timedelta(days=rng.randint(1, 5))).date() if status == "shipped" else None,
                "Note": None if rng.random() < 0.7 else rng.choice(["rush", "gift wrap", "call first"]),
                "Lines": lines,
                "Attachment": f"order-{oid}".encode() if rng.random() < 0.2 else None,
            })
    return out


def _tz(offset: timedelta) -> Any:
    from datetime import timezone

    return timezone(offset)


# --- the spyne application -----------------------------------------------------------------------------

def build_application(data: list[dict[str, Any]], soap12: bool = False) -> Any:
    """The spyne application over *data* (SOAP 1.1, or 1.2 when *soap12*)."""
    from spyne import (
        Application,
        Array,
        Boolean,
        ByteArray,
        ComplexModel,
        Date,
        DateTime,
        Decimal,
        Enum,
        Fault,
        Integer,
        Long,
        ServiceBase,
        Unicode,
        rpc,
    )
    from spyne.protocol.soap import Soap11, Soap12

    status_type = Enum("open", "shipped", "cancelled", type_name="OrderStatus")

    class Customer(ComplexModel):
        __namespace__ = NS
        _type_info = [("Id", Integer(min_occurs=1)), ("Name", Unicode), ("Region", Unicode)]

    class OrderLine(ComplexModel):
        __namespace__ = NS
        _type_info = [("LineNo", Integer(min_occurs=1)), ("Sku", Unicode), ("Quantity", Integer),
                      ("UnitPrice", Decimal(12, 2))]

    class Order(ComplexModel):
        __namespace__ = NS
        _type_info = [
            ("OrderId", Long(min_occurs=1)),
            ("OrderDate", DateTime),
            ("Status", status_type),
            ("Customer", Customer),
            ("Amount", Decimal(14, 2)),
            ("Currency", Unicode),
            ("Paid", Boolean),
            ("ShipDate", Date),
            ("Note", Unicode(nillable=True, min_occurs=1)),
            ("Lines", Array(OrderLine)),
            ("Attachment", ByteArray),
        ]

    class OrderBatch(ComplexModel):
        __namespace__ = NS
        _type_info = [("Orders", Array(Order)), ("ContinuationToken", Unicode)]

    class PaymentConfirmation(ComplexModel):
        __namespace__ = NS
        _type_info = [("OrderId", Long(min_occurs=1)), ("Paid", Boolean), ("PaymentRef", Unicode),
                      ("Changed", Boolean)]

    by_customer = {o["Customer"]["Id"]: o["Customer"] for o in data}
    by_order = {o["OrderId"]: o for o in data}

    def window(start: datetime, end: datetime) -> list[dict[str, Any]]:
        if start is None or end is None:
            raise Fault(faultcode="Client.MissingParameter", faultstring="FromDate and ToDate are required")
        start, end = _aware(start), _aware(end)
        if start >= end:
            raise Fault(faultcode="Client.InvalidRange", faultstring="FromDate must be before ToDate",
                        detail={"FromDate": start.isoformat(), "ToDate": end.isoformat()})
        return [o for o in data if start <= o["OrderDate"] < end]

    def as_order(o: dict[str, Any]) -> Any:
        return Order(**{**o, "Customer": Customer(**o["Customer"]),
                        "Lines": [OrderLine(**ln) for ln in o["Lines"]],
                        "Attachment": [o["Attachment"]] if o["Attachment"] else None})

    class ERPService(ServiceBase):
        @rpc(DateTime, DateTime, Integer, Integer, _returns=Array(Order))
        def GetOrders(ctx, FromDate, ToDate, Page, PageSize):  # type: ignore[no-untyped-def]
            page, size = Page or 1, min(PageSize or 50, 500)
            if page < 1:
                raise Fault(faultcode="Client.InvalidPage", faultstring=f"Page must be >= 1, got {page}")
            rows = window(FromDate, ToDate)[(page - 1) * size: page * size]
            return [as_order(o) for o in rows]

        @rpc(DateTime, DateTime, Integer, Integer, _returns=Array(Order))
        def GetOrdersFrom(ctx, FromDate, ToDate, Offset, Limit):  # type: ignore[no-untyped-def]
            start, size = Offset or 0, min(Limit or 40, 40)  # the service caps the page size, as many do
            return [as_order(o) for o in window(FromDate, ToDate)[start: start + size]]

        @rpc(DateTime, DateTime, Unicode, _returns=OrderBatch)
        def ListOrders(ctx, FromDate, ToDate, ContinuationToken):  # type: ignore[no-untyped-def]
            rows = window(FromDate, ToDate)
            start = _decode_token(ContinuationToken)
            chunk = rows[start: start + TOKEN_BATCH]
            nxt = _encode_token(start + TOKEN_BATCH) if start + TOKEN_BATCH < len(rows) else None
            return OrderBatch(Orders=[as_order(o) for o in chunk], ContinuationToken=nxt)

        @rpc(Long(min_occurs=1), Decimal(14, 2, min_occurs=1), Unicode(min_occurs=1, max_len=64),
             _returns=PaymentConfirmation)
        def MarkOrderPaid(ctx, OrderId, Amount, PaymentRef):  # type: ignore[no-untyped-def]
            """Mark an order paid (the write of the demo's payment-reconciliation flow). Marking a paid order
            again changes nothing (Changed is false); an order on hold (note "call first") is refused with a
            fault, so that the flow's compensation has something to do."""
            order = by_order.get(OrderId)
            if order is None:
                raise Fault(faultcode="Client.NotFound", faultstring=f"no order {OrderId}")
            if order["Status"] == "cancelled":
                raise Fault(faultcode="Client.OrderCancelled", faultstring=f"order {OrderId} is cancelled")
            if order["Note"] == "call first":
                raise Fault(faultcode="Client.OrderOnHold",
                            faultstring=f"order {OrderId} is on hold until the customer is called")
            if Amount != order["Amount"]:
                raise Fault(faultcode="Client.AmountMismatch",
                            faultstring=f"order {OrderId} is for {order['Amount']}, not {Amount}")
            changed = not order["Paid"] or order.get("PaymentRef") != PaymentRef
            order["Paid"], order["PaymentRef"] = True, PaymentRef
            return PaymentConfirmation(OrderId=OrderId, Paid=True, PaymentRef=PaymentRef, Changed=changed)

        @rpc(Integer, _returns=Customer)
        def GetCustomer(ctx, CustomerId):  # type: ignore[no-untyped-def]
            found = by_customer.get(CustomerId)
            if found is None:
                raise Fault(faultcode="Client.NotFound", faultstring=f"no customer {CustomerId}")
            return Customer(**found)

    proto = Soap12 if soap12 else Soap11
    return Application([ERPService], tns=NS, name="ERP", in_protocol=proto(validator="lxml"),
                       out_protocol=proto())


def _aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _encode_token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode()


def _decode_token(token: str | None) -> int:
    if not token:
        return 0
    from spyne import Fault

    try:
        return int(base64.urlsafe_b64decode(token.encode()).decode().split(":")[1])
    except (ValueError, IndexError):
        raise Fault(faultcode="Client.InvalidToken", faultstring=f"bad continuation token {token!r}") from None


# --- WS-Security (spyne does not check UsernameToken itself) -------------------------------------------

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


def check_username_token(body: bytes, username: str, password: str, now: datetime | None = None) -> str | None:
    """Why the request's WS-Security header is not acceptable, or None when it is."""
    if b"<!DOCTYPE" in body[:2048]:
        return "DTDs are not accepted"
    try:
        doc = etree.fromstring(body, _PARSER)
    except etree.XMLSyntaxError as exc:
        return f"not XML: {exc}"
    token = doc.find(f".//{{{WSSE_NS}}}Security/{{{WSSE_NS}}}UsernameToken")
    if token is None:
        return "a WS-Security UsernameToken is required"
    user = token.findtext(f"{{{WSSE_NS}}}Username")
    pw = token.find(f"{{{WSSE_NS}}}Password")
    if user != username or pw is None or pw.text is None:
        return "unknown user or missing password"
    now = now or datetime.now(UTC)
    if pw.get("Type", "").endswith(PASSWORD_DIGEST):
        nonce, created = token.findtext(f"{{{WSSE_NS}}}Nonce"), token.findtext(f"{{{WSU_NS}}}Created")
        if not nonce or not created:
            return "PasswordDigest needs Nonce and Created"
        expected = base64.b64encode(hashlib.sha1(base64.b64decode(nonce) + created.encode() + password.encode())
                                    .digest()).decode()
        if pw.text.strip() != expected:
            return "password digest does not match"
        if abs(now - _parse_ts(created)) > MAX_CLOCK_SKEW:
            return "UsernameToken Created is too old or in the future"
    elif pw.text != password:
        return "wrong password"
    stamp = doc.find(f".//{{{WSSE_NS}}}Security/{{{WSU_NS}}}Timestamp")
    if stamp is None:
        return "a wsu:Timestamp is required"
    expires = stamp.findtext(f"{{{WSU_NS}}}Expires")
    created_at = stamp.findtext(f"{{{WSU_NS}}}Created")
    if not created_at or abs(now - _parse_ts(created_at)) > MAX_CLOCK_SKEW:
        return "wsu:Timestamp Created is missing or stale"
    if expires and _parse_ts(expires) < now:
        return "wsu:Timestamp has expired"
    return None


def _parse_ts(value: str) -> datetime:
    ts = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _fault(soap12: bool, code: str, message: str) -> bytes:
    if soap12:
        env = "http://www.w3.org/2003/05/soap-envelope"
        return (f'<soap:Envelope xmlns:soap="{env}" xmlns:wsse="{WSSE_NS}"><soap:Body><soap:Fault>'
                f"<soap:Code><soap:Value>soap:Sender</soap:Value><soap:Subcode><soap:Value>{code}</soap:Value>"
                f'</soap:Subcode></soap:Code><soap:Reason><soap:Text xml:lang="en">{message}</soap:Text>'
                "</soap:Reason></soap:Fault></soap:Body></soap:Envelope>").encode()
    env = "http://schemas.xmlsoap.org/soap/envelope/"
    return (f'<soap:Envelope xmlns:soap="{env}" xmlns:wsse="{WSSE_NS}"><soap:Body><soap:Fault>'
            f"<faultcode>{code}</faultcode><faultstring>{message}</faultstring>"
            "</soap:Fault></soap:Body></soap:Envelope>").encode()


WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class _Secured:
    """WSGI middleware: POSTs need a valid UsernameToken; GET ?wsdl is public, as usual."""

    def __init__(self, app: WSGIApp, soap12: bool, service: ERPService) -> None:
        self.app, self.soap12, self.service = app, soap12, service

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ["REQUEST_METHOD"] != "POST":
            return self.app(environ, start_response)
        service = self.service
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length)
        service.requests.append(body)
        service.content_types.append(environ.get("CONTENT_TYPE", ""))
        service.traceparents.append(environ.get("HTTP_TRACEPARENT"))
        if service.delay_next:
            time.sleep(service.delay_next.pop(0))
        fault = service.fail_next.pop(0) if service.fail_next else None
        if fault is not None:
            start_response(f"{fault} Injected", [("Content-Type", "text/plain")])
            return [b"injected failure"]
        if service.basic and environ.get("HTTP_AUTHORIZATION") != "Basic " + base64.b64encode(
                ":".join(service.basic).encode()).decode():
            start_response("401 Unauthorized", [("Content-Type", "text/plain"), ("WWW-Authenticate", "Basic")])
            return [b"HTTP basic authentication required"]
        problem = check_username_token(body, service.username, service.password)
        if problem:
            ctype = "application/soap+xml; charset=utf-8" if self.soap12 else "text/xml; charset=utf-8"
            start_response("500 Internal Server Error", [("Content-Type", ctype)])
            return [_fault(self.soap12, "wsse:FailedAuthentication", f"authentication failed: {problem}")]
        environ["wsgi.input"] = BytesIO(body)
        if service.rewrite is None:
            return self.app(environ, start_response)
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
            captured.update(status=status, headers=headers)

        out = service.rewrite(b"".join(self.app(environ, capture)))
        headers = [(k, v) for k, v in captured["headers"] if k.lower() != "content-length"]
        start_response(captured["status"], [*headers, ("Content-Length", str(len(out)))])
        return [out]


class _Router:
    """/erp (SOAP 1.1, and the WSDL), /erp12 (SOAP 1.2)."""

    def __init__(self, soap11: WSGIApp, soap12: WSGIApp, service: ERPService) -> None:
        self.soap11, self.soap12, self.service = soap11, soap12, service

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/erp" and environ["REQUEST_METHOD"] == "GET" and "wsdl" in environ.get("QUERY_STRING", ""):
            self.service.wsdl_gets += 1
            body = self.service.wsdl()
            if self.service.wsdl_rewrite is not None:
                body = self.service.wsdl_rewrite(body)
            start_response("200 OK", [("Content-Type", "text/xml; charset=utf-8"),
                                      ("Content-Length", str(len(body)))])
            return [body]
        if path == "/erp":
            return self.soap11(environ, start_response)
        if path == "/erp12":
            return self.soap12(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found"]


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class ERPService:
    """Start/stop the ERP on a loopback port (0 picks a free one)."""

    def __init__(self, port: int = 0, username: str = DEMO_USER, password: str = DEMO_PASSWORD,
                 host: str = "127.0.0.1", data: list[dict[str, Any]] | None = None,
                 basic: tuple[str, str] | None = None, tls: ssl.SSLContext | None = None) -> None:
        """*basic*: also require HTTP basic auth; *tls*: serve HTTPS with this server context (which may
        require client certificates)."""
        from spyne.server.wsgi import WsgiApplication

        # spyne logs every Fault it answers (expected here) with a traceback, and warns when an app is
        # built twice: keep demo and test output clean.
        logging.getLogger("spyne").setLevel(logging.CRITICAL)
        self.data = orders() if data is None else data
        self.username, self.password = username, password
        self.requests: list[bytes] = []  # raw request bodies, for tests
        self.content_types: list[str] = []  # their Content-Type headers
        self.traceparents: list[str | None] = []  # their W3C traceparent headers (a partner correlating)
        self.fail_next: list[int] = []  # HTTP statuses to answer to the next requests, for failure tests
        self.delay_next: list[float] = []  # seconds to stall the next requests, for timeout tests
        self.rewrite: Callable[[bytes], bytes] | None = None  # alters responses, for contract tests
        self.wsdl_rewrite: Callable[[bytes], bytes] | None = None  # alters the WSDL served, for contract tests
        self.wsdl_gets = 0
        self.basic = basic
        self._scheme = "https" if tls else "http"
        self._host = host
        self._wsdl: bytes | None = None
        soap11 = _Secured(WsgiApplication(build_application(self.data)), False, self)
        soap12 = _Secured(WsgiApplication(build_application(self.data, soap12=True)), True, self)
        self._server = make_server(host, port, _Router(soap11, soap12, self), server_class=_ThreadingWSGIServer,
                                   handler_class=_QuietHandler)
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, name="demo-erp", daemon=True)

    @property
    def url(self) -> str:
        return f"{self._scheme}://{self._host}:{self._server.server_address[1]}/erp"

    @property
    def wsdl_url(self) -> str:
        return self.url + "?wsdl"

    def wsdl(self) -> bytes:
        """spyne's WSDL for this address, plus a SOAP 1.2 binding and port at /erp12."""
        if self._wsdl is None:
            from spyne.interface.wsdl import Wsdl11
            from spyne.server.wsgi import WsgiApplication

            app = build_application(self.data)
            WsgiApplication(app)  # sets the HTTP transport URI the WSDL binding names
            doc = Wsdl11(app.interface)
            doc.build_interface_document(self.url)
            self._wsdl = add_soap12_binding(doc.get_interface_document(), self.url + "12")
        return self._wsdl

    def start(self) -> ERPService:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> ERPService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


WSDL_NS = "http://schemas.xmlsoap.org/wsdl/"
SOAP11_BINDING_NS = "http://schemas.xmlsoap.org/wsdl/soap/"
SOAP12_BINDING_NS = "http://schemas.xmlsoap.org/wsdl/soap12/"


def add_soap12_binding(wsdl: bytes, address: str) -> bytes:
    """Copy every SOAP 1.1 binding of *wsdl* as a SOAP 1.2 binding with a port at *address*."""
    doc = etree.fromstring(wsdl, _PARSER)
    service = doc.find(f"{{{WSDL_NS}}}service")
    assert service is not None
    for binding in doc.findall(f"{{{WSDL_NS}}}binding"):
        copy = etree.fromstring(etree.tostring(binding), _PARSER)
        name = binding.get("name", "") + "12"
        copy.set("name", name)
        for el in list(_iter_ns(copy, SOAP11_BINDING_NS)):
            el.tag = f"{{{SOAP12_BINDING_NS}}}{etree.QName(el).localname}"
        etree.cleanup_namespaces(copy)
        binding.addnext(copy)
        port = etree.SubElement(service, f"{{{WSDL_NS}}}port", name=name,
                                binding=f"tns:{name}", nsmap={"tns": NS})
        etree.SubElement(port, f"{{{SOAP12_BINDING_NS}}}address", location=address,
                         nsmap={"soap12": SOAP12_BINDING_NS})
    return bytes(etree.tostring(doc, xml_declaration=True, encoding="utf-8"))


def _iter_ns(root: Any, ns: str) -> Iterator[Any]:
    for el in root.iter():
        if isinstance(el.tag, str) and el.tag.startswith(f"{{{ns}}}"):
            yield el


def serve_forever(port: int = 8802) -> None:  # pragma: no cover - manual use
    with ERPService(port=port) as erp:
        print(f"ERP on {erp.url} (WSDL {erp.wsdl_url})")
        threading.Event().wait()


def orders_for(start: date, end: date, data: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The demo orders with an order date in [start, end) (UTC days), for tests."""
    lo = datetime(start.year, start.month, start.day, tzinfo=UTC)
    hi = datetime(end.year, end.month, end.day, tzinfo=UTC)
    return [o for o in (orders() if data is None else data) if lo <= o["OrderDate"] < hi]


# --- events: the ERP announces its orders on RabbitMQ ---------------------------------------------------

#: The queue the demo ERP publishes its order events to (declared by the demo pipeline's source).
ORDER_EVENTS_QUEUE = "demo.erp.orders"
#: Where the demo's reconciliation flow announces paid orders: ``order.paid`` on RabbitMQ's built-in topic
#: exchange, received by the ERP's queue bound to it (:func:`hub.demo.events.bind_paid_queue`).
PAID_EXCHANGE, PAID_ROUTING_KEY, PAID_QUEUE = "amq.topic", "order.paid", "demo.erp.paid"


async def bind_paid_queue(url: str, queue: str = PAID_QUEUE) -> None:
    """Declare the durable *queue* bound to ``order.paid`` on ``amq.topic`` (idempotent). Bounded to 10,000
    messages (the oldest dropped): nothing in the demo consumes it but tests and curious users."""
    import aio_pika

    async with await aio_pika.connect(url, timeout=5) as conn:
        channel = await conn.channel()
        q = await channel.declare_queue(queue, durable=True, arguments={"x-max-length": 10_000})
        await q.bind(PAID_EXCHANGE, PAID_ROUTING_KEY)


def order_events(data: list[dict[str, Any]], start: datetime, end: datetime) -> list[tuple[str, str, bytes]]:
    """``order.created`` for every order placed in [start, end), ``order.shipped`` for those shipped, as
    (message id, type, JSON body): deterministic, so publishing twice stores each event once."""
    out: list[tuple[str, str, bytes]] = []
    for o in data:
        at = _aware(o["OrderDate"])
        if not start <= at < end:
            continue
        common = {"order_id": o["OrderId"], "customer_id": o["Customer"]["Id"]}
        out.append((f"{o['OrderId']}:created", "order.created", json.dumps(
            {"event": "order.created", **common, "amount": str(o["Amount"]), "currency": o["Currency"],
             "at": at.astimezone(UTC).isoformat()}).encode()))
        if o["ShipDate"] is not None:
            out.append((f"{o['OrderId']}:shipped", "order.shipped", json.dumps(
                {"event": "order.shipped", **common, "amount": str(o["Amount"]), "currency": o["Currency"],
                 "at": datetime.combine(o["ShipDate"], datetime.min.time(), UTC).isoformat()}).encode()))
    return out


async def publish_order_events(url: str, events: list[tuple[str, str, bytes]],
                               queue: str = ORDER_EVENTS_QUEUE) -> int:
    """Publish *events* persistently to *queue* (publisher confirms), by type; how many."""
    from adapters.amqp import publish

    for kind in ("order.created", "order.shipped"):
        chosen = [e for e in events if e[1] == kind]
        if chosen:
            await publish(url, queue, [e[2] for e in chosen], message_ids=[e[0] for e in chosen], type=kind)
    return len(events)
