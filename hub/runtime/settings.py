"""The settings every system has, whatever its protocol, declared once.

Each adapter's system model (``RestSystemConfig``, ``SoapSystemConfig`` ...) derives from
:class:`SystemSettings`, so retries, the shared rate limit and the circuit breaker read and validate the same
way for every protocol, a new protocol gets them by deriving too, and the runtime that applies them
(:mod:`hub.runtime.retry`, :mod:`~hub.runtime.ratelimit`, :mod:`~hub.runtime.breaker`) has one shape to read.
Timeouts stay per protocol (HTTP has connect/read/pool, SQL a statement timeout); the agent policy of a system
is the spec's ``systems.<name>.agent`` (:class:`hub.spec.models.SystemAgentConfig`).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from hub.runtime.breaker import CircuitBreakerConfig
from hub.runtime.ratelimit import RateLimitConfig
from hub.runtime.retry import RetryConfig


class SystemSettings(BaseModel):
    """Retries, rate limit and circuit breaker of one system (the protocol block's common keys)."""

    model_config = ConfigDict(extra="forbid")

    retries: RetryConfig = Field(default_factory=RetryConfig)
    rate_limit: RateLimitConfig | None = Field(None, description="Shared by every process "
                                               "(hub.runtime.ratelimit).")
    circuit_breaker: CircuitBreakerConfig | None = Field(None, description="Fail fast after consecutive "
                                                         "failures (hub.runtime.breaker).")
