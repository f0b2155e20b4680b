"""Shared fixtures: the demo CRM as a real HTTP service, and isolated warehouses / Dagster homes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.demo.bank import BankService
from hub.demo.crm import DEMO_TOKEN, CRMService
from hub.demo.erp import DEMO_PASSWORD, DEMO_USER, ERPService
from hub.demo.inventory import InventoryDb
from tests.sftp_servers import Drop, start_embedded, start_openssh

REPO = Path(__file__).resolve().parents[1]
DEMO_SPEC = REPO / "pipelines" / "demo.yaml"


@pytest.fixture(scope="session")
def erp_service() -> Iterator[ERPService]:
    """The demo ERP (SOAP) on a free loopback port, shared by the session (it is read-only)."""
    with ERPService(port=0) as service:
        yield service


@pytest.fixture
def erp(erp_service: ERPService, monkeypatch: pytest.MonkeyPatch) -> ERPService:
    """The demo ERP with the env vars the demo spec reads, and a clean request log."""
    erp_service.requests.clear()
    erp_service.content_types.clear()
    erp_service.fail_next.clear()
    erp_service.delay_next.clear()
    erp_service.rewrite = None
    monkeypatch.setenv("HUB_DEMO_ERP_WSDL", erp_service.wsdl_url)
    monkeypatch.setenv("ERP_USER", DEMO_USER)
    monkeypatch.setenv("ERP_PASSWORD", DEMO_PASSWORD)
    return erp_service


@pytest.fixture
def bank(monkeypatch: pytest.MonkeyPatch) -> Iterator[BankService]:
    """The demo bank's SFTP drop (a week of statements) on a free port, with the env vars the demo spec reads."""
    with BankService(port=0) as service:
        monkeypatch.setenv("HUB_DEMO_BANK_PORT", str(service.port))
        monkeypatch.setenv("BANK_PASSWORD", "demo-bank-pass-51c0")
        monkeypatch.setenv("BANK_WEBHOOK_SECRET", "demo-bank-webhook-7d21")  # the bank signs its payment webhooks
        monkeypatch.setenv("BANK_HOST_KEY_FINGERPRINT", service.fingerprint)
        yield service


@pytest.fixture
def inventory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[InventoryDb]:
    """The demo inventory database (SQLite) with the env var the demo spec reads."""
    db = InventoryDb(root=tmp_path / "inventory").start()
    monkeypatch.setenv("HUB_DEMO_INVENTORY_URL", db.url)
    yield db
    db.stop()


@pytest.fixture
def crm(erp: ERPService, bank: BankService, inventory: InventoryDb,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[CRMService]:
    """The demo CRM on a free loopback port, with the env vars the demo spec reads (the demo ERP, bank and
    inventory run too: the demo pipeline reads all four)."""
    with CRMService(port=0) as service:
        monkeypatch.setenv("CRM_TOKEN", DEMO_TOKEN)
        monkeypatch.setenv("HUB_DEMO_CRM_URL", service.url)
        yield service


@pytest.fixture
def warehouse_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "wh" / "hub.duckdb"
    monkeypatch.setenv("HUB_WAREHOUSE", f"duckdb:///{path}")
    return path


@pytest.fixture
def dagster_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


def demo_spec_text(fast_retries: bool = True) -> str:
    """The demo spec, with quick retries so failure tests do not wait for real backoff (CRM, catalogue, ERP), and its
    expectation suites (`checks:`, relative to the project root) as absolute paths, so the text can be
    loaded from a spec file anywhere (tests write it to tmp_path)."""
    text = DEMO_SPEC.read_text().replace(" contracts/demo/", f" {REPO}/contracts/demo/")
    if fast_retries:
        text = text.replace("retries: {max: 5, backoff: 0.5}", "retries: {max: 1, backoff: 0.01}")
        assert text.count("backoff: 0.01") == 4, "demo spec retries lines changed; update the test helper"
    return text


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for the test session, dropped at its end, as a SQLAlchemy URL
    (``postgresql://postgres@127.0.0.1:5432/hub_src_<random>``), on the server ``$HUB_TEST_POSTGRES`` names
    (see ``tests/sql_servers.py``); tests using it are skipped, with the reason, when it is unreachable."""
    from tests.sql_servers import scratch_database

    with scratch_database("postgresql") as url:
        yield url


EVENTS_DUCKDB = "duckdb:///wh/hub.duckdb"


@pytest.fixture(params=["duckdb", "postgres"])
def warehouse(request: pytest.FixtureRequest) -> Iterator[str]:
    """The warehouse URL of an event-store test, once per store: a DuckDB file (its SQLite store next to it,
    relative to the project) or a fresh schema of the PostgreSQL test database (the store's tables in it)."""
    if request.param == "duckdb":
        yield EVENTS_DUCKDB
        return
    import secrets

    yield f"{request.getfixturevalue('pg_url')}?schema=ev_{secrets.token_hex(4)}"


@pytest.fixture(scope="module", params=["openssh", "embedded"])
def drop(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Drop]:
    """An SFTP drop on OpenSSH's sshd (skipped when it cannot run) and on the embedded asyncssh server."""
    folder = tmp_path_factory.mktemp(request.param)
    if request.param == "openssh":
        started = start_openssh(folder)
        if isinstance(started, str):
            pytest.skip(started + "; the embedded server runs the same tests")
        server, proc = started
        yield server
        proc.terminate()
        proc.wait(10)
    else:
        server, embedded = start_embedded(folder)
        yield server
        embedded.stop()
