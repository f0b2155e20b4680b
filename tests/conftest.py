"""Shared fixtures: the demo CRM as a real HTTP service, and isolated warehouses / Dagster homes."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hub.demo.bank import BankService
from hub.demo.crm import DEMO_TOKEN, CRMService
from hub.demo.erp import DEMO_PASSWORD, DEMO_USER, ERPService
from hub.demo.inventory import InventoryDb
from tests.sftp_servers import Drop, start_embedded, start_openssh

REPO = Path(__file__).resolve().parents[1]
DEMO_SPEC = REPO / "pipelines" / "demo.yaml"


def state_env(root: Path) -> dict[str, str]:
    """The hub's state, caches and Data Docs under *root*, for a test whose spec is the checkout's own: the project
    root, where they go by default (.hub/, reports/), would be the checkout, which every worker shares."""
    return {"HUB_STATE_DIR": str(root / "state"), "HUB_CACHE_DIR": str(root / "cache"),
            "HUB_REPORTS_DIR": str(root / "reports")}


#: The ``xdist_group`` of the tests whose demo uses the demo spec's fixed broker names (its RabbitMQ queue, MQTT
#: topic and MQTT session) in a subprocess: `hub demo` and `dagster dev` over the spec of the checkout. Mosquitto
#: has no per-test namespace and every `hub demo` publishes order.paid to amq.topic, so these run one at a time
#: (in-process demos take names of their own instead: :func:`demo_brokers`).
DEMO_ESTATE = "demo_estate"


# --- running the suite on several workers (pytest-xdist; `make test` runs `-n 2 --dist loadgroup`) --------------

def pytest_configure(config: pytest.Config) -> None:
    """An xdist worker starts with SIGINT ignored (the controller takes Ctrl-C), and an ignored signal stays ignored
    in every process it starts: a `hub`, `dg dev` or SQL reader the test interrupts would never see its SIGINT.
    Worse, Dagster maps SIGTERM to the SIGINT handler whenever an in-process run leaves its interrupt guard
    (dagster._utils.interrupts), so after the first such run the worker ignores SIGTERM too, and so does every
    process it starts later: SIGTERM tests fail, and a process pool never stops. Workers get Python's own SIGINT
    handler back, as a plain pytest run has it."""
    if os.environ.get("PYTEST_XDIST_WORKER") and signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


#: Units of work (see :func:`pytest_xdist_make_scheduler`) that take a minute or more: seconds each took on two
#: workers of a 2-core machine. The scheduler hands them out first, longest first, so a long one does not start
#: last and keep one worker busy while the other idles. A hint, not a rule: a unit missing here is scheduled after
#: these, by its number of tests.
LONG_UNITS = {
    DEMO_ESTATE: 400, "tests/test_faults.py": 250, "tests/test_fastrun.py": 165, "tests/test_deploy.py": 165,
    "tests/test_adopt.py": 160, "tests/test_agent_understand_paraphrases.py": 140, "tests/test_agent_llm_real.py": 115,
    "tests/test_security_http.py": 110, "tests/test_cli_ux.py": 105, "tests/test_pipeline.py": 100,
    "tests/test_sftp.py": 100, "tests/test_mcp.py": 100, "tests/test_agent_planner.py": 95,
    "tests/test_events_amqp.py": 85, "tests/test_agent_flows.py": 75, "tests/test_files_csv.py": 70,
}


#: Tests that form one unit of work whatever their file (so one worker runs them one after another), by node id:
#: a file (``path::``) or a test (``path::name``, with all its parameters). Each carries the ``xdist_group`` mark
#: of its group, and the collection checks the two agree (:func:`pytest_collection_modifyitems`). The list is
#: needed besides the marks: pytest-xdist 3.8's ``--dist loadgroup`` appends the group to each node id, which
#: pytest 9's node ids no longer take, so its scheduler never sees the marks.
GROUPS = {
    DEMO_ESTATE: ("tests/test_ui_e2e.py::", "tests/test_ui_browser.py::",
                  "tests/test_flows.py::test_hub_demo_runs_the_flow_twice_and_the_second_run_sends_nothing",
                  "tests/test_adopt.py::test_wheel_in_a_new_virtual_environment"),
}


def _unit(nodeid: str) -> str:
    """The unit of work of the test *nodeid* under ``--dist loadgroup``: its group in :data:`GROUPS`, else its
    file."""
    for group, prefixes in GROUPS.items():
        for prefix in prefixes:
            if nodeid.startswith(prefix) and (prefix.endswith("::") or nodeid[len(prefix):len(prefix) + 1] in ("",
                                                                                                              "[")):
                return group
    return nodeid.split("::", 1)[0]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Check that :data:`GROUPS` names exactly the tests marked ``xdist_group``. On an xdist worker under
    ``--dist loadgroup``, also order the collection by unit of work, longest first (:data:`LONG_UNITS`, then the
    number of tests): the order in which the scheduler hands the units out. Every worker collects the same
    order, as xdist requires."""
    for item in items:
        marked = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                         for m in item.iter_markers("xdist_group")})
        unit = _unit(item.nodeid)
        listed = [unit] if unit in GROUPS else []
        if marked != listed:
            raise pytest.UsageError(f"{item.nodeid}: marked xdist_group {marked}, but tests/conftest.py GROUPS "
                                    f"puts it in {listed}: the two must agree")
    if not getattr(config.option, "loadgroup", False):
        return
    units: dict[str, list[pytest.Item]] = {}
    for item in items:
        units.setdefault(_unit(item.nodeid), []).append(item)
    weight = {name: (-LONG_UNITS.get(name, 0), -len(members)) for name, members in units.items()}
    items.sort(key=lambda item: weight[_unit(item.nodeid)])


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """With ``--dist loadgroup``: a test file is one unit of work (as with ``--dist loadfile``: its module
    fixtures, servers and estates, start once), except the tests of a group in :data:`GROUPS` (marked
    ``xdist_group``), which form one unit per group wherever they are: they use something fixed outside the test
    process and must not run side by side. Units are handed out in the order the workers collected them
    (:func:`pytest_collection_modifyitems`)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class FilesAndGroups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _unit(nodeid)

    config.option.loadscopereorder = False  # the collection's order, longest first
    return FilesAndGroups(config, log)


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


def demo_spec_text(fast_retries: bool = True, checks: bool = True) -> str:
    """The demo spec, with quick retries so failure tests do not wait for real backoff (CRM, catalogue, ERP), and its
    expectation suites (`checks:`, relative to the project root) as absolute paths, so the text can be
    loaded from a spec file anywhere (tests write it to tmp_path). Without *checks*, the spec has no `checks:`
    block: for tests of loading that never look at the suites (they only read what landed, and checks write
    nothing to the warehouse), each load then skips Great Expectations (about 2 s a load with its Data Docs)."""
    text = DEMO_SPEC.read_text().replace(" contracts/demo/", f" {REPO}/contracts/demo/")
    if fast_retries:
        text = text.replace("retries: {max: 5, backoff: 0.5}", "retries: {max: 1, backoff: 0.01}")
        assert text.count("backoff: 0.01") == 4, "demo spec retries lines changed; update the test helper"
    if not checks:
        start = text.index("\nchecks:")
        end = text.index("\n\n", start + 1)
        assert all(line.startswith(("checks:", "  ")) for line in text[start + 1:end].splitlines()), \
            "the demo spec's checks: block changed; update the test helper"
        text = text[:start] + text[end:]
    return text


#: The demo spec's fixed broker names: its RabbitMQ queue, MQTT topic and MQTT client id (persistent session).
DEMO_BROKER_NAMES = ("queue: demo.erp.orders\n", "topics: [demo/inventory/movements]\n",
                     "client_id: hub-demo-inventory-movements\n")


@pytest.fixture
def demo_brokers() -> Iterator[Callable[[str], str]]:
    """Rewrites a demo spec text so its RabbitMQ queue, MQTT topic and MQTT client id are this test's own; the
    queue and the MQTT session are removed afterwards. The demo's own names are shared by every demo on the
    machine: a `hub demo` or the UI tests' `dagster dev` (whose sensors drain that queue and hold that MQTT
    session) on another worker would take this test's events, or its session, away."""
    import asyncio
    import socket
    import threading
    import uuid

    suffix = uuid.uuid4().hex[:10]
    queue, topic, client_id = f"hubtest.demo.{suffix}", f"hubtest/demo/{suffix}", f"hubtest-demo-{suffix}"

    def rewrite(text: str) -> str:
        for old, new in zip(DEMO_BROKER_NAMES, (f"queue: {queue}\n", f"topics: [{topic}]\n",
                                                f"client_id: {client_id}\n"), strict=True):
            assert text.count(old) == 1, f"the demo spec no longer says {old!r}; update tests/conftest.py"
            text = text.replace(old, new)
        return text

    yield rewrite

    def up(port: int) -> bool:
        with socket.socket() as sock:
            sock.settimeout(1)
            return sock.connect_ex(("127.0.0.1", port)) == 0

    if up(5672):
        import aio_pika

        async def delete() -> None:
            async with await aio_pika.connect("amqp://guest:guest@127.0.0.1:5672/", timeout=5) as conn:
                await (await conn.channel()).queue_delete(queue)

        asyncio.run(delete())
    if up(1883):
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 0  # a clean start that expires at once: the session is gone
        connected = threading.Event()
        client.on_connect = lambda *_: connected.set()
        client.connect("127.0.0.1", 1883, clean_start=True, properties=props)
        client.loop_start()
        try:
            assert connected.wait(10), "Mosquitto did not answer the clean start"
        finally:
            client.disconnect()
            client.loop_stop()


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


