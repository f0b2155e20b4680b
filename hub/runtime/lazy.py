"""Lazy public names of an adapter package: its configuration models load at once, its clients on first use.

Every ``hub`` command loads the protocol registry, and every plugin imports its adapter's models; importing
the clients with them (zeep, asyncssh, SQLAlchemy, graphql-core, nats-py ...) cost most of a second before any
command ran. An adapter's ``__init__`` imports its ``config`` eagerly and names the rest here::

    __getattr__ = lazy(__name__, {"RestSource": "adapters.rest.client", ...})

with the same names imported under ``TYPE_CHECKING`` for type checkers (PEP 562).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy(package: str, names: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``names[name]`` (a module) on first access of *name*."""

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)

    return __getattr__
