"""The settings every system has, whatever its protocol, declared once.

Each adapter's system model (``RestSystemConfig``, ``SoapSystemConfig`` ...) derives from
:class:`SystemSettings`, so retries, the shared rate limit and the circuit breaker read and validate the same
way for every protocol, a new protocol gets them by deriving too, and the runtime that applies them
(:mod:`hub.runtime.retry`, :mod:`~hub.runtime.ratelimit`, :mod:`~hub.runtime.breaker`) has one shape to read.
Timeouts stay per protocol (HTTP has connect/read/pool, SQL a statement timeout); the agent policy of a system
is the spec's ``systems.<name>.agent`` (:class:`hub.spec.models.SystemAgentConfig`).
"""

from __future__ import annotations

import ssl
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from hub.errors import TransportError
from hub.runtime.breaker import CircuitBreakerConfig
from hub.runtime.ratelimit import RateLimitConfig
from hub.runtime.retry import RetryConfig
from hub.runtime.secrets import Address


class SystemSettings(BaseModel):
    """Retries, rate limit and circuit breaker of one system (the protocol block's common keys)."""

    model_config = ConfigDict(extra="forbid")

    retries: RetryConfig = Field(default_factory=RetryConfig)
    rate_limit: RateLimitConfig | None = Field(None, description="Shared by every process "
                                               "(hub.runtime.ratelimit).")
    circuit_breaker: CircuitBreakerConfig | None = Field(None, description="Fail fast after consecutive "
                                                         "failures (hub.runtime.breaker).")


class TlsSettings(BaseModel):
    """TLS towards a broker (``tls:`` of a NATS, MQTT or Kafka system): the server is verified by default
    (against *ca_file*, else the system's trust store), and a client certificate is sent when given."""

    model_config = ConfigDict(extra="forbid")

    ca_file: str | None = Field(None, description="PEM bundle of the CAs that sign the broker's certificate.")
    cert: Address | None = Field(None, description="Client certificate (PEM), for brokers that authenticate by it.")
    key: str | None = Field(None, description="The client certificate's private key (PEM).")
    verify: bool = Field(True, description="Verify the broker's certificate and host name. Turning it off is "
                                           "for test brokers only: anyone on the path can then read the stream.")

    def context(self, *, field: str = "tls") -> ssl.SSLContext:
        """The client-side SSL context these settings describe; a missing file is an error naming *field*."""
        for name in ("ca_file", "cert", "key"):
            value = getattr(self, name)
            if value is not None and not Path(value).is_file():
                raise TransportError(f"{field}.{name}: no such file {value}")
        if self.key and not self.cert:
            raise TransportError(f"{field}.key: a client key needs its certificate (cert)")
        ctx = ssl.create_default_context(cafile=self.ca_file)
        if not self.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.cert:
            ctx.load_cert_chain(self.cert, self.key)
        return ctx


class BrokerSettings(SystemSettings):
    """What every message-broker system shares besides retries and limits: how long to wait for a
    connection, how many times to reconnect before a fetch gives up (the ``retries`` block: ``max`` attempts
    with exponential backoff from ``backoff`` to ``max_backoff``), and TLS. A consumer reconnects by itself
    within that budget; once spent, :class:`hub.errors.TransportError` reaches the caller."""

    connect_timeout: float = Field(10.0, gt=0, description="Seconds to wait for the broker to accept a connection.")
    tls: TlsSettings | None = Field(None, description="TLS towards the broker (off when absent, unless the "
                                                      "address says tls:// or ssl://).")
