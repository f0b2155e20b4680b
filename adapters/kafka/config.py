"""Typed configuration of Kafka systems and sources, as written in a pipeline spec.

A source is a consumer group reading topics with automatic offset commits off: the hub commits an offset
only after every message before it was acknowledged (that is, stored), so a crash never skips a message.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from hub.runtime.duration import seconds
from hub.runtime.secrets import Address
from hub.runtime.settings import BrokerSettings


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SaslConfig(_Strict):
    mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    username: Address
    password: str = Field(description="Use ${ENV_VAR}.")


class KafkaSystemConfig(BrokerSettings):  # retries, connect_timeout, tls: hub.runtime.settings
    """The ``kafka:`` block of a system."""

    bootstrap_servers: list[Address] = Field(min_length=1, description="host:port of one or more brokers.")
    sasl: SaslConfig | None = Field(None, description="SASL authentication (over TLS when tls is given).")
    client_id: str = Field("hub", description="Shown in the brokers' logs and quotas.")

    @property
    def security_protocol(self) -> str:
        if self.sasl is not None:
            return "SASL_SSL" if self.tls is not None else "SASL_PLAINTEXT"
        return "SSL" if self.tls is not None else "PLAINTEXT"


class KafkaSourceConfig(_Strict):
    """The Kafka-specific keys of a stream source."""

    topics: list[str] = Field(min_length=1, description="Topics the consumer group reads.")
    group_id: str = Field(min_length=1, description="The consumer group: its committed offsets are the resume point.")
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        "earliest", description="Where a group without committed offsets starts.")
    max_poll_records: int = Field(500, ge=1, description="Records one fetch returns at most (with the batch size).")
    session_timeout: float = Field(30.0, gt=0, description="Seconds (or 30s) without heartbeats before the group "
                                                            "hands this consumer's partitions to another.")
    isolation_level: Literal["read_committed", "read_uncommitted"] = Field(
        "read_committed", description="read_committed skips records of aborted transactions.")

    @field_validator("session_timeout", mode="before")
    @classmethod
    def _duration(cls, value: object) -> float:
        return seconds(value)
