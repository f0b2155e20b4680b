"""TLS towards brokers, against real servers on loopback: a private nats-server (JetStream) and a private
mosquitto, each with a TLS listener whose certificate a throw-away CA signed. The hub's consumers verify the
broker (the CA given by ``tls.ca_file``), refuse a server their trust store does not know and a certificate
issued for another host, and send a client certificate to a broker that demands one.

RabbitMQ's TLS listener is configured in the node's own config and needs a node restart, so no private
RabbitMQ runs here; the AMQP client takes the same ``TlsSettings.context`` (``adapters/amqp/client.py``)."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from adapters.mqtt import MqttConsumer, MqttSourceConfig, MqttSystemConfig
from adapters.mqtt.publisher import publish_one
from adapters.nats import NatsConsumer, NatsSourceConfig, NatsSystemConfig
from hub.errors import HubError
from tests.broker_proxy import port_open


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    other_cert: Path  # signed by the same CA, for another host name
    other_key: Path
    client_cert: Path
    client_key: Path
    stranger_ca: Path  # a CA nobody used


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write(path: Path, key: ec.EllipticCurvePrivateKey | None, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        path.with_suffix(".key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[str, ec.EllipticCurvePrivateKey] | None,
          *, ca: bool = False, hosts: list[str] | None = None, client: bool = False) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    issuer_name, issuer_key = issuer if issuer else (subject, key)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if hosts:
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if not ca:
        usage = x509.ExtendedKeyUsageOID.CLIENT_AUTH if client else x509.ExtendedKeyUsageOID.SERVER_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca_key, stranger_key = _key(), _key()
    _write(folder / "ca.pem", None, _cert("hub test CA", ca_key, None, ca=True))
    _write(folder / "stranger.pem", None, _cert("another CA", stranger_key, None, ca=True))
    for name, hosts, client in (("server", ["127.0.0.1", "localhost"], False), ("other", ["broker.example"], False),
                                ("client", None, True)):
        key = _key()
        _write(folder / f"{name}.pem", key, _cert(f"hub test {name}", key, ("hub test CA", ca_key), hosts=hosts,
                                                  client=client))
    return Pki(folder / "ca.pem", folder / "server.pem", folder / "server.key", folder / "other.pem",
               folder / "other.key", folder / "client.pem", folder / "client.key", folder / "stranger.pem")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _binary(name: str) -> str:
    found = shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None)
    if found is None:
        pytest.skip(f"no {name} binary to run a private TLS server")
    return found


def _started(proc: subprocess.Popen[bytes], port: int, what: str) -> None:
    deadline = time.monotonic() + 10
    while not port_open(port):
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            pytest.fail(f"the private {what} did not start: {out[-2000:]}")
        time.sleep(0.05)


@pytest.fixture
def tls_nats(pki: Pki, tmp_path: Path) -> Iterator[int]:
    """A private JetStream server that speaks TLS only (certificate for 127.0.0.1 and localhost)."""
    port = _free_port()
    proc = subprocess.Popen([_binary("nats-server"), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd",
                             str(tmp_path / "js"), "--tls", "--tlscert", str(pki.server_cert), "--tlskey",
                             str(pki.server_key)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    _started(proc, port, "nats-server")
    yield port
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def tls_mosquitto(pki: Pki, tmp_path: Path) -> Iterator[tuple[int, int, int]]:
    """A private mosquitto with three TLS listeners: (server-auth only, client certificate required, a
    certificate issued for another host name)."""
    plain, mutual, wrong = _free_port(), _free_port(), _free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"""user root
persistence false
allow_anonymous true
per_listener_settings false
listener {plain} 127.0.0.1
cafile {pki.ca}
certfile {pki.server_cert}
keyfile {pki.server_key}
listener {mutual} 127.0.0.1
cafile {pki.ca}
certfile {pki.server_cert}
keyfile {pki.server_key}
require_certificate true
listener {wrong} 127.0.0.1
cafile {pki.ca}
certfile {pki.other_cert}
keyfile {pki.other_key}
""")
    proc = subprocess.Popen([_binary("mosquitto"), "-c", str(conf)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    _started(proc, plain, "mosquitto")
    _started(proc, mutual, "mosquitto")
    _started(proc, wrong, "mosquitto")
    yield plain, mutual, wrong
    proc.terminate()
    proc.wait(10)


def _nats_system(port: int, tls: dict[str, Any] | None, scheme: str = "tls") -> NatsSystemConfig:
    return NatsSystemConfig(servers=[f"{scheme}://127.0.0.1:{port}"], tls=tls, connect_timeout=3,
                            retries={"max": 1, "backoff": 0.1, "max_backoff": 0.2})


def _nats_roundtrip(system: NatsSystemConfig, port: int, ca: Path) -> list[bytes]:
    import ssl

    import nats

    async def main() -> list[bytes]:
        ctx = ssl.create_default_context(cafile=str(ca))
        nc = await nats.connect(f"tls://127.0.0.1:{port}", tls=ctx)
        js = nc.jetstream()
        stream = "tls" + uuid.uuid4().hex[:8]
        await js.add_stream(name=stream, subjects=[f"{stream}.>"])
        for i in range(3):
            await js.publish(f"{stream}.x", f"m{i}".encode())
        await nc.close()
        got: list[bytes] = []
        async with NatsConsumer(system, NatsSourceConfig(stream=stream, consumer="c"), name="secure") as c:
            deadline = time.monotonic() + 20
            while len(got) < 3 and time.monotonic() < deadline:
                for m in await c.fetch(3, 0.5):
                    await m.ack()
                    got.append(m.payload)
        return got

    return asyncio.run(asyncio.wait_for(main(), 60))


def test_nats_over_tls_verifies_the_server_against_the_given_ca(tls_nats: int, pki: Pki) -> None:
    system = _nats_system(tls_nats, {"ca_file": str(pki.ca)})
    assert sorted(_nats_roundtrip(system, tls_nats, pki.ca)) == [b"m0", b"m1", b"m2"]


@pytest.mark.parametrize("tls", [{"ca_file": "STRANGER"}, None], ids=["another-ca", "system-trust-store"])
def test_nats_refuses_a_server_its_trust_store_does_not_know(tls_nats: int, pki: Pki, tls: dict | None) -> None:
    if tls is not None:
        tls = {"ca_file": str(pki.stranger_ca)}
    system = _nats_system(tls_nats, tls)

    async def main() -> None:
        async with NatsConsumer(system, NatsSourceConfig(stream="nothing", consumer="c"), name="secure") as c:
            await c.fetch(1, 0.5)

    with pytest.raises(HubError) as refused:
        asyncio.run(asyncio.wait_for(main(), 60))
    assert "certificate verify failed" in str(refused.value)


def test_mqtt_over_tls_consumes_and_publishes(tls_mosquitto: tuple[int, int, int], pki: Pki) -> None:
    plain, _, _ = tls_mosquitto
    system = MqttSystemConfig(host="127.0.0.1", port=plain, tls={"ca_file": str(pki.ca)}, connect_timeout=3,
                              retries={"max": 1, "backoff": 0.1, "max_backoff": 0.2})
    topic = f"hub/tls/{uuid.uuid4().hex[:8]}"
    source = MqttSourceConfig(topics=[topic], client_id=f"hub-tls-{uuid.uuid4().hex[:8]}")

    async def main() -> list[bytes]:
        async with MqttConsumer(system, source, name="secure") as c:
            await c.fetch(1, 0.2)  # subscribed
            for i in range(3):
                await asyncio.to_thread(publish_one, system, topic, f"m{i}".encode())
            got: list[bytes] = []
            deadline = time.monotonic() + 20
            while len(got) < 3 and time.monotonic() < deadline:
                for m in await c.fetch(3, 0.5):
                    await m.ack()
                    got.append(m.payload)
            return got

    assert sorted(asyncio.run(asyncio.wait_for(main(), 60))) == [b"m0", b"m1", b"m2"]


def test_mqtt_refuses_an_unknown_ca_or_host_and_sends_a_client_certificate_when_required(
        tls_mosquitto: tuple[int, int, int], pki: Pki) -> None:
    plain, mutual, wrong = tls_mosquitto

    def system(port: int, **tls: Any) -> MqttSystemConfig:
        return MqttSystemConfig(host="127.0.0.1", port=port, tls=tls, connect_timeout=3,
                                retries={"max": 1, "backoff": 0.1, "max_backoff": 0.2})

    with pytest.raises(HubError, match=r"(?i)certificate verify failed"):
        publish_one(system(plain, ca_file=str(pki.stranger_ca)), "hub/tls/x", b"x")
    with pytest.raises(HubError, match=r"(?i)hostname mismatch|doesn't match|not valid for"):
        publish_one(system(wrong, ca_file=str(pki.ca)), "hub/tls/x", b"x")  # the CA is right, the host is not
    with pytest.raises(HubError):  # the broker demands a client certificate: the handshake fails without one
        publish_one(system(mutual, ca_file=str(pki.ca)), "hub/tls/x", b"x")
    answer = publish_one(system(mutual, ca_file=str(pki.ca), cert=str(pki.client_cert), key=str(pki.client_key)),
                         "hub/tls/x", b"x")
    assert answer  # a PUBACK came back over the mutually authenticated connection


@pytest.fixture
def tls_rabbitmq(pki: Pki) -> Iterator[int]:
    """TLS in front of the machine's RabbitMQ: a TLS-terminating relay on a free port (the server side of the
    handshake is Python's ssl with the test certificate; the AMQP conversation is with the real broker)."""
    import ssl
    import threading

    if not port_open(5672):
        pytest.skip("no RabbitMQ on 127.0.0.1:5672")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(pki.server_cert, pki.server_key)
    port = _free_port()
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", 5672)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def run() -> None:
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(asyncio.start_server(relay, "127.0.0.1", port, ssl=ctx))
        ready.set()
        loop.run_forever()
        server.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10), "the TLS relay did not start"
    yield port
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def test_amqps_verifies_the_broker_and_consumes(tls_rabbitmq: int, pki: Pki) -> None:
    import aio_pika

    from adapters.amqp import AmqpConsumer, AmqpSourceConfig, AmqpSystemConfig, publish

    queue = f"hub_test_{uuid.uuid4().hex[:10]}"

    def system(verify: bool | str) -> AmqpSystemConfig:
        return AmqpSystemConfig(url=f"amqps://guest:guest@127.0.0.1:{tls_rabbitmq}/", verify=verify,
                                connect_timeout=5, retries={"max": 1, "backoff": 0.1, "max_backoff": 0.2})

    async def main(sys: AmqpSystemConfig) -> list[bytes]:
        got: list[bytes] = []
        async with AmqpConsumer(sys, AmqpSourceConfig(queue=queue, declare=True), name="secure") as c:
            await publish("amqp://guest:guest@127.0.0.1:5672/", queue, [b"m0", b"m1", b"m2"])
            deadline = time.monotonic() + 20
            while len(got) < 3 and time.monotonic() < deadline:
                for m in await c.fetch(3, 0.5):
                    await m.ack()
                    got.append(m.payload)
        return got

    async def delete() -> None:
        conn = await aio_pika.connect("amqp://guest:guest@127.0.0.1:5672/")
        async with conn:
            await (await conn.channel()).queue_delete(queue)

    try:
        with pytest.raises(HubError) as refused:  # the machine's trust store does not know the test CA
            asyncio.run(asyncio.wait_for(main(system(True)), 60))
        assert "certificate verify failed" in str(refused.value).lower() or \
            "certificate verify failed" in repr(refused.value.__cause__).lower()
        assert sorted(asyncio.run(asyncio.wait_for(main(system(str(pki.ca))), 60))) == [b"m0", b"m1", b"m2"]
    finally:
        asyncio.run(delete())
