"""Sources only read: a query is checked before it reaches the database, and the session is read-only.

Two layers, because either alone can be fooled. The statement is parsed (sqlglot, in the database's
dialect) and must be exactly one SELECT — a ``WITH ... SELECT`` included — with no data-modifying
statement anywhere inside it (PostgreSQL allows ``WITH d AS (DELETE ... RETURNING *) SELECT ...``),
no ``SELECT ... INTO`` and no row locks. A statement the parser cannot read is refused: what cannot be
verified is not run. Then the connection itself is opened read-only where the database supports it
(PostgreSQL ``default_transaction_read_only``, MySQL/MariaDB ``SET SESSION TRANSACTION READ ONLY``,
SQLite ``PRAGMA query_only``), which also stops side-effecting functions such as ``nextval()``.
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp

from hub.errors import AdapterError


class WriteRefused(AdapterError):
    """A source's SQL would do more than read. Never run."""


#: SQLAlchemy dialect name -> sqlglot dialect.
DIALECTS = {"postgresql": "postgres", "mysql": "mysql", "mariadb": "mysql", "sqlite": "sqlite",
            "mssql": "tsql", "oracle": "oracle", "duckdb": "duckdb", "db2": None}

_WRITES = (exp.Insert, exp.Update, exp.Delete, exp.Merge, exp.Create, exp.Drop, exp.Alter, exp.Command,
           exp.TruncateTable, exp.Set, exp.Use, exp.Transaction, exp.Commit, exp.Rollback, exp.Copy, exp.Grant)
_QUERIES = (exp.Select, exp.Union, exp.Intersect, exp.Except)


def check_read_only(sql: str, dialect: str, *, where: str) -> None:
    """Raise :class:`WriteRefused` unless *sql* is one read-only SELECT in SQLAlchemy dialect *dialect*."""
    read = DIALECTS.get(dialect)
    try:
        statements = [s for s in sqlglot.parse(sql, read=read) if s is not None]
    except sqlglot.errors.SqlglotError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise WriteRefused(f"{where}: the query cannot be parsed, so it cannot be verified to only read; it was "
                           f"not run ({first})") from None
    if len(statements) != 1:
        raise WriteRefused(f"{where}: expected exactly one SELECT statement, found {len(statements)}; "
                           "nothing was run")
    statement = statements[0]
    if not isinstance(statement, _QUERIES):
        kind = statement.key.upper()
        raise WriteRefused(f"{where}: only SELECT (or WITH ... SELECT) is allowed, this is a {kind} "
                           "statement; nothing was run")
    for node in statement.walk():
        if isinstance(node, _WRITES):
            raise WriteRefused(f"{where}: the query contains a {node.key.upper()} statement "
                               f"({node.sql(dialect=read)[:80]}); sources only read, nothing was run")
        if isinstance(node, exp.Select) and node.args.get("into") is not None:
            raise WriteRefused(f"{where}: SELECT ... INTO creates a table; sources only read, nothing was run")
        if isinstance(node, exp.Select) and node.args.get("locks"):
            raise WriteRefused(f"{where}: SELECT ... FOR UPDATE/SHARE locks rows in the source system; "
                               "sources only read, nothing was run")
