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
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dagster as dg
import pytest

from hub.dagster.run import RunOutcome, run_pipeline
from hub.demo.bank import BankService
from hub.demo.crm import DEMO_TOKEN, CRMService
from hub.demo.erp import ERPService
from hub.demo.inventory import InventoryDb
from hub.spec import loads
from hub.warehouse import DuckDBWarehouse
from tests.conftest import REPO, demo_spec_text
from tests.fault_proxy import FaultProxy
from tests.sql_servers import scratch_database

#: Columns that say when or by which run a row was written: they differ between any two runs.
VOLATILE = {"_hub_loaded_at", "_hub_run_id", "run_id", "loaded_at", "updated_at", "saved_at"}


def snapshot(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every table of the warehouse (the hub's ledgers and marks too), rows sorted, run stamps left out."""
    if not path.exists():
        return {}
    wh = DuckDBWarehouse(f"duckdb:///{path}")
    out = {}
    for table in wh.tables(internal=True):
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


def check(h: Harness, system: System, arm: Callable[[FaultProxy], None], expect: str,
          error: str | None = None, retried: bool | None = None) -> None:
    """Run *system*'s case with the fault *arm* sets up; *expect* is ``recovered`` or ``failed``; *retried*:
    whether the recovered run must report retries (True), none (False), or either (None)."""
    clean, faulty = h.tmp / "clean.duckdb", h.tmp / "faulty.duckdb"
    for wh in (clean, faulty):
        assert all(o.success for o in h.run(wh, system.first, system)), "the fault-free first step"
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
    text = demo_spec_text()
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    return text


def _port(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None, url
    return port


def _via(url: str, proxy: FaultProxy) -> str:
    """*url* with its port replaced by the proxy's."""
    return url.replace(f":{_port(url)}", f":{proxy.port}", 1)


#: Reads time out after 2 s, so a stall longer than that is a timeout, retried (max 1, as demo_spec_text sets).
_HTTP_TIMEOUT = "      timeout: {connect: 5, read: 2}\n"


@pytest.fixture
def rest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Harness, System]]:
    with CRMService(port=0) as crm, FaultProxy(_port(crm.url)) as proxy:
        monkeypatch.setenv("CRM_TOKEN", DEMO_TOKEN)
        monkeypatch.setenv("HUB_DEMO_CRM_URL", _via(crm.url, proxy))
        text = _spec(**{"      concurrency: 4\n": "      concurrency: 4\n" + _HTTP_TIMEOUT})
        yield Harness(tmp_path, monkeypatch, text), System(
            "rest", proxy, 300, first={"assets": ["crm_customers", "crm_contacts"], "partitions": ["2024-01-02"]},
            second={"assets": ["crm_customers", "crm_contacts"], "partitions": ["2024-01-03"]})


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

        yield Harness(tmp_path, monkeypatch, demo_spec_text()), System(
            "sftp", proxy, 6000, first={"assets": ["bank_statements"], "files": names[:3]},
            second={"assets": ["bank_statements"], "files": names[3:]}, prepare=redrop)


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
                second={"assets": ["inventory_warehouses", "inventory_levels"]}, between=lambda: _tick(db))
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


@pytest.mark.slow
def test_sigkill_mid_load_then_rerun_equals_fault_free(soap: tuple[Harness, System], erp_service: ERPService,
                                                       dagster_home: Path) -> None:
    """`hub run` killed with SIGKILL while rows stream into the open load transaction, then run again."""
    h, s = soap
    clean, faulty = h.tmp / "clean.duckdb", h.tmp / "faulty.duckdb"
    for wh in (clean, faulty):
        assert all(o.success for o in h.run(wh, s.first, s))
    assert all(o.success for o in h.run(clean, s.second, s))
    expected, before = snapshot(clean), snapshot(faulty)
    spec = h.tmp / "demo.yaml"
    spec.write_text(h.spec_text)
    # The ERP answers page after page over one connection; the proxy stalls it once a few pages went through:
    # the hub has written those pages into its (uncommitted) load and is waiting for the next one.
    erp_service.requests.clear()
    s.proxy.inject("stall", after=6000, seconds=120, times=None)
    env = {**os.environ, "HUB_WAREHOUSE": f"duckdb:///{faulty}"}
    hub = Path(sys.executable).parent / "hub"
    proc = subprocess.Popen([str(hub), "run", str(spec), "--asset", "erp_orders", "--partition", "2024-01-03"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not (s.proxy.injected and len(erp_service.requests) >= 2) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[0].decode(errors="replace")
            time.sleep(0.05)
        assert s.proxy.injected and len(erp_service.requests) >= 2, "the run never got to stream pages"
        time.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    s.proxy.clear()
    assert snapshot(faulty) == before, "a killed load leaves the warehouse as it was"
    again = h.run(faulty, s.second, s)
    assert all(o.success for o in again), [o.error for o in again]
    assert snapshot(faulty) == expected


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
