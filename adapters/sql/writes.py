"""Writes for flows: an insert, update or upsert of one row, or a stored procedure call, on a system whose
``writes:`` block declares the table or procedure. Everything else of the adapter stays read-only: sources
and the agent read through :func:`adapters.sql._engine.engine`'s read-only sessions; only this module opens
a writable connection, and only for what ``writes:`` lists.

Each write is one transaction, sent once (no retries: the flow's ledger decides). A failure is classified for
the ledger: the database refused it (a constraint, a type) or the connection could not be opened →
:class:`~hub.errors.DeliveryFailed` (nothing committed); the connection broke while the statement or the
commit was in flight → :class:`~hub.errors.DeliveryUnknown` (it may have committed).
"""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from adapters.sql._engine import shown, source_url
from adapters.sql.config import SqlSystemConfig
from hub.errors import AdapterError, DeliveryFailed, DeliveryUnknown
from hub.runtime.secrets import mask

MODES = ("insert", "update", "upsert", "call")


def write(cfg: SqlSystemConfig, *, mode: str, table: str | None, schema: str | None, key: list[str],
          procedure: str | None, values: dict[str, Any], label: str, arg_types: list[str] | None = None) -> int:
    """Run one write and commit it; the rows it affected (-1 when the driver does not say). *arg_types*: a
    procedure's parameter types as ``information_schema`` names them (:func:`adapters.sql.catalog.
    describe_procedures`), so each argument is cast to its parameter's type where the database needs it
    (PostgreSQL picks a procedure by its argument types and does not convert a float to numeric implicitly)."""
    writes = getattr(cfg, "writes", None)
    if writes is None:
        raise AdapterError(f"{label}: the system declares no writes: (SQL systems are read-only unless their "
                           "writes: block lists tables or procedures for flows)")
    if mode == "call":
        if procedure not in writes.procedures:
            raise AdapterError(f"{label}: procedure {procedure} is not in writes.procedures")
    elif table not in writes.tables or mode not in writes.tables[table].modes:
        raise AdapterError(f"{label}: {mode} on {table} is not declared in writes.tables")
    url = source_url(cfg)
    try:
        eng = sa.create_engine(url, poolclass=NullPool)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as exc:
        raise AdapterError(f"{label}: cannot use {shown(url)}: {exc}") from None
    try:
        try:
            conn = eng.connect()
        except sa.exc.DBAPIError as exc:
            raise DeliveryFailed(f"{label}: cannot connect to {shown(url)}: {mask(str(exc.orig))}; nothing was sent",
                                 retryable=True) from None
        with conn:
            try:
                with conn.begin():
                    result = conn.execute(_statement(conn, mode, table, schema, key, procedure, values, arg_types))
                    return int(result.rowcount) if result.rowcount is not None else -1
            except (sa.exc.IntegrityError, sa.exc.DataError, sa.exc.ProgrammingError) as exc:
                raise DeliveryFailed(f"{label}: the database refused the write: {mask(str(exc.orig))}") from None
            except sa.exc.DBAPIError as exc:
                if exc.connection_invalidated:
                    raise DeliveryUnknown(f"{label}: the connection broke during the write "
                                          f"({mask(str(exc.orig))}); it may have committed") from None
                raise DeliveryFailed(f"{label}: {mask(str(exc.orig))}") from None
    finally:
        eng.dispose()


#: A type name that can follow ``CAST(... AS``: plain words (``numeric``, ``timestamp with time zone``).
_CASTABLE = re.compile(r"^[a-z][a-z0-9 ]*$")


def _statement(conn: sa.Connection, mode: str, table: str | None, schema: str | None, key: list[str],
               procedure: str | None, values: dict[str, Any], arg_types: list[str] | None = None) -> Any:
    if mode == "call":
        args = values.get("args") or []
        types = arg_types if arg_types and len(arg_types) == len(args) and conn.dialect.name == "postgresql" \
            else [None] * len(args)
        names = ", ".join(f"CAST(:a{i} AS {t})" if t and _CASTABLE.match(t) and t != "user-defined" else f":a{i}"
                          for i, t in enumerate(types))
        qualified = f"{schema}.{procedure}" if schema else str(procedure)
        return sa.text(f"CALL {qualified}({names})").bindparams(**{f"a{i}": v for i, v in enumerate(args)})
    target = sa.Table(str(table), sa.MetaData(), schema=schema, autoload_with=conn)
    unknown = [c for c in values if c not in target.c]
    if unknown:
        raise DeliveryFailed(f"{table}: no column(s) {', '.join(unknown)} (columns: {', '.join(target.c.keys())})")
    if mode == "insert":
        return sa.insert(target).values(**values)
    missing = [k for k in key if k not in values]
    if missing:
        raise DeliveryFailed(f"{table}: {mode} needs the key column(s) {', '.join(missing)}")
    if mode == "update":
        cond = sa.and_(*(target.c[k] == values[k] for k in key))
        return sa.update(target).where(cond).values(**{c: v for c, v in values.items() if c not in key})
    dialect = conn.dialect.name
    rest = {c: v for c, v in values.items() if c not in key}
    if dialect in ("postgresql", "sqlite"):
        from sqlalchemy.dialects.postgresql import insert as pg_insert
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = (pg_insert if dialect == "postgresql" else sqlite_insert)(target).values(**values)
        return stmt.on_conflict_do_update(index_elements=key, set_=rest) if rest else \
            stmt.on_conflict_do_nothing(index_elements=key)
    if dialect in ("mysql", "mariadb"):
        from sqlalchemy.dialects.mysql import insert as my_insert

        mstmt = my_insert(target).values(**values)
        return mstmt.on_duplicate_key_update(**(rest or {k: mstmt.inserted[k] for k in key}))
    raise DeliveryFailed(f"{table}: upsert is not supported on {dialect} (use insert or update)")
