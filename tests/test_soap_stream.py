"""A SOAP response is parsed while its body arrives (adapters.soap._transport: streaming), with the outcome of
reading it whole first: nothing is handed over before the body is complete, a body that breaks off is
requested again, one past max_response_bytes fails without a batch, and a reader that stops early stops the
download and leaves no spool file."""

from __future__ import annotations

import threading
import time
from collections.abc import Generator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

import pytest

from adapters.soap import SoapSource, SoapSourceConfig, SoapSystemConfig
from hub.demo.erp import ERPService
from hub.errors import ResponseFormatError

ORDERS = 3000
ENV11 = "http://schemas.xmlsoap.org/soap/envelope/"


def _body(orders: int) -> bytes:
    """A GetOrders response in the demo ERP's shape, large enough for several batches."""
    parts = [f"<?xml version='1.0' encoding='UTF-8'?>\n<soap11env:Envelope "
             f'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:soap11env="{ENV11}" '
             'xmlns:tns="urn:hub:demo:erp"><soap11env:Body><tns:GetOrdersResponse><tns:GetOrdersResult>']
    for i in range(orders):
        parts.append(
            f"<tns:Order><tns:OrderId>{100000 + i}</tns:OrderId><tns:OrderDate>2024-01-01T10:00:00+02:00"
            "</tns:OrderDate><tns:Status>shipped</tns:Status><tns:Customer><tns:Id>7</tns:Id><tns:Name>Customer 7"
            "</tns:Name><tns:Region>EMEA</tns:Region></tns:Customer><tns:Amount>12.50</tns:Amount><tns:Currency>EUR"
            '</tns:Currency><tns:Paid>true</tns:Paid><tns:Note xsi:nil="true"/><tns:Lines><tns:OrderLine>'
            "<tns:LineNo>1</tns:LineNo><tns:Sku>SKU-1</tns:Sku><tns:Quantity>1</tns:Quantity><tns:UnitPrice>12.50"
            "</tns:UnitPrice></tns:OrderLine></tns:Lines></tns:Order>")
    parts.append("</tns:GetOrdersResult></tns:GetOrdersResponse></soap11env:Body></soap11env:Envelope>")
    return "".join(parts).encode()


class Partner:
    """The demo ERP's WSDL, and answers to GetOrders as the test plans them: the whole body, or the first
    *cut* bytes of it under the whole body's Content-Length (the connection then closes), or the body
    without a Content-Length (ended by closing the connection)."""

    def __init__(self, wsdl: bytes, body: bytes) -> None:
        self.wsdl, self.body = wsdl, body
        self.cuts: list[int] = []  # the next answers' cut points
        self.unframed = False
        self.posts = 0
        partner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._answer(partner.wsdl)

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                partner.posts += 1
                cut = partner.cuts.pop(0) if partner.cuts else None
                if partner.unframed:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/xml; charset=utf-8")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(partner.body)
                    self.close_connection = True
                    return
                self._answer(partner.body, cut)

            def _answer(self, body: bytes, cut: int | None = None) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/xml; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body if cut is None else body[:cut])
                if cut is not None:
                    self.wfile.flush()
                    time.sleep(0.3)  # the reader makes batches from what came (they must not be handed over)
                    self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/erp"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def demo_wsdl() -> bytes:
    with ERPService(port=0, data=[]) as erp:
        return erp.wsdl()


@pytest.fixture
def partner(demo_wsdl: bytes) -> Iterator[Partner]:
    p = Partner(demo_wsdl, _body(ORDERS))
    yield p
    p.close()


def _source(partner: Partner, spool: Path, **system: Any) -> SoapSource:
    config = SoapSystemConfig.model_validate({"wsdl": f"{partner.url}?wsdl", "address": partner.url,
                                              "retries": {"max": 2, "backoff": 0.01}, **system})
    return SoapSource(config, SoapSourceConfig(operation="GetOrders", records="Order"), spool_dir=spool,
                      batch_size=500)


def _spool_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "hub-soap-spool"]


def test_a_whole_body_is_read_while_it_arrives(partner: Partner, tmp_path: Path) -> None:
    src = _source(partner, tmp_path)
    ids = [i for b in src.batches() for i in b.column("OrderId").to_pylist()]
    assert ids == [100000 + i for i in range(ORDERS)]
    assert src.stats.bytes == len(partner.body) and src.stats.retries == 0
    assert list(tmp_path.iterdir()) == []


def test_a_body_that_breaks_off_is_requested_again_and_read_once(partner: Partner, tmp_path: Path) -> None:
    partner.cuts = [len(partner.body) * 2 // 3]  # batches would be made before the break
    src = _source(partner, tmp_path)
    ids = [i for b in src.batches() for i in b.column("OrderId").to_pylist()]
    assert ids == [100000 + i for i in range(ORDERS)], "every order once: nothing handed over from the broken body"
    assert partner.posts == 2 and src.stats.retries == 1
    assert src.stats.bytes == len(partner.body)
    assert list(tmp_path.iterdir()) == []


def test_a_body_past_max_response_bytes_fails_without_a_batch(partner: Partner, tmp_path: Path) -> None:
    partner.unframed = True  # no Content-Length: the cap is found mid-body
    src = _source(partner, tmp_path, max_response_bytes=len(partner.body) // 2)
    got = []
    with pytest.raises(ResponseFormatError, match="exceeds max_response_bytes"):
        for batch in src.batches():
            got.append(batch)
    assert got == []
    assert list(tmp_path.iterdir()) == []


def test_a_reader_that_stops_early_ends_the_download(partner: Partner, tmp_path: Path) -> None:
    src = _source(partner, tmp_path)
    batches = cast(Generator[Any, None, None], src.batches())
    first = next(batches)
    assert first.num_rows == 500
    batches.close()
    deadline = time.monotonic() + 5
    while _spool_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _spool_threads() == []
    assert list(tmp_path.iterdir()) == []
