"""File-drop ingest vs native readers: CSV, fixed width, JSON lines and XML, side by side in one run.

Usage::

    .venv/bin/python bench/files_bench.py [--mb 200] [--repeat 3] [--formats csv,fixed_width,jsonl,xml]
        [--peers hub,duckdb,pyarrow,lxml] [--out FILE] [--profile FORMAT]
    .venv/bin/python bench/files_bench.py --rss-only --mb 1024 --formats csv [--peers hub,hubarrow]  # 1 GB memory

Starts OpenSSH's sshd on a free loopback port (root only, like the tests) and writes one file of about
``--mb`` MB per format into its drop folder: the same payment records (10 columns, ~100 bytes a row in CSV).
Every peer runs in a fresh subprocess, ``--repeat`` times, interleaved (format by format, peers in turn, the
order rotating each repeat); the median time is reported, with the peer's own peak RSS (``VmHWM``,
bench/_mem.py, read right after the timed work: the row-count checks after it are not the peer's work — the
hub's ``count(DISTINCT id)`` on a connection without a memory limit used to set the 1 GB peak). Imports are
outside the timer.

Peers (per format):

* ``hub`` — ``hub.files.ingest_file``: SFTP download, SHA-256, parse, typed mapping (``columns:`` with
  int64, date and decimal(12,2)), ``rules:`` (not_null, min, in), bad rows to quarantine, the ``_hub_files``
  ledger, one DuckDB transaction into a new DuckDB file. End to end, from the drop.
* ``duckdb`` — DuckDB's own reader of the *local* file into a table of a new DuckDB file with the same
  column types: ``read_csv`` with ``columns=``; fixed width: ``read_csv`` of whole lines, ``substr`` and casts;
  JSON lines: ``read_json`` with ``columns=``.
* ``pyarrow`` — pyarrow's reader of the local file into an Arrow table with the same types, no load
  (``pyarrow.csv.read_csv`` with ``column_types``; fixed width: lines read by the CSV reader, sliced and cast
  with ``pyarrow.compute``; ``pyarrow.json.read_json`` with an explicit schema).
* ``hubarrow`` (only when named in ``--peers``) — the hub forced onto its earlier readers: for CSV the Arrow path
  (pyarrow's reader, the Mapper, chunks into DuckDB), which DuckDB warehouses used before hub/files_csv.py (fixed
  width goes that way anyway since issue 21's second round); for JSON lines the line-by-line reader (no pyarrow
  blocks); for XML the generic walk of every record (no flat-record comprehension): before and after in one run.
* ``hubbase`` (only when named in ``--peers``, with ``FB_BASE_TREE`` set) — the ``hub`` peer run with another
  checkout of the hub first on ``PYTHONPATH`` (e.g. ``git archive main | tar -x -C /tmp/base``): a change and the
  code before it, interleaved in one run.
* ``hubworker`` (only when named in ``--peers``) — the ``hub`` peer with ``format.xml.process_from: 0``: XML
  parsed by a worker process (hub/runtime/xmlprocess.py); its sampled peak RSS is added to the hub's.
* ``lxml`` (XML) — ``lxml.etree.iterparse`` over the local file, building one dict of the field texts per
  record (the values only; elements cleared as it goes), no types, no load.

Environment knobs for experiments: ``FB_NO_RULES=1`` gives the hub a spec without ``rules:`` and primary key;
``FB_WH_OPTS=?threads=1`` is appended to the hub's DuckDB URL; ``FB_RSS_TRACE=1`` prints the hub worker's RSS
after each timed step.

Targets (the ``TARGETS`` table): hub >= 0.6x DuckDB's ``read_csv`` for CSV; hub >= 0.5x the fastest native
peer for fixed width, JSON lines and XML; peak RSS < 500 MB for a 1 GB file (``--rss-only``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _mem import peak_rss_mb, rss_mb  # bench/_mem.py: bench/ is sys.path[0] when a bench runs as a script

ROOT = Path(__file__).resolve().parent.parent
FORMATS = ("csv", "fixed_width", "jsonl", "xml")
EXT = {"csv": "csv", "fixed_width": "txt", "jsonl": "jsonl", "xml": "xml"}
NATIVE = {"csv": ("duckdb", "pyarrow"), "fixed_width": ("duckdb", "pyarrow"), "jsonl": ("duckdb", "pyarrow"),
          "xml": ("lxml",)}
#: format -> (ratio, the peer(s) the hub is held against: "fastest" of NATIVE, or one peer)
TARGETS = {"csv": (0.6, "duckdb"), "fixed_width": (0.5, "fastest"), "jsonl": (0.5, "fastest"),
           "xml": (0.5, "fastest")}
TARGET_RSS_MB = 500.0
FIELDS = ["id", "booked_on", "amount", "currency", "payer", "iban", "purpose", "reference", "channel", "status"]
#: fixed-width layout: (name, start, width)
LAYOUT = [("id", 1, 10), ("booked_on", 11, 10), ("amount", 21, 12), ("currency", 33, 3), ("payer", 36, 12),
          ("iban", 48, 22), ("purpose", 70, 16), ("reference", 86, 12), ("channel", 98, 4), ("status", 102, 6)]
DUCK_TYPES = {"id": "BIGINT", "booked_on": "DATE", "amount": "DECIMAL(12,2)"}  # the rest VARCHAR


# --- data --------------------------------------------------------------------------------------------------

def _records(n: int, seed: int = 5) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [{"id": i, "booked_on": f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
             "amount": f"{rng.uniform(-500, 5000):.2f}", "currency": "EUR",
             "payer": f"Payer {rng.randint(1, 9999):04d}",
             "iban": f"DE{rng.randint(10**19, 10**20 - 1)}", "purpose": f"Invoice {rng.randint(1, 10**6)}",
             "reference": f"REF-{rng.randint(1, 10**8):08d}", "channel": rng.choice(["sepa", "card", "wire"]),
             "status": "booked"} for i in range(n)]


def _block(fmt: str, recs: list[dict[str, Any]], offset: int) -> str:
    """*recs* in *fmt*, ids shifted by *offset* (so every id in the file is distinct)."""
    out = []
    for r in recs:
        r = {**r, "id": r["id"] + offset}
        if fmt == "csv":
            out.append(",".join(str(r[f]) for f in FIELDS) + "\n")
        elif fmt == "fixed_width":
            out.append("".join(str(r[name]).ljust(width)[:width] for name, _, width in LAYOUT) + "\n")
        elif fmt == "jsonl":
            out.append(json.dumps({**r, "amount": float(r["amount"])}) + "\n")
        else:
            out.append("<payment>" + "".join(f"<{f}>{r[f]}</{f}>" for f in FIELDS) + "</payment>\n")
    return "".join(out)


def make_file(path: Path, fmt: str, megabytes: int) -> int:
    """A file of about *megabytes* MB in *fmt*; returns its row count."""
    recs = _records(50_000)
    rows = 0
    target = megabytes * 1_000_000
    with path.open("w", encoding="utf-8") as fh:
        if fmt == "csv":
            fh.write(",".join(FIELDS) + "\n")
        elif fmt == "xml":
            fh.write('<?xml version="1.0" encoding="UTF-8"?>\n<payments>\n')
        while fh.tell() < target:
            fh.write(_block(fmt, recs, rows))
            rows += len(recs)
        if fmt == "xml":
            fh.write("</payments>\n")
    return rows


# --- peers (in the worker subprocess) ----------------------------------------------------------------------

def _spec(fmt: str, drop: dict[str, Any], folder: str, tmp: Path) -> dict[str, Any]:
    if fmt == "fixed_width":
        (tmp / "layout.yaml").write_text(json.dumps({"fields": [{"name": n, "start": s, "width": w}
                                                                for n, s, w in LAYOUT]}))
        format_ = {"fixed_width": {"layout": str(tmp / "layout.yaml")}}
    elif fmt == "xml":
        xml: dict[str, Any] = {"records": "payment"}
        if os.environ.get("FB_XML_PROCESS_FROM"):  # e.g. a huge number: parsed in the hub's own process
            xml["process_from"] = int(os.environ["FB_XML_PROCESS_FROM"])
        format_ = {"xml": xml}
    else:
        format_ = {fmt: {}}
    if os.environ.get("FB_NO_RULES"):
        return {"pipeline": "bench", "warehouse": f"duckdb:///{tmp / 'hub.duckdb'}",
                "systems": {"drop": {"sftp": drop}},
                "sources": {"payments": {"system": "drop", "files": {"path": folder, "glob": f"*.{EXT[fmt]}"},
                                         "format": format_, "columns": {
                                             **{f: f for f in FIELDS}, "id": {"type": "int64"},
                                             "booked_on": {"type": "date"}, "amount": {"type": "decimal(12,2)"}}}}}
    columns: dict[str, Any] = {f: f for f in FIELDS}
    columns.update({"id": {"type": "int64"}, "booked_on": {"type": "date"}, "amount": {"type": "decimal(12,2)"}})
    return {"pipeline": "bench", "warehouse": f"duckdb:///{tmp / 'hub.duckdb'}{os.environ.get('FB_WH_OPTS', '')}",
            "systems": {"drop": {"sftp": drop}},
            "sources": {"payments": {"system": "drop", "files": {"path": folder, "glob": f"*.{EXT[fmt]}"},
                                     "format": format_, "columns": columns, "primary_key": ["id"],
                                     "rules": {"amount": {"min": -1000}, "channel": {"in": ["sepa", "card", "wire"]},
                                               "booked_on": {"not_null": True}}}}}


def peer_hub(fmt: str, file: str, drop: dict[str, Any], tmp: Path, profile: bool) -> dict[str, Any]:
    import yaml

    from hub.files import ingest_file
    from hub.spec import loads

    pipeline = loads(yaml.safe_dump(_spec(fmt, drop, str(Path(file).parent), tmp)), tmp / "bench.yaml")
    # Imports stay outside the clock for every peer (bench/soap_bench.py does the same): pyarrow imports pandas on
    # its first conversion of a Python list (0.3-0.5 s once per process), which no native peer pays
    import pyarrow as pa

    pa.array(["warm-up"])
    spent = _time_phases()
    prof = None
    if profile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    workers = _WorkerPeaks()
    workers.start()
    started = time.perf_counter()
    out = ingest_file(pipeline, "payments", Path(file).name, run_id="bench")
    seconds = time.perf_counter() - started
    # before the verification below, which is not the peer's work; a worker process's peak (the XML reader's,
    # adapters/sftp/_xml_process.py) is added: both ran at once, so the sum bounds the pair's peak from above
    workers.stop()
    peak = peak_rss_mb() + workers.peak_mb
    if prof is not None:
        import pstats

        prof.disable()
        pstats.Stats(prof, stream=sys.stderr).sort_stats("cumulative").print_stats(40)
        pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(25)
    import duckdb

    with duckdb.connect(str(tmp / "hub.duckdb"), read_only=True) as con:
        rows, distinct = con.execute("SELECT count(*), count(DISTINCT id) FROM payments").fetchone()  # type: ignore[misc]
        ledger = con.execute("SELECT count(*) FROM _hub_files WHERE status = 'loaded'").fetchone()[0]  # type: ignore[index]
    return {"seconds": seconds, "rows": rows, "distinct": distinct, "rejected": out.rejected, "phases": spent,
            "peak_rss_mb": peak, "detail": f"ledger rows {ledger}, rejected {out.rejected}, "
                                          f"reader {out.details.get('reader', 'arrow')}"
                                          + (f"; worker peak {workers.peak_mb:.0f} MB" if workers.peak_mb else "")}


class _WorkerPeaks(threading.Thread):
    """The largest peak RSS (VmHWM) of this process's child processes, sampled every 10 ms while they run (a
    child's ``ru_maxrss`` would include this process's own peak, inherited across fork)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak_mb, self._done = 0.0, threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.01):
            for children in Path("/proc/self/task").glob("*/children"):
                try:
                    pids = children.read_text().split()
                except OSError:
                    continue
                for pid in pids:
                    try:
                        status = Path(f"/proc/{pid}/status").read_text()
                    except OSError:
                        continue
                    for line in status.splitlines():
                        if line.startswith("VmHWM:"):
                            self.peak_mb = max(self.peak_mb, int(line.split()[1]) / 1024.0)

    def stop(self) -> None:
        self._done.set()
        self.join()


def _time_phases() -> dict[str, float]:
    """Wall time inside a few steps of the hub's path (summed over calls), for the report's breakdown."""
    from adapters.sftp.client import SftpSource
    from hub.warehouse.base import StreamingLoad

    spent: dict[str, float] = {}

    def timed(owner: Any, attr: str, label: str) -> None:
        inner = getattr(owner, attr)

        def wrapper(*a: Any, **k: Any) -> Any:
            t = time.perf_counter()
            try:
                return inner(*a, **k)
            finally:
                spent[label] = spent.get(label, 0.0) + time.perf_counter() - t
                if os.environ.get("FB_RSS_TRACE"):
                    print(f"after {label}: rss {rss_mb():.0f} MB, peak {peak_rss_mb():.0f} MB", file=sys.stderr)
        setattr(owner, attr, wrapper)

    timed(SftpSource, "_copy", "download + hash")  # in a thread of its own where the download overlaps the load
    timed(StreamingLoad, "_flush", "warehouse inserts")
    timed(StreamingLoad, "commit", "commit")
    return spent


def peer_duckdb(fmt: str, file: str, tmp: Path) -> dict[str, Any]:
    import duckdb

    con = duckdb.connect(str(tmp / "native.duckdb"))
    cols = "{" + ", ".join(f"'{f}': '{DUCK_TYPES.get(f, 'VARCHAR')}'" for f in FIELDS) + "}"
    started = time.perf_counter()
    if fmt == "csv":
        con.execute(f"CREATE TABLE payments AS SELECT * FROM read_csv('{file}', header=true, columns={cols})")
    elif fmt == "jsonl":
        con.execute(f"CREATE TABLE payments AS SELECT * FROM read_json('{file}', format='newline_delimited', "
                    f"columns={cols})")
    else:
        exprs = []
        for name, start, width in LAYOUT:
            value = f"trim(substr(line, {start}, {width}))"
            typed = f"CAST({value} AS {DUCK_TYPES[name]})" if name in DUCK_TYPES else value
            exprs.append(f"{typed} AS {name}")
        con.execute(f"CREATE TABLE payments AS SELECT {', '.join(exprs)} FROM read_csv('{file}', header=false, "
                    "columns={'line': 'VARCHAR'}, delim='\\x1f', quote='', escape='', auto_detect=false)")
    seconds = time.perf_counter() - started
    peak = peak_rss_mb()  # before the verification below, which is not the peer's work
    rows, distinct = con.execute("SELECT count(*), count(DISTINCT id) FROM payments").fetchone()  # type: ignore[misc]
    con.close()
    return {"seconds": seconds, "rows": rows, "distinct": distinct, "peak_rss_mb": peak, "detail": ""}


def peer_pyarrow(fmt: str, file: str) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv
    import pyarrow.json as pajson

    types = {"id": pa.int64(), "booked_on": pa.date32(), "amount": pa.decimal128(12, 2)}
    started = time.perf_counter()
    if fmt == "csv":
        table = pacsv.read_csv(file, convert_options=pacsv.ConvertOptions(
            column_types={f: types.get(f, pa.string()) for f in FIELDS}))
    elif fmt == "jsonl":
        # the reader takes no date32 from text: dates read as text and cast, amounts as float64 and cast
        schema = pa.schema([(f, {"id": pa.int64(), "amount": pa.float64()}.get(f, pa.string())) for f in FIELDS])
        table = pajson.read_json(file, parse_options=pajson.ParseOptions(explicit_schema=schema))
        table = table.set_column(1, "booked_on", table.column("booked_on").cast(pa.date32()))
        table = table.set_column(2, "amount", table.column("amount").cast(pa.decimal128(12, 2)))
    else:
        lines = pacsv.read_csv(file, read_options=pacsv.ReadOptions(column_names=["line"]),
                               parse_options=pacsv.ParseOptions(delimiter="\x1f", quote_char=False),
                               convert_options=pacsv.ConvertOptions(column_types={"line": pa.string()})).column(0)
        cols = {}
        for name, start, width in LAYOUT:
            value = pc.utf8_trim_whitespace(pc.utf8_slice_codeunits(lines, start - 1, start - 1 + width))
            if name == "booked_on":
                value = value.cast(pa.timestamp("s")).cast(pa.date32())
            cols[name] = value.cast(types[name]) if name in types and name != "booked_on" else value
        table = pa.table(cols)
    seconds = time.perf_counter() - started
    peak = peak_rss_mb()  # before the verification below, which is not the peer's work
    return {"seconds": seconds, "rows": table.num_rows, "distinct": len(pc.unique(table.column("id"))),
            "peak_rss_mb": peak, "detail": ""}


def peer_lxml(file: str) -> dict[str, Any]:
    from lxml import etree

    started = time.perf_counter()
    rows = 0
    ids = set()
    for _, el in etree.iterparse(file, events=("end",), tag="payment"):
        row = {child.tag: child.text for child in el}
        ids.add(row["id"])
        rows += 1
        el.clear()
        while el.getprevious() is not None:
            del el.getparent()[0]
    seconds = time.perf_counter() - started
    peak = peak_rss_mb()  # before the verification below, which is not the peer's work
    return {"seconds": seconds, "rows": rows, "distinct": len(ids), "peak_rss_mb": peak, "detail": ""}


def worker(args: argparse.Namespace) -> None:
    tmp = Path(args.tmp)
    after_imports = 0.0
    if args.worker in ("hub", "hubarrow", "hubbase", "hubworker"):
        import hub.files
        import hub.spec  # noqa: F401

        if args.worker == "hubworker":  # XML parsed by a worker process (format.xml.process_from)
            os.environ["FB_XML_PROCESS_FROM"] = "0"
        if args.worker == "hubarrow":  # the readers before issue 21, for before/after numbers in one run
            from adapters.sftp import _formats
            from hub import files_csv
            from hub.runtime import xmlrecords

            files_csv.plan = lambda *a, **k: "the benchmark asks for the Arrow path"
            _formats._jsonl_block = lambda *a, **k: None
            xmlrecords._flat_record = lambda *a, **k: None
            os.environ["FB_XML_PROCESS_FROM"] = str(1 << 60)  # in this process, where the reader is patched
        after_imports = rss_mb()
        result = peer_hub(args.format, args.file, json.loads(args.drop), tmp, args.profile_worker)
    elif args.worker == "duckdb":
        import duckdb  # noqa: F401

        after_imports = rss_mb()
        result = peer_duckdb(args.format, args.file, tmp)
    elif args.worker == "pyarrow":
        import pyarrow.csv
        import pyarrow.json  # noqa: F401

        after_imports = rss_mb()
        result = peer_pyarrow(args.format, args.file)
    else:
        import lxml.etree  # noqa: F401

        after_imports = rss_mb()
        result = peer_lxml(args.file)
    result.setdefault("peak_rss_mb", peak_rss_mb())
    result.update(rss_after_imports_mb=after_imports)
    print("RESULT " + json.dumps(result), flush=True)


# --- driver ------------------------------------------------------------------------------------------------

def run_peer(peer: str, fmt: str, file: Path, drop: dict[str, Any], tmp: Path, profile: bool = False) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"{peer}-", dir=tmp))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", peer, "--format", fmt, "--file", str(file),
           "--drop", json.dumps(drop), "--tmp", str(work)] + (["--profile-worker"] if profile else [])
    tree = os.environ["FB_BASE_TREE"] if peer == "hubbase" else str(ROOT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [tree, os.environ.get("PYTHONPATH")]))}
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900, env=env)
    if profile or os.environ.get("FB_RSS_TRACE"):
        sys.stderr.write(res.stderr)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")]
    subprocess.run(["rm", "-rf", str(work)], check=False)
    if res.returncode != 0 or not lines:
        raise RuntimeError(f"{peer} on {fmt} failed:\n{res.stdout[-2000:]}\n{res.stderr[-5000:]}")
    out: dict[str, Any] = json.loads(lines[-1][7:])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--mb", type=int, default=200, help="size of each format's file (MB)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--formats", default=",".join(FORMATS))
    ap.add_argument("--peers", default="hub,duckdb,pyarrow,lxml")
    ap.add_argument("--rss-only", action="store_true", help="only the hub, once per format: the memory run")
    ap.add_argument("--profile", metavar="FORMAT", help="one profiled hub run of FORMAT (cProfile to stderr)")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--format", help=argparse.SUPPRESS)
    ap.add_argument("--file", help=argparse.SUPPRESS)
    ap.add_argument("--drop", help=argparse.SUPPRESS)
    ap.add_argument("--tmp", help=argparse.SUPPRESS)
    ap.add_argument("--profile-worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    sys.path.insert(0, str(ROOT))
    from tests.sftp_servers import start_openssh

    formats = [args.profile] if args.profile else [f for f in args.formats.split(",") if f]
    wanted = ["hub"] if args.profile else [p for p in args.peers.split(",") if p]
    if args.rss_only:
        wanted = [p for p in wanted if p in ("hub", "hubarrow", "hubbase", "hubworker")] or ["hub"]
    with tempfile.TemporaryDirectory(prefix="files-bench-", dir=os.environ.get("BENCH_TMP")) as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "sshd").mkdir()
        started = start_openssh(tmp / "sshd")
        if isinstance(started, str):
            print(f"cannot run: {started}", file=sys.stderr)
            return 2
        drop, proc = started
        try:
            files: dict[str, tuple[Path, int]] = {}
            for fmt in formats:
                folder = drop.local(f"drop_{fmt}")
                folder.mkdir(exist_ok=True)
                path = folder / f"payments.{EXT[fmt]}"
                rows = make_file(path, fmt, args.mb)
                old = time.time() - 3600
                os.utime(path, (old, old))
                files[fmt] = (path, rows)
                print(f"{fmt}: {path.stat().st_size / 1e6:.0f} MB, {rows:,} rows", file=sys.stderr)
            system = drop.system()
            system["passphrase"] = None
            system["private_key"] = str(_plain_key(drop))
            if args.profile:
                r = run_peer("hub", args.profile, files[args.profile][0], system, tmp, profile=True)
                print(json.dumps(r))
                return 0
            results: dict[tuple[str, str], list[dict[str, Any]]] = {}
            repeat = 1 if args.rss_only else args.repeat
            for i in range(repeat):
                for fmt in formats:
                    peers = [p for p in ("hub", "hubbase", "hubarrow", "hubworker", *NATIVE[fmt]) if p in wanted]
                    peers = peers[i % len(peers):] + peers[:i % len(peers)]
                    for peer in peers:
                        r = run_peer(peer, fmt, files[fmt][0], system, tmp)
                        ok = r["rows"] == files[fmt][1] and r["distinct"] == files[fmt][1]
                        r["ok"] = ok
                        results.setdefault((fmt, peer), []).append(r)
                        print(f"run {i + 1}/{repeat} {fmt:11s} {peer:8s} {r['seconds']:7.2f} s  "
                              f"{r['peak_rss_mb']:5.0f} MB  rows {r['rows']:,}{'' if ok else '  WRONG'}  "
                              + " ".join(f"{k}={v:.2f}" for k, v in r.get("phases", {}).items()),
                              file=sys.stderr)
        finally:
            proc.terminate()
            proc.wait(10)
    md = report(args, formats, files, results)
    print(md)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(md)
    return 0 if all(r["ok"] for rs in results.values() for r in rs) else 1


def _plain_key(drop: Any) -> Path:
    """The unencrypted copy of the test key (the same key the passphrase protects)."""
    import asyncssh

    from tests.sftp_servers import PASSPHRASE

    key = drop.keys["ed25519"]
    plain = key.with_name("id_plain")
    if not plain.exists():
        asyncssh.read_private_key(str(key), PASSPHRASE).write_private_key(str(plain))
        plain.chmod(0o600)
    return plain


LABELS = {"hub": "hub ingest_file (SFTP → parse → types → rules → DuckDB, one transaction)",
          "hubarrow": "the same, forced onto the earlier readers (CSV, fixed width: pyarrow → Mapper → chunks; "
                      "JSON lines: line by line; XML: the generic walk)",
          "hubbase": "the same, with the code before this change (FB_BASE_TREE)",
          "hubworker": "the same, XML parsed by a worker process (format.xml.process_from: 0)",
          "duckdb": "DuckDB reader → table (local file)", "pyarrow": "pyarrow reader → Arrow table (local file)",
          "lxml": "lxml iterparse → dicts (local file)"}


def report(args: argparse.Namespace, formats: list[str], files: dict[str, tuple[Path, int]],
           results: dict[tuple[str, str], list[dict[str, Any]]]) -> str:
    lines = [f"Files of about {args.mb} MB per format; median of {1 if args.rss_only else args.repeat} interleaved "
             "run(s); peak RSS is each process's own VmHWM, the max over runs.", "",
             "| format | peer | median s | rows/s | MB/s | peak RSS MB | RSS after imports MB | runs (s) | verified |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    med: dict[tuple[str, str], float] = {}
    for fmt in formats:
        size = files[fmt][0].stat().st_size / 1e6 if files[fmt][0].exists() else float(args.mb)
        for peer in ("hub", "hubbase", "hubarrow", "hubworker", *NATIVE[fmt]):
            rs = results.get((fmt, peer))
            if not rs:
                continue
            m = med[(fmt, peer)] = statistics.median(r["seconds"] for r in rs)
            rows = rs[0]["rows"]
            verified = f"{rows:,} rows, {rs[0]['distinct']:,} distinct ids" + (
                f"; {rs[0]['detail']}" if rs[0]["detail"] else "")
            runs = ", ".join(f"{r['seconds']:.2f}" for r in rs)
            peak = max(r["peak_rss_mb"] for r in rs)
            base = max(r["rss_after_imports_mb"] for r in rs)
            lines.append(f"| {fmt} | {LABELS[peer]} | {m:.2f} | {rows / m:,.0f} | {size / m:.0f} | {peak:.0f} | "
                         f"{base:.0f} | {runs} | {verified} |")
    lines += ["", "| target | measured | result |", "| --- | --- | --- |"]
    for fmt in formats:
        if (fmt, "hub") not in med:
            continue
        ratio, against = TARGETS[fmt]
        if args.rss_only:
            rss = max(r["peak_rss_mb"] for r in results[(fmt, "hub")])
            lines.append(f"| {fmt}: hub peak RSS < {TARGET_RSS_MB:g} MB ({args.mb} MB file) | {rss:.0f} MB | "
                         f"{'PASS' if rss < TARGET_RSS_MB else 'FAIL'} |")
            continue
        natives = [p for p in NATIVE[fmt] if (fmt, p) in med] if against == "fastest" else \
            [against] if (fmt, against) in med else []
        if not natives:
            continue
        best = min(natives, key=lambda p: med[(fmt, p)])
        measured = med[(fmt, best)] / med[(fmt, "hub")]
        which = "fastest native" if against == "fastest" else "its reader"
        lines.append(f"| {fmt}: hub >= {ratio:g}x {best} ({which}) "
                     f"| {measured:.2f}x | {'PASS' if measured >= ratio else 'FAIL'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
