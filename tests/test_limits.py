"""Rate limits, circuit breakers and HTTP caching per system (issue 8, points 1-3), against a counting
HTTP server on loopback and several real processes."""

from __future__ import annotations

import json
import multiprocessing
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from adapters.rest import RestSource
from adapters.rest.config import RestSourceConfig, RestSystemConfig
from hub.errors import HTTPStatusError
from hub.runtime.breaker import CircuitOpenError

REDIS_URL = "redis://127.0.0.1:6379/15"

Behaviour = Callable[[BaseHTTPRequestHandler], tuple[int, dict[str, str], bytes]]


class CountingServer:
    """Answers every request with *behaviour* and records (monotonic time, path, request headers)."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.log: list[tuple[float, str, dict[str, str]]] = []
        self.statuses: list[int] = []
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                with lock:
                    outer.log.append((time.monotonic(), self.path, dict(self.headers)))
                status, headers, body = outer.behaviour(self)
                with lock:
                    outer.statuses.append(status)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> CountingServer:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _pages(handler: BaseHTTPRequestHandler) -> tuple[int, dict[str, str], bytes]:
    body = json.dumps({"items": [{"id": 1}], "total_pages": 12}).encode()
    return 200, {"Content-Type": "application/json"}, body


def _source(url: str, system: dict[str, Any], source: dict[str, Any] | None = None) -> tuple[
        RestSystemConfig, RestSourceConfig]:
    return (RestSystemConfig.model_validate({"base_url": url, "retries": {"max": 0}, **system}),
            RestSourceConfig.model_validate(source or {"request": {"path": "/data"}, "records": "$.items"}))


def _hammer(url: str, system: dict[str, Any], name: str, state_dir: str) -> int:
    """One process: every page of a 12-page endpoint, fetched concurrently, under the system's limit."""
    sys_cfg, src_cfg = _source(url, system, {"request": {"path": "/data"}, "records": "$.items",
                                              "paginate": {"page_number": {"total_pages": "$.total_pages"}}})
    src = RestSource(sys_cfg, src_cfg, name="hammer", system_name=name, state_dir=Path(state_dir))
    return sum(b.num_rows for b in src.batches())


def _worst_window(times: list[float], width: float) -> int:
    times = sorted(times)
    return max(sum(1 for u in times[i:] if u < t + width) for i, t in enumerate(times))


def _run_hammer(tmp_path: Path, rate_limit: dict[str, Any]) -> None:
    name = f"crm-{uuid.uuid4().hex[:8]}"
    processes = 4
    with CountingServer(_pages) as server:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(processes) as pool:
            rows = pool.starmap(_hammer, [(server.url, {"rate_limit": rate_limit, "concurrency": 8}, name,
                                           str(tmp_path))] * processes)
        times = [t for t, _, _ in server.log]
    assert rows == [12] * processes
    assert len(times) == 12 * processes
    per_second, burst = rate_limit["per_second"], rate_limit["burst"]
    # The server stamps arrivals, not the moments tokens were taken: a request can reach it a little late
    # (4 processes on a loaded machine), which would squeeze it into a later window. Windows are therefore
    # 1 s less 100 ms of allowed delivery delay; within them, not one request over rate + burst.
    over = _worst_window(times, 1.0 - 0.1) - (per_second + burst)
    assert over <= 0, f"requests over the budget: {over}"
    # the limit really bit: 48 requests at 20/s (burst 5) take at least (48 - 5) / 20 s
    assert max(times) - min(times) >= (len(times) - burst) / per_second - 0.1


def test_rate_limit_across_processes_sqlite(tmp_path: Path) -> None:
    _run_hammer(tmp_path, {"per_second": 20, "burst": 5})


def _redis_reachable() -> str | None:
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except Exception as exc:  # any reason: skip with it
        return f"{type(exc).__name__}: {exc}"
    return None


def test_rate_limit_across_processes_redis(tmp_path: Path) -> None:
    problem = _redis_reachable()
    if problem:
        pytest.skip(f"Redis at {REDIS_URL} is unreachable ({problem}); the SQLite backend is tested above")
    _run_hammer(tmp_path, {"per_second": 20, "burst": 5, "redis": REDIS_URL})


def test_rate_limit_per_minute_bucket(tmp_path: Path) -> None:
    from hub.runtime.ratelimit import RateLimitConfig, RateLimiter

    limiter = RateLimiter("m", RateLimitConfig(per_minute=120, burst=3), tmp_path)
    assert [limiter.try_take() for _ in range(3)] == [0, 0, 0]
    assert 0 < limiter.try_take() <= 0.5  # 2 per second: the next token within half a second


# --- circuit breaker ----------------------------------------------------------------------------------

@pytest.fixture(params=["sqlite", "redis"])
def breaker_store(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    if request.param == "redis":
        problem = _redis_reachable()
        if problem:
            pytest.skip(f"Redis at {REDIS_URL} is unreachable ({problem})")
        yield {"redis": REDIS_URL}
    else:
        yield {}


def test_circuit_breaker_opens_fails_fast_half_opens_and_closes(tmp_path: Path, breaker_store: dict[str, Any],
                                                                caplog: pytest.LogCaptureFixture) -> None:
    healthy = {"on": False}

    def behaviour(handler: BaseHTTPRequestHandler) -> tuple[int, dict[str, str], bytes]:
        if healthy["on"]:
            return 200, {"Content-Type": "application/json"}, b'{"items": [{"id": 1}]}'
        return 503, {"Content-Type": "text/plain"}, b"down"

    name = f"erp-{uuid.uuid4().hex[:8]}"
    system = {"circuit_breaker": {"failures": 2, "cooldown": "1s", **breaker_store}}
    with CountingServer(behaviour) as server:
        def source() -> RestSource:  # a new adapter each time: only the shared store carries the state
            return RestSource(*_source(server.url, system), system_name=name, state_dir=tmp_path)

        for _ in range(2):
            with pytest.raises(HTTPStatusError):
                list(source().batches())
        assert len(server.log) == 2
        with caplog.at_level("WARNING", logger="hub.circuit"), pytest.raises(CircuitOpenError) as err:
            list(source().batches())
        assert len(server.log) == 2  # failed fast: no request
        assert f"system {name}" in str(err.value) and "half-opens at" in str(err.value)
        assert any("open after 2 consecutive failures" in r.getMessage() for r in caplog.records)

        time.sleep(1.1)  # half-open: one trial, which fails and opens the circuit again
        with pytest.raises(HTTPStatusError):
            list(source().batches())
        with pytest.raises(CircuitOpenError):
            list(source().batches())
        assert len(server.log) == 3

        healthy["on"] = True
        time.sleep(1.1)
        trial = source()
        assert sum(b.num_rows for b in trial.batches()) == 1
        assert trial.details()["circuit"] == {"system": name, "state": "closed", "opened": 0, "rejected": 0}
        assert sum(b.num_rows for b in source().batches()) == 1  # closed: calls go through
        assert len(server.log) == 5


# --- HTTP cache -----------------------------------------------------------------------------------------

TOKEN = "s3cr3t-token-value"


def _etag_server() -> CountingServer:
    body = json.dumps({"items": [{"code": "EUR"}, {"code": "USD"}]}).encode()

    def behaviour(handler: BaseHTTPRequestHandler) -> tuple[int, dict[str, str], bytes]:
        if handler.headers.get("If-None-Match") == '"v1"':
            return 304, {"ETag": '"v1"'}, b""
        return 200, {"Content-Type": "application/json", "ETag": '"v1"',
                     "Last-Modified": "Mon, 01 Jan 2024 00:00:00 GMT"}, body

    return CountingServer(behaviour)


def _cached_source(url: str, ttl: str, cache_dir: Path) -> RestSource:
    system = {"cache": {"ttl": ttl}, "auth": {"bearer": TOKEN}}
    return RestSource(*_source(url, system), system_name="ref", cache_dir=cache_dir)


def _codes(src: RestSource) -> list[str]:
    return [c for b in src.batches() for c in b.column("code").to_pylist()]


def test_http_cache_serves_fresh_responses_without_a_request(tmp_path: Path) -> None:
    with _etag_server() as server:
        first = _cached_source(server.url, "1h", tmp_path)
        assert _codes(first) == ["EUR", "USD"]
        second = _cached_source(server.url, "1h", tmp_path)
        assert _codes(second) == ["EUR", "USD"]
        assert len(server.log) == 1
        assert second.details()["cache"] == {"hits": 1, "not_modified": 0}
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert TOKEN.encode() not in stored and b"127.0.0.1" not in stored  # no secrets, no URLs in clear


def test_http_cache_revalidates_with_etag_and_serves_304(tmp_path: Path) -> None:
    with _etag_server() as server:
        assert _codes(_cached_source(server.url, "0s", tmp_path)) == ["EUR", "USD"]
        again = _cached_source(server.url, "0s", tmp_path)
        assert _codes(again) == ["EUR", "USD"]
        assert server.statuses == [200, 304]
        assert server.log[1][2].get("If-None-Match") == '"v1"'
        assert server.log[1][2].get("If-Modified-Since") == "Mon, 01 Jan 2024 00:00:00 GMT"
        assert again.details()["cache"] == {"hits": 0, "not_modified": 1}
        # another identity (token) never shares the entry
        other = RestSource(*_source(server.url, {"cache": {"ttl": "1h"}, "auth": {"bearer": "other"}}),
                           system_name="ref", cache_dir=tmp_path)
        assert _codes(other) == ["EUR", "USD"]
        assert server.statuses == [200, 304, 200]


# --- SOAP and SQL go through the same limiter and breaker ---------------------------------------------

def test_soap_calls_are_rate_limited_and_broken(erp: Any, tmp_path: Path) -> None:
    from adapters.soap import SoapSource
    from tests.test_soap import orders_source, system

    name = f"erp-{uuid.uuid4().hex[:8]}"
    base = orders_source(erp)
    limited = {"rate_limit": {"per_second": 10, "burst": 1}, "circuit_breaker": {"failures": 1, "cooldown": "1s"},
               "retries": {"max": 0}}

    def source() -> SoapSource:
        return SoapSource(system(erp, **limited), base.source, system_name=name, state_dir=tmp_path)

    started = time.monotonic()
    first = source()
    rows = sum(b.num_rows for b in first.batches())
    calls = first.details()["pages"] + 1  # pages with records and the empty last page
    assert rows > 0 and calls >= 4
    assert time.monotonic() - started >= (calls - 1) / 10 - 0.05

    erp.fail_next.extend([503])
    with pytest.raises(HTTPStatusError):
        list(source().batches())
    before = len(erp.requests)
    with pytest.raises(CircuitOpenError, match=f"system {name}: circuit open"):
        list(source().batches())
    assert len(erp.requests) == before  # failed fast
    time.sleep(1.1)
    assert sum(b.num_rows for b in source().batches()) == rows  # the trial succeeds: closed


def test_sql_queries_are_rate_limited(tmp_path: Path) -> None:
    import sqlite3

    from adapters.sql import SqlSource, SqlSourceConfig, SqlSystemConfig

    db = tmp_path / "ref.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("create table t (id integer primary key)")
        conn.executemany("insert into t values (?)", [(i,) for i in range(5)])
    system = SqlSystemConfig.model_validate({"url": f"sqlite:///{db}", "rate_limit": {"per_second": 5, "burst": 1}})
    started = time.monotonic()
    for _ in range(4):
        src = SqlSource(system, SqlSourceConfig.model_validate({"table": "t"}), name="t", system_name="inv",
                        state_dir=tmp_path)
        assert sum(b.num_rows for b in src.batches()) == 5
    assert time.monotonic() - started >= 3 / 5 - 0.05
    assert src.details()["rate_limit_wait_s"] > 0


def test_system_pools_on_non_duckdb_warehouses() -> None:
    from types import SimpleNamespace

    from hub.dagster.definitions import DUCKDB_POOL, pool_for

    duck = SimpleNamespace(warehouse_url="duckdb:///w.duckdb")
    pg = SimpleNamespace(warehouse_url="postgresql://u@h/db")
    assert pool_for(duck, "crm") == DUCKDB_POOL  # type: ignore[arg-type]
    assert pool_for(pg, "crm") == "hub_system_crm"  # type: ignore[arg-type]
    assert pool_for(pg) is None  # type: ignore[arg-type]


def test_circuit_and_cache_in_the_assets_run_metadata(crm: Any, warehouse_path: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import dagster as dg

    from hub.dagster.run import run_pipeline
    from hub.spec import loads
    from tests.conftest import demo_spec_text

    monkeypatch.setenv("HUB_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("HUB_CACHE_DIR", str(tmp_path / "cache"))
    text = demo_spec_text().replace(
        "      concurrency: 4\n",
        "      concurrency: 4\n      rate_limit: {per_second: 200, burst: 20}\n"
        "      circuit_breaker: {failures: 3, cooldown: 30s}\n      cache: {ttl: 1h}\n", 1)
    pipeline = loads(text, tmp_path / "demo.yaml")
    instance = dg.DagsterInstance.ephemeral()
    outcomes = run_pipeline(pipeline, instance, assets=["crm_customers"], partitions=["2024-01-02"])
    assert all(o.success for o in outcomes), [o.error for o in outcomes]
    event = instance.get_latest_materialization_event(dg.AssetKey("crm_customers"))
    assert event is not None and event.asset_materialization is not None
    md = event.asset_materialization.metadata
    assert md["hub/circuit"].value == {"system": "crm", "state": "closed", "opened": 0, "rejected": 0}
    assert md["hub/cache"].value == {"hits": 0, "not_modified": 0}
    assert "hub/rate_limit_wait_s" in md
    assert any((tmp_path / "cache" / "http").iterdir()) and (tmp_path / "state" / "limits.sqlite").is_file()


def test_spec_keys_are_validated_on_every_system_type(tmp_path: Path) -> None:
    import yaml

    from hub.errors import SpecError
    from hub.spec import loads
    from tests.conftest import demo_spec_text

    spec = yaml.safe_load(demo_spec_text())
    for system in spec["systems"].values():
        block = next(v for k, v in system.items() if k not in ("description", "agent"))  # the protocol's block
        block.update(rate_limit={"per_minute": 600, "burst": 2}, circuit_breaker={"failures": 2, "cooldown": "1m"})
    pipeline = loads(yaml.safe_dump(spec), tmp_path / "demo.yaml")
    assert {s.system_name for s in pipeline.sources.values()} >= {"crm", "erp", "bank", "inventory"}
    spec["systems"]["crm"]["rest"]["rate_limit"] = {"burst": 3}
    spec["systems"]["erp"]["soap"]["cache"] = {"ttl": "1h"}  # SOAP caches its WSDL only: wsdl_cache_ttl
    with pytest.raises(SpecError) as err:
        loads(yaml.safe_dump(spec), tmp_path / "demo.yaml")
    assert "systems.crm.rest.rate_limit: give per_second and/or per_minute" in str(err.value)
    assert "systems.erp.soap.cache: unknown field" in str(err.value)


# --- SFTP and SQL systems whose server is down --------------------------------------------------------

class DownPeer:
    """A loopback port where the system's server should be: ``refusing`` accepts each connection and closes it
    at once (a server that is up but cannot serve, or a load balancer with nothing behind it), counting them;
    ``dead`` has nothing listening (connection refused)."""

    def __init__(self, kind: str) -> None:
        import socket

        self.kind, self.accepted = kind, 0
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self._thread: threading.Thread | None = None
        if kind == "dead":
            self._sock.close()  # the port is free again: connecting is refused
            return

        def serve() -> None:
            while True:
                try:
                    conn, _ = self._sock.accept()
                except OSError:
                    return  # closed
                self.accepted += 1
                conn.close()

        self._thread = threading.Thread(target=serve, name="down-peer", daemon=True)
        self._thread.start()

    def __enter__(self) -> DownPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        import socket

        if self._thread is not None:
            self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
            self._thread.join(timeout=5)


BREAKER = {"failures": 2, "cooldown": "30s"}


def _opens_after_two_failures(peer: DownPeer, call: Callable[[], None], failure: type[Exception], name: str) -> None:
    """Two calls fail with *failure* (the peer saw them, when it counts); the third fails fast with the circuit's
    error, without touching the peer."""
    for _ in range(2):
        with pytest.raises(failure):
            call()
    seen = peer.accepted
    assert peer.kind == "dead" or seen >= 2, "the refusing peer saw both failed calls"
    started = time.monotonic()
    with pytest.raises(CircuitOpenError) as err:
        call()
    assert time.monotonic() - started < 1, "fails fast"
    assert peer.accepted == seen, "no connection attempt while the circuit is open"
    assert str(err.value).startswith(f"system {name}: circuit open after 2 consecutive failures; calls fail fast "
                                     "until it half-opens at "), err.value


@pytest.mark.parametrize("kind", ["refusing", "dead"])
def test_sftp_circuit_opens_when_the_server_is_down(kind: str, tmp_path: Path) -> None:
    """SFTP operations (here the connect) go through the system's breaker: a server that is down opens it."""
    from adapters.sftp import SftpSession, SftpSystemConfig
    from hub.errors import TransportError

    name = f"bank-{uuid.uuid4().hex[:8]}"
    with DownPeer(kind) as peer:
        cfg = SftpSystemConfig.model_validate({
            "host": "127.0.0.1", "port": peer.port, "username": "hub", "password": "unused", "connect_timeout": 5,
            "host_key_fingerprint": "SHA256:" + "A" * 43, "retries": {"max": 0}, "circuit_breaker": BREAKER})

        def connect() -> None:
            with SftpSession(cfg, system_name=name, state_dir=tmp_path) as session:
                session.connect()

        _opens_after_two_failures(peer, connect, TransportError, name)


@pytest.mark.parametrize("kind", ["refusing", "dead"])
@pytest.mark.parametrize("fast_path", [True, False], ids=["adbc", "sqlalchemy"])
def test_sql_circuit_opens_when_the_server_is_down(kind: str, fast_path: bool, tmp_path: Path) -> None:
    """A SQL system's queries go through its breaker: a PostgreSQL port that refuses or drops connections opens it,
    whichever driver reads (ADBC or SQLAlchemy/psycopg)."""
    from adapters.sql import SqlSource, SqlSourceConfig, SqlSystemConfig
    from hub.errors import TransportError

    name = f"inventory-{uuid.uuid4().hex[:8]}"
    with DownPeer(kind) as peer:
        system = SqlSystemConfig.model_validate({
            "url": f"postgresql://postgres@127.0.0.1:{peer.port}/inventory", "connect_timeout": 5,
            "fast_path": fast_path, "retries": {"max": 0}, "circuit_breaker": BREAKER})

        def query() -> None:
            list(SqlSource(system, SqlSourceConfig.model_validate({"table": "stock_levels"}), name="stock",
                           system_name=name, state_dir=tmp_path).batches())

        _opens_after_two_failures(peer, query, TransportError, name)
