"""Durations as people write them in a spec: ``30``, ``30s``, ``5m``, ``1h``, ``2d``; and the time budget
of a source's extraction (``max_duration``)."""

from __future__ import annotations

import re
from typing import Any

from hub.errors import TimeBudgetExceeded

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def seconds(value: Any) -> float:
    """``30``, ``"30s"``, ``"5m"``, ``"1h"`` -> seconds."""
    if isinstance(value, int | float):
        return float(value)
    m = _DURATION.match(str(value))
    if not m:
        raise ValueError(f"expected a duration such as 30, 30s, 5m or 1h, got {value!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def text(value: float) -> str:
    """Seconds as a spec would write them: ``21600`` -> ``6h``, ``90`` -> ``90s``, ``0.5`` -> ``0.5s``."""
    for unit in ("d", "h", "m"):
        if value >= _UNITS[unit] and value % _UNITS[unit] == 0:
            return f"{int(value // _UNITS[unit])}{unit}"
    return f"{value:g}s"


def over_budget(source: str, budget: float, progress: str = "") -> TimeBudgetExceeded:
    """The error of a source whose extraction passed its ``max_duration`` (the same words for every adapter)."""
    done = f" ({progress})" if progress else ""
    return TimeBudgetExceeded(
        f"sources.{source}: extraction stopped after max_duration={text(budget)}{done}; nothing was loaded. "
        f"If the source really needs longer, raise `max_duration` on sources.{source}")
