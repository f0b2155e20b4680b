"""Lazy public names of an adapter package: its configuration models load at once, its clients on first use.

Every ``hub`` command loads the protocol registry, and every plugin imports its adapter's models; importing
the clients with them (zeep, asyncssh, SQLAlchemy, graphql-core, nats-py ...) cost most of a second before any
command ran. An adapter's ``__init__`` imports its ``config`` eagerly and names the rest here::

    __getattr__ = lazy(__name__, {"RestSource": "adapters.rest.client", ...})

with the same names imported under ``TYPE_CHECKING`` for type checkers (PEP 562).
"""

from __future__ import annotations

import importlib
import sys
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


class _NoPandas:
    """A meta-path finder that refuses pandas (see :func:`pyarrow_without_pandas`)."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == "pandas":
            raise ModuleNotFoundError("pandas is not imported for pyarrow's type checks", name="pandas")


def pyarrow_without_pandas() -> None:
    """Keep ``pa.array(list)`` from importing pandas (1 s and 50 MB, half of a small ``hub run``).

    pyarrow asks its lazy pandas shim whether a value is "array-like" before converting any Python sequence,
    and the shim imports pandas to answer. Here the shim's first import attempt is made to fail, once: it then
    answers "no pandas" to those checks for the rest of the process, while anything that really needs pandas
    (``Table.to_pandas()`` for an expectation suite, Great Expectations) still imports it — pyarrow retries the
    import whenever pandas is required. A no-op when the shim has already imported pandas.

    The price: pyarrow's C++ converter then never recognises pandas scalars in a Python list —
    ``pa.array([pd.NA, 1])`` fails (``Table.from_pandas`` still works). Only ``hub run``'s fast path calls this,
    and nothing there hands pandas scalars to ``pa.array``: records come from JSON, XML, files and DB-API rows."""
    import pyarrow as pa

    if "pandas" in sys.modules:
        return
    blocker = _NoPandas()
    sys.meta_path.insert(0, blocker)
    try:
        pa.array([0])
    finally:
        sys.meta_path.remove(blocker)
