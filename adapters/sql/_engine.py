"""Connections to the source database: SQLAlchemy engines that only read, and the ADBC fast path.

Every connection is opened read-only where the database allows it (see :mod:`adapters.sql._guard`), with
the system's connect timeout and statement timeout (``statement_timeout``, default 15 minutes: a query
that hangs, or was written to hang, cannot hold a server session forever), and is never pooled: a run
holds one connection for one extract. A running query can be cancelled on the server from another thread
(:func:`canceller`), which the source does when the process is interrupted. Errors
are classified here once: a dropped connection, a server shutting down, a serialization failure or a
deadlock are worth retrying; anything else (a wrong column, a refused login) is not.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
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
#: PostgreSQL 14+: the server checks every few seconds during a long query that the client is still there,
#: so a hub killed outright (SIGKILL) does not leave its query running. Older servers have no such setting:
#: set through pg_settings, where it is simply absent, not in the startup options, which would refuse it.
CLIENT_CHECK_PG = ("SELECT set_config(name, '5s', false) FROM pg_settings "
                   "WHERE name = 'client_connection_check_interval'")
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


def pg_options(cfg: SqlSystemConfig, given: str | tuple[str, ...] | None) -> str:
    """libpq ``options`` for a source session: the URL's own (*given*), then read-only and the timeouts, which
    come last so that they win over the URL's."""
    ours = _READ_ONLY_PG
    timeout_ms = round(cfg.statement_timeout_s * 1000)
    if timeout_ms > 0:
        # A server-side cursor is idle in its transaction while the warehouse writes a batch: as generous.
        ours += f" -c statement_timeout={timeout_ms} -c idle_in_transaction_session_timeout={timeout_ms}"
    given = given[-1] if isinstance(given, tuple) else given
    return f"{given} {ours}" if given else ours


def _session_statements(backend: str, cfg: SqlSystemConfig, dbapi_connection: Any) -> list[str]:
    """What a new MySQL/MariaDB or SQLite session runs first: read-only, and the statement timeout."""
    if backend == "sqlite":
        return ["PRAGMA query_only = ON"]
    statements = ["SET SESSION TRANSACTION READ ONLY"]
    timeout = cfg.statement_timeout_s
    if timeout > 0:
        info = getattr(dbapi_connection, "get_server_info", None)
        version = str(info() if callable(info) else "")
        if "mariadb" in version.lower():
            statements.append(f"SET SESSION max_statement_time = {timeout:.3f}")
        else:  # MySQL: SELECT statements only, which is all a source runs
            statements.append(f"SET SESSION max_execution_time = {round(timeout * 1000)}")
    return statements


def engine(cfg: SqlSystemConfig, url: URL | None = None) -> sa.Engine:
    """A read-only, unpooled engine for the system, with its statement timeout."""
    url = url or source_url(cfg)
    backend = url.get_backend_name()
    args: dict[str, Any] = {}
    if backend == "postgresql":
        args = {"connect_timeout": int(cfg.connect_timeout), "application_name": "hub",
                "options": pg_options(cfg, url.query.get("options"))}
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

        @sa.event.listens_for(eng, "connect")
        def _read_only(dbapi_connection: Any, record: Any) -> None:
            cursor = dbapi_connection.cursor()
            for statement in _session_statements(backend, cfg, dbapi_connection):
                cursor.execute(statement)
            cursor.close()
            if backend == "sqlite" and cfg.statement_timeout_s > 0:
                record.info["hub_deadline"] = _sqlite_deadline(dbapi_connection, cfg.statement_timeout_s)

    if backend == "sqlite" and cfg.statement_timeout_s > 0:

        @sa.event.listens_for(eng, "before_cursor_execute")
        def _restart_clock(conn: sa.Connection, *_args: Any) -> None:
            deadline = conn.info.get("hub_deadline")
            if deadline is not None:
                deadline[0] = time.monotonic() + cfg.statement_timeout_s

    elif backend == "postgresql":

        @sa.event.listens_for(eng, "connect")
        def _client_check(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute(CLIENT_CHECK_PG)
            cursor.close()
            dbapi_connection.commit()

    return eng


def _sqlite_deadline(dbapi_connection: Any, timeout: float) -> list[float]:
    """Interrupt SQLite statements that run longer than *timeout* seconds: SQLite has no statement timeout,
    but calls a progress handler every few thousand virtual-machine steps, and a non-zero answer aborts the
    statement (``sqlite3.OperationalError: interrupted``). The returned deadline is moved forward by each
    new statement (see :func:`engine`)."""
    deadline = [time.monotonic() + timeout]
    dbapi_connection.set_progress_handler(lambda: int(time.monotonic() > deadline[0]), 10_000)
    return deadline


def canceller(backend: str, dbapi_connection: Any, side: Callable[[], Any]) -> Callable[[], None]:
    """A function that cancels the statement running on *dbapi_connection*, callable from another thread:
    PostgreSQL (psycopg) sends libpq's cancel request, SQLite interrupts, MySQL/MariaDB have no such request
    and get ``KILL QUERY <id>`` from a second connection that *side* opens (a session may kill its own
    user's queries)."""
    if backend == "postgresql":  # psycopg 3 (cancel_safe, 3.2+, or cancel), psycopg2 (cancel)
        cancel = getattr(dbapi_connection, "cancel_safe", None) or getattr(dbapi_connection, "cancel", None)
        return cancel if callable(cancel) else _nothing
    if backend == "sqlite":
        interrupt = getattr(dbapi_connection, "interrupt", None)
        return interrupt if callable(interrupt) else _nothing
    if backend in ("mysql", "mariadb"):
        ident = getattr(dbapi_connection, "thread_id", None)  # PyMySQL, mysqlclient
        if not callable(ident):
            return _nothing
        thread_id = ident()

        def kill() -> None:
            other = side()
            try:
                cursor = other.cursor()
                cursor.execute(f"KILL QUERY {int(thread_id)}")
                cursor.close()
            finally:
                other.close()

        return kill
    return _nothing


def _nothing() -> None:
    """The canceller of a driver that offers no way to cancel: the statement timeout still bounds the query."""


def timed_out(exc: BaseException) -> bool:
    """True when *exc* is the database stopping a statement at the statement timeout."""
    cause: BaseException | None = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
    text = str(cause or exc).lower()
    code = cause.args[0] if cause is not None and cause.args and isinstance(cause.args[0], int) else None
    return ("statement timeout" in text or code in (3024, 1969) or "max_statement_time" in text
            or "maximum statement execution time" in text or (isinstance(cause, sqlite3.OperationalError)
                                                                and "interrupted" in text))


def adbc_uri(url: URL, cfg: SqlSystemConfig) -> str:
    """The libpq URI of a PostgreSQL URL for ADBC, read-only and with timeouts like the SQLAlchemy sessions."""
    options = url.query.get("options")
    query = {k: v for k, v in url.query.items() if k != "options"}
    query["options"] = pg_options(cfg, options)
    query.setdefault("connect_timeout", str(int(cfg.connect_timeout)))
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
