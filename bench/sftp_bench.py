"""SFTP benchmark: download throughput vs OpenSSH's sftp, each with the same key; optionally a CSV ingest.

Usage::

    .venv/bin/python bench/sftp_bench.py [--mib 512] [--repeat 3] [--csv-mb 0] [--out FILE]

Starts OpenSSH's sshd on a free loopback port with generated keys (root only, like the tests), then:

1. **download**: one ``--mib`` MiB file of random bytes, fetched ``--repeat`` times by each of four peers,
   interleaved (the order rotating each repeat): OpenSSH's ``sftp`` client (``get``, its defaults) and the
   hub's ``SftpSession.download`` (asyncssh, 64 reads of 256 KiB in flight, the resumable path a file drop
   uses), each once with an unencrypted ed25519 key and once with the same key protected by a passphrase
   (OpenSSH gets it through ``SSH_ASKPASS``), so the cost of unlocking the key is visible and equal for both.
   Every peer is timed from connecting to the last byte on local disk; every copy is compared with the
   original. Target: hub >= 1.0x OpenSSH's throughput with the same key.
2. **ingest** (``--csv-mb N``, off by default: ``bench/files_bench.py`` compares ingest with native readers):
   an N MB CSV taken by the hub's file-drop path end to end in a fresh subprocess reporting rows/s and its
   own peak RSS (VmHWM). Target: peak RSS < 500 MB.
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

TARGET_RATIO = 1.0
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


def plain_key(drop: Any) -> Path:
    """An unencrypted copy of the drop's passphrase-protected test key (the same key)."""
    import asyncssh

    from tests.sftp_servers import PASSPHRASE

    key = drop.keys["ed25519"]
    plain = key.with_name("id_plain")
    if not plain.exists():
        asyncssh.read_private_key(str(key), PASSPHRASE).write_private_key(str(plain))
        plain.chmod(0o600)
    return plain


def openssh_get(drop: Any, remote: str, local: Path, *, encrypted: bool) -> float:
    """OpenSSH's ``sftp`` in batch mode; with *encrypted*, the passphrase-protected key, its passphrase given
    by ``SSH_ASKPASS`` (batch mode cannot prompt), so OpenSSH pays the same key derivation the hub does."""
    from tests.sftp_servers import PASSPHRASE

    key = drop.keys["ed25519"] if encrypted else plain_key(drop)
    env = dict(os.environ)
    if encrypted:
        askpass = key.with_name("askpass.sh")
        askpass.write_text(f"#!/bin/sh\necho '{PASSPHRASE}'\n")
        askpass.chmod(0o700)
        env.update(SSH_ASKPASS=str(askpass), SSH_ASKPASS_REQUIRE="force", DISPLAY=env.get("DISPLAY", ":0"))
    started = time.perf_counter()
    # commands on stdin without `-b`: batch mode would also forbid the passphrase (BatchMode=yes)
    subprocess.run(["sftp", "-q", "-i", str(key), "-P", str(drop.port), "-o",
                    f"UserKnownHostsFile={drop.known_hosts}", "-o", "StrictHostKeyChecking=yes",
                    "-o", "IdentitiesOnly=yes", "-o", "PasswordAuthentication=no", f"{drop.username}@127.0.0.1"],
                   input=f"get {remote} {local}\nquit\n".encode(), check=True, capture_output=True, env=env,
                   timeout=600)
    return time.perf_counter() - started


def hub_get(drop: Any, remote: str, local: Path, *, encrypted: bool) -> float:
    """The hub's ``SftpSession.download`` (what a file drop's fetch runs), with the same key as OpenSSH."""
    from adapters.sftp import SftpSession, SftpSystemConfig

    system = drop.system()
    if not encrypted:
        system.update(private_key=str(plain_key(drop)), passphrase=None)
    started = time.perf_counter()  # like the sftp CLI's time: connecting and authenticating included
    with SftpSession(SftpSystemConfig.model_validate(system)) as session:
        session.download(remote, local, resume=True)
    return time.perf_counter() - started


PEERS = {"openssh": ("OpenSSH sftp `get`, unencrypted key", openssh_get, False),
         "hub": ("hub SftpSession.download (asyncssh), unencrypted key", hub_get, False),
         "openssh_pass": ("OpenSSH sftp `get`, passphrase-protected key (SSH_ASKPASS)", openssh_get, True),
         "hub_pass": ("hub SftpSession.download (asyncssh), passphrase-protected key", hub_get, True)}


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
    ap.add_argument("--csv-mb", type=int, default=0,
                    help="also a CSV ingest of this size (bench/files_bench.py compares ingest with native readers)")
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
            times: dict[str, list[float]] = {p: [] for p in PEERS}
            for i in range(args.repeat):
                order = list(PEERS)
                order = order[i % len(order):] + order[:i % len(order)]
                for peer in order:
                    _, fn, encrypted = PEERS[peer]
                    target = tmp / f"copy-{peer}.bin"
                    seconds = fn(drop, str(big), target, encrypted=encrypted)
                    ok = same(big, target)
                    target.unlink()
                    times[peer].append(seconds)
                    print(f"run {i + 1}/{args.repeat} {peer:12s} {seconds:6.2f} s  {args.mib / seconds:6.0f} MiB/s  "
                          f"{'ok' if ok else 'CORRUPT'}", file=sys.stderr)
                    if not ok:
                        return 1
            big.unlink()
            ingest, csv_rows, csv_bytes = None, 0, 0
            if args.csv_mb:
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
    return 0 if ingest is None or ingest["rows"] == csv_rows else 1


def report(args: argparse.Namespace, times: dict[str, list[float]], ingest: dict[str, Any] | None, rows: int,
           size: int) -> str:
    med = {p: statistics.median(t) for p, t in times.items()}
    lines = [f"Download of one {args.mib} MiB file over loopback (connecting and authenticating included), median "
             f"of {args.repeat} interleaved runs; both clients use the same ed25519 key, first unencrypted, then "
             "passphrase-protected.", "", "| peer | median s | MiB/s | runs (s) |", "| --- | ---: | ---: | --- |"]
    for p, (label, _, _) in PEERS.items():
        runs = ", ".join(f"{t:.2f}" for t in times[p])
        lines.append(f"| {label} | {med[p]:.2f} | {args.mib / med[p]:.0f} | {runs} |")
    lines += ["", "| target | measured | result |", "| --- | --- | --- |"]
    for hub, ssh, what in (("hub", "openssh", "unencrypted key"), ("hub_pass", "openssh_pass", "passphrase key")):
        ratio = med[ssh] / med[hub]
        lines.append(f"| hub >= {TARGET_RATIO:g}x OpenSSH sftp throughput, {what} | {ratio:.2f}x | "
                     f"{'PASS' if ratio >= TARGET_RATIO else 'FAIL'} |")
    if ingest is not None:
        lines += ["", f"CSV of {size / 1e6:.0f} MB ({rows:,} rows) from SFTP into DuckDB through the hub's file-drop "
                      "path (download, SHA-256, parse, typed mapping, one transaction):", "",
                  "| rows loaded | seconds | rows/s | MB/s | peak RSS MB |", "| ---: | ---: | ---: | ---: | ---: |",
                  f"| {ingest['rows']:,} | {ingest['seconds']:.1f} | {ingest['rows'] / ingest['seconds']:,.0f} | "
                  f"{size / 1e6 / ingest['seconds']:.0f} | {ingest['peak_rss_mb']:.0f} |", "",
                  f"| 1 GB CSV ingest peak RSS < {TARGET_RSS_MB:g} MB | {ingest['peak_rss_mb']:.0f} MB | "
                  f"{'PASS' if ingest['peak_rss_mb'] < TARGET_RSS_MB else 'FAIL'} |",
                  f"| every row loaded | {ingest['rows']:,} of {rows:,} | "
                  f"{'PASS' if ingest['rows'] == rows else 'FAIL'} |"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
