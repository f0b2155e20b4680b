"""The REST adapter against a real HTTP server on loopback (tests/rest_server.py): every auth and
pagination kind, concurrency, retries, Retry-After, OAuth2 refresh, and the errors users meet."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from adapters.rest import RestSource, RestSourceConfig, RestSystemConfig
from hub.errors import HTTPStatusError, ResponseFormatError, TransportError
from hub.runtime.retry import RetryPolicy, parse_retry_after
from hub.runtime.window import Window
from hub.spec import loads
from tests.rest_server import RestTestServer

FAST = {"max": 3, "backoff": 0.01, "max_backoff": 5}


@pytest.fixture
def server() -> Iterator[RestTestServer]:
    with RestTestServer() as s:
        yield s


def source(server: RestTestServer, path: str, *, params: dict[str, Any] | None = None, records: str = "$.data[*]",
           paginate: dict[str, Any] | None = None, batch_size: int = 10_000, method: str = "GET",
           json_body: dict[str, Any] | None = None, **system: Any) -> RestSource:
    system_cfg = RestSystemConfig.model_validate({"base_url": server.url, "retries": FAST, **system})
    request: dict[str, Any] = {"path": path, "params": params or {}, "method": method}
    if json_body is not None:
        request["json"] = json_body
    source_cfg = RestSourceConfig.model_validate({"request": request, "records": records, "paginate": paginate})
    return RestSource(system_cfg, source_cfg, batch_size=batch_size)


def rows(src: RestSource) -> list[dict[str, Any]]:
    return [r for b in src.batches() for r in b.to_pylist()]


def ids(src: RestSource) -> list[int]:
    return [r["id"] for r in rows(src)]


PAGES = {"page_number": {"param": "page", "total_pages": "$.total_pages"}}
SEQ = {"page_number": {"param": "page"}}  # no total known: page by page until an empty page


# --- auth ----------------------------------------------------------------------------------------------

def test_api_key_in_header(server: RestTestServer) -> None:
    c = server.credentials
    src = source(server, "/auth/header-key", params={"n": 25}, paginate=PAGES,
                 auth={"api_key": {"name": c.api_key_header, "value": c.api_key, "in": "header"}})
    assert ids(src) == list(range(1, 26))
    assert all(r.header(c.api_key_header) == c.api_key for r in server.requests("/auth/header-key"))


def test_api_key_in_query(server: RestTestServer) -> None:
    c = server.credentials
    src = source(server, "/auth/query-key", params={"n": 25}, paginate=PAGES,
                 auth={"api_key": {"name": c.api_key_param, "value": c.api_key, "in": "query"}})
    assert ids(src) == list(range(1, 26))
    assert sorted(r.param("page") or "" for r in server.requests("/auth/query-key")) == ["1", "2", "3"]


def test_basic_auth(server: RestTestServer) -> None:
    c = server.credentials
    src = source(server, "/auth/basic", params={"n": 5}, paginate=PAGES,
                 auth={"basic": {"username": c.username, "password": c.password}})
    assert ids(src) == [1, 2, 3, 4, 5]


def test_bearer_auth(server: RestTestServer) -> None:
    src = source(server, "/auth/bearer", params={"n": 5}, paginate=PAGES, auth={"bearer": server.credentials.bearer})
    assert ids(src) == [1, 2, 3, 4, 5]


def _oauth(server: RestTestServer, client_auth: str = "basic") -> dict[str, Any]:
    c = server.credentials
    return {"oauth2": {"token_url": f"{server.url}/oauth/token", "client_id": c.client_id,
                       "client_secret": c.client_secret, "client_auth": client_auth, "scope": "read"}}


@pytest.mark.parametrize("client_auth", ["basic", "body"])
def test_oauth2_client_credentials_token_is_cached(server: RestTestServer, client_auth: str) -> None:
    server.oauth_client_auth = client_auth
    src = source(server, "/auth/oauth", params={"n": 50, "size": 10}, paginate=PAGES, auth=_oauth(server, client_auth))
    assert ids(src) == list(range(1, 51))
    tokens = server.requests("/oauth/token")
    assert len(tokens) == 1, "one token serves every page until it expires"
    assert tokens[0].form["grant_type"] == "client_credentials" and tokens[0].form["scope"] == "read"


def test_oauth2_refreshes_on_401(server: RestTestServer) -> None:
    server.oauth_revoke_after = 2  # the API revokes the token after two calls (rotation, revocation)
    src = source(server, "/auth/oauth", params={"n": 50, "size": 10, "totals": 0}, paginate=SEQ,
                 auth=_oauth(server))
    assert ids(src) == list(range(1, 51))
    assert len(server.requests("/oauth/token")) == 2
    assert [r.status for r in server.requests("/auth/oauth")].count(401) == 1, "one 401, then the new token"


def test_oauth2_token_renewed_after_expiry(server: RestTestServer) -> None:
    server.oauth_expires_in = 31  # minus the 30 s safety margin: valid for 1 s
    src = source(server, "/auth/oauth", params={"n": 20, "size": 10, "totals": 0, "delay": 0.6},
                 paginate=SEQ, auth=_oauth(server))
    assert ids(src) == list(range(1, 21))
    assert len(server.requests("/oauth/token")) >= 2
    assert 401 not in [r.status for r in server.requests("/auth/oauth")], "renewed before expiry, not after a 401"


def test_oauth2_bad_client_secret_is_a_clear_error(server: RestTestServer) -> None:
    auth = _oauth(server)
    auth["oauth2"]["client_secret"] = "wrong-secret-123"
    src = source(server, "/auth/oauth", params={"n": 5}, paginate=PAGES, auth=auth)
    with pytest.raises(Exception, match=r"OAuth2 token request to http://127\.0\.0\.1:\d+/oauth/token failed: "
                                        r"HTTP 401") as info:
        rows(src)
    assert "wrong-secret-123" not in str(info.value)


def test_wrong_api_key_names_url_and_status_and_masks_the_key(server: RestTestServer) -> None:
    src = source(server, "/auth/query-key", params={"n": 5}, paginate=PAGES,
                 auth={"api_key": {"name": "api_key", "value": "not-the-right-key-42", "in": "query"}})
    with pytest.raises(HTTPStatusError) as info:
        rows(src)
    assert info.value.status == 401
    assert "HTTP 401" in str(info.value) and f"{server.url}/auth/query-key" in str(info.value)
    assert "not-the-right-key-42" not in str(info.value) + info.value.url
    assert len(server.requests("/auth/query-key")) == 1, "4xx other than 408/425/429 is not retried"


# --- pagination ---------------------------------------------------------------------------------------

def test_page_number_with_total_pages_fetches_concurrently_in_order(server: RestTestServer) -> None:
    # 'reverse' makes early pages slower, so responses complete out of order
    src = source(server, "/pages", params={"n": 200, "size": 10, "delay": 0.02, "reverse": 1}, paginate=PAGES,
                 concurrency=4)
    assert ids(src) == list(range(1, 201)), "records come out in page order"
    assert src.stats.concurrent and src.stats.pages == 20
    assert 2 <= server.max_in_flight("/pages") <= 4, "bounded by concurrency"


def test_page_number_with_total_count_and_size(server: RestTestServer) -> None:
    src = source(server, "/pages", params={"n": 30}, concurrency=3,
                 paginate={"page_number": {"param": "page", "size_param": "per_page", "size": 7,
                                           "total_count": "$.total"}})
    assert ids(src) == list(range(1, 31))
    assert sorted(int(r.param("page") or 0) for r in server.requests("/pages")) == [1, 2, 3, 4, 5]
    assert {r.param("per_page") for r in server.requests("/pages")} == {"7"}


def test_page_number_without_totals_stops_on_empty_or_short_page(server: RestTestServer) -> None:
    src = source(server, "/pages", params={"n": 30, "size": 10, "totals": 0}, paginate=SEQ)
    assert ids(src) == list(range(1, 31))
    assert len(server.requests("/pages")) == 4, "3 full pages, then the empty page that ends it"
    short = source(server, "/pages", params={"n": 25, "totals": 0},
                   paginate={"page_number": {"size_param": "size", "size": 10}})
    assert ids(short) == list(range(1, 26))
    assert len(server.requests("/pages")) == 4 + 3, "a short page ends it when the page size is known"


def test_page_number_starting_at_zero(server: RestTestServer) -> None:
    src = source(server, "/pages", params={"n": 25, "base": 0},
                 paginate={"page_number": {"start": 0, "total_pages": "$.total_pages"}})
    assert ids(src) == list(range(1, 26))


def test_offset_with_and_without_total(server: RestTestServer) -> None:
    with_total = source(server, "/offset", params={"n": 95}, records="$.items[*]", concurrency=4,
                        paginate={"offset": {"limit": 10, "total": "$.total"}})
    assert ids(with_total) == list(range(1, 96)) and with_total.stats.concurrent
    without = source(server, "/offset", params={"n": 30, "totals": 0}, records="$.items[*]",
                     paginate={"offset": {"limit": 10}})
    assert ids(without) == list(range(1, 31)) and not without.stats.concurrent
    offsets = [r.param("offset") for r in server.requests("/offset")][-4:]
    assert offsets == ["0", "10", "20", "30"]


def test_cursor(server: RestTestServer) -> None:
    src = source(server, "/cursor", params={"n": 25, "size": 10},
                 paginate={"cursor": {"param": "cursor", "cursor_path": "$.meta.next_cursor"}})
    assert ids(src) == list(range(1, 26))
    assert [r.param("cursor") is None for r in server.requests("/cursor")] == [True, False, False]
    empty_end = source(server, "/cursor", params={"n": 25, "size": 10, "end": "empty"},
                       paginate={"cursor": {"cursor_path": "$.meta.next_cursor"}})
    assert ids(empty_end) == list(range(1, 26)), "an empty cursor ends like a missing one"


def test_cursor_loop_is_detected(server: RestTestServer) -> None:
    src = source(server, "/cursor", params={"n": 100, "size": 10, "loop_at": 40},
                 paginate={"cursor": {"cursor_path": "$.meta.next_cursor"}})
    with pytest.raises(ResponseFormatError, match="was already returned; the API is looping"):
        rows(src)


@pytest.mark.parametrize("mode", ["root", "relative", "absolute"])
def test_next_url_in_body(server: RestTestServer, mode: str) -> None:
    src = source(server, "/next", params={"n": 25, "size": 10, "mode": mode}, records="$.results[*]",
                 paginate={"next_url": {"path": "$.links.next"}})
    assert ids(src) == list(range(1, 26))


def test_next_url_loop_is_detected(server: RestTestServer) -> None:
    src = source(server, "/next", params={"n": 100, "size": 10, "loop": 1}, records="$.results[*]",
                 paginate={"next_url": {"path": "$.links.next"}})
    with pytest.raises(ResponseFormatError, match="already fetched; the API is looping"):
        rows(src)


def test_link_header(server: RestTestServer) -> None:
    src = source(server, "/link", params={"n": 25, "size": 10}, records="$[*]", paginate={"link_header": {}})
    assert ids(src) == list(range(1, 26))
    assert len(server.requests("/link")) == 3


def test_max_pages_is_an_error_not_silence(server: RestTestServer) -> None:
    src = source(server, "/pages", params={"n": 100, "size": 10, "totals": 0},
                 paginate={**SEQ, "max_pages": 3})
    with pytest.raises(ResponseFormatError, match=r"more than paginate\.max_pages=3 pages"):
        rows(src)
    known = source(server, "/pages", params={"n": 100, "size": 10}, paginate={**PAGES, "max_pages": 3})
    with pytest.raises(ResponseFormatError, match=r"10 pages exceed paginate\.max_pages=3"):
        rows(known)


# --- retries -------------------------------------------------------------------------------------------

def test_429_honours_retry_after(server: RestTestServer) -> None:
    server.add_fault("/pages", 429, times=1, headers={"Retry-After": "1"}, match={"page": "2"})
    src = source(server, "/pages", params={"n": 30, "size": 10, "totals": 0}, paginate=SEQ)
    assert ids(src) == list(range(1, 31))
    page2 = [r for r in server.requests("/pages") if r.param("page") == "2"]
    assert [r.status for r in page2] == [429, 200]
    assert page2[1].started - page2[0].started >= 0.95, "waited as long as Retry-After said, not the 10 ms backoff"
    assert src.stats.retries == 1


def test_503_burst_is_recovered_without_duplicates(server: RestTestServer) -> None:
    server.add_fault("/pages", 503, times=3, match={"page": "3"})
    server.add_fault("/pages", 502, times=1, match={"page": "5"})
    src = source(server, "/pages", params={"n": 100, "size": 10}, paginate=PAGES, concurrency=4,
                 retries={"max": 5, "backoff": 0.01})
    assert ids(src) == list(range(1, 101)), "every record exactly once, in order"
    assert src.stats.retries == 4


def test_retries_give_up_with_a_clear_error(server: RestTestServer) -> None:
    server.add_fault("/pages", 503, times=None)
    src = source(server, "/pages", params={"n": 10}, paginate=PAGES)
    with pytest.raises(HTTPStatusError, match=r"GET http://127\.0\.0\.1:\d+/pages\?n=10&page=1: HTTP 503 "
                                              r"Service Unavailable \(gave up after 4 attempts\)"):
        rows(src)
    assert len(server.requests("/pages")) == 4


def test_connection_refused_is_retried_then_reported(server: RestTestServer) -> None:
    port = server.port
    server.stop()
    src = source(server, "/pages", paginate=PAGES, retries={"max": 2, "backoff": 0.01})
    with pytest.raises(TransportError, match=rf"GET http://127\.0\.0\.1:{port}/pages\?page=1: ConnectError.*"
                                             r"gave up after 3 attempts"):
        rows(src)
    assert src.stats.retries == 2


def test_read_timeout(server: RestTestServer) -> None:
    src = source(server, "/slow", params={"delay": 2}, timeout={"connect": 2, "read": 0.3},
                 retries={"max": 1, "backoff": 0.01})
    started = time.monotonic()
    with pytest.raises(TransportError, match="ReadTimeout"):
        rows(src)
    assert time.monotonic() - started < 1.9, "gave up on the timeout, did not wait for the slow server"


def test_retry_after_parsing() -> None:
    assert parse_retry_after("7") == 7.0
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 < (parse_retry_after(when) or 0) <= 30
    assert parse_retry_after("soon") is None
    policy = RetryPolicy(max_retries=5, backoff=0.5, max_backoff=10)
    assert policy.delay(1, "3600") == 10, "a hostile Retry-After is capped"
    delays = [policy.delay(n) for n in range(1, 7)]
    assert all(0.25 <= d <= 10 for d in delays) and delays[-1] >= 5, "exponential with jitter, capped"


# --- bad responses -------------------------------------------------------------------------------------

def test_non_json_body_names_url_status_and_masks_secrets(server: RestTestServer) -> None:
    src = source(server, "/html", params={"since": "2024-01-01"},
                 auth={"api_key": {"name": "access_code", "value": "s3cret-code-777", "in": "query"}})
    with pytest.raises(ResponseFormatError) as info:
        rows(src)
    msg = str(info.value)
    assert f"GET {server.url}/html?since=2024-01-01: HTTP 200 body is not valid JSON (text/html" in msg
    assert "Maintenance" in msg and "s3cret-code-777" not in msg


def test_truncated_body_is_retried_then_reported(server: RestTestServer) -> None:
    src = source(server, "/truncated", retries={"max": 1, "backoff": 0.01})
    with pytest.raises(ResponseFormatError, match=r"GET http://127\.0\.0\.1:\d+/truncated: HTTP 200 body truncated: "
                                                  r"the connection broke after 26 of 1026 bytes"):
        rows(src)
    assert len(server.requests("/truncated")) == 2
    server.add_fault("/pages", truncate=True, times=1, match={"page": "2"})
    ok = source(server, "/pages", params={"n": 30}, paginate=PAGES)
    assert ids(ok) == list(range(1, 31)), "one truncated page is fetched again"


def test_error_body_echoing_credentials_is_masked(server: RestTestServer) -> None:
    src = source(server, "/status/400", params={"echo": 1}, auth={"bearer": "echoed-bearer-token-1"})
    with pytest.raises(HTTPStatusError) as info:
        rows(src)
    assert "HTTP 400" in str(info.value) and "echoed-bearer-token-1" not in str(info.value)


@pytest.mark.parametrize("chunked", [0, 1])
def test_oversized_response_is_refused(server: RestTestServer, chunked: int) -> None:
    src = source(server, "/big", params={"bytes": 50_000, "chunked": chunked}, max_response_bytes=10_000)
    with pytest.raises(ResponseFormatError, match="exceeds max_response_bytes=10000"):
        rows(src)


# --- records -------------------------------------------------------------------------------------------

def test_batches_are_typed_arrow_and_bounded(server: RestTestServer) -> None:
    src = source(server, "/pages", params={"n": 95, "size": 10}, paginate=PAGES, batch_size=25)
    batches = list(src.batches())
    assert all(isinstance(b, pa.RecordBatch) and b.num_rows <= 25 for b in batches)
    assert sum(b.num_rows for b in batches) == 95 and len(batches) >= 4
    assert batches[0].schema == pa.schema([("id", pa.int64()), ("name", pa.string())])


def test_records_path_to_the_array_and_post_with_json_body(server: RestTestServer) -> None:
    server.add_json("/fixed", {"data": [{"id": 1, "tags": ["a"]}, {"id": 2, "tags": []}]})
    assert ids(source(server, "/fixed", records="$.data")) == [1, 2]
    src = source(server, "/echo", method="POST", json_body={"query": {"active": True}}, records="$")
    [echo] = rows(src)
    assert echo["method"] == "POST" and echo["json"] == {"query": {"active": True}}


def test_consumer_stopping_early_stops_the_fetching_thread(server: RestTestServer) -> None:
    # the threads this consumer starts, not a count: a thread of an earlier test may end meanwhile
    before = set(threading.enumerate())
    src = source(server, "/pages", params={"n": 5000, "size": 10, "totals": 0, "delay": 0.01}, paginate=SEQ,
                 batch_size=10)
    it = src.batches()
    first = next(it)
    started = [t for t in threading.enumerate() if t not in before]
    assert started, "the fetching thread runs while the consumer reads"
    it.close()
    assert first.num_rows == 10
    deadline = time.monotonic() + 5
    while any(t.is_alive() for t in started) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [t.name for t in started if t.is_alive()]
    assert len(server.requests("/pages")) < 100, "stopped instead of reading all 500 pages"


def test_partition_window_fills_the_incremental_parameters(server: RestTestServer, tmp_path: Path) -> None:
    from hub.materialize import build_adapter

    spec = f"""
pipeline: w
partitions: {{daily: {{start: 2024-01-01}}}}
systems: {{api: {{rest: {{base_url: "{server.url}"}}}}}}
sources:
  events:
    system: api
    request: {{path: /pages, params: {{since: "{{{{ partition.start }}}}", day: "{{{{ partition.key }}}}", n: 3}}}}
    records: $.data[*]
"""
    pipeline = loads(spec, tmp_path / "w.yaml")
    start = datetime(2024, 3, 5, tzinfo=UTC)
    adapter = build_adapter(pipeline, pipeline.sources["events"],
                            Window("2024-03-05", start, start + timedelta(days=1)))
    assert len(rows(adapter)) == 3
    [req] = server.requests("/pages")
    assert req.params == {"since": "2024-03-05T00:00:00+00:00", "day": "2024-03-05", "n": "3"}
