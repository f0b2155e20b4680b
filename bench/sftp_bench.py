"""SFTP benchmark: download throughput vs OpenSSH's sftp, and a 1 GB CSV from SFTP into DuckDB.

Usage::

    .venv/bin/python bench/sftp_bench.py [--mib 512] [--csv-mb 1024] [--repeat 3] [--out FILE]

Starts OpenSSH's sshd on a free loopback port with generated keys (root only, like the tests), then:

1. **download**: one ``--mib`` MiB file of random bytes, fetched ``--repeat`` times by each peer,
   interleaved: OpenSSH's ``sftp`` client (``get``, its defaults) and the hub's
   ``SftpSession.download`` (asyncssh, 64 reads of 256 KiB in flight). Both are timed from connecting to
   the last byte on local disk; every copy is compared with the original. Target: hub >= 0.8x
   OpenSSH's throughput.
2. **ingest**: a ``--csv-mb`` MB CSV (10 columns, ~100 bytes a row) taken by the hub's file-drop path end
   to end — download, SHA-256, CSV parse, mapping with typed columns, one DuckDB transaction — in a
   fresh subprocess that reports rows/s and its peak RSS. Target: peak RSS < 500 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _mem import peak_rss_mb  # bench/_mem.py: bench/ is sys.path[0] when a bench runs as a script

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET_RATIO = 0.8
TARGET_RSS_MB = 500.0


def make_csv(path: Path, megabytes: int) -> int:
    """A CSV of about *megabytes* MB; returns its row count."""
    import random

    rng = random.Random(5)
    header = "id,booked_on,amount,currency,payer,iban,purpose,reference,channel,status\n"
    rows = []
    for i in range(100_000):
        rows.append(f"{i},2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d},{rng.uniform(-500, 5000):.2f},EUR,"
                    f"Payer {rng.randint(1, 9999):04d},DE{rng.randint(10**19, 10**20 - 1)},"
                    f"Invoice {rng.randint(1, 10**6)},REF-{rng.randint(1, 10**8):08d},"
                    f"{rng.choice(['sepa', 'card', 'wire'])},booked\n")
    block = "".join(rows).encode()
    repeats = max(1, megabytes * 1_000_000 // len(block))
    with path.open("wb") as fh:
        fh.write(header.encode())
        for _ in range(repeats):
            fh.write(block)
    return repeats * len(rows)


def openssh_get(drop: Any, remote: str, local: Path) -> float:
    key = drop.keys["ed25519"]
    plain = key.with_name("id_plain")
    if not plain.exists():  # sftp -b cannot ask for a passphrase: an unencrypted copy for the CLI
        import asyncssh

        asyncssh.read_private_key(str(key), "key-pass-phrase-91").write_private_key(str(plain))
        plain.chmod(0o600)
    started = time.perf_counter()
    subprocess.run(["sftp", "-q", "-b", "-", "-i", str(plain), "-P", str(drop.port), "-o",
                    f"UserKnownHostsFile={drop.known_hosts}", "-o", "StrictHostKeyChecking=yes",
                    f"{drop.username}@127.0.0.1"], input=f"get {remote} {local}\n".encode(), check=True,
                   capture_output=True)
    return time.perf_counter() - started


def hub_get(drop: Any, remote: str, local: Path) -> float:
    from adapters.sftp import SftpSession, SftpSystemConfig

    started = time.perf_counter()  # like the sftp CLI's time: connecting and authenticating included
    with SftpSession(SftpSystemConfig.model_validate(drop.system())) as session:
        session.download(remote, local)
    return time.perf_counter() - started


def same(a: Path, b: Path) -> bool:
    return subprocess.run(["cmp", "-s", str(a), str(b)]).returncode == 0


def ingest_worker(args: argparse.Namespace) -> None:
    """Subprocess: the hub's file-drop path on the CSV; prints a RESULT line."""
    import yaml

    from hub.files import ingest_file
    from hub.spec import loads

    drop = json.loads(args.drop)
    tmp = Path(args.tmp)
    doc = {"pipeline": "bench", "warehouse": f"duckdb:///{tmp / 'bench.duckdb'}",
           "systems": {"drop": {"sftp": drop}},
           "sources": {"payments": {"system": "drop", "files": {"path": args.folder, "glob": "*.csv"},
                                    "format": {"csv": {}},
                                    "columns": {"id": {"type": "int64"}, "booked_on": {"type": "date"},
                                                "amount": {"type": "decimal(12,2)"}, "currency": "currency",
                                                "payer": "payer", "iban": "iban", "purpose": "purpose",
                                                "reference": "reference", "channel": "channel",
                                                "status": "status"}}}}
    pipeline = loads(yaml.safe_dump(doc), tmp / "bench.yaml")
    baseline = peak_rss_mb()
    started = time.perf_counter()
    out = ingest_file(pipeline, "payments", "big.csv", run_id="bench")
    elapsed = time.perf_counter() - started
    rows = out.load.rows_loaded if out.load else 0
    print("RESULT " + json.dumps({"seconds": elapsed, "rows": rows, "rejected": out.rejected,
                                  "peak_rss_mb": peak_rss_mb(),
                                  "baseline_mb": baseline}), flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--mib", type=int, default=512)
    ap.add_argument("--csv-mb", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--ingest-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--drop", help=argparse.SUPPRESS)
    ap.add_argument("--tmp", help=argparse.SUPPRESS)
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.ingest_worker:
        ingest_worker(args)
        return 0

    from tests.sftp_servers import start_openssh

    with tempfile.TemporaryDirectory(prefix="sftp-bench-", dir=os.environ.get("BENCH_TMP")) as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "sshd").mkdir()
        started = start_openssh(tmp / "sshd")
        if isinstance(started, str):
            print(f"cannot run: {started}", file=sys.stderr)
            return 2
        drop, proc = started
        try:
            big = drop.local("big.bin")
            with big.open("wb") as fh:
                for _ in range(args.mib):
                    fh.write(os.urandom(1 << 20))
            times: dict[str, list[float]] = {"openssh": [], "hub": []}
            for i in range(args.repeat):
                for peer, fn in (("openssh", openssh_get), ("hub", hub_get)):
                    target = tmp / f"copy-{peer}.bin"
                    seconds = fn(drop, str(big), target)
                    ok = same(big, target)
                    target.unlink()
                    times[peer].append(seconds)
                    print(f"run {i + 1}/{args.repeat} {peer:8s} {seconds:6.2f} s  {args.mib / seconds:6.0f} MiB/s  "
                          f"{'ok' if ok else 'CORRUPT'}", file=sys.stderr)
                    if not ok:
                        return 1
            big.unlink()
            folder = drop.local("ingest")
            folder.mkdir(exist_ok=True)
            csv_rows = make_csv(folder / "big.csv", args.csv_mb)
            old = time.time() - 3600
            os.utime(folder / "big.csv", (old, old))
            csv_bytes = (folder / "big.csv").stat().st_size
            cmd = [sys.executable, str(Path(__file__).resolve()), "--ingest-worker", "--drop",
                   json.dumps(drop.system()), "--tmp", str(tmp), "--folder", str(folder)]
            res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=3600)
            lines = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")]
            if res.returncode != 0 or not lines:
                sys.stderr.write(res.stdout[-3000:] + res.stderr[-6000:])
                return 1
            ingest = json.loads(lines[-1][7:])
        finally:
            proc.terminate()
            proc.wait(10)
    md = report(args, times, ingest, csv_rows, csv_bytes)
    print(md)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(md)
    return 0 if ingest["rows"] == csv_rows else 1


def report(args: argparse.Namespace, times: dict[str, list[float]], ingest: dict[str, Any], rows: int,
           size: int) -> str:
    med = {p: statistics.median(t) for p, t in times.items()}
    ratio = med["openssh"] / med["hub"]
    lines = [f"Download of one {args.mib} MiB file over loopback, median of {args.repeat} interleaved runs.", "",
             "| peer | median s | MiB/s | runs (s) |", "| --- | ---: | ---: | --- |"]
    for p, label in (("openssh", "OpenSSH sftp `get`"), ("hub", "hub SftpSession.download (asyncssh)")):
        runs = ", ".join(f"{t:.2f}" for t in times[p])
        lines.append(f"| {label} | {med[p]:.2f} | {args.mib / med[p]:.0f} | {runs} |")
    lines += ["", f"CSV of {size / 1e6:.0f} MB ({rows:,} rows) from SFTP into DuckDB through the hub's file-drop path "
                  "(download, SHA-256, parse, typed mapping, one transaction):", "",
              "| rows loaded | seconds | rows/s | MB/s | peak RSS MB |", "| ---: | ---: | ---: | ---: | ---: |",
              f"| {ingest['rows']:,} | {ingest['seconds']:.1f} | {ingest['rows'] / ingest['seconds']:,.0f} | "
              f"{size / 1e6 / ingest['seconds']:.0f} | {ingest['peak_rss_mb']:.0f} |", "",
              "| target | measured | result |", "| --- | --- | --- |",
              f"| hub >= {TARGET_RATIO:g}x OpenSSH sftp throughput | {ratio:.2f}x | "
              f"{'PASS' if ratio >= TARGET_RATIO else 'FAIL'} |",
              f"| 1 GB CSV ingest peak RSS < {TARGET_RSS_MB:g} MB | {ingest['peak_rss_mb']:.0f} MB | "
              f"{'PASS' if ingest['peak_rss_mb'] < TARGET_RSS_MB else 'FAIL'} |",
              f"| every row loaded | {ingest['rows']:,} of {rows:,} | {'PASS' if ingest['rows'] == rows else 'FAIL'} |"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
