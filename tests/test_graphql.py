"""The GraphQL adapter against real GraphQL servers on loopback (tests/graphql_server.py): paging, templated
variables, errors in 200 responses, retries, auth, resume tokens, catalogs (live and GitHub's SDL), contracts."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml
from graphql import build_ast_schema, build_schema, parse
from pydantic import ValidationError

from adapters.graphql import (
    GraphQLError,
    GraphQLSource,
    GraphQLSourceConfig,
    GraphQLSystemConfig,
    catalog_of,
    compare,
    load_sdl,
    schema_of,
    selection_contract,
)
from hub.errors import ForeignOriginError, HTTPStatusError, ResponseFormatError, TimeBudgetExceeded
from hub.runtime import tracing
from hub.runtime.breaker import CircuitOpenError
from hub.runtime.checkpoint import Checkpoint, Resumable, fingerprint, open_resumption
from hub.runtime.window import Window, render_tree
from tests.graphql_server import (
    GITHUB_SDL,
    ITEMS_SDL,
    GraphQLTestServer,
    cursor,
    github_issues,
    github_schema,
    items,
    items_schema,
)
from tests.rest_server import RestTestServer

RELAY = """query Items($after: String, $since: String) {
  items(first: 10, after: $after, since: $since) {
    nodes { id name createdAt price }
    pageInfo { hasNextPage endCursor }
  }
}"""
OFFSET = "query Page($offset: Int!, $limit: Int!) { itemsPage(offset: $offset, limit: $limit) { id name } }"
FAST_RETRIES = {"max": 2, "backoff": 0.01, "max_backoff": 0.05}


@pytest.fixture
def server() -> Iterator[GraphQLTestServer]:
    with GraphQLTestServer(items_schema(items(25))) as srv:
        yield srv


def make(server: GraphQLTestServer, query: str = RELAY, records: str = "items.nodes", *,
         paginate: dict[str, Any] | None = None, variables: dict[str, Any] | None = None,
         system: dict[str, Any] | None = None, batch_size: int = 10_000, state_dir: Path | None = None,
         max_duration: float | None = None) -> GraphQLSource:
    sys_cfg = GraphQLSystemConfig.model_validate({"endpoint": server.url, "retries": FAST_RETRIES, **(system or {})})
    src_cfg = GraphQLSourceConfig.model_validate({
        "query": query, "records": records, "variables": variables or {},
        "paginate": {"relay": {}} if paginate is None else paginate})
    return GraphQLSource(sys_cfg, src_cfg, name="items", batch_size=batch_size, system_name="shop",
                         state_dir=state_dir, max_duration=max_duration)


def rows(src: GraphQLSource) -> list[dict[str, Any]]:
    batches = list(src.batches())
    return pa.Table.from_batches(batches).to_pylist() if batches else []


# --- paging ------------------------------------------------------------------------------------------------

def test_relay_pagination_walks_every_page_with_the_end_cursor(server: GraphQLTestServer) -> None:
    got = rows(make(server))
    assert [r["id"] for r in got] == [str(i) for i in range(1, 26)]
    assert got[0] == {"id": "1", "name": "item-1", "createdAt": "2024-01-01", "price": 1.5}
    sent = [r.variables.get("after") for r in server.requests]
    assert sent == [None, cursor(9), cursor(19)]
    assert {r.payload.get("operationName") for r in server.requests} == {"Items"}


def test_relay_page_info_next_to_edges_is_found(server: GraphQLTestServer) -> None:
    query = RELAY.replace("nodes { id name createdAt price }", "edges { cursor node { id name } }")
    got = rows(make(server, query, "$.items.edges[*].node"))
    assert [r["id"] for r in got] == [str(i) for i in range(1, 26)]
    assert len(server.requests) == 3


@pytest.mark.parametrize(("n", "expected_requests"), [(25, 3), (20, 3), (0, 1)])
def test_offset_limit_variables(n: int, expected_requests: int) -> None:
    with GraphQLTestServer(items_schema(items(n))) as srv:
        got = rows(make(srv, OFFSET, "itemsPage", paginate={"offset": {"limit": 10}}))
        assert [r["id"] for r in got] == [str(i) for i in range(1, n + 1)]
        assert [(r.variables["offset"], r.variables["limit"]) for r in srv.requests] == \
            [(o, 10) for o in range(0, 10 * expected_requests, 10)]


def test_variables_are_templated_by_the_partition_window(server: GraphQLTestServer) -> None:
    window = Window("2024-01-20", datetime(2024, 1, 20, tzinfo=UTC), datetime(2024, 1, 21, tzinfo=UTC))
    variables = render_tree({"since": "{{ partition.start_date }}"}, window, field="sources.items.variables")
    got = rows(make(server, variables=variables))
    assert [r["id"] for r in got] == [str(i) for i in range(20, 26)]
    assert [r.variables["since"] for r in server.requests] == ["2024-01-20"]
    # rendered() does the same and leaves the query text alone, even a "{{" inside a string literal
    query = RELAY.replace("since: $since", 'since: $since, note: "{{ not a template }}"')
    cfg = GraphQLSourceConfig.model_validate({"query": query, "records": "items.nodes", "paginate": {"relay": {}},
                                              "variables": {"since": "{{ partition.start_date }}"}})
    done = cfg.rendered(window, field="sources.items")
    assert done.variables == {"since": "2024-01-20"} and done.query == query


def test_cursor_handed_out_twice_is_a_loop_not_an_endless_walk() -> None:
    schema = build_schema(ITEMS_SDL)
    stuck = {"nodes": [{"id": "1", "name": "a", "createdAt": "x"}], "edges": [], "totalCount": 1,
             "pageInfo": {"hasNextPage": True, "endCursor": "same", "hasPreviousPage": False}}
    schema.query_type.fields["items"].resolve = lambda *_a, **_k: stuck  # type: ignore[union-attr]
    looping = pytest.raises(ResponseFormatError, match="already returned; the API is looping")
    with GraphQLTestServer(schema) as srv, looping:
        rows(make(srv))
    assert len(srv.requests) == 2


def test_missing_page_info_is_named(server: GraphQLTestServer) -> None:
    query = RELAY.replace("pageInfo { hasNextPage endCursor }", "totalCount")
    with pytest.raises(ResponseFormatError, match=r"no pageInfo \{ hasNextPage endCursor \} at data.items.pageInfo"):
        rows(make(server, query))


# --- errors ----------------------------------------------------------------------------------------------------

def test_errors_in_a_200_response_fail_naming_path_and_message_and_load_nothing() -> None:
    query = RELAY.replace("price }", "price secret }")
    with GraphQLTestServer(items_schema(items(25), failing_id="3")) as srv:
        src = make(srv, query)
        yielded: list[pa.RecordBatch] = []
        with pytest.raises(GraphQLError) as caught:
            for batch in src.batches():
                yielded.append(batch)
    assert yielded == []
    assert caught.value.errors == [("items.nodes.2.secret", "not allowed to read the secret of item 3")]
    message = str(caught.value)
    assert "items.nodes.2.secret: not allowed to read the secret of item 3" in message
    assert "partial data in the response was not loaded" in message
    assert srv.requests[0].status == 200 and len(srv.requests) == 1  # a GraphQL error is not retried


def test_errors_on_a_later_page_never_load_that_page() -> None:
    query = RELAY.replace("price }", "price secret }")
    with GraphQLTestServer(items_schema(items(25), failing_id="14")) as srv:
        yielded: list[dict[str, Any]] = []
        with pytest.raises(GraphQLError, match=r"items\.nodes\.3\.secret"):
            for batch in make(srv, query).batches():
                yielded.extend(batch.to_pylist())
    assert [r["id"] for r in yielded] == [str(i) for i in range(1, 11)]  # page 1 only; page 2 never handed over


def test_http_500_is_retried(server: GraphQLTestServer) -> None:
    server.fail_next(500, 503)
    src = make(server)
    assert len(rows(src)) == 25
    assert [r.status for r in server.requests] == [500, 503, 200, 200, 200]
    assert src.details()["retries"] == 2


def test_http_errors_give_up_with_status_and_graphql_messages(server: GraphQLTestServer) -> None:
    server.fail_next(500, 500, 500)
    with pytest.raises(HTTPStatusError, match=r"HTTP 500 .*gave up after 3 attempts.*injected HTTP 500") as caught:
        rows(make(server))
    assert caught.value.status == 500


def test_rate_limited_errors_in_a_200_are_retried_then_reported(server: GraphQLTestServer) -> None:
    server.fail_next(0)
    src = make(server)
    assert len(rows(src)) == 25 and src.details()["retries"] == 1
    server.requests.clear()
    server.fail_next(0, 0, 0)
    with pytest.raises(GraphQLError, match=r"API rate limit exceeded.*gave up after 3 attempts"):
        rows(make(server))
    assert len(server.requests) == 3


def test_oversized_response_is_refused(server: GraphQLTestServer) -> None:
    with pytest.raises(ResponseFormatError, match="exceeds max_response_bytes=200"):
        rows(make(server, system={"max_response_bytes": 200}))


# --- auth --------------------------------------------------------------------------------------------------------

AUTHS: dict[str, tuple[tuple[str, ...], dict[str, Any], dict[str, Any]]] = {
    "bearer": (("bearer", "tok-9f2"), {"bearer": "tok-9f2"}, {"bearer": "wrong-tok"}),
    "api key header": (("header", "X-API-Key", "key-77a"), {"api_key": {"name": "X-API-Key", "value": "key-77a"}},
                       {"api_key": {"name": "X-API-Key", "value": "key-bad"}}),
    "api key query": (("query", "api_key", "key-88b"),
                      {"api_key": {"name": "api_key", "value": "key-88b", "in": "query"}},
                      {"api_key": {"name": "api_key", "value": "key-bad", "in": "query"}}),
    "basic": (("basic", "ana", "pw-5c1"), {"basic": {"username": "ana", "password": "pw-5c1"}},
              {"basic": {"username": "ana", "password": "pw-bad"}}),
}


@pytest.mark.parametrize("kind", list(AUTHS))
def test_auth_kinds_of_rest_work_for_graphql(kind: str) -> None:
    required, good, bad = AUTHS[kind]
    with GraphQLTestServer(items_schema(items(12)), auth=required) as srv:
        assert len(rows(make(srv, system={"auth": good}))) == 12
        with pytest.raises(HTTPStatusError, match=r"HTTP 401.*Bad credentials") as caught:
            rows(make(srv, system={"auth": bad}))
        secret = str(next(iter(bad.values())) if kind == "bearer" else _secret(bad))
        assert secret not in str(caught.value) and secret not in caught.value.url  # never shown
        assert [r.status for r in srv.requests] == [200, 200, 401]  # a 401 is not retried


def test_oauth2_client_credentials_token_from_another_origin() -> None:
    with RestTestServer() as idp, \
            GraphQLTestServer(items_schema(items(25)), auth=("bearer_from", lambda: set(idp._tokens))) as srv:
        c = idp.credentials
        oauth = {"oauth2": {"token_url": f"{idp.url}/oauth/token", "client_id": c.client_id,
                            "client_secret": c.client_secret, "scope": "read"}}
        assert len(rows(make(srv, system={"auth": oauth}))) == 25
        assert len(idp.requests("/oauth/token")) == 1  # one token served every page
        assert len(srv.requests) == 3


def _secret(auth: dict[str, Any]) -> str:
    inner = next(iter(auth.values()))
    return str(inner.get("value") or inner.get("password"))


def test_redirect_to_another_origin_is_refused_and_credentials_stay_home(server: GraphQLTestServer) -> None:
    with GraphQLTestServer(items_schema(items(5))) as elsewhere:
        server.redirect = elsewhere.url
        with pytest.raises(ForeignOriginError, match="is not the system's origin"):
            rows(make(server, system={"auth": {"bearer": "tok-home-1"}}))
        assert elsewhere.requests == []
        got = rows(make(server, system={"auth": {"bearer": "tok-home-1"}, "allowed_origins": [elsewhere.url]}))
        assert len(got) == 5  # followed, as the spec allows that origin ...
        assert [r.headers.get("authorization") for r in elsewhere.requests] == [None]  # ... without the token


def test_every_page_is_one_traced_call_with_rows_and_traceparent(server: GraphQLTestServer) -> None:
    with tracing.asset_scope("items", run_id="run-gql-1") as scope:
        assert len(rows(make(server))) == 25
    calls = [(c.system, c.protocol, c.operation, c.status, c.rows, c.http_status) for c in scope.calls]
    assert calls == [("shop", "graphql", "POST", "ok", 10, 200), ("shop", "graphql", "POST", "ok", 10, 200),
                     ("shop", "graphql", "POST", "ok", 5, 200)]
    assert "(Items, page 2)" in scope.calls[1].target
    if tracing.enabled():
        assert all(r.headers.get("traceparent") for r in server.requests)


# --- shared limits, breakers and budgets ---------------------------------------------------------------------

def test_rate_limit_is_taken_before_every_request(server: GraphQLTestServer, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HUB_REDIS_URL", raising=False)
    src = make(server, system={"rate_limit": {"per_second": 5, "burst": 1}}, state_dir=tmp_path)
    assert len(rows(src)) == 25
    assert src.details()["rate_limit_wait_s"] >= 0.3  # three requests at 5/s with a burst of 1: two waits


def test_circuit_breaker_opens_after_failed_calls(server: GraphQLTestServer, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HUB_REDIS_URL", raising=False)
    system = {"circuit_breaker": {"failures": 1, "cooldown": 60}, "retries": {"max": 0}}
    server.fail_next(503)
    with pytest.raises(HTTPStatusError, match="HTTP 503"):
        rows(make(server, system=system, state_dir=tmp_path))
    with pytest.raises(CircuitOpenError):
        rows(make(server, system=system, state_dir=tmp_path))
    assert len(server.requests) == 1  # the second run failed fast, nothing was sent


def test_time_budget_stops_a_slow_walk(server: GraphQLTestServer) -> None:
    server.delay = 0.4
    with pytest.raises(TimeBudgetExceeded, match="items"):
        rows(make(server, max_duration=0.6))


# --- checkpoints ------------------------------------------------------------------------------------------------

def test_resume_from_a_cursor_token_fetches_only_the_remaining_pages(server: GraphQLTestServer) -> None:
    pairs = list(make(server, batch_size=10).resumable_batches(None))
    tokens = [t for _, t in pairs]
    assert tokens[0] == {"kind": "relay", "variable": "after", "value": cursor(9), "at": f"after={cursor(9)}"}
    assert tokens[-1] is not None and tokens[-1]["kind"] == "done"
    server.requests.clear()
    src = make(server, batch_size=10)
    assert isinstance(src, Resumable) and src.resume_blocker(window_closed=False) is None
    resumed = pa.Table.from_batches([b for b, _ in src.resumable_batches(tokens[0])]).to_pylist()
    assert [r["id"] for r in resumed] == [str(i) for i in range(11, 26)]
    assert [r.variables.get("after") for r in server.requests] == [cursor(9), cursor(19)]
    server.requests.clear()
    assert list(make(server).resumable_batches(tokens[-1])) == []
    assert server.requests == []


def test_a_failed_run_resumes_from_its_checkpoint_spool(server: GraphQLTestServer, tmp_path: Path) -> None:
    server.fail_at = {3: 500, 4: 500, 5: 500}  # page 3 fails past the retries
    first = make(server, batch_size=10)
    spool = Checkpoint.for_asset(tmp_path, "shop", "items", "2024-01-01", fingerprint("items", "2024-01-01"))
    loaded: list[pa.RecordBatch] = []
    with pytest.raises(HTTPStatusError, match="HTTP 500"), \
            open_resumption(first, spool, window_closed=False, full_refresh=False) as attempt:
        loaded.extend(attempt.batches(first))
    assert sum(b.num_rows for b in loaded) == 20  # pages 1 and 2 were spooled before page 3 failed
    server.requests.clear()
    server.fail_at = {}
    second = make(server, batch_size=10)
    spool = Checkpoint.for_asset(tmp_path, "shop", "items", "2024-01-01", fingerprint("items", "2024-01-01"))
    with open_resumption(second, spool, window_closed=False, full_refresh=False) as attempt:
        again = pa.Table.from_batches(list(attempt.batches(second))).to_pylist()
    assert [r["id"] for r in again] == [str(i) for i in range(1, 26)]  # replayed 1-20, fetched 21-25
    assert attempt.details["resumed"] is True and attempt.details["resumed_rows"] == 20
    assert [r.variables.get("after") for r in server.requests] == [cursor(19)]


def test_a_consumer_that_stops_early_stops_the_walk(server: GraphQLTestServer) -> None:
    batches = make(server, batch_size=10).batches()
    assert next(batches).num_rows == 10
    batches.close()  # the hand-over thread is told to stop and joined
    assert not [t for t in threading.enumerate() if t.name == "hub-graphql-items"]
    assert len(server.requests) <= 3


def test_resume_with_offsets_only_for_closed_windows(server: GraphQLTestServer) -> None:
    src = make(server, OFFSET, "itemsPage", paginate={"offset": {"limit": 10}}, batch_size=10)
    assert "offset paging" in (src.resume_blocker(window_closed=False) or "")
    assert src.resume_blocker(window_closed=True) is None
    first = src.resumable_batches(None)
    token = next(t for _, t in first)
    first.close()  # its hand-over thread stops; nothing of this walk reaches the server afterwards
    assert token == {"kind": "offset", "variable": "offset", "value": 10, "at": "offset=10"}
    server.requests.clear()
    resumed = [r["id"] for b, _ in src.resumable_batches(token) for r in b.to_pylist()]
    assert resumed == [str(i) for i in range(11, 26)]
    # only this query's requests: a walk an earlier test abandoned may still be fetching (cursor variables)
    mine = [r for r in server.requests if "itemsPage" in str(r.payload.get("query", ""))]
    assert [r.variables["offset"] for r in mine] == [10, 20]


# --- configuration ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("config", "message"), [
    ({"query": "mutation { renameItem(id: 1, name: \"x\") { id } }", "records": "renameItem"}, "a source only reads"),
    ({"query": "query { items { nodes { id } pageInfo { hasNextPage endCursor } } }", "records": "items.nodes",
      "paginate": {"relay": {}}}, r"paginate sets \$after but the query does not declare it"),
    ({"query": "query($after: String) { items(after: $after) { nodes { id } } }", "records": "$..id",
      "paginate": {"relay": {}}}, "paginate.relay needs page_info"),
    ({"query": "query { items { ", "records": "items"}, "query is not valid GraphQL"),
    ({"query": "query A { items { totalCount } } query B { items { totalCount } }", "records": "items"},
     "several operations"),
])
def test_invalid_sources_are_refused_when_the_spec_is_loaded(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        GraphQLSourceConfig.model_validate(config)


# --- catalogs -----------------------------------------------------------------------------------------------------

def test_catalog_of_a_live_endpoint_by_introspection(server: GraphQLTestServer) -> None:
    cat = catalog_of(server.url)
    assert [(q["name"], q["kind"]) for q in cat["queries"]] == [("items", "read"), ("itemsPage", "read")]
    assert [(m["name"], m["kind"]) for m in cat["mutations"]] == [("renameItem", "write")]
    rename = cat["mutations"][0]["arguments"]
    assert rename["required"] == ["id", "name"] and rename["properties"]["name"] == {"type": "string"}
    page = next(q for q in cat["queries"] if q["name"] == "itemsPage")
    assert page["returns"] == "[Item!]!"
    item = page["output"]["items"]
    assert item["x-graphql-type"] == "Item" and item["required"] == ["id", "name", "createdAt"]
    assert item["properties"]["price"] == {"anyOf": [{"type": "number"}, {"type": "null"}]}
    items_q = next(q for q in cat["queries"] if q["name"] == "items")
    assert items_q["arguments"]["properties"]["first"]["default"] == 10
    assert server.requests[0].payload["operationName"] == "IntrospectionQuery"


def test_first_page_samples_one_request(server: GraphQLTestServer) -> None:
    page = make(server).first_page()
    assert [r["id"] for r in page.records] == [str(i) for i in range(1, 11)]
    assert page.data["items"]["pageInfo"]["hasNextPage"] is True and len(server.requests) == 1


def test_catalog_introspects_with_the_systems_auth_or_reads_its_schema_file(tmp_path: Path) -> None:
    with GraphQLTestServer(items_schema(items(3)), auth=("bearer", "tok-cat-4")) as srv:
        with pytest.raises(HTTPStatusError, match="HTTP 401"):
            catalog_of(srv.url)
        system = GraphQLSystemConfig.model_validate({"endpoint": srv.url, "auth": {"bearer": "tok-cat-4"}})
        assert [q["name"] for q in catalog_of(srv.url, system=system)["queries"]] == ["items", "itemsPage"]
        with GraphQLTestServer(items_schema(items(1))) as other, pytest.raises(ForeignOriginError):
            catalog_of(other.url, system=system, system_name="shop")  # the token stays with its system
        assert other.requests == []
    (tmp_path / "shop.graphql").write_text(ITEMS_SDL, encoding="utf-8")
    offline = GraphQLSystemConfig.model_validate({"endpoint": "http://127.0.0.1:9/graphql", "schema": "shop.graphql"})
    schema, warnings = schema_of(offline, root=tmp_path)  # no request: the port would refuse
    assert schema.query_type is not None and sorted(schema.query_type.fields) == ["items", "itemsPage"]
    assert warnings == []


def test_introspection_turned_off_says_what_to_do(server: GraphQLTestServer) -> None:
    server.introspection = False
    with pytest.raises(GraphQLError, match=r"introspection is not allowed.*give the system a `schema:` SDL file"):
        catalog_of(server.url)


def test_catalog_of_githubs_sdl_lists_every_query_and_mutation() -> None:
    text = GITHUB_SDL.read_text(encoding="utf-8")
    with pytest.raises(TypeError, match="can only be defined once"):
        build_schema(text)  # GitHub's file is not valid SDL as is: two fields are defined twice
    reference = build_ast_schema(parse(text), assume_valid_sdl=True)
    assert reference.query_type is not None and reference.mutation_type is not None
    cat = catalog_of(str(GITHUB_SDL))
    assert [q["name"] for q in cat["queries"]] == list(reference.query_type.fields)
    assert [m["name"] for m in cat["mutations"]] == list(reference.mutation_type.fields)
    assert len(cat["queries"]) >= 30 and len(cat["mutations"]) >= 240 and cat["types"] > 1500
    assert {q["kind"] for q in cat["queries"]} == {"read"} and {m["kind"] for m in cat["mutations"]} == {"write"}
    assert any("EnterpriseOwnerInfo.repositoryDeployKeySetting is defined twice" in w for w in cat["warnings"])
    repo = next(q for q in cat["queries"] if q["name"] == "repository")
    assert repo["arguments"]["required"] == ["name", "owner"]
    assert repo["output"]["anyOf"][0]["properties"]["issues"]["properties"]["pageInfo"]["x-graphql-type"] == "PageInfo"
    create = next(m for m in cat["mutations"] if m["name"] == "createIssue")
    assert create["arguments"]["properties"]["input"] == {"$ref": "#/$defs/CreateIssueInput",
                                                          "description": "Parameters for CreateIssue"}
    assert "repositoryId" in create["arguments"]["$defs"]["CreateIssueInput"]["required"]


@pytest.mark.parametrize(("sdl", "message"), [
    ("type Query { a: Int\n a: String }", r"Query.a is defined twice, differently \(line 2\)"),
    ("type Query { a: Int", r"not valid GraphQL SDL: Syntax Error.*\(line 1\)"),
    ("type Query { a: Missing }", r"1 problem in the SDL: Unknown type 'Missing'"),
])
def test_sdl_problems_are_refused_with_their_lines(sdl: str, message: str) -> None:
    with pytest.raises(ResponseFormatError, match=message):
        load_sdl(sdl, what="shop.graphql")


# --- GitHub's schema served on loopback --------------------------------------------------------------------------

GITHUB_ISSUES = """query Issues($owner: String!, $name: String!, $after: String) {
  repository(owner: $owner, name: $name) {
    issues(first: 20, after: $after) {
      nodes { id number title state createdAt url }
      pageInfo { hasNextPage endCursor }
    }
  }
}"""


@pytest.fixture(scope="module")
def github() -> Iterator[GraphQLTestServer]:
    """GitHub's schema on loopback, with 55 issues in acme/widgets (built once: the SDL takes seconds)."""
    with GraphQLTestServer(github_schema(github_issues(55))) as srv:
        yield srv


def test_github_schema_served_on_loopback_pages_issues_by_relay_cursor(github: GraphQLTestServer) -> None:
    github.requests.clear()
    src = make(github, GITHUB_ISSUES, "repository.issues.nodes",
               variables={"owner": "acme", "name": "widgets"}, system={"auth": {"bearer": "ghp-test"}})
    got = rows(src)
    assert [r["number"] for r in got] == list(range(1, 56))
    assert got[2] == {"id": "I_0003", "number": 3, "title": "Issue 3", "state": "CLOSED",
                      "createdAt": "2024-03-04T10:00:00Z", "url": "https://github.com/acme/widgets/issues/3"}
    assert [r.variables.get("after") for r in github.requests] == [None, cursor(19), cursor(39)]
    assert all(r.variables["owner"] == "acme" for r in github.requests)
    assert src.details()["pages"] == 3 and src.details()["records"] == 55


def test_the_docs_example_source_runs_against_githubs_schema(github: GraphQLTestServer) -> None:
    text = (Path(__file__).resolve().parents[1] / "docs" / "graphql.md").read_text(encoding="utf-8")
    spec = yaml.safe_load(text.split("```yaml", 1)[1].split("```", 1)[0])
    system = {**spec["systems"]["github"]["graphql"], "endpoint": github.url, "retries": FAST_RETRIES,
              "rate_limit": None, "circuit_breaker": None, "auth": {"bearer": "ghp-docs"}}
    source = spec["sources"]["github_issues"]
    window = Window("2024-03-01", datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 2, tzinfo=UTC))
    keys = ("query", "variables", "records", "paginate")
    cfg = GraphQLSourceConfig.model_validate({k: source[k] for k in keys})
    cfg = cfg.rendered(window, field="sources.github_issues")
    github.requests.clear()
    got = rows(GraphQLSource(GraphQLSystemConfig.model_validate(system), cfg, name="github_issues"))
    assert len(got) == 55 and got[0]["author"] is None and got[0]["updatedAt"] == "2024-04-01T00:00:00Z"
    assert [r.variables["since"] for r in github.requests] == ["2024-03-01T00:00:00+00:00"]
    assert [r.headers["authorization"] for r in github.requests] == ["Bearer ghp-docs"]


def test_github_query_contract_records_selected_types() -> None:
    from adapters.graphql.catalog import load_sdl_file

    schema, _ = load_sdl_file(GITHUB_SDL)
    snap = selection_contract(schema, GITHUB_ISSUES)
    assert snap["fields"]["repository"] == "Repository"
    assert snap["fields"]["repository.issues"] == "IssueConnection!"
    assert snap["fields"]["repository.issues.nodes.title"] == "String!"
    assert snap["fields"]["repository.issues.nodes.state"] == "IssueState!"
    assert snap["arguments"]["repository(owner)"] == "String!"
    assert "body" in snap["available"]["repository.issues.nodes"]
    assert compare(snap, selection_contract(schema, GITHUB_ISSUES, check=False)) == []


# --- contracts --------------------------------------------------------------------------------------------------

def _changed(old: str, new: str) -> str:
    assert old in ITEMS_SDL
    return ITEMS_SDL.replace(old, new)


CONTRACT_QUERY = RELAY


@pytest.mark.parametrize(("sdl", "path", "change", "breaking"), [
    (_changed("name: String! createdAt", "createdAt"), "items.nodes.name", "removed", True),
    (_changed("price: Float", "price: Int"), "items.nodes.price", "type changed", True),
    (_changed("name: String!", "name: String"), "items.nodes.name", "now nullable", True),
    (_changed("nodes: [Item]", "nodes: [Item!]"), "items.nodes", "now non-null", False),
    (_changed("secret: String }", "secret: String color: String }"), "items.nodes.color", "added (not selected)",
     False),
    (_changed("since: String)", "since: String, org: ID!)"), "items", "new required argument org", True),
    (_changed("after: String, since", "after: Int, since"), "items(after)", "argument type changed", True),
])
def test_contract_changes_are_classified(sdl: str, path: str, change: str, breaking: bool) -> None:
    before = selection_contract(build_schema(ITEMS_SDL), CONTRACT_QUERY)
    after = selection_contract(build_schema(sdl), CONTRACT_QUERY, check=False)
    changes = compare(before, after)
    assert [(c.path, c.change, c.breaking) for c in changes] == [(path, change, breaking)]
    assert changes[0].severity == ("breaking" if breaking else "drift")


def test_contract_of_a_removed_subtree_reports_its_top_only() -> None:
    sdl = _changed("items(first: Int = 10, after: String, since: String): ItemConnection!\n", "")
    before = selection_contract(build_schema(ITEMS_SDL), CONTRACT_QUERY)
    after = selection_contract(build_schema(sdl), CONTRACT_QUERY, check=False)
    assert [(c.path, c.change) for c in compare(before, after) if c.breaking] == [("items", "removed")]


def test_contract_snapshot_refuses_a_query_the_schema_does_not_answer() -> None:
    with pytest.raises(ResponseFormatError, match="Cannot query field 'colour' on type 'Item'"):
        selection_contract(build_schema(ITEMS_SDL), "{ itemsPage(offset: 0, limit: 1) { colour } }")
