"""Fault injection: every adapter through a real TCP proxy (tests/fault_proxy.py) that adds latency, resets
connections mid-response, answers 503 bursts, truncates bodies and stalls reads.

Each case loads the same data into two warehouses: one fault-free (the expected content) and one through
the faults. The faulty run either recovers by retrying — and then its warehouse equals the fault-free one,
row for row (nothing lost, nothing duplicated) — or, when the fault outlasts the retries, fails with a clear
error, leaves its warehouse exactly as it was before, and a re-run once the fault has cleared equals the
fault-free result. docs/reliability.md is the matrix these tests prove.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dagster as dg
import pytest
import sqlalchemy as sa

from hub.dagster.run import RunOutcome, run_pipeline
from hub.demo.bank import HEADER, BankService
from hub.demo.crm import DEMO_TOKEN, CRMService
from hub.demo.erp import ERPService
from hub.demo.inventory import InventoryDb
from hub.spec import loads
from hub.warehouse import DuckDBWarehouse
from tests.conftest import REPO, demo_spec_text
from tests.fault_proxy import FaultProxy, sigkill_when
from tests.sql_servers import scratch_database

#: Columns that say when or by which run a row was written: they differ between any two runs.
#: Run stamps, and the spec file a table's owner was loaded from (_hub_tables: a clean and a faulty run of one
#: pipeline use two spec files).
VOLATILE = {"_hub_loaded_at", "_hub_run_id", "run_id", "loaded_at", "updated_at", "saved_at", "spec"}
#: The audit of external calls (hub/runtime/tracing.py): one row per request, attempt counts and errors included,
#: so a run through faults rightly records more than a clean one. It describes the runs, not the data.
AUDIT = {"_hub_calls"}


def snapshot(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every table of the warehouse (the hub's ledgers and marks too, not the call audit), rows sorted, run
    stamps left out."""
    if not path.exists():
        return {}
    wh = DuckDBWarehouse(f"duckdb:///{path}")
    out = {}
    for table in wh.tables(internal=True):
        if table in AUDIT:
            continue
        cols = [c for c in wh.query(f'select * from "{table}" limit 0').column_names if c not in VOLATILE]
        sel = ", ".join(f'"{c}"' for c in cols)
        out[table] = [tuple(r.values()) for r in wh.query(f'select {sel} from "{table}" order by all').to_pylist()]
    return out


@dataclass
class System:
    """One adapter's side of a case: the proxy in front of its service and the two steps of a case."""

    name: str
    proxy: FaultProxy
    after: int  # response bytes into a connection where faults strike: past the handshake, within the data
    first: dict[str, Any]   # run_pipeline arguments of the run before the faulty one
    second: dict[str, Any]  # ... of the run that meets the faults
    prepare: Callable[[], None] = lambda: None  # before every run (the bank re-drops its files)
    between: Callable[[], None] = lambda: None  # after both warehouses ran `first` (the inventory moves stock)
    service: Any = None  # the demo service behind the proxy (CRMService, BankService, InventoryDb), for probes


class Harness:
    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spec_text: str) -> None:
        self.tmp, self.monkeypatch, self.spec_text = tmp_path, monkeypatch, spec_text
        self.instance = dg.DagsterInstance.ephemeral()

    def run(self, warehouse: Path, args: dict[str, Any], system: System) -> list[RunOutcome]:
        system.prepare()
        self.monkeypatch.setenv("HUB_WAREHOUSE", f"duckdb:///{warehouse}")
        pipeline = loads(self.spec_text, self.tmp / "demo.yaml")
        return run_pipeline(pipeline, self.instance, **args)


def retries(h: Harness, outcomes: list[RunOutcome]) -> int:
    """Retries and restarts the runs' materializations report (``hub/retries``, ``hub/sftp_retries``...)."""
    total = 0
    for outcome in outcomes:
        for record in h.instance.all_logs(outcome.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
            event = record.dagster_event
            assert event is not None
            md = event.event_specific_data.materialization.metadata  # type: ignore[union-attr]
            for key in ("hub/retries", "hub/sftp_retries", "hub/restarts"):
                if key in md:
                    total += int(str(md[key].value))
    return total


def first_step(h: Harness, system: System) -> tuple[Path, Path]:
    """The clean and the faulty warehouse, both after the fault-free first step: it runs once, into the clean
    one, and the faulty one starts as a copy of it (the same state a second run would have left: the first step
    is deterministic, and nothing outside the warehouse file differs between the two)."""
    clean, faulty = h.tmp / "clean.duckdb", h.tmp / "faulty.duckdb"
    assert all(o.success for o in h.run(clean, system.first, system)), "the fault-free first step"
    assert not list(h.tmp.glob("clean.duckdb.wal")), "the warehouse is closed after a run"
    shutil.copyfile(clean, faulty)
    return clean, faulty


def check(h: Harness, system: System, arm: Callable[[FaultProxy], None], expect: str,
          error: str | None = None, retried: bool | None = None) -> None:
    """Run *system*'s case with the fault *arm* sets up; *expect* is ``recovered`` or ``failed``; *retried*:
    whether the recovered run must report retries (True), none (False), or either (None)."""
    clean, faulty = first_step(h, system)
    system.between()
    outcomes = h.run(clean, system.second, system)
    assert all(o.success for o in outcomes), [o.error for o in outcomes]
    expected, before = snapshot(clean), snapshot(faulty)
    assert expected != before, "the faulty step must have something to load"

    arm(system.proxy)
    started = time.monotonic()
    outcomes = h.run(faulty, system.second, system)
    took = time.monotonic() - started
    injected = system.proxy.injected
    system.proxy.clear()
    assert injected >= 1, "the fault was never injected"
    assert took < 60, f"no hang: the faulty run took {took:.1f}s"
    failed = [o for o in outcomes if not o.success]
    if expect == "recovered":
        assert not failed, [o.error for o in failed]
        assert snapshot(faulty) == expected
        if retried is not None:
            assert (retries(h, outcomes) > 0) == retried, retries(h, outcomes)
        return
    assert failed, "retries should have been exhausted"
    message = failed[0].error or ""
    assert error is not None and error in message, message
    assert "gave up after" in message or "attempts" in message, message
    # a failed run changes nothing ... except what earlier, successful runs of the same call committed:
    # run_pipeline stops at the first failure, so only whole units (partitions, files) before it landed.
    if failed[0] is outcomes[0]:
        assert snapshot(faulty) == before
    again = h.run(faulty, system.second, system)
    assert all(o.success for o in again), [o.error for o in again]
    assert snapshot(faulty) == expected


# --- the systems ------------------------------------------------------------------------------------------

def _spec(**replace: str) -> str:
    text = demo_spec_text(checks=False)  # the cases compare what landed; the expectation suites read only
    for old, new in replace.items():
        text = _with(text, old, new)
    return text


def _with(text: str, old: str, new: str) -> str:
    """*text* with *old* (which must occur) replaced by *new*."""
    assert old in text, old
    return text.replace(old, new)


def _port(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None, url
    return port


def _via(url: str, proxy: FaultProxy) -> str:
    """*url* with its port replaced by the proxy's."""
    return url.replace(f":{_port(url)}", f":{proxy.port}", 1)


#: HTTP timeouts of the REST and SOAP systems: generous, so that a loaded machine (the suite runs on several
#: workers) is never mistaken for a fault; the stalled-read case shortens the read timeout (:data:`_SHORT_READ`).
_HTTP_TIMEOUT = "      timeout: {connect: 5, read: 30}\n"
#: In the stalled-read case reads time out after 2 s, so a 3 s stall is a timeout, retried (max 1, as
#: demo_spec_text sets).
_SHORT_READ = ("read: 30}", "read: 2}")


@pytest.fixture
def rest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Harness, System]]:
    with CRMService(port=0) as crm, FaultProxy(_port(crm.url)) as proxy:
        monkeypatch.setenv("CRM_TOKEN", DEMO_TOKEN)
        monkeypatch.setenv("HUB_DEMO_CRM_URL", _via(crm.url, proxy))
        text = _spec(**{"      concurrency: 4\n": "      concurrency: 4\n" + _HTTP_TIMEOUT})
        yield Harness(tmp_path, monkeypatch, text), System(
            "rest", proxy, 300, first={"assets": ["crm_customers", "crm_contacts"], "partitions": ["2024-01-02"]},
            second={"assets": ["crm_customers", "crm_contacts"], "partitions": ["2024-01-03"]}, service=crm)


@pytest.fixture
def soap(erp_service: ERPService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
         ) -> Iterator[tuple[Harness, System]]:
    from hub.demo.erp import DEMO_PASSWORD, DEMO_USER

    with FaultProxy(_port(erp_service.url)) as proxy:
        monkeypatch.setenv("ERP_USER", DEMO_USER)
        monkeypatch.setenv("ERP_PASSWORD", DEMO_PASSWORD)
        monkeypatch.setenv("HUB_DEMO_ERP_WSDL", _via(erp_service.wsdl_url, proxy))
        address = _via(erp_service.url, proxy)
        wsdl = '      wsdl: "${HUB_DEMO_ERP_WSDL:-http://127.0.0.1:8802/erp?wsdl}"\n'
        text = _spec(**{wsdl: f"{wsdl}      address: {address}\n{_HTTP_TIMEOUT}"})
        monkeypatch.setenv("HUB_CACHE_DIR", str(tmp_path / "cache"))
        yield Harness(tmp_path, monkeypatch, text), System(
            "soap", proxy, 2000, first={"assets": ["erp_orders"], "partitions": ["2024-01-02"]},
            second={"assets": ["erp_orders"], "partitions": ["2024-01-03"]})


@pytest.fixture
def sftp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Harness, System]]:
    with BankService(port=0) as bank, FaultProxy(bank.port) as proxy:
        monkeypatch.setenv("HUB_DEMO_BANK_PORT", str(proxy.port))
        monkeypatch.setenv("BANK_PASSWORD", "demo-bank-pass-51c0")
        monkeypatch.setenv("BANK_HOST_KEY_FINGERPRINT", bank.fingerprint)
        days = sorted(set(bank.dropped))
        names = [f"statements_{d:%Y%m%d}.csv" for d in days]

        def redrop() -> None:
            for day in days:
                bank.drop(day)

        yield Harness(tmp_path, monkeypatch, demo_spec_text(checks=False)), System(
            "sftp", proxy, 6000, first={"assets": ["bank_statements"], "files": names[:3]},
            second={"assets": ["bank_statements"], "files": names[3:]}, prepare=redrop, service=bank)


@pytest.fixture
def sql(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Harness, System]]:
    with scratch_database("postgresql") as url:
        db = InventoryDb(url).start()
        with FaultProxy(_port(url)) as proxy:
            monkeypatch.setenv("HUB_DEMO_INVENTORY_URL", _via(url, proxy))
            text = _spec(**{"      timezone: UTC\n": "      timezone: UTC\n      retries: {max: 1, backoff: 0.01}\n"
                                                        "      connect_timeout: 2\n"})
            yield Harness(tmp_path, monkeypatch, text), System(
                "sql", proxy, 50_000, first={"assets": ["inventory_warehouses", "inventory_levels"]},
                second={"assets": ["inventory_warehouses", "inventory_levels"]}, between=lambda: _tick(db),
                service=db)
        db.engine.dispose()


ADAPTERS = ("rest", "soap", "sftp", "sql")


@pytest.fixture(params=ADAPTERS)
def system(request: pytest.FixtureRequest) -> tuple[Harness, System]:
    value: tuple[Harness, System] = request.getfixturevalue(request.param)
    return value


# --- the matrix -------------------------------------------------------------------------------------------

def test_latency_changes_nothing(system: tuple[Harness, System]) -> None:
    h, s = system

    def slow(p: FaultProxy) -> None:
        p.latency(0.02)  # every response chunk of every connection
        p.inject("stall", seconds=0, times=1)  # a no-op fault, so the check sees the proxy in use

    check(h, s, slow, "recovered", retried=False)


def test_reset_mid_response_recovered_by_retry(system: tuple[Harness, System]) -> None:
    h, s = system
    check(h, s, lambda p: p.inject("reset", after=s.after, times=1), "recovered", retried=True)


def test_truncated_body_recovered_by_retry(system: tuple[Harness, System]) -> None:
    h, s = system
    check(h, s, lambda p: p.inject("truncate", after=s.after, times=1), "recovered", retried=True)


def test_stalled_read_recovered(system: tuple[Harness, System]) -> None:
    h, s = system
    assert (h.spec_text.count(_SHORT_READ[0]) == 1) == (s.name in ("rest", "soap"))
    h.spec_text = h.spec_text.replace(*_SHORT_READ)
    check(h, s, lambda p: p.inject("stall", after=s.after, seconds=3, times=1), "recovered",
          retried=s.name in ("rest", "soap"))  # HTTP reads time out (2 s); SSH and libpq wait


@pytest.mark.parametrize("adapter", ["rest", "soap"])
def test_503_burst_recovered_by_retry(adapter: str, request: pytest.FixtureRequest) -> None:
    h, s = request.getfixturevalue(adapter)
    check(h, s, lambda p: p.inject("http_503", times=1), "recovered", retried=True)


@pytest.mark.slow
@pytest.mark.parametrize("adapter", ["rest", "soap"])
def test_503_burst_beyond_retries_fails_cleanly(adapter: str, request: pytest.FixtureRequest) -> None:
    h, s = request.getfixturevalue(adapter)
    check(h, s, lambda p: p.inject("http_503", times=None), "failed", error="HTTP 503")


#: What the error names when resets outlast the retries (max 1 retry in the test spec: 2 attempts).
RESET_ERRORS = {"rest": "gave up after 2 attempts", "soap": "gave up after 2 attempts",
                "sftp": "gave up after 2 attempts", "sql": "server closed the connection unexpectedly"}


@pytest.mark.slow
def test_resets_beyond_retries_fail_cleanly(system: tuple[Harness, System]) -> None:
    h, s = system
    check(h, s, lambda p: p.inject("reset", after=s.after, times=None), "failed", error=RESET_ERRORS[s.name])


def _tick(db: InventoryDb) -> None:
    db.tick(5)


#: `hub run` (its Typer app, as the console script calls it) with a tap on the progress hook, which assets call
#: right after a batch went into their open load transaction: each report is appended to $HUB_TEST_PROGRESS, and
#: for the asset $HUB_TEST_FREEZE names, the process then sleeps — a file load reads its local copy and has no
#: network I/O the proxy could hold, so this is how a kill is made to land mid-load there ("asset:rows": once
#: it reported at least that many rows).
_HUB_RUN = """
import os, sys, time
def tap(callback):
    def report(asset, rows):
        if callback is not None:
            callback(asset, rows)
        with open(os.environ["HUB_TEST_PROGRESS"], "a") as out:
            out.write(f"{asset} {rows}\\n")
        freeze, _, least = os.environ.get("HUB_TEST_FREEZE", "").partition(":")
        if asset == freeze and rows >= int(least or 0):
            time.sleep(600)
    return report
from hub import runs  # hub run's own path: its progress callback
fast = runs.run_fast
runs.run_fast = lambda *a, progress=None, **k: fast(*a, progress=tap(progress), **k)
if "--dagster" in sys.argv:  # hub run --dagster: Dagster's progress hook
    from hub.dagster import progress
    listen = progress.listen
    progress.listen = lambda callback: listen(None if callback is None else tap(callback))
from hub.cli.main import app
app(sys.argv[1:], prog_name="hub")
"""


def reported(tap: Path) -> dict[str, int]:
    """Rows each asset reported as loaded so far (the progress tap's file)."""
    rows: dict[str, int] = {}
    for line in tap.read_text().splitlines() if tap.exists() else []:
        asset, count = line.rsplit(" ", 1)
        rows[asset] = max(rows.get(asset, 0), int(count))
    return rows


def kill_mid_load_then_rerun(h: Harness, s: System, args: list[str], ready: Callable[[dict[str, int]], bool], *,
                             arm: Callable[[], None] = lambda: None, freeze: str | None = None) -> None:
    """Kill `hub run SPEC *args*` with SIGKILL once *ready* (given the rows reported so far) says it is inside its
    load, then check that the warehouse equals its state before the run and that a re-run (``s.second``, in
    process) equals the fault-free result. *arm* sets up the fault that holds the run mid-load (a proxy stall);
    *freeze* (``asset:rows``) freezes the process instead, once the asset reported that many rows.

    Both assertions hold whether or not the re-run resumes from a checkpoint: a resumed load must land the
    same rows as a load from scratch."""
    clean, faulty = first_step(h, s)
    s.between()
    outcomes = h.run(clean, s.second, s)
    assert all(o.success for o in outcomes), [o.error for o in outcomes]
    expected, before = snapshot(clean), snapshot(faulty)
    assert expected != before, "the killed step must have something to load"
    spec, tap = h.tmp / "demo.yaml", h.tmp / "progress.txt"
    spec.write_text(h.spec_text)
    s.prepare()
    arm()
    env = {**os.environ, "HUB_WAREHOUSE": f"duckdb:///{faulty}", "HUB_TEST_PROGRESS": str(tap),
           **({"HUB_TEST_FREEZE": freeze} if freeze else {})}
    proc = subprocess.Popen([sys.executable, "-c", _HUB_RUN, "run", str(spec), *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    # settle: let the held run settle where it waits (it cannot move on: the fault holds it)
    sigkill_when(proc, lambda: ready(reported(tap)), "the run never got into its load", settle_s=0.3)
    s.proxy.clear()
    assert snapshot(faulty) == before, "a killed load leaves the warehouse as it was"
    again = h.run(faulty, s.second, s)
    assert all(o.success for o in again), [o.error for o in again]
    assert snapshot(faulty) == expected


@pytest.mark.slow
def test_sigkill_mid_load_soap(soap: tuple[Harness, System], erp_service: ERPService, dagster_home: Path) -> None:
    """SOAP: the ERP answers page after page over one connection; the proxy stalls it once a few pages went
    through. The hub asks for page 2 only after it wrote page 1 into its open load transaction, so once the ERP
    has the second request, the run is mid-load."""
    h, s = soap

    def arm() -> None:
        erp_service.requests.clear()
        s.proxy.inject("stall", after=6000, seconds=120, times=None)

    kill_mid_load_then_rerun(h, s, ["--asset", "erp_orders", "--partition", "2024-01-03"], arm=arm,
                             ready=lambda _: bool(s.proxy.injected and len(erp_service.requests) >= 2))


@pytest.mark.slow
def test_sigkill_mid_load_rest(rest: tuple[Harness, System], dagster_home: Path) -> None:
    """REST: the day's contacts come in cursor pages over one keep-alive connection; the proxy holds the
    response to the second request. Once the CRM has received it, page 1 is in and the load transaction is
    open (the adapter hands pages to the load in groups of up to 10 000 rows, so page 1 waits in that group)."""
    h, s = rest
    crm: CRMService = s.service
    base: list[int] = []

    def arm() -> None:
        base.append(crm.requests)
        s.proxy.inject("stall", request=2, after=0, seconds=120, times=None)

    kill_mid_load_then_rerun(h, s, ["--asset", "crm_contacts", "--partition", "2024-01-03"], arm=arm,
                             ready=lambda _: bool(s.proxy.injected and crm.requests - base[0] >= 2))


#: Rows of the big statement file and the bulk of changed stock levels the SFTP and SQL kills load: more than
#: one warehouse chunk (64 Ki rows), so the kill lands after rows went into the DuckDB transaction itself.
BULK = 100_000


@pytest.mark.slow
def test_sigkill_mid_load_sftp(sftp: tuple[Harness, System], dagster_home: Path) -> None:
    """SFTP: a file is downloaded whole, then loaded from the local copy with its ledger row in the same
    transaction; the run is frozen once 64 Ki rows (a warehouse chunk) went into it."""
    h, s = sftp
    bank: BankService = s.service
    big = bank.outbox / "statements_20240120.csv"
    lines = [HEADER] + [f"20.01.2024;20.01.2024;Zoë Åström;Zahlung Auftrag {n};{n % 997},{n % 100:02d};EUR;ORD-{n}"
                        for n in range(BULK)]
    redrop = s.prepare

    def prepare() -> None:  # the bank's files and a big one, old enough to be stable (the runs archive them)
        redrop()
        big.write_bytes(("\r\n".join(lines) + "\r\n").encode("cp1252"))
        when = datetime(2024, 1, 20, 6, tzinfo=UTC).timestamp()  # the same each time: the ledger records it
        os.utime(big, (when, when))

    s.prepare, s.second = prepare, {"assets": ["bank_statements"], "files": [big.name]}
    kill_mid_load_then_rerun(h, s, ["--asset", "bank_statements", "--partition", big.name],
                             freeze=f"bank_statements:{64 * 1024}",
                             ready=lambda rows: rows.get("bank_statements", 0) >= 64 * 1024)


@pytest.mark.slow
def test_sigkill_mid_load_sql(sql: tuple[Harness, System], dagster_home: Path) -> None:
    """SQL: 100 000 changed stock levels stream through the proxy in batches of 10 000 rows; it stalls the
    PostgreSQL connection 5 MB in (about three quarters of the rows), after a warehouse chunk went into the load
    transaction and before the high-water mark (committed with the rows) moved."""
    h, s = sql
    db: InventoryDb = s.service
    h.spec_text = _with(h.spec_text, "    table: stock_levels\n", "    table: stock_levels\n    batch_rows: 10000\n")

    def between() -> None:
        _tick(db)
        now = datetime.now(UTC).replace(tzinfo=None)
        with db.engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO stock_levels (warehouse_id, sku, quantity, unit_cost, updated_at) "
                                 "SELECT w.id, 'BULK-' || g, g % 500, 9.99, :now FROM warehouses w, "
                                 "generate_series(1, :n) g"), {"now": now, "n": BULK // 4})

    s.between = between
    kill_mid_load_then_rerun(h, s, ["--asset", "inventory_levels"],
                             arm=lambda: s.proxy.inject("stall", after=5_000_000, seconds=120, times=None),
                             ready=lambda rows: bool(s.proxy.injected and rows.get("inventory_levels", 0) >= 64 * 1024))


#: What the error names when every response is cut short.
TRUNCATE_ERRORS = {"rest": "body truncated", "soap": "body truncated", "sftp": "gave up after 2 attempts",
                   "sql": "server closed the connection unexpectedly"}


@pytest.mark.slow
def test_truncation_beyond_retries_fails_cleanly(system: tuple[Harness, System]) -> None:
    h, s = system
    check(h, s, lambda p: p.inject("truncate", after=s.after, times=None), "failed", error=TRUNCATE_ERRORS[s.name])


def test_adbc_error_names_the_cause_not_the_statement() -> None:
    """Regression: ADBC quotes the failing statement over several lines before the cause; the error kept only
    the first line ("Failed to execute query '"), which said nothing about the connection being lost."""
    from adapters.sql.client import _reason

    exc = RuntimeError("IO: [libpq] Failed to execute query '\nSELECT\n    attrelid\nFROM t\n': server closed the "
                       "connection unexpectedly\n\tThis probably means the server terminated abnormally\n")
    assert _reason(exc) == ("RuntimeError: IO: [libpq] Failed to execute query: server closed the connection "
                            "unexpectedly")
    assert _reason(RuntimeError("one line\nsecond")) == "RuntimeError: one line"
