"""``hub serve``: webhooks into the event store (auth, limits, idempotence), runs, OpenAPI, SIGTERM.

Real servers on loopback: the application under uvicorn on a free port (in a thread, or ``hub serve`` as a
subprocess for SIGTERM), a JWKS served by a loopback HTTP server with an RSA key made here."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import duckdb
import httpx
import jwt
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric import rsa

from adapters.webhook import SeenSignatures, sign_github, sign_stripe
from hub.errors import SpecError, Unauthorized
from hub.events.absorb import absorb_source
from hub.events.store import open_store
from hub.serve import ServeOptions, build_app
from hub.spec import load

REPO = Path(__file__).resolve().parents[1]
SECRET, GH_SECRET, API_KEY, RUN_TOKEN = "whsec-test-1", "gh-secret", "key-123", "run-token-xyz"

SPEC = """\
pipeline: hooks
partitions: none
warehouse: duckdb:///wh/hub.duckdb
systems:
  bank:
    webhook: {{auth: {{type: hmac, style: stripe, secret: "${{BANK_HOOK_SECRET}}", tolerance: 300}}, max_body: 2kB}}
  gh:
    webhook: {{auth: {{type: hmac, secret: "${{GH_HOOK_SECRET}}"}}}}
  idp:
    webhook: {{auth: {{type: jwt, jwks_url: "{jwks}", audience: hub-api, issuer: "https://idp.test/"}}}}
  keyed:
    webhook: {{auth: {{type: api_key, key: "${{PARTNER_KEY}}"}}}}
sources:
  payments:
    system: bank
    path: /hooks/payments
    delivery_header: X-Delivery-Id
    primary_key: payment_id
    columns: {{payment_id: {{type: int64}}, amount: {{type: "decimal(12,2)"}}, status: status}}
  pushes: {{system: gh, path: /hooks/github, delivery_header: X-GitHub-Delivery, type_header: X-GitHub-Event}}
  tokens: {{system: idp, path: /hooks/tokens, id: "$.id"}}
  keyed: {{system: keyed, path: /hooks/keyed, id: "$.id"}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(autouse=True)
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BANK_HOOK_SECRET", SECRET)
    monkeypatch.setenv("GH_HOOK_SECRET", GH_SECRET)
    monkeypatch.setenv("PARTNER_KEY", API_KEY)
    monkeypatch.setenv("HUB_SERVE_TOKEN", RUN_TOKEN)


class Jwks:
    """An identity provider on loopback: an RSA key made here, its JWKS served over HTTP."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        body = json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}).encode()
        self.fetches = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.fetches += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def token(self, **claims: Any) -> str:
        now = int(time.time())
        base = {"iss": "https://idp.test/", "aud": "hub-api", "sub": "partner-1", "iat": now, "exp": now + 300}
        return jwt.encode({**base, **claims}, self.key, algorithm="RS256", headers={"kid": "k1"})


@pytest.fixture
def jwks() -> Iterator[Jwks]:
    idp = Jwks()
    yield idp
    idp.server.shutdown()


def _spec(tmp_path: Path, jwks_url: str = "https://idp.test/jwks.json") -> Path:
    (tmp_path / "workspace.yaml").write_text("load_from: []\n")
    spec = tmp_path / "hooks.yaml"
    spec.write_text(SPEC.format(jwks=jwks_url))
    return spec


@contextmanager
def serving(spec: Path, **options: Any) -> Iterator[httpx.Client]:
    """The application under uvicorn in a thread on a free port; an httpx client pointed at it."""
    app = build_app([load(spec)], ServeOptions.from_env(**{"absorb": False, **options}))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=20) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(20)


def _payment(pid: int, amount: str = "12.50", status: str = "paid") -> bytes:
    return json.dumps({"payment_id": pid, "amount": amount, "status": status}).encode()


def _stored(spec: Path, source: str) -> int:
    p = load(spec)
    return open_store(p.warehouse_url, p.root).status([source])[0].events


def _post_payment(client: httpx.Client, body: bytes, delivery: str, *, secret: str = SECRET,
                  timestamp: int | None = None) -> httpx.Response:
    return client.post("/hooks/payments", content=body, headers={
        "Content-Type": "application/json", "X-Delivery-Id": delivery,
        "Stripe-Signature": sign_stripe(secret, body, timestamp)})


def test_valid_delivery_is_stored_once_and_absorbed_into_the_table(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    with serving(spec) as client:
        body = _payment(1)
        first = _post_payment(client, body, "dlv-1")
        assert first.status_code == 202, first.text
        assert first.json()["status"] == "stored" and first.json()["delivery_id"] == "dlv-1"
        again = _post_payment(client, body, "dlv-1")  # the partner retries: re-signed, same delivery id
        assert again.status_code == 202 and again.json()["status"] == "duplicate"
        second = _post_payment(client, _payment(2, "3.00"), "dlv-2")
        assert second.json()["status"] == "stored"
        health = client.get("/health").json()
        assert health["webhooks"]["payments"] == {"path": "/hooks/payments", "accepted": 2, "duplicates": 1,
                                                  "refused": 0}
    assert _stored(spec, "payments") == 2
    pipeline = load(spec)
    store = open_store(pipeline.warehouse_url, pipeline.root)
    event = next(store.read("payments"))[0]
    headers = json.loads(event.headers)
    assert "stripe-signature" not in headers and headers["x-delivery-id"] == "dlv-1"  # no credential stored
    outcome = absorb_source(pipeline, "payments", run_id="test")
    assert outcome.events == 2
    con = duckdb.connect(str(tmp_path / "wh" / "hub.duckdb"), read_only=True)
    try:
        rows = con.execute("SELECT payment_id, amount, status FROM payments ORDER BY payment_id").fetchall()
    finally:
        con.close()
    assert [(r[0], str(r[1]), r[2]) for r in rows] == [(1, "12.50", "paid"), (2, "3.00", "paid")]


def test_bad_signature_and_stale_timestamp_are_refused_and_nothing_is_stored(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    with serving(spec) as client:
        wrong = _post_payment(client, _payment(1), "d1", secret="not-the-secret")
        assert wrong.status_code == 401 and "does not match" in wrong.json()["error"]
        stale = _post_payment(client, _payment(1), "d2", timestamp=int(time.time()) - 3600)
        assert stale.status_code == 401 and "tolerance" in stale.json()["error"]
        missing = client.post("/hooks/payments", content=_payment(1), headers={"X-Delivery-Id": "d3"})
        assert missing.status_code == 401 and "Stripe-Signature" in missing.json()["error"]
        body = _payment(1)  # signed for another body
        tampered = client.post("/hooks/payments", content=_payment(1, "9999.00"), headers={
            "X-Delivery-Id": "d4", "Stripe-Signature": sign_stripe(SECRET, body)})
        assert tampered.status_code == 401
        assert client.get("/health").json()["webhooks"]["payments"]["refused"] == 4
    assert _stored(spec, "payments") == 0


def test_github_signature_replayed_under_another_delivery_id_is_refused(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    with serving(spec) as client:
        body = b'{"ref": "refs/heads/main"}'
        headers = {"X-Hub-Signature-256": sign_github(GH_SECRET, body), "X-GitHub-Event": "push"}
        ok = client.post("/hooks/github", content=body, headers={**headers, "X-GitHub-Delivery": "g-1"})
        assert ok.status_code == 202 and ok.json()["status"] == "stored"
        retry = client.post("/hooks/github", content=body, headers={**headers, "X-GitHub-Delivery": "g-1"})
        assert retry.status_code == 202 and retry.json()["status"] == "duplicate"
        replay = client.post("/hooks/github", content=body, headers={**headers, "X-GitHub-Delivery": "g-2"})
        assert replay.status_code == 401 and "replayed" in replay.json()["error"]
        bad = client.post("/hooks/github", content=body, headers={
            "X-Hub-Signature-256": sign_github("wrong", body), "X-GitHub-Delivery": "g-3"})
        assert bad.status_code == 401
    pipeline = load(spec)
    events = [e for chunk in open_store(pipeline.warehouse_url, pipeline.root).read("pushes") for e in chunk]
    assert [(e.message_id, e.type) for e in events] == [("g-1", "push")]


def test_oversize_body_gets_413_and_nothing_is_stored(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    with serving(spec) as client:
        body = json.dumps({"payment_id": 1, "note": "x" * 4000}).encode()  # max_body: 2kB
        response = _post_payment(client, body, "big")
        assert response.status_code == 413

        def chunks() -> Iterator[bytes]:  # no Content-Length: refused while streaming
            for _ in range(10):
                yield b"x" * 500

        streamed = client.post("/hooks/payments", content=chunks(), headers={"X-Delivery-Id": "big2"})
        assert streamed.status_code == 413
    assert _stored(spec, "payments") == 0


def test_jwt_from_a_loopback_jwks_accepted_wrong_audience_refused(tmp_path: Path, jwks: Jwks) -> None:
    spec = _spec(tmp_path, jwks.url)
    with serving(spec) as client:
        ok = client.post("/hooks/tokens", json={"id": "t-1", "v": 1},
                         headers={"Authorization": f"Bearer {jwks.token()}"})
        assert ok.status_code == 202, ok.text
        assert ok.json()["status"] == "stored" and ok.json()["delivery_id"] == "t-1"
        aud = client.post("/hooks/tokens", json={"id": "t-2"},
                          headers={"Authorization": f"Bearer {jwks.token(aud='someone-else')}"})
        assert aud.status_code == 401 and "audience" in aud.json()["error"].lower()
        iss = client.post("/hooks/tokens", json={"id": "t-3"},
                          headers={"Authorization": f"Bearer {jwks.token(iss='https://evil.test/')}"})
        assert iss.status_code == 401
        expired = client.post("/hooks/tokens", json={"id": "t-4"}, headers={
            "Authorization": f"Bearer {jwks.token(exp=int(time.time()) - 3600)}"})
        assert expired.status_code == 401
        other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        forged = jwt.encode({"iss": "https://idp.test/", "aud": "hub-api", "exp": int(time.time()) + 60},
                            other_key, algorithm="RS256", headers={"kid": "k1"})
        assert client.post("/hooks/tokens", json={"id": "t-5"},
                           headers={"Authorization": f"Bearer {forged}"}).status_code == 401
        hs = jwt.encode({"iss": "https://idp.test/", "aud": "hub-api", "exp": int(time.time()) + 60}, "k" * 32,
                        algorithm="HS256")
        assert client.post("/hooks/tokens", json={"id": "t-6"},
                           headers={"Authorization": f"Bearer {hs}"}).status_code == 401
        assert client.post("/hooks/tokens", json={"id": "t-7"}).status_code == 401
    assert jwks.fetches == 1  # the key set is cached
    assert _stored(spec, "tokens") == 1


def test_unreachable_jwks_is_503_and_api_keys(tmp_path: Path) -> None:
    spec = _spec(tmp_path, f"http://127.0.0.1:{free_port()}/jwks.json")  # nothing listens there
    with serving(spec) as client:
        token = jwt.encode({"x": 1}, rsa.generate_private_key(public_exponent=65537, key_size=2048),
                           algorithm="RS256", headers={"kid": "k1"})
        down = client.post("/hooks/tokens", json={"id": "t"}, headers={"Authorization": f"Bearer {token}"})
        assert down.status_code == 503 and down.headers["retry-after"]
        assert client.post("/hooks/keyed", json={"id": "a"}, headers={"X-API-Key": "nope"}).status_code == 401
        good = client.post("/hooks/keyed", json={"id": "a"}, headers={"X-API-Key": API_KEY})
        assert good.status_code == 202 and good.json()["status"] == "stored"
        broken = client.post("/hooks/keyed", content=b"{not json", headers={"X-API-Key": API_KEY})
        assert broken.status_code == 202 and broken.json()["status"] == "dead"
    pipeline = load(spec)
    store = open_store(pipeline.warehouse_url, pipeline.root)
    assert store.status(["keyed"])[0].events == 1
    assert [d.reason.split(":")[0] for d in store.dead_letters("keyed")] == ["payload is not valid json"]


def test_runs_need_a_token_and_start_hub_run(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    with serving(spec) as client:
        assert client.post("/runs", json={"pipeline": "hooks"}).status_code == 401
        assert client.post("/runs", json={"pipeline": "hooks"},
                           headers={"Authorization": "Bearer wrong"}).status_code == 401
        auth = {"Authorization": f"Bearer {RUN_TOKEN}"}
        assert client.post("/runs", json={"pipeline": "nope"}, headers=auth).status_code == 404
        assert client.post("/runs", json={"pipeline": "hooks", "assets": ["zzz"]}, headers=auth).status_code == 400
        assert client.post("/runs", json={"pipeline": "hooks", "partition": "2024-01-01"},
                           headers=auth).status_code == 400  # the pipeline has no partitions
        started = client.post("/runs", json={"pipeline": "hooks", "assets": ["payments"]}, headers=auth)
        assert started.status_code == 202, started.text
        run_id = started.json()["run_id"]
        assert client.get(f"/runs/{run_id}").status_code == 401
        deadline = time.monotonic() + 240
        while (state := client.get(f"/runs/{run_id}", headers=auth).json())["status"] == "running":
            assert time.monotonic() < deadline, state
            time.sleep(1)
        assert state["status"] == "succeeded", state["log_tail"]
        assert state["assets"] == ["payments"] and state["exit_code"] == 0


def test_runs_are_off_without_a_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HUB_SERVE_TOKEN")
    with serving(_spec(tmp_path)) as client:
        off = client.post("/runs", json={"pipeline": "hooks"}, headers={"Authorization": "Bearer x"})
        assert off.status_code == 404 and "HUB_SERVE_TOKEN" in off.json()["error"]


def test_openapi_lists_the_webhook_paths(tmp_path: Path) -> None:
    with serving(_spec(tmp_path)) as client:
        doc = client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    for path in ("/hooks/payments", "/hooks/github", "/hooks/tokens", "/hooks/keyed", "/runs", "/health"):
        assert path in doc["paths"], path
    payments = doc["paths"]["/hooks/payments"]["post"]
    assert set(payments["responses"]) == {"202", "401", "413", "503"}
    scheme = doc["components"]["securitySchemes"][next(iter(payments["security"][0]))]
    assert scheme == {"type": "apiKey", "in": "header", "name": "Stripe-Signature",
                      "description": "HMAC-SHA256 signature of the body (stripe style)."}
    tokens = doc["components"]["securitySchemes"]["idp_jwt"]
    assert tokens["scheme"] == "bearer" and tokens["bearerFormat"] == "JWT"


def test_spec_errors_and_listen_skips_pushed_sources(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    text = spec.read_text().replace("path: /hooks/keyed", "path: /hooks/github").replace(
        "max_body: 2kB", "max_body: lots")
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("pipeline: hooks", "pipeline: bad"))
    with pytest.raises(SpecError) as caught:
        load(bad)
    message = str(caught.value)
    assert "systems.bank.webhook.max_body" in message and "sources.keyed.path: sources.pushes is served at the " \
                                                          "same path" in message
    pipeline = load(spec)
    source = pipeline.sources["payments"]
    assert source.protocol.pushed and source.stream is not None
    with pytest.raises(Exception, match="pushed to `hub serve`"):
        source.protocol.stream(pipeline, source)


def test_seen_signatures_expire_and_stay_bounded() -> None:
    seen = SeenSignatures(ttl=10, capacity=3)
    seen.claim("s1", "d1", now=0)
    seen.claim("s1", "d1", now=1)  # the partner's retry
    with pytest.raises(Unauthorized):
        seen.claim("s1", "d2", now=2)
    seen.claim("s1", "d2", now=20)  # forgotten after ttl
    for i in range(10):
        seen.claim(f"x{i}", "d", now=21)
    assert len(seen._seen) <= 3


@pytest.mark.slow
def test_hub_serve_absorbs_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "hub.cli.main", "serve", str(spec), "--port", str(port)],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert proc.poll() is None and time.monotonic() < deadline, "hub serve did not come up"
                time.sleep(0.2)
            assert client.get("/health").json()["absorbing"] is True
            for i in range(1, 6):
                assert _post_payment(client, _payment(i), f"d{i}").status_code == 202
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode in (0, -signal.SIGTERM), out  # uvicorn re-raises the signal after its shutdown
    assert "Application shutdown complete" in out
    assert "POST /hooks/payments -> hooks.payments" in out
    con = duckdb.connect(str(tmp_path / "wh" / "hub.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT count(*), sum(payment_id) FROM payments").fetchone() == (5, 15)
    finally:
        con.close()


def test_dagster_sensor_of_a_webhook_source_requests_one_run_without_draining(tmp_path: Path) -> None:
    import dagster as dg

    from hub.dagster.definitions import pipeline_definitions

    spec = _spec(tmp_path)
    with serving(spec) as client:
        for i in range(1, 4):
            assert _post_payment(client, _payment(i), f"d{i}").status_code == 202
    defs = pipeline_definitions(load(spec))
    sensor = defs.get_sensor_def("payments_sensor")
    with dg.instance_for_test() as instance:
        result = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=None))
        assert [r.run_key for r in result.run_requests] == ["payments:1-3"] and result.cursor == "3"
        run = defs.get_job_def("payments_job").execute_in_process(instance=instance,
                                                                  tags=result.run_requests[0].tags)
        assert run.success
        assert run.asset_materializations_for_node("payments")[0].metadata["hub/events"].value == 3
