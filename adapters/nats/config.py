"""Typed configuration of NATS JetStream systems and sources, as written in a pipeline spec.

A source reads a JetStream stream through an explicit durable *pull* consumer whose configuration the
spec owns: ``ack_wait``, ``backoff``, ``deliver_policy``, the filter subject and ``max_ack_pending`` (the
prefetch bound) are applied to the server every time the consumer opens, so a consumer edited by hand, or
created with the server's defaults (which redeliver forever), is brought back to what the spec says.
``max_deliver`` is a key every stream source has (the hub passes it in).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hub.runtime.duration import seconds
from hub.runtime.secrets import Address
from hub.runtime.settings import BrokerSettings

_NAME_CHARS = set(" .*>\t\r\n/\\")

#: Deliveries of one message before it is given up (JetStream's own default redelivers forever).
DEFAULT_MAX_DELIVER = 5


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NatsSystemConfig(BrokerSettings):  # retries, connect_timeout, tls: hub.runtime.settings
    """The ``nats:`` block of a system."""

    servers: list[Address] = Field(default_factory=lambda: ["nats://127.0.0.1:4222"], min_length=1, description=(
        "Server URLs (nats://host:4222, tls://host:4222); the client fails over between them."))
    user: str | None = None
    password: str | None = Field(None, description="Use ${ENV_VAR}.")
    token: str | None = Field(None, description="An authentication token; use ${ENV_VAR}.")
    creds: str | None = Field(None, description="A .creds file (JWT + NKey seed) for decentralized auth.")
    nkey_seed: str | None = Field(None, description="An NKey seed file.")

    @model_validator(mode="after")
    def _one_auth(self) -> NatsSystemConfig:
        given = [k for k in ("token", "creds", "nkey_seed") if getattr(self, k)] + (["user"] if self.user else [])
        if len(given) > 1:
            raise ValueError(f"give one way to authenticate, not {' and '.join(given)}")
        if self.password and not self.user:
            raise ValueError("password needs user")
        return self


class NatsSourceConfig(_Strict):
    """The NATS-specific keys of a stream source."""

    stream: str = Field(description="The JetStream stream to read (it must exist).")
    consumer: str = Field(description="The durable pull consumer's name (created or updated from the spec).")
    subject: str | None = Field(None, description="Filter subject (wildcards allowed); default: the whole stream.")
    ack_wait: float = Field(30.0, gt=0, description="Seconds (or 30s, 5m) the server waits for an ack before "
                                                    "redelivering. Longer than a batch takes to commit.")
    backoff: list[float] | None = Field(None, description="Redelivery delays, one per attempt; the server then "
                                                          "takes the first as ack_wait. max_deliver > its length.")
    deliver_policy: Literal["all", "new", "last", "last_per_subject"] = Field(
        "all", description="Where a new consumer starts (fixed once it exists).")
    max_ack_pending: int = Field(1000, ge=1, description="Messages delivered and not yet acked at most: the "
                                                          "prefetch bound, the back-pressure of the stream.")

    @field_validator("ack_wait", mode="before")
    @classmethod
    def _duration(cls, value: object) -> float:
        return seconds(value)

    @field_validator("backoff", mode="before")
    @classmethod
    def _durations(cls, value: object) -> object:
        if isinstance(value, list):
            return [seconds(v) for v in value]
        return value

    @field_validator("stream", "consumer")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value or _NAME_CHARS & set(value):
            raise ValueError(f"{value!r} is not a JetStream name (no spaces, dots, *, >, slashes)")
        return value


class NatsPublishTarget(BaseModel):
    """Where the hub publishes its own events on a NATS system (a spec's ``publish:`` block)."""

    model_config = ConfigDict(extra="forbid")

    subject: str = Field("hub.events", description="Subject prefix: an event goes to <subject>.<event type> "
                                                   "(hub.events.asset.materialized).")
    jetstream: bool = Field(False, description="Publish through JetStream (a stream must capture the subjects; "
                                               "each publish waits for its acknowledgement).")
