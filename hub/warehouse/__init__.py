"""Warehouses: DuckDB by default; streaming, idempotent loads (partition replace, merge, replace) in one
transaction; atomic model rebuilds."""

from __future__ import annotations

from hub.errors import WarehouseError
from hub.runtime.secrets import mask_url
from hub.warehouse.base import Load, LoadMode, LoadRequest, LoadResult, Warehouse
from hub.warehouse.duckdb import DuckDBWarehouse


def connect(url: str) -> Warehouse:
    """The warehouse for *url* (``duckdb:///path``). Later: any SQLAlchemy URL."""
    scheme = url.split(":", 1)[0] if ":" in url else ""
    if scheme == "duckdb":
        return DuckDBWarehouse(url)
    raise WarehouseError(f"unsupported warehouse URL scheme '{scheme}' in {mask_url(url)} "
                         "(supported: duckdb:///PATH)")


__all__ = ["DuckDBWarehouse", "Load", "LoadMode", "LoadRequest", "LoadResult", "Warehouse", "connect"]
