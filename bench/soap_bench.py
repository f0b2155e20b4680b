"""SOAP response benchmark: the hub's streaming source vs zeep's object-tree parse of the same body.

Usage::

    .venv/bin/python bench/soap_bench.py [--orders 200000] [--repeat 1] [--out FILE]

One response of ``--orders`` orders (the demo ERP's ``GetOrders`` shape: nested customer, 1-4 lines
each, decimals, dateTimes with offsets, ``xsi:nil`` notes, some base64 attachments) is written to a file
and served on loopback together with the demo ERP's WSDL. Each peer runs in a fresh subprocess and
reports its time and its peak RSS growth over its own baseline (measured after imports and WSDL
loading, just before the timed part):

* ``hub``  - ``adapters.soap.SoapSource.batches()``: the HTTP request, the body spooled to disk, lxml
  iterparse, typed Arrow batches (every record verified, counted);
* ``zeep`` - zeep's normal reply processing (``binding.process_reply``) of the same body, already in
  memory: the object tree every zeep user gets from ``client.service.GetOrders()``. No HTTP.
* ``iterparse`` - the floor for Python: a plain ``lxml.etree.iterparse`` loop over the same body file
  that builds, per order, a dict of the typed Python values the hub's columns hold (int, Decimal,
  aware datetime, date, bool, None for ``xsi:nil``, bytes for base64, the customer as a dict, the lines
  as a list of dicts), clears each order from the tree and keeps one batch of dicts at a time. No HTTP,
  no spooling, no Arrow, no checks against the WSDL.

Targets: hub >= 8x faster than zeep and >= 0.6x the iterparse loop's speed; hub peak RSS growth < 200 MB
(the others' are reported for comparison). ``--peers`` picks a subset; repeats run the peers interleaved.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from _mem import peak_rss_mb  # bench/_mem.py: bench/ is sys.path[0] when a bench runs as a script

ROOT = Path(__file__).resolve().parent.parent
TARGET_SPEEDUP = 8.0  # hub vs zeep (zeep_time / hub_time)
TARGET_VS_ITERPARSE = 0.6  # hub vs the plain iterparse loop (iterparse_time / hub_time)
PEERS = ("hub", "iterparse", "zeep")
TARGET_GROWTH_MB = 200.0
ENV11 = "http://schemas.xmlsoap.org/soap/envelope/"


def _rss_mb() -> float:
    return peak_rss_mb()


def write_body(path: Path, orders: int) -> int:
    """Write a GetOrders response with *orders* orders, in the shape spyne writes it."""
    rng = random.Random(3)
    epoch = datetime(2024, 1, 1, tzinfo=UTC)
    skus = [("SKU-100", "12.50"), ("SKU-200", "99.00"), ("SKU-300", "4.75"), ("SKU-400", "250.00")]
    with path.open("w", encoding="utf-8") as out:
        out.write(f"<?xml version='1.0' encoding='UTF-8'?>\n<soap11env:Envelope "
                  f'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:soap11env="{ENV11}" '
                  'xmlns:tns="urn:hub:demo:erp"><soap11env:Body><tns:GetOrdersResponse><tns:GetOrdersResult>')
        for i in range(orders):
            at = (epoch + timedelta(seconds=rng.randrange(0, 120 * 86400))).isoformat()
            lines = []
            total = 0.0
            for n in range(1, rng.randint(1, 4) + 1):
                sku, price = rng.choice(skus)
                qty = rng.randint(1, 9)
                total += float(price) * qty
                lines.append(f"<tns:OrderLine><tns:LineNo>{n}</tns:LineNo><tns:Sku>{sku}</tns:Sku>"
                             f"<tns:Quantity>{qty}</tns:Quantity><tns:UnitPrice>{price}</tns:UnitPrice>"
                             "</tns:OrderLine>")
            cid = rng.randint(1, 300)
            note = '<tns:Note xsi:nil="true"/>' if rng.random() < 0.7 else "<tns:Note>rush</tns:Note>"
            ship = f"<tns:ShipDate>{at[:10]}</tns:ShipDate>" if rng.random() < 0.6 else ""
            attach = "<tns:Attachment>b3JkZXItMTAwMDAx</tns:Attachment>" if rng.random() < 0.1 else ""
            out.write(
                f"<tns:Order><tns:OrderId>{100000 + i}</tns:OrderId><tns:OrderDate>{at}</tns:OrderDate>"
                f"<tns:Status>shipped</tns:Status><tns:Customer><tns:Id>{cid}</tns:Id>"
                f"<tns:Name>Customer {cid:04d}</tns:Name><tns:Region>EMEA</tns:Region></tns:Customer>"
                f"<tns:Amount>{total:.2f}</tns:Amount><tns:Currency>EUR</tns:Currency><tns:Paid>true</tns:Paid>"
                f"{ship}{note}<tns:Lines>{''.join(lines)}</tns:Lines>{attach}</tns:Order>")
        out.write("</tns:GetOrdersResult></tns:GetOrdersResponse></soap11env:Body></soap11env:Envelope>")
    return path.stat().st_size


def serve(body: str, wsdl: str, conn: Any) -> None:
    """Server process: GET ?wsdl answers the WSDL, POST answers the body file."""
    wsdl_bytes = Path(wsdl).read_bytes()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/xml")
            self.send_header("Content-Length", str(len(wsdl_bytes)))
            self.end_headers()
            self.wfile.write(wsdl_bytes)

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            size = Path(body).stat().st_size
            self.send_response(200)
            self.send_header("Content-Type", "text/xml; charset=utf-8")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            with open(body, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    self.wfile.write(chunk)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    conn.send(server.server_address[1])
    conn.close()
    server.serve_forever(poll_interval=0.2)


def peer_hub(port: int, body: Path, orders: int) -> dict[str, Any]:
    from adapters.soap import SoapSource, SoapSourceConfig, SoapSystemConfig

    system = SoapSystemConfig(wsdl=f"http://127.0.0.1:{port}/erp?wsdl", address=f"http://127.0.0.1:{port}/erp")
    source = SoapSource(system, SoapSourceConfig(operation="GetOrders", records="Order",
                                                 params={"FromDate": "2024-01-01T00:00:00Z",
                                                         "ToDate": "2025-01-01T00:00:00Z"}),
                        spool_dir=body.parent)
    source._wsdl = source._open()[0]  # load the WSDL before the clock starts (zeep's is loaded too)
    # Imports stay outside the clock for every peer: pyarrow imports pandas on its first conversion of a
    # Python list (0.3-1.3 s once per process, more than 10% of a 50,000-order run on a loaded VM).
    import pyarrow as pa

    pa.array(["warm-up"])
    baseline = _rss_mb()
    started = time.perf_counter()
    rows = errors = 0
    ids: set[int] = set()
    for batch in source.batches():
        rows += batch.num_rows
        ids.update(batch.column("OrderId").to_pylist())
        if "_hub_error" in batch.schema.names:
            errors += batch.num_rows - batch.column("_hub_error").null_count
    elapsed = time.perf_counter() - started
    ok = rows == orders == len(ids) and errors == 0
    return {"seconds": elapsed, "rows": rows, "ok": ok, "growth_mb": _rss_mb() - baseline,
            "detail": f"{source.stats.bytes / 1e6:.0f} MB over HTTP, {errors} bad records"}


def peer_zeep(port: int, body: Path, orders: int) -> dict[str, Any]:
    import zeep

    client = zeep.Client(f"http://127.0.0.1:{port}/erp?wsdl")
    binding = client.service._binding
    operation = binding.get("GetOrders")

    class Response:  # what zeep's transport hands to process_reply
        status_code = 200
        headers = {"Content-Type": "text/xml; charset=utf-8"}
        encoding = "utf-8"

        def __init__(self, content: bytes) -> None:
            self.content = content

    content = body.read_bytes()
    baseline = _rss_mb()
    started = time.perf_counter()
    result = binding.process_reply(client, operation, Response(content))
    elapsed = time.perf_counter() - started
    rows = len(result)
    return {"seconds": elapsed, "rows": rows, "ok": rows == orders, "growth_mb": _rss_mb() - baseline,
            "detail": f"{type(result).__name__} of {type(result[0]).__name__} objects" if rows else ""}


def peer_iterparse(port: int, body: Path, orders: int) -> dict[str, Any]:
    """A hand-written lxml loop: one dict of typed values per order, nothing else (see the module doc)."""
    import base64
    from datetime import date, datetime
    from decimal import Decimal

    from lxml import etree

    ns = "{urn:hub:demo:erp}"
    cut = len(ns)
    nil = "{http://www.w3.org/2001/XMLSchema-instance}nil"
    ints = {"OrderId", "Id", "LineNo", "Quantity"}
    decimals = {"Amount", "UnitPrice"}

    def value(name: str, el: Any) -> Any:
        text = el.text
        if text is None:
            return None if el.get(nil) in ("true", "1") else ""
        if name in ints:
            return int(text)
        if name in decimals:
            return Decimal(text)
        if name == "OrderDate":
            return datetime.fromisoformat(text)
        if name == "ShipDate":
            return date.fromisoformat(text)
        if name == "Paid":
            return text in ("true", "1")
        if name == "Attachment":
            return base64.b64decode(text)
        return text

    def record(el: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for child in el:
            name = child.tag[cut:]
            if name == "Lines":
                out[name] = [{c.tag[cut:]: value(c.tag[cut:], c) for c in line} for line in child]
            elif name == "Customer":
                out[name] = {c.tag[cut:]: value(c.tag[cut:], c) for c in child}
            else:
                out[name] = value(name, child)
        return out

    baseline = _rss_mb()
    started = time.perf_counter()
    rows = 0
    ids: set[int] = set()
    batch: list[dict[str, Any]] = []
    for _, el in etree.iterparse(str(body), events=("end",), tag=f"{ns}Order"):
        batch.append(record(el))
        el.clear()
        while el.getprevious() is not None:
            del el.getparent()[0]
        if len(batch) >= 10_000:
            rows += len(batch)
            ids.update(r["OrderId"] for r in batch)
            batch = []
    rows += len(batch)
    ids.update(r["OrderId"] for r in batch)
    elapsed = time.perf_counter() - started
    return {"seconds": elapsed, "rows": rows, "ok": rows == orders == len(ids), "growth_mb": _rss_mb() - baseline,
            "detail": "dicts of typed values"}


def worker(peer: str, port: int, body: Path, orders: int) -> None:
    sys.path.insert(0, str(ROOT))
    run = {"hub": peer_hub, "zeep": peer_zeep, "iterparse": peer_iterparse}[peer]
    result = run(port, body, orders)
    result["peak_rss_mb"] = _rss_mb()
    print("RESULT " + json.dumps(result), flush=True)


def run_peer(peer: str, port: int, body: Path, orders: int) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", peer, "--port", str(port),
           "--body", str(body), "--orders", str(orders)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, cwd=ROOT)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
        raise RuntimeError(f"peer {peer} failed (exit {proc.returncode})")
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT "):])
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--orders", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--peers", default=",".join(PEERS), help=f"comma-separated subset of {','.join(PEERS)}")
    ap.add_argument("--worker", choices=PEERS, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--body", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker, args.port, args.body, args.orders)
        return 0

    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    if not peers or any(p not in PEERS for p in peers) or "hub" not in peers:
        ap.error(f"--peers: a subset of {', '.join(PEERS)} that includes hub")
    sys.path.insert(0, str(ROOT))
    from hub.demo.erp import ERPService

    with tempfile.TemporaryDirectory(prefix="soap-bench-") as tmp:
        body, wsdl = Path(tmp) / "response.xml", Path(tmp) / "erp.wsdl"
        t0 = time.perf_counter()
        size = write_body(body, args.orders)
        with ERPService(port=0, data=[]) as erp:
            wsdl.write_bytes(erp.wsdl())
        print(f"response: {args.orders:,} orders, {size / 1e6:.0f} MB, written in {time.perf_counter() - t0:.1f} s",
              file=sys.stderr)
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe(duplex=False)
        server = ctx.Process(target=serve, args=(str(body), str(wsdl), child), daemon=True)
        server.start()
        child.close()
        port = int(parent.recv())
        try:
            results: dict[str, list[dict[str, Any]]] = {p: [] for p in peers}
            for i in range(args.repeat):
                for peer in peers[i % len(peers):] + peers[:i % len(peers)]:  # who goes first rotates
                    r = run_peer(peer, port, body, args.orders)
                    results[peer].append(r)
                    print(f"run {i + 1}/{args.repeat} {peer:9s} {r['seconds']:8.2f} s  growth "
                          f"{r['growth_mb']:7.0f} MB  peak {r['peak_rss_mb']:6.0f} MB  rows {r['rows']:,}  "
                          f"{'ok' if r['ok'] else 'NOT OK'}  {r['detail']}", file=sys.stderr)
        finally:
            server.terminate()
            server.join(10)
    md = report(args, size, results)
    print(md)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(md)
    return 0 if all(r["ok"] for rs in results.values() for r in rs) else 1


def report(args: argparse.Namespace, size: int, results: dict[str, list[dict[str, Any]]]) -> str:
    import statistics

    med = {p: statistics.median(r["seconds"] for r in rs) for p, rs in results.items()}
    growth = {p: max(r["growth_mb"] for r in rs) for p, rs in results.items()}
    peak = {p: max(r["peak_rss_mb"] for r in rs) for p, rs in results.items()}
    names = {"hub": "hub SoapSource (HTTP + spool + iterparse + Arrow)", "zeep": "zeep process_reply (parse only)",
             "iterparse": "lxml iterparse loop, dicts of typed values (no HTTP)"}
    lines = [f"{args.orders:,} orders in one response of {size / 1e6:.0f} MB; median of {args.repeat} run(s), "
             "peers interleaved.", "",
             "| peer | median s | orders/s | peak RSS growth MB | peak RSS MB | runs (s) | verified |",
             "| --- | ---: | ---: | ---: | ---: | --- | --- |"]
    for p in PEERS:
        if p not in results:
            continue
        ok = all(r["ok"] for r in results[p])
        runs = ", ".join(f"{r['seconds']:.2f}" for r in results[p])
        lines.append(f"| {names[p]} | {med[p]:.2f} | {args.orders / med[p]:,.0f} | {growth[p]:.0f} | {peak[p]:.0f} | "
                     f"{runs} | {'all ' + format(args.orders, ',') + ' orders' if ok else 'FAILED'} |")
    lines += ["", "| target | measured | result |", "| --- | --- | --- |"]
    if "zeep" in med:
        speedup = med["zeep"] / med["hub"]
        lines.append(f"| hub >= {TARGET_SPEEDUP:g}x faster than zeep (zeep_time / hub_time) | {speedup:.1f}x | "
                     f"{'PASS' if speedup >= TARGET_SPEEDUP else 'FAIL'} |")
    if "iterparse" in med:
        ratio = med["iterparse"] / med["hub"]
        lines.append(f"| hub >= {TARGET_VS_ITERPARSE:g}x the iterparse loop (iterparse_time / hub_time) | "
                     f"{ratio:.2f}x | {'PASS' if ratio >= TARGET_VS_ITERPARSE else 'FAIL'} |")
    others = ", ".join(f"{p}: {growth[p]:.0f} MB" for p in results if p != "hub")
    lines.append(f"| hub peak RSS growth < {TARGET_GROWTH_MB:g} MB | {growth['hub']:.0f} MB ({others}) | "
                 f"{'PASS' if growth['hub'] < TARGET_GROWTH_MB else 'FAIL'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
