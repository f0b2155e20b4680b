"""Durations as people write them in a spec: ``30``, ``30s``, ``5m``, ``1h``, ``2d``."""

from __future__ import annotations

import re
from typing import Any

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
