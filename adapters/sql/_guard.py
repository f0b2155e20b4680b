"""Sources only read: a query is checked before it reaches the database, and the session is read-only.

Three layers, because no one of them alone is enough.

1. The statement is parsed (sqlglot, in the database's dialect) and must be exactly one SELECT — a
   ``WITH ... SELECT`` included — with no data-modifying statement anywhere inside it (PostgreSQL allows
   ``WITH d AS (DELETE ... RETURNING *) SELECT ...``), no ``SELECT ... INTO`` (MySQL's ``INTO OUTFILE`` /
   ``INTO DUMPFILE`` does not even parse, so it is refused too) and no row locks. A statement the parser
   cannot read is refused: what cannot be verified is not run.
2. No function of :data:`DENIED_FUNCTIONS` is called anywhere in it (below).
3. The connection itself is opened read-only where the database supports it (PostgreSQL
   ``default_transaction_read_only``, MySQL/MariaDB ``SET SESSION TRANSACTION READ ONLY``, SQLite
   ``PRAGMA query_only``) and with a statement timeout (:mod:`adapters.sql._engine`).

**Why a function deny-list.** A read-only transaction stops writes to tables, but a SELECT can still act
through functions: PostgreSQL's ``pg_terminate_backend(pid)`` ends another session (a tester killed a
production session with it), ``pg_read_file`` / ``lo_import`` / ``pg_ls_dir`` read the server's files,
``dblink`` opens connections elsewhere, ``pg_advisory_lock`` takes locks the read-only session keeps,
``set_config`` changes the session (``transaction_read_only`` included), ``query_to_xml`` runs SQL text
the parser never saw, ``pg_sleep`` holds a connection and a snapshot for as long as asked. MySQL's
``SLEEP`` / ``BENCHMARK`` tie up the server, ``LOAD_FILE`` reads its files, ``GET_LOCK`` takes named
locks; SQLite's ``load_extension`` / ``readfile`` / ``writefile`` reach the hub's own file system. An
allow-list of every function a report may legitimately call is not practical (each database has
hundreds, and extensions add more), so the functions that act outside the query are listed here, by
database, with the reason the refusal gives. The database's own privileges (a read-only role, see the
README) remain the last line: this list cannot know every extension's functions.
"""

from __future__ import annotations

from collections.abc import Iterator
from fnmatch import fnmatchcase
from typing import cast

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

_SESSIONS = "ends or interrupts other sessions of the database"
_SERVER_FILES = "reads or writes files on the database server"
_LOCAL_FILES = "reads or writes files of the machine the hub runs on"
_LOCKS = "takes locks that outlive the query and block other sessions"
_SLEEP = "holds the connection and its snapshot without reading anything (a denial of service)"
_REMOTE = "opens connections from the database server to other servers"
_SQL_TEXT = "runs SQL text that this check cannot see"
_STATE = "changes the state of the database or the session"
_ADMIN = "is a server administration function"

#: Functions a source's query (and a warehouse model) may not call, by SQLAlchemy dialect name:
#: (shell-style pattern of the lower-case function name, why). Names are matched without their schema,
#: so ``pg_catalog.pg_sleep`` is refused like ``pg_sleep``.
DENIED_FUNCTIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "postgresql": (
        ("pg_terminate_backend", _SESSIONS), ("pg_cancel_backend", _SESSIONS),
        ("pg_advisory_*", _LOCKS), ("pg_try_advisory_*", _LOCKS),
        ("dblink*", _REMOTE),
        ("lo_*", _SERVER_FILES), ("pg_read_file", _SERVER_FILES), ("pg_read_binary_file", _SERVER_FILES),
        ("pg_ls_*", _SERVER_FILES), ("pg_stat_file", _SERVER_FILES), ("pg_file_*", _SERVER_FILES),
        ("pg_logdir_ls", _SERVER_FILES),
        ("pg_reload_conf", _ADMIN), ("pg_rotate_logfile", _ADMIN), ("pg_promote", _ADMIN),
        ("pg_switch_wal", _ADMIN), ("pg_create_restore_point", _ADMIN), ("pg_backup_*", _ADMIN),
        ("pg_start_backup", _ADMIN), ("pg_stop_backup", _ADMIN), ("pg_stat_reset*", _ADMIN),
        ("pg_log_backend_memory_contexts", _ADMIN), ("pg_import_system_collations", _ADMIN),
        ("pg_create_*_replication_slot", _ADMIN), ("pg_drop_replication_slot", _ADMIN),
        ("pg_replication_*", _ADMIN), ("pg_logical_*", _ADMIN), ("pg_wal_replay_*", _ADMIN),
        ("set_config", _STATE), ("pg_notify", _STATE), ("nextval", _STATE), ("setval", _STATE),
        ("txid_current*", _STATE), ("pg_current_xact_id*", _STATE),
        ("pg_sleep*", _SLEEP),
        ("query_to_xml*", _SQL_TEXT), ("cursor_to_xml*", _SQL_TEXT), ("query_to_json*", _SQL_TEXT),
        ("xmlexists_sql", _SQL_TEXT),
    ),
    "mysql": (
        ("sleep", _SLEEP), ("benchmark", _SLEEP),
        ("load_file", _SERVER_FILES),
        ("get_lock", _LOCKS), ("release_lock", _LOCKS), ("release_all_locks", _LOCKS),
        ("is_used_lock", _LOCKS), ("is_free_lock", _LOCKS),
        ("sys_exec", "runs a shell command on the database server"),
        ("sys_eval", "runs a shell command on the database server"),
        ("master_pos_wait", _SLEEP), ("source_pos_wait", _SLEEP), ("master_gtid_wait", _SLEEP),
        ("wait_for_executed_gtid_set", _SLEEP), ("wait_until_sql_thread_after_gtids", _SLEEP),
        ("nextval", _STATE), ("setval", _STATE), ("lastval", _STATE),
    ),
    "sqlite": (
        ("load_extension", "loads native code into the hub's process"),
        ("readfile", _LOCAL_FILES), ("writefile", _LOCAL_FILES), ("edit", _LOCAL_FILES),
        ("fts3_tokenizer", "can call native code through a pointer (a known exploit)"),
        ("lsdir", _LOCAL_FILES),
    ),
}
DENIED_FUNCTIONS["mariadb"] = DENIED_FUNCTIONS["mysql"]


def function_names(tree: exp.Expression) -> Iterator[tuple[str, exp.Func]]:
    """Every function call in *tree*, as (lower-case name, node): the name as written for functions sqlglot
    does not know, and every spelling sqlglot knows for those it does."""
    for node in tree.find_all(exp.Func):
        if isinstance(node, exp.Anonymous):
            yield node.name.lower(), node
        else:
            for name in {*type(node).sql_names(), node.key}:
                yield name.lower(), node


def denied_function(tree: exp.Expression, dialect: str) -> tuple[str, str] | None:
    """The first function of *tree* that :data:`DENIED_FUNCTIONS` refuses in *dialect*: (its name, why)."""
    rules = DENIED_FUNCTIONS.get(dialect, ())
    if not rules:
        return None
    for name, _node in function_names(tree):
        for pattern, why in rules:
            if fnmatchcase(name, pattern):
                return name, why
    return None


def check_functions(sql: str, dialect: str, *, where: str, what: str = "sources only read") -> None:
    """Raise :class:`WriteRefused` when *sql* (one statement, SQLAlchemy dialect *dialect*) calls a function
    of :data:`DENIED_FUNCTIONS`; a statement that does not parse is refused as well."""
    try:
        trees = [t for t in sqlglot.parse(sql, read=DIALECTS.get(dialect)) if t is not None]
    except sqlglot.errors.SqlglotError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise WriteRefused(f"{where}: the query cannot be parsed, so its functions cannot be checked; it was "
                           f"not run ({first})") from None
    for tree in trees:
        _refuse_functions(cast(exp.Expression, tree), dialect, where=where, what=what)


def _refuse_functions(tree: exp.Expression, dialect: str, *, where: str, what: str) -> None:
    found = denied_function(tree, dialect)
    if found is not None:
        name, why = found
        raise WriteRefused(f"{where}: the query calls {name}(), which {why}; {what}, nothing was run")


def check_read_only(sql: str, dialect: str, *, where: str) -> None:
    """Raise :class:`WriteRefused` unless *sql* is one read-only SELECT in SQLAlchemy dialect *dialect* that
    calls no function of :data:`DENIED_FUNCTIONS`."""
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
    _refuse_functions(statement, dialect, where=where, what="sources only read")
