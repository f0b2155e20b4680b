"""Security findings over HTTP, each reproduced against real loopback servers (a second server on another
port is a foreign origin): credentials that followed pagination and redirects to any host, secrets that
escaped masking in escaped or encoded forms, and JSON pages that exhausted memory or hid a duplicate key."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pyarrow as pa
import pytest

from adapters.rest import RestSource, RestSourceConfig, RestSystemConfig
from hub.errors import ForeignOriginError, HubError, SecretError, TransportError
from hub.materialize import materialize_source
from hub.runtime import secrets
from hub.runtime.secrets import address_fields, mask, register, resolve, resolve_tree
from hub.spec import loads
from hub.warehouse import DuckDBWarehouse
from tests.rest_server import RestTestServer

FAST = {"max": 1, "backoff": 0.01, "max_backoff": 0.1}
TOKEN = "tok-Orig1n-Bearer-7Hq2"
API_KEY = "key-Orig1n-Query-Zx91"
TENANT = "tenant-Orig1n-Hdr-Lp4"


@pytest.fixture
def home() -> Iterator[RestTestServer]:
    with RestTestServer() as s:
        yield s


@pytest.fixture
def foreign() -> Iterator[RestTestServer]:
    with RestTestServer() as s:
        yield s


def _source(home: RestTestServer, path: str, paginate: dict[str, Any] | None, **system: Any) -> RestSource:
    """A source the way a run builds it: ``${VAR}`` values resolved (and registered as secrets)."""
    raw = {"base_url": home.url, "retries": FAST, "auth": {"bearer": "${SEC_TOKEN}"},
           "headers": {"X-Tenant": "${SEC_TENANT}"}, "params": {"api_key": "${SEC_KEY}"}, **system}
    os.environ.update(SEC_TOKEN=TOKEN, SEC_TENANT=TENANT, SEC_KEY=API_KEY)
    cfg = RestSystemConfig.model_validate(resolve_tree(raw, field="systems.partner.rest",
                                                                addresses=address_fields(RestSystemConfig)))
    src = RestSourceConfig.model_validate({"request": {"path": path}, "records": "$.data[*]", "paginate": paginate})
    return RestSource(cfg, src, name="partner_rows", system_name="partner")


def _credentials_in(requests: list[Any]) -> list[str]:
    seen = []
    for r in requests:
        text = json.dumps([r.headers, r.query])
        seen += [s for s in (TOKEN, API_KEY, TENANT) if s in text]
    return seen


def _rows(src: RestSource) -> list[dict[str, Any]]:
    return [r for b in src.batches() for r in b.to_pylist()]


# --- 1. origin pinning ------------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["next_url", "link_header"])
def test_a_pagination_link_to_another_origin_fails_and_sends_nothing_there(
        home: RestTestServer, foreign: RestTestServer, how: str) -> None:
    foreign.add_json("/steal", {"data": [{"id": 99}]})
    if how == "next_url":
        home.add_json("/rows", {"data": [{"id": 1}], "next": f"{foreign.url}/steal"})
        paginate: dict[str, Any] = {"next_url": {"path": "$.next"}}
    else:
        home.add_json("/rows", {"data": [{"id": 1}]}, headers={"Link": f'<{foreign.url}/steal>; rel="next"'})
        paginate = {"link_header": {}}
    with pytest.raises(ForeignOriginError) as err:
        _rows(_source(home, "/rows", paginate))
    assert foreign.requests() == []  # nothing at all went to the other origin, so no credential either
    message = str(err.value)
    assert f"127.0.0.1:{foreign.port}" in message and "allowed_origins" in message
    assert not [s for s in (TOKEN, API_KEY, TENANT) if s in message]


@pytest.mark.parametrize("status", [301, 302, 307])
def test_a_redirect_to_another_origin_is_refused(home: RestTestServer, foreign: RestTestServer, status: int) -> None:
    foreign.add_json("/steal", {"data": [{"id": 99}]})
    home.add_fault("/rows", status, times=None, headers={"Location": f"{foreign.url}/steal"})
    with pytest.raises(ForeignOriginError):
        _rows(_source(home, "/rows", None))
    assert foreign.requests() == []


def test_an_allowed_origin_is_followed_without_any_credential(home: RestTestServer, foreign: RestTestServer) -> None:
    foreign.add_json("/more", {"data": [{"id": 2}]})
    home.add_json("/rows", {"data": [{"id": 1}], "next": f"{foreign.url}/more?api_key={API_KEY}&page=2"})
    src = _source(home, "/rows", {"next_url": {"path": "$.next"}}, allowed_origins=[foreign.url])
    assert [r["id"] for r in _rows(src)] == [1, 2]
    assert _credentials_in(home.requests()) != []  # the system's own origin gets them
    sent = foreign.requests()
    assert len(sent) == 1 and sent[0].param("page") == "2"
    assert _credentials_in(sent) == []  # bearer, the ${...} header and the API key (query) all stripped


def test_same_origin_redirects_and_links_keep_working(home: RestTestServer) -> None:
    home.add_json("/rows", {"data": [{"id": 1}], "next": f"{home.url}/rows2"})
    home.add_fault("/rows2", 302, times=None, headers={"Location": "/rows3"})
    home.add_json("/rows3", {"data": [{"id": 3}]})
    assert [r["id"] for r in _rows(_source(home, "/rows", {"next_url": {"path": "$.next"}}))] == [1, 3]


# --- 2. masking that cannot be dodged --------------------------------------------------------------------

AWKWARD = ["tok-Cr-Lf-Ends-Ab12\r", "  padded-Sp4ce-secret  ", 'quo"te\\back-sl4sh', "ünïcode-Sécret-99",
           "plus+slash/equals=Kk7", "tab\tinside-Secret-Qq"]


@pytest.mark.parametrize("secret", AWKWARD)
def test_secrets_are_masked_in_every_escaped_and_encoded_form(secret: str) -> None:
    register(secret)
    raw = secret.encode()
    forms = [secret, secret.strip(), repr(secret), repr(raw), json.dumps(secret), json.dumps({"k": secret}),
             quote(secret, safe=""), quote(secret), "Basic " + base64.b64encode(b"user:" + raw).decode(),
             "Basic " + base64.b64encode(b"us:" + raw).decode(), base64.urlsafe_b64encode(b"x" + raw).decode(),
             f"Illegal header value b'Bearer {secret}'"]
    for text in forms:
        masked = mask(text)
        assert secret.strip() not in masked, text
        for core in secrets._base64_cores(raw):
            assert core not in masked, (text, core)


@pytest.mark.parametrize("value", ["tok-Abc\r", "tok\n-Abc", "tok-\x00Abc", "tok-\x1bAbc", "tok-\x7fAbc"])
def test_a_secret_with_a_control_character_is_refused_naming_the_variable_only(value: str) -> None:
    with pytest.raises(SecretError) as err:
        resolve("${CRM_TOKEN}", field="systems.crm.rest.auth.bearer", env={"CRM_TOKEN": value})
    assert "CRM_TOKEN" in str(err.value) and "systems.crm.rest.auth.bearer" in str(err.value)
    assert value.strip() not in str(err.value) and "Abc" not in str(err.value)


def test_a_token_that_reaches_httpx_with_a_cr_never_appears_in_the_error(home: RestTestServer) -> None:
    # the finding: httpx refuses the header and prints it whole (its repr). A token handed out by an OAuth2
    # server (registered, not resolved from the environment) can still carry the CR.
    token = "oauth-Handed-Out-Tok-88\r"
    register(token)
    cfg = RestSystemConfig.model_validate({"base_url": home.url, "retries": FAST, "auth": {"bearer": token}})
    src = RestSource(cfg, RestSourceConfig.model_validate({"request": {"path": "/pages"}}), name="s")
    with pytest.raises(TransportError) as err:
        _rows(src)
    assert "Illegal header value" in str(err.value)
    assert "oauth-Handed-Out-Tok-88" not in str(err.value)


def test_a_partner_echoing_the_key_json_escaped_is_masked(home: RestTestServer) -> None:
    key = 'echo"Key\\with-Escapes-ü'
    register(key)
    cfg = RestSystemConfig.model_validate({"base_url": home.url, "retries": FAST,
                                           "auth": {"api_key": {"name": "X-Key", "value": key}}})
    src = RestSource(cfg, RestSourceConfig.model_validate({"request": {"path": "/status/400",
                                                                       "params": {"echo": 1}}}), name="s")
    with pytest.raises(HubError) as err:
        _rows(src)
    assert "HTTP 400" in str(err.value)
    assert "Key\\\\with" not in str(err.value) and "with-Escapes" not in str(err.value)


# --- 4 and 8. JSON pages: nesting, duplicate keys, size -----------------------------------------------------

def _spec(tmp_path: Path, url: str, path: str) -> Any:
    text = textwrap.dedent(f"""\
        pipeline: sec
        warehouse: duckdb:///{tmp_path}/wh.duckdb
        systems:
          partner: {{rest: {{base_url: "{url}", retries: {{max: 1, backoff: 0.01}}}}}}
        sources:
          things:
            system: partner
            request: {{path: {path}}}
            records: $.data[*]
            primary_key: [id]
            max_bad_rows: 10
        """)
    return loads(text, tmp_path / "sec.yaml")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["objects", "arrays"])
def test_a_record_nested_1000_deep_is_quarantined_quickly(home: RestTestServer, tmp_path: Path, kind: str) -> None:
    deep = ('{"a":' * 1000 + "1" + "}" * 1000) if kind == "objects" else ("[" * 1000 + "1" + "]" * 1000)
    body = ('{"data":[{"id":1,"name":"ok"},{"id":2,"x":' + deep + '}]}').encode()
    assert len(body) < 8000
    home.add_json("/deep", body)
    outcome = materialize_source(_spec(tmp_path, home.url, "/deep"), "things", window=None, run_id="r1")
    assert outcome.load.rows_loaded == 1
    wh = DuckDBWarehouse(f"duckdb:///{tmp_path}/wh.duckdb")
    bad = wh.query("select reason from things__quarantine").to_pylist()
    assert len(bad) == 1 and "nests deeper than 64 levels" in bad[0]["reason"]


def test_duplicate_keys_in_a_record_go_to_quarantine_naming_the_key(home: RestTestServer, tmp_path: Path) -> None:
    body = b'{"data":[{"id":1,"amount":10,"amount":1000},{"id":2,"amount":5},{"id":3,"n":{"k":1,"k":2}}]}'
    home.add_json("/dups", body)
    outcome = materialize_source(_spec(tmp_path, home.url, "/dups"), "things", window=None, run_id="r1")
    assert outcome.load.rows_loaded == 1
    wh = DuckDBWarehouse(f"duckdb:///{tmp_path}/wh.duckdb")
    assert wh.query("select id, amount from things").to_pylist() == [{"id": 2, "amount": 5}]
    reasons = sorted(r["reason"] for r in wh.query("select reason from things__quarantine").to_pylist())
    assert len(reasons) == 2
    assert "repeats the key 'amount'" in reasons[1] and "n repeats the key 'k'" in reasons[0]


def test_a_colon_escape_cannot_hide_a_duplicate_key(home: RestTestServer) -> None:
    body = b'{"data":[{"id":1,"t":"a\\u003ab","amount":1,"amount":2}]}'
    home.add_json("/dups", body)
    cfg = RestSystemConfig.model_validate({"base_url": home.url, "retries": FAST})
    src = RestSource(cfg, RestSourceConfig.model_validate({"request": {"path": "/dups"}, "records": "$.data[*]"}))
    [row] = _rows(src)
    assert "repeats the key 'amount'" in row["_hub_error"]


_BIG_PAGE = """
import re, sys
from adapters.rest import RestSource, RestSourceConfig, RestSystemConfig
url, rows = sys.argv[1], 0
src = RestSource(RestSystemConfig.model_validate({"base_url": url, "max_response_bytes": 300 * 2**20}),
                 RestSourceConfig.model_validate({"request": {"path": "/big"}, "records": "$.data[*]",
                                                  "paginate": {"cursor": {"cursor_path": "$.meta.next"}}}))
for batch in src.batches():
    rows += batch.num_rows
# VmHWM is this process's own peak; ru_maxrss would start at the parent's size (Linux keeps it across exec)
print(rows, int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) // 1024)
"""


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_250_mb_page_loads_in_bounded_memory(home: RestTestServer, tmp_path: Path) -> None:
    record = ('{"id":%d,"name":"customer %d","email":"c%d@example.com","amount":123.45,"tags":["a","b"],'
              '"addr":{"city":"Paris","zip":"75001"}}')
    n = 1_850_000
    body = ('{"meta":{"next":null},"data":[' + ",".join(record % (i, i, i) for i in range(n)) + "]}").encode()
    assert 240 * 2**20 < len(body) < 256 * 2**20  # under the default response cap
    home.add_json("/big", body)
    del body
    script = tmp_path / "big.py"
    script.write_text(_BIG_PAGE)
    out = subprocess.run([sys.executable, str(script), home.url], capture_output=True, text=True, timeout=280,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr[-2000:]
    rows, peak_mb = map(int, out.stdout.split())
    assert rows == n
    assert peak_mb < 1024, f"peak RSS {peak_mb} MB for a 250 MB page"


def test_a_large_page_with_a_path_that_cannot_stream_is_refused_clearly(home: RestTestServer,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from hub.runtime import jsonsafe
    monkeypatch.setattr(jsonsafe, "STREAM_ABOVE", 1000)
    home.add_json("/big", {"data": [{"id": i, "pad": "x" * 50} for i in range(100)]})
    cfg = RestSystemConfig.model_validate({"base_url": home.url, "retries": FAST})
    streamed = RestSource(cfg, RestSourceConfig.model_validate({"request": {"path": "/big"}, "records": "$.data"}))
    assert [r["id"] for r in _rows(streamed)] == list(range(100))  # streamed, same rows
    filtered = RestSource(cfg, RestSourceConfig.model_validate({"request": {"path": "/big"},
                                                                "records": "$.data[?(@.id > 5)]"}))
    with pytest.raises(HubError, match="too large to parse whole"):
        _rows(filtered)


def test_records_to_batch_marks_only_the_bad_record() -> None:
    from hub.runtime.records import records_to_batch
    value: Any = 1
    for _ in range(65):
        value = {"a": value}
    batch = records_to_batch([{"id": 1, "x": value}, {"id": 2, "x": {"a": 1}}])
    assert batch.column("_hub_error").to_pylist()[1] is None
    assert batch.column("x").type == pa.struct([("a", pa.int64())])


def test_json_lines_with_a_repeated_key_are_marked_per_line() -> None:
    import io

    from adapters.sftp._formats import read_jsonl

    data = b'{"id":1,"amount":1,"amount":2}\n{"id":2,"amount":3}\n'
    rows = [r for b in read_jsonl(io.BytesIO(data), "utf-8", "drop.jsonl", 100) for r in b.to_pylist()]
    assert "repeats the key 'amount'" in rows[0]["_hub_error"] and rows[1]["_hub_error"] is None


@pytest.mark.slow
def test_hub_run_with_a_cr_in_the_token_names_the_variable_and_stores_nothing(
        crm: Any, warehouse_path: Path, dagster_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The finding as reported: TOK=$'tok-...\\r' printed the whole token on the CLI and into Dagster's stores."""
    from typer.testing import CliRunner

    from hub.cli.main import app
    from tests.conftest import demo_spec_text

    token = "tok-Carriage-Return-Leak-51"
    monkeypatch.setenv("CRM_TOKEN", token + "\r")
    spec = tmp_path / "demo.yaml"
    spec.write_text(demo_spec_text())
    result = CliRunner().invoke(app, ["run", str(spec), "--asset", "crm_customers", "--partition", "2024-01-02"])
    assert result.exit_code != 0
    assert "CRM_TOKEN" in result.output and "control character" in result.output
    assert token not in result.output
    leaked = [p for p in tmp_path.rglob("*") if p.is_file() and token.encode() in p.read_bytes()]
    assert leaked == []
