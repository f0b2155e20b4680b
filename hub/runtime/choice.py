"""Spec blocks that take exactly one of several keys ({bearer: ...} or {basic: ...}; {csv: ...} or
{jsonl: ...}): one check, one message, wherever a config model needs it."""

from __future__ import annotations

from typing import Any


def exactly_one(model: Any, names: tuple[str, ...] | list[str], note: str = "") -> str:
    """The one field of *names* that *model* sets; ValueError (naming the choices) for none or several."""
    given = [n for n in names if getattr(model, n) is not None]
    if len(given) != 1:
        raise ValueError(f"expected exactly one of: {', '.join(names)}{note}; got {', '.join(given) or 'none'}")
    return given[0]
