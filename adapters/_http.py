"""What the HTTP-based adapters (REST, SOAP) share: the broken-body signal and the final error after
retries, so a transport failure reads the same whichever protocol ran over it."""

from __future__ import annotations

import httpx

from hub.errors import AdapterError, ResponseFormatError, TransportError
from hub.runtime.secrets import mask


class BrokenBody(Exception):
    """The status line and headers arrived but the connection broke while the body was read.

    Retried like a transport error; reported with the status and how much of the body arrived."""

    def __init__(self, status: int, received: int, declared: str | None, cause: str) -> None:
        super().__init__(cause)
        self.status, self.received, self.declared, self.cause = status, received, declared, cause


def gave_up(what: str, exc: BrokenBody | httpx.TransportError, attempts: int) -> AdapterError:
    """The error to raise once retries of *what* (e.g. ``GET https://...``) are exhausted."""
    if isinstance(exc, BrokenBody):
        return ResponseFormatError(
            f"{what}: HTTP {exc.status} body truncated: the connection broke after {exc.received} of "
            f"{exc.declared or 'an unknown number of'} bytes ({exc.cause}); gave up after {attempts} attempts")
    return TransportError(f"{what}: {type(exc).__name__}: {mask(str(exc)) or 'connection failed'} "
                          f"(gave up after {attempts} attempts)")
