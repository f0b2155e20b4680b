"""Warehouses: DuckDB by default, PostgreSQL when it must be shared; streaming, idempotent loads
(partition replace, merge, replace) in one transaction; atomic model rebuilds."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hub.errors import WarehouseError
from hub.runtime.secrets import mask_url
from hub.warehouse.base import Load, LoadMode, LoadRequest, LoadResult, Warehouse
from hub.warehouse.duckdb import DuckDBWarehouse

if TYPE_CHECKING:
    from hub.warehouse.postgres import PostgresWarehouse

POSTGRES_SCHEMES = ("postgresql", "postgresql+psycopg", "postgres")


def connect(url: str) -> Warehouse:
    """The warehouse for *url*: ``duckdb:///path``, or ``postgresql://user@host:port/db[?schema=NAME]``
    (also ``postgresql+psycopg://`` and ``postgres://``)."""
    scheme = url.split(":", 1)[0] if ":" in url else ""
    if scheme == "duckdb":
        return DuckDBWarehouse(url)
    if scheme in POSTGRES_SCHEMES:
        # Imported here: SQLAlchemy and psycopg are not worth loading for a DuckDB warehouse.
        from hub.warehouse.postgres import PostgresWarehouse

        return PostgresWarehouse(url)
    raise WarehouseError(f"unsupported warehouse URL scheme '{scheme}' in {mask_url(url)} "
                         "(supported: duckdb:///PATH, postgresql://USER@HOST:PORT/DB[?schema=NAME])")


def __getattr__(name: str) -> object:
    if name == "PostgresWarehouse":
        from hub.warehouse.postgres import PostgresWarehouse

        return PostgresWarehouse
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DuckDBWarehouse", "Load", "LoadMode", "LoadRequest", "LoadResult", "PostgresWarehouse", "Warehouse",
           "connect"]
