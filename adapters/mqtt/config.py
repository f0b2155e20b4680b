"""Typed configuration of MQTT systems and sources, as written in a pipeline spec.

A source subscribes with QoS 1 under a *stable client id* on a *persistent session* (MQTT 3.1.1
``clean_session: false``; MQTT 5 ``clean_start: false`` with a session expiry), so the broker keeps the
subscription and queues messages while the hub is away, and redelivers every message the hub received
but did not acknowledge when it connects again.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from hub.runtime.duration import seconds
from hub.runtime.secrets import ADDRESS, Address
from hub.runtime.settings import BrokerSettings


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MqttSystemConfig(BrokerSettings):  # retries, connect_timeout, tls: hub.runtime.settings
    """The ``mqtt:`` block of a system."""

    host: Address = "127.0.0.1"
    port: Annotated[int | None, ADDRESS] = Field(None, ge=1, le=65535,
                                                 description="Default 1883, or 8883 with tls.")
    version: Literal["3.1.1", "5"] = Field("5", description="MQTT protocol version.")
    username: Address | None = None
    password: str | None = Field(None, description="Use ${ENV_VAR}.")
    keepalive: int = Field(30, ge=5, le=65535, description="Seconds between pings; a dead link is noticed in "
                                                           "about 1.5 times this.")

    @property
    def effective_port(self) -> int:
        return self.port or (8883 if self.tls is not None else 1883)


class MqttSourceConfig(_Strict):
    """The MQTT-specific keys of a stream source."""

    topics: list[str] = Field(min_length=1, description="Topic filters (+ and # wildcards) subscribed with QoS 1.")
    client_id: str = Field(min_length=1, max_length=128, description=(
        "The session's client id: stable, and used by exactly one listener (a second client with the same id "
        "takes the session over). The broker keys the persistent session by it."))
    session_expiry: float = Field(7 * 86400.0, ge=0, description=(
        "MQTT 5: how long (30m, 1d ...) the broker keeps the session and queues messages while the hub is "
        "disconnected. MQTT 3.1.1 sessions last until the broker drops them."))
    receive_maximum: int = Field(100, ge=1, le=65535, description=(
        "MQTT 5: QoS 1 messages the broker sends before the hub acknowledges (the prefetch bound). MQTT 3.1.1 "
        "brokers use their own setting (mosquitto: max_inflight_messages)."))

    @field_validator("session_expiry", mode="before")
    @classmethod
    def _duration(cls, value: object) -> float:
        return seconds(value)

    @field_validator("topics")
    @classmethod
    def _filters(cls, topics: list[str]) -> list[str]:
        for t in topics:
            levels = t.split("/")
            if not t or "\0" in t:
                raise ValueError(f"{t!r} is not a topic filter")
            if any("#" in lv and lv != "#" for lv in levels) or "#" in levels[:-1]:
                raise ValueError(f"{t!r}: # must be a whole level and the last one")
            if any("+" in lv and lv != "+" for lv in levels):
                raise ValueError(f"{t!r}: + must be a whole level")
        return topics
