"""Connections to the source database: SQLAlchemy engines that only read, and the ADBC fast path.

Every connection is opened read-only where the database allows it (see :mod:`adapters.sql._guard`), with
the system's connect timeout, and is never pooled: a run holds one connection for one extract. Errors
are classified here once: a dropped connection, a server shutting down, a serialization failure or a
deadlock are worth retrying; anything else (a wrong column, a refused login) is not.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

from adapters.sql.config import SqlSystemConfig
from hub.errors import AdapterError
from hub.runtime.secrets import mask, register

#: Default DBAPI drivers for URLs that do not name one (those in the hub's dependencies).
_DRIVERS = {"postgresql": "postgresql+psycopg", "postgres": "postgresql+psycopg", "mysql": "mysql+pymysql",
            "mariadb": "mariadb+pymysql"}
_READ_ONLY_PG = "-c default_transaction_read_only=on"
#: SQLSTATE classes and codes of transient failures: connection exceptions, admin shutdown / crash,
#: serialization failure, deadlock, too many connections.
_TRANSIENT_STATES = ("08", "57P01", "57P02", "57P03", "40001", "40P01", "53300")
_TRANSIENT_TEXT = ("server closed the connection", "terminating connection", "connection reset", "broken pipe",
                   "lost connection", "gone away", "connection refused", "could not connect", "timeout expired",
                   "connection timed out", "the database system is shutting down", "consuming input failed",
                   "connection is closed", "connection already closed")


def with_default_driver(url: URL) -> URL:
    """*url* with the hub's DBAPI driver filled in when it names none (``postgresql://`` -> psycopg)."""
    return url.set(drivername=_DRIVERS[url.drivername]) if url.drivername in _DRIVERS else url


def source_url(cfg: SqlSystemConfig) -> URL:
    """The SQLAlchemy URL of *cfg* with the default driver filled in; its password is registered as a secret."""
    try:
        url = make_url(cfg.url)
    except sa.exc.ArgumentError:
        raise AdapterError(f"sql url: '{mask(cfg.url)}' is not a SQLAlchemy URL (expected e.g. "
                           "postgresql://user@host/db or sqlite:///file.db)") from None
    url = with_default_driver(url)
    if url.password:
        register(str(url.password))
    return url


def shown(url: URL) -> str:
    """A URL for messages: password hidden."""
    return url.render_as_string(hide_password=True)


def engine(cfg: SqlSystemConfig, url: URL | None = None) -> sa.Engine:
    """A read-only, unpooled engine for the system."""
    url = url or source_url(cfg)
    backend = url.get_backend_name()
    args: dict[str, Any] = {}
    if backend == "postgresql":
        options = url.query.get("options")
        args = {"connect_timeout": int(cfg.connect_timeout), "application_name": "hub",
                "options": f"{options} {_READ_ONLY_PG}" if options else _READ_ONLY_PG}
    elif backend in ("mysql", "mariadb"):
        args = {"connect_timeout": int(cfg.connect_timeout)}
    elif backend == "sqlite":
        args = {"timeout": cfg.connect_timeout}
    args.update(cfg.connect_args)
    try:
        eng = sa.create_engine(url, poolclass=NullPool, connect_args=args)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as exc:
        raise AdapterError(f"sql {shown(url)}: cannot use this database: {exc}. Install its SQLAlchemy dialect "
                           "and DBAPI driver (see the README, 'SQL sources')") from None

    if backend in ("mysql", "mariadb", "sqlite"):
        statement = "PRAGMA query_only = ON" if backend == "sqlite" else "SET SESSION TRANSACTION READ ONLY"

        @sa.event.listens_for(eng, "connect")
        def _read_only(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute(statement)
            cursor.close()

    return eng


def adbc_uri(url: URL) -> str:
    """The libpq URI of a PostgreSQL URL for ADBC, read-only like the SQLAlchemy sessions."""
    options = url.query.get("options")
    query = {k: v for k, v in url.query.items() if k != "options"}
    query["options"] = f"{options} {_READ_ONLY_PG}" if options else _READ_ONLY_PG
    query.setdefault("application_name", "hub")
    plain = url.set(drivername="postgresql", query={}).render_as_string(hide_password=False)
    # libpq reads %20, not the + that SQLAlchemy's rendering writes for a space
    return plain + "?" + urlencode({k: v if isinstance(v, str) else v[-1] for k, v in query.items()}, quote_via=quote)


def transient(exc: BaseException) -> bool:
    """True for failures worth reconnecting and retrying (the connection broke, not the query)."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    cause: BaseException | None = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
    state = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)
    if isinstance(state, str) and state.startswith(_TRANSIENT_STATES):
        return True
    if isinstance(cause, ConnectionError | TimeoutError):
        return True
    code = cause.args[0] if cause is not None and cause.args and isinstance(cause.args[0], int) else None
    if code in (2006, 2013, 2003, 1927, 1205, 1213):  # MySQL: gone away, lost, refused, killed, lock timeout, deadlock
        return True
    text = str(cause or exc).lower()
    return any(t in text for t in _TRANSIENT_TEXT)
