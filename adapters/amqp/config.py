"""Configuration of AMQP 0-9-1 systems (RabbitMQ) and their stream sources."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hub.errors import AdapterError
from hub.runtime.secrets import Address
from hub.runtime.settings import SystemSettings


class Unroutable(AdapterError):
    """A mandatory message no queue receives: the broker returned it (:func:`adapters.amqp.publish`)."""


class AmqpSystemConfig(SystemSettings):
    """``systems.<name>.amqp``: the broker. ``retries`` paces reconnection (backoff, max_backoff); a listener
    keeps reconnecting for as long as it runs."""

    url: Address = Field(description="amqp://USER:${PASSWORD}@HOST:5672/VHOST, or amqps:// for TLS.")
    verify: bool | str = Field(True, description="TLS verification: true, or a CA bundle path. Never off silently.")
    cert: Address | None = Field(None, description="TLS client certificate (PEM), when the broker asks for one.")
    key: str | None = Field(None, description="The client certificate's private key (PEM).")
    prefetch: int = Field(500, ge=1, le=65_535, description="Unacknowledged messages the broker sends at most "
                                                           "(backpressure: nothing more arrives until the hub "
                                                           "has stored and acknowledged).")
    heartbeat: int = Field(30, ge=0, le=600, description="Heartbeat interval in seconds (0: off).")
    connect_timeout: float = Field(10.0, gt=0, description="Seconds to open a connection.")

    @model_validator(mode="after")
    def _scheme(self) -> AmqpSystemConfig:
        if not self.url.startswith(("amqp://", "amqps://", "${")):
            raise ValueError(f"url: expected amqp:// or amqps://, got {self.url.split('://')[0]}://...")
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key go together (a client certificate and its key)")
        return self


class AmqpSourceConfig(BaseModel):
    """The broker keys of an AMQP stream source: a queue, or an exchange and binding key."""

    model_config = ConfigDict(extra="forbid")

    queue: str | None = Field(None, description="The queue to consume (default with exchange: hub.<source>).")
    exchange: str | None = Field(None, description="Bind the queue to this exchange.")
    binding_key: str = Field("#", description="The binding (routing) key of the queue on the exchange.")
    exchange_type: Literal["topic", "direct", "fanout", "headers"] = "topic"
    declare: bool = Field(False, description="Declare the queue (and the exchange and binding) when missing; "
                                             "false: they must exist.")
    queue_type: Literal["quorum", "classic"] = Field("quorum", description="When declaring: quorum queues "
                                                                           "count deliveries (x-delivery-count).")
    delivery_limit: int | None = Field(None, ge=1, description="When declaring a quorum queue: the broker "
                                                               "drops (or dead-letters) a message delivered "
                                                               "more often (x-delivery-limit).")
    key_header: str | None = Field(None, description="The header holding the message's key (default: the "
                                                     "routing key).")

    @model_validator(mode="after")
    def _target(self) -> AmqpSourceConfig:
        if self.queue is None and self.exchange is None:
            raise ValueError("expected queue, or exchange (and binding_key)")
        if self.delivery_limit is not None and self.queue_type != "quorum":
            raise ValueError("delivery_limit is for quorum queues")
        return self


class AmqpPublishTarget(BaseModel):
    """Where the hub publishes its own events on an AMQP system (a spec's ``publish:`` block)."""

    model_config = ConfigDict(extra="forbid")

    exchange: str = Field("", description="The exchange (default: the default exchange, routing to a queue by "
                                          "name).")
    routing_key: str | None = Field(None, description="The routing key (default: hub.<event type>, e.g. "
                                                      "hub.asset.materialized, for a topic exchange).")
