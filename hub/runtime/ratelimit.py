"""Rate limits per system, shared by every process and run talking to that system.

A system's ``rate_limit: {per_second: N, per_minute: M, burst: B}`` becomes one token bucket per given
limit (rate N/s, resp. M/60 per s), all kept under the system's key in a shared store:

- **Redis** when ``rate_limit.redis`` or ``$HUB_REDIS_URL`` names a server: one Lua script refills and
  takes from every bucket of the key atomically, on the server's clock (so hosts need not agree on time);
- otherwise a **SQLite file** (``.hub/limits.sqlite`` in the project): each take is one ``BEGIN IMMEDIATE``
  transaction, which serializes the processes of one host.

A request takes one token from every bucket; when one is empty the caller sleeps until it refills. A
bucket holds at most ``burst`` tokens (default: one second's worth, so requests are spread evenly), so
in any window of T seconds at most ``burst + rate * T`` requests start.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hub.errors import HubError

REDIS_ENV = "HUB_REDIS_URL"


class RateLimitConfig(BaseModel):
    """The ``rate_limit`` block of a system."""

    model_config = ConfigDict(extra="forbid")

    per_second: float | None = Field(None, gt=0, description="Requests per second (may be fractional).")
    per_minute: float | None = Field(None, gt=0, description="Requests per minute.")
    burst: int | None = Field(None, ge=1, description="Requests that may start at once after a quiet spell "
                                                      "(default: one second's worth, at least 1).")
    redis: str | None = Field(None, description="Redis URL of the shared buckets (default $HUB_REDIS_URL; "
                                                "neither: a SQLite file under .hub/).")

    @model_validator(mode="after")
    def _some_limit(self) -> RateLimitConfig:
        if self.per_second is None and self.per_minute is None:
            raise ValueError("give per_second and/or per_minute")
        return self

    def buckets(self) -> list[tuple[str, float, float]]:
        """(name, rate per second, capacity) of every bucket."""
        out = []
        for name, rate in (("s", self.per_second), ("m", self.per_minute / 60 if self.per_minute else None)):
            if rate is not None:
                out.append((name, rate, float(self.burst or max(1, math.ceil(rate)))))
        return out


# --- stores -------------------------------------------------------------------------------------------

def state_file(state_dir: Path | None) -> Path:
    """The SQLite file shared by the processes of one project (``$HUB_STATE_DIR`` or ``./.hub``)."""
    base = state_dir or Path(os.environ.get("HUB_STATE_DIR") or Path.cwd() / ".hub")
    return base / "limits.sqlite"


_SCHEMA = """
create table if not exists buckets (key text primary key, tokens real not null, ts real not null);
create table if not exists breakers (key text primary key, state text not null, failures integer not null,
                                     until real not null, trial_until real not null);
"""
_init_lock = threading.Lock()
_initialized: set[Path] = set()


def sqlite_connect(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit ``BEGIN IMMEDIATE``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    with _init_lock:
        if path not in _initialized:
            conn.execute("pragma journal_mode=wal")
            conn.executescript(_SCHEMA)
            _initialized.add(path)
    return conn


_redis_clients: dict[str, Any] = {}


def redis_client(url: str) -> Any:
    """One client (connection pool) per URL and process."""
    client = _redis_clients.get(url)
    if client is None:
        import redis  # imported only when a Redis store is configured

        client = _redis_clients[url] = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    return client


def redis_url(configured: str | None) -> str | None:
    return configured or os.environ.get(REDIS_ENV) or None


def store_key(kind: str, system: str) -> str:
    return f"hub:{kind}:{system}"


# --- the limiter --------------------------------------------------------------------------------------

_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local wait = 0
local tokens = {}
for i = 1, #KEYS do
  local rate, cap = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local v = redis.call('HMGET', KEYS[i], 'tokens', 'ts')
  local have = tonumber(v[1]) or cap
  local ts = tonumber(v[2]) or now
  have = math.min(cap, have + math.max(0, now - ts) * rate)
  tokens[i] = have
  if have < 1 then wait = math.max(wait, (1 - have) / rate) end
end
for i = 1, #KEYS do
  local rate, cap = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local have = tokens[i]
  if wait == 0 then have = have - 1 end
  redis.call('HSET', KEYS[i], 'tokens', tostring(have), 'ts', tostring(now))
  redis.call('PEXPIRE', KEYS[i], math.ceil(cap / rate * 1000) + 60000)
end
return tostring(wait)
"""


def _take(rows: list[tuple[float, float, float, float]], now: float) -> tuple[float, list[float]]:
    """(wait, new token counts) for buckets given as (tokens, ts, rate, capacity): the same arithmetic as
    the Lua script. wait 0 means a token was taken from every bucket."""
    have = [min(cap, tokens + max(0.0, now - ts) * rate) for tokens, ts, rate, cap in rows]
    wait = max([(1 - h) / r[2] for h, r in zip(have, rows, strict=True) if h < 1] or [0.0])
    return wait, [h - 1 if wait == 0 else h for h in have]


@dataclass
class RateLimiter:
    """The shared token buckets of one system. :meth:`acquire` blocks until a request may start."""

    system: str
    config: RateLimitConfig
    state_dir: Path | None = None

    def __post_init__(self) -> None:
        self._buckets = self.config.buckets()
        self._redis = redis_url(self.config.redis)
        self._path = state_file(self.state_dir)
        self.waited = 0.0  # seconds this process spent waiting (for run metadata)

    @property
    def backend(self) -> str:
        return "redis" if self._redis else "sqlite"

    def try_take(self) -> float:
        """Take a token from every bucket and return 0, or take nothing and return the seconds to wait."""
        keys = [f"{store_key('rate', self.system)}:{name}" for name, _, _ in self._buckets]
        if self._redis:
            args: list[float] = [v for _, rate, cap in self._buckets for v in (rate, cap)]
            try:
                return float(redis_client(self._redis).eval(_TAKE, len(keys), *keys, *args))
            except Exception as exc:
                raise HubError(f"systems.{self.system}.rate_limit: the Redis store is unreachable "
                               f"({type(exc).__name__}: {exc})") from None
        conn = sqlite_connect(self._path)
        try:
            conn.execute("begin immediate")
            now = time.time()
            rows = []
            for key, (_, rate, cap) in zip(keys, self._buckets, strict=True):
                row = conn.execute("select tokens, ts from buckets where key = ?", (key,)).fetchone()
                rows.append((row[0], row[1], rate, cap) if row else (cap, now, rate, cap))
            wait, tokens = _take(rows, now)
            conn.executemany("insert or replace into buckets values (?, ?, ?)",
                             [(k, t, now) for k, t in zip(keys, tokens, strict=True)])
            conn.execute("commit")
            return wait
        finally:
            conn.close()

    def acquire(self) -> float:
        """Block until a request may start; returns the seconds waited."""
        waited = 0.0
        while (wait := self.try_take()) > 0:
            time.sleep(wait)
            waited += wait
        self.waited += waited
        return waited

    async def acquire_async(self) -> float:
        """:meth:`acquire` for event loops (the store is asked in a worker thread)."""
        waited = 0.0
        while (wait := await asyncio.to_thread(self.try_take)) > 0:
            await asyncio.sleep(wait)
            waited += wait
        self.waited += waited
        return waited


def limiter_for(system: str, config: RateLimitConfig | None, state_dir: Path | None = None) -> RateLimiter | None:
    return RateLimiter(system, config, state_dir) if config is not None else None


def system_key(name: str | None, address: str) -> str:
    """The key of a system in the shared stores: its spec name, else a hash of its address."""
    return name or "addr-" + hashlib.sha256(address.encode()).hexdigest()[:16]
