"""A progress hook for in-process runs (``hub run``): assets report rows as batches land.

Under ``dagster dev`` nobody listens and reporting costs one attribute read.
"""

from __future__ import annotations

from collections.abc import Callable

_listener: Callable[[str, int], None] | None = None


def listen(callback: Callable[[str, int], None] | None) -> None:
    """Install (or with None, remove) the listener for this process."""
    global _listener
    _listener = callback


def report(asset: str, rows: int) -> None:
    if _listener is not None:
        _listener(asset, rows)
