"""Retry policy: exponential backoff with full jitter that honours ``Retry-After``.

Kept protocol-neutral so every adapter (REST now, SOAP/SFTP/SQL later) retries the same way and the
spec's ``retries`` block means one thing everywhere.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from pydantic import BaseModel, ConfigDict, Field


class RetryConfig(BaseModel):
    """The ``retries`` block of a system in the spec."""

    model_config = ConfigDict(extra="forbid")

    max: int = Field(5, ge=0, le=100, description="Retries after the first attempt (0 disables retrying).")
    backoff: float = Field(0.5, gt=0, description="First backoff in seconds; doubles on every retry.")
    max_backoff: float = Field(30.0, gt=0, description="Ceiling for one backoff, and for Retry-After.")


@dataclass(frozen=True)
class RetryPolicy:
    """Decides how long to wait before retry number *attempt* (1-based)."""

    max_retries: int = 5
    backoff: float = 0.5
    max_backoff: float = 30.0

    @classmethod
    def from_config(cls, cfg: RetryConfig) -> RetryPolicy:
        return cls(max_retries=cfg.max, backoff=cfg.backoff, max_backoff=cfg.max_backoff)

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to sleep before retry *attempt*.

        A server's ``Retry-After`` wins over our own schedule (it knows when it will have capacity), but
        is capped at ``max_backoff`` so a hostile value cannot park a run for hours. Otherwise: full
        jitter over an exponentially growing window, which spreads concurrent clients apart.
        """
        hinted = parse_retry_after(retry_after) if retry_after else None
        if hinted is not None:
            return min(max(hinted, 0.0), self.max_backoff)
        window = min(self.max_backoff, self.backoff * (2 ** (attempt - 1)))
        return random.uniform(window / 2, window)

    def sleep(self, attempt: int, retry_after: str | None = None) -> float:
        seconds = self.delay(attempt, retry_after)
        time.sleep(seconds)
        return seconds


def parse_retry_after(value: str) -> float | None:
    """Parse an RFC 9110 ``Retry-After`` value: delay-seconds or an HTTP date. None when unparseable."""
    value = value.strip()
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when.timestamp() - time.time()
