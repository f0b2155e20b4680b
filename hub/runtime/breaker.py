"""Circuit breaker per system, shared by every process and run like the rate limiter.

``circuit_breaker: {failures: 5, cooldown: 30s}``: after ``failures`` consecutive failed calls (transport
errors, or 5xx answers, once the retries are used up) the circuit **opens** and every call to the system
fails at once with :class:`CircuitOpenError`, naming the system and when it half-opens. After the
cool-down it is **half-open**: exactly one caller (in any process) makes a trial call; success closes the
circuit, failure opens it for another cool-down. A trial whose process died is given up after another
cool-down.

State lives in Redis (``circuit_breaker.redis`` or ``$HUB_REDIS_URL``, updated with WATCH/MULTI) or in the
project's SQLite file (``.hub/limits.sqlite``, ``BEGIN IMMEDIATE``). Transitions are logged on the
``hub.circuit`` logger; :meth:`CircuitBreaker.details` goes into run metadata as ``hub/circuit``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from hub.errors import CircuitOpenError, HubError
from hub.runtime.duration import seconds
from hub.runtime.ratelimit import redis_client, redis_url, sqlite_connect, state_file, store_key

log = logging.getLogger("hub.circuit")


class CircuitBreakerConfig(BaseModel):
    """The ``circuit_breaker`` block of a system."""

    model_config = ConfigDict(extra="forbid")

    failures: int = Field(5, ge=1, description="Consecutive failed calls that open the circuit.")
    cooldown: float = Field(30.0, gt=0, description="How long it stays open before one trial call (30, 30s, 5m).")
    redis: str | None = Field(None, description="Redis URL of the shared state (default $HUB_REDIS_URL).")

    @field_validator("cooldown", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return seconds(value)


@dataclass
class _State:
    state: str = "closed"  # closed | open | half_open
    failures: int = 0
    until: float = 0.0  # open: when it half-opens
    trial_until: float = 0.0  # half_open: when an unanswered trial is given up


def _at(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class CircuitBreaker:
    system: str
    config: CircuitBreakerConfig
    state_dir: Path | None = None

    def __post_init__(self) -> None:
        self._redis = redis_url(self.config.redis)
        self._path = state_file(self.state_dir)
        self._key = store_key("circuit", self.system)
        self.rejected = 0
        self.opened = 0
        self.last_state = "closed"

    # --- shared state: one atomic read-modify-write per event ---------------------------------------

    def _update(self, step: Callable[[_State, float], Any]) -> Any:
        if self._redis:
            return self._update_redis(step)
        conn = sqlite_connect(self._path)
        try:
            conn.execute("begin immediate")
            row = conn.execute("select state, failures, until, trial_until from breakers where key = ?",
                               (self._key,)).fetchone()
            st = _State(*row) if row else _State()
            result = step(st, time.time())
            conn.execute("insert or replace into breakers values (?, ?, ?, ?, ?)",
                         (self._key, st.state, st.failures, st.until, st.trial_until))
            conn.execute("commit")
        finally:
            conn.close()
        self.last_state = st.state
        return result

    def _update_redis(self, step: Callable[[_State, float], Any]) -> Any:
        import redis

        client = redis_client(self._redis or "")
        try:
            with client.pipeline() as pipe:
                while True:
                    try:
                        pipe.watch(self._key)
                        raw = pipe.hgetall(self._key)
                        st = _State(raw[b"state"].decode(), int(raw[b"failures"]), float(raw[b"until"]),
                                    float(raw[b"trial_until"])) if raw else _State()
                        result = step(st, time.time())
                        pipe.multi()
                        pipe.hset(self._key, mapping={"state": st.state, "failures": st.failures,
                                                      "until": st.until, "trial_until": st.trial_until})
                        pipe.execute()
                        break
                    except redis.WatchError:
                        continue
        except redis.RedisError as exc:
            raise HubError(f"systems.{self.system}.circuit_breaker: the Redis store is unreachable "
                           f"({type(exc).__name__}: {exc})") from None
        self.last_state = st.state
        return result

    # --- events -----------------------------------------------------------------------------------------

    def before_call(self) -> None:
        """Raise :class:`CircuitOpenError` when the circuit is open (or a trial is under way elsewhere)."""
        cooldown = self.config.cooldown

        def step(st: _State, now: float) -> float | None:
            if st.state == "open" and now >= st.until:
                st.state, st.trial_until = "half_open", now + cooldown
                log.warning("circuit of system %s half-open: one trial call", self.system)
                return None
            if st.state == "open":
                return st.until
            if st.state == "half_open":
                if now >= st.trial_until:  # the trial never reported back: another caller tries
                    st.trial_until = now + cooldown
                    return None
                return st.trial_until
            return None

        blocked = self._update(step)
        if blocked is not None:
            self.rejected += 1
            raise CircuitOpenError(
                f"system {self.system}: circuit open after {self.config.failures} consecutive failures; "
                f"calls fail fast until it half-opens at {_at(blocked)} (in {max(0.0, blocked - time.time()):.0f} s)",
                system=self.system, half_opens_at=blocked)

    def success(self) -> None:
        def step(st: _State, now: float) -> None:
            if st.state != "closed":
                log.warning("circuit of system %s closed: the trial call succeeded", self.system)
            st.state, st.failures, st.until, st.trial_until = "closed", 0, 0.0, 0.0

        self._update(step)

    def failure(self, reason: str = "") -> None:
        cfg = self.config

        def step(st: _State, now: float) -> bool:
            st.failures += 1
            if st.state == "half_open" or (st.state == "closed" and st.failures >= cfg.failures):
                st.state, st.until, st.trial_until = "open", now + cfg.cooldown, 0.0
                log.error("circuit of system %s open after %d consecutive failures (%s); half-opens at %s",
                          self.system, st.failures, reason or "failure", _at(st.until))
                return True
            return False

        if self._update(step):
            self.opened += 1

    def details(self) -> dict[str, Any]:
        """For run metadata (``hub/circuit``)."""
        return {"system": self.system, "state": self.last_state, "opened": self.opened, "rejected": self.rejected}


def breaker_for(system: str, config: CircuitBreakerConfig | None,
                state_dir: Path | None = None) -> CircuitBreaker | None:
    return CircuitBreaker(system, config, state_dir) if config is not None else None
