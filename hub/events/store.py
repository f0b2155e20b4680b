"""The event store: every received message, appended once, in order, before the broker hears back.

**Layout.** DuckDB allows one writing process per file, and a ``hub listen`` appending all day to the
warehouse file would block every Dagster run loading it (and be blocked by a long backfill). So for a
DuckDB warehouse the store is a SQLite database of its own next to the warehouse file
(``warehouse/hub.duckdb`` → ``warehouse/hub.events.sqlite``), in WAL mode: one writer at a time across
processes (a lock held for the few milliseconds of an append), readers never blocked, commits durable
(``synchronous=FULL``: an acknowledged message survives a power cut). The warehouse reads the store when a
table absorbs its events (:mod:`hub.events.absorb`), in a short transaction of its own. For a PostgreSQL
warehouse the same tables would live in the warehouse database (several writers are fine there); that
backend is not written yet (:func:`open_store` says so).

**Tables.** ``events``: position (global, increasing), source, version (per source, 1, 2, ...), message id,
key, type, stream (queue/subject/topic), headers (JSON), payload, published and received time;
``UNIQUE(source, message_id)``: a redelivery or a re-published duplicate is dropped (and counted).
``dead_letters``: messages that will not be stored (unparseable, delivered ``max_deliver`` times), with
the reason and attempts, unique per (source, message id). ``streams``: per source its last version and
counters, and the position the table has absorbed (a copy of the warehouse's mark, written after the
warehouse committed: it is never ahead, so retention can trust it).

An append is one transaction (:meth:`EventStore.append`); the caller acknowledges the broker only after it
returned.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hub.errors import HubError


class EventStoreError(HubError):
    """The event store cannot be opened or written."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    position INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL,
    version INTEGER NOT NULL,
    message_id TEXT NOT NULL,
    key TEXT,
    type TEXT,
    stream TEXT,
    headers TEXT NOT NULL DEFAULT '{}',
    payload BLOB NOT NULL,
    published_at TEXT,
    received_at TEXT NOT NULL,
    UNIQUE (source, message_id),
    UNIQUE (source, version)
);
CREATE INDEX IF NOT EXISTS events_source_position ON events (source, position);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL,
    message_id TEXT NOT NULL,
    key TEXT,
    type TEXT,
    stream TEXT,
    headers TEXT NOT NULL DEFAULT '{}',
    payload BLOB NOT NULL,
    reason TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    dead_at TEXT NOT NULL,
    UNIQUE (source, message_id)
);
CREATE TABLE IF NOT EXISTS streams (
    source TEXT PRIMARY KEY,
    version INTEGER NOT NULL DEFAULT 0,
    duplicates INTEGER NOT NULL DEFAULT 0,
    dead INTEGER NOT NULL DEFAULT 0,
    absorbed INTEGER NOT NULL DEFAULT 0,
    absorbed_at TEXT,
    absorb_error TEXT
);
"""


def _now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class Incoming:
    """A message ready to append (its id decided) or to dead-letter (*reason* set)."""

    message_id: str
    payload: bytes
    key: str | None = None
    type: str | None = None
    stream: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    published_at: datetime | None = None
    attempts: int = 1
    reason: str | None = None  # set: goes to the dead letters


@dataclass
class Appended:
    """What one append did: per incoming message, its outcome (``stored``, ``duplicate``, ``dead``)."""

    outcomes: list[str]
    first: int | None = None  # positions of the events stored by this append
    last: int | None = None

    def count(self, outcome: str) -> int:
        return self.outcomes.count(outcome)


@dataclass(frozen=True)
class Event:
    position: int
    source: str
    version: int
    message_id: str
    key: str | None
    type: str | None
    stream: str | None
    headers: str
    payload: bytes
    published_at: str | None
    received_at: str


@dataclass(frozen=True)
class DeadLetter:
    id: int
    source: str
    message_id: str
    key: str | None
    type: str | None
    stream: str | None
    headers: str
    payload: bytes
    reason: str
    attempts: int
    dead_at: str


@dataclass(frozen=True)
class StreamStatus:
    source: str
    events: int  # stored now (after retention)
    last_position: int
    version: int
    duplicates: int
    dead: int
    absorbed: int  # the table's mark, as far as the store knows
    pending: int  # stored events after the mark
    absorbed_at: str | None
    absorb_error: str | None


_EVENT_COLUMNS = ("position, source, version, message_id, key, type, stream, headers, payload, published_at, "
                  "received_at")


class EventStore:
    """A SQLite event store (see the module notes). Thread-safe: one connection per thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            con = self._con()
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise EventStoreError(f"cannot open the event store {path}: {exc}") from None

    def _con(self) -> sqlite3.Connection:
        con: sqlite3.Connection | None = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=True)
            con.execute("PRAGMA synchronous=FULL")
            con.execute("PRAGMA busy_timeout=60000")
            self._local.con = con
        return con

    def close(self) -> None:
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None

    # -- writing --------------------------------------------------------------------------------------

    def append(self, source: str, messages: Sequence[Incoming]) -> Appended:
        """Append *messages* of *source* in ONE transaction: new ids become events (with the next positions
        and versions), known ids are dropped as duplicates, messages with a reason become dead letters. When
        this returns, everything is durable: acknowledge the broker then, never before."""
        con = self._con()
        try:
            con.execute("BEGIN IMMEDIATE")
            done = self._write(con, source, messages)
            con.execute("COMMIT")
        except sqlite3.Error as exc:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise EventStoreError(f"appending {len(messages)} message(s) of {source} to {self.path} failed, "
                                  f"nothing was stored: {exc}") from None
        return done

    def _write(self, con: sqlite3.Connection, source: str, messages: Sequence[Incoming]) -> Appended:
        outcomes: list[str] = []
        first = last = None
        con.execute("INSERT OR IGNORE INTO streams (source) VALUES (?)", (source,))
        version, duplicates, dead = con.execute(
            "SELECT version, duplicates, dead FROM streams WHERE source = ?", (source,)).fetchone()
        received = _now()
        for m in messages:
            headers = json.dumps(m.headers, ensure_ascii=False, sort_keys=True)
            published = m.published_at.isoformat() if m.published_at else None
            if m.reason is not None and con.execute("SELECT 1 FROM events WHERE source = ? AND message_id = ?",
                                                    (source, m.message_id)).fetchone():
                duplicates += 1  # stored by an earlier delivery whose ack was lost: never dead-letter it
                outcomes.append("duplicate")
                continue
            if m.reason is not None:
                con.execute(
                    "INSERT INTO dead_letters (source, message_id, key, type, stream, headers, payload, reason, "
                    "attempts, dead_at) VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT (source, message_id) DO UPDATE "
                    "SET reason = excluded.reason, attempts = max(attempts, excluded.attempts), "
                    "dead_at = excluded.dead_at",
                    (source, m.message_id, m.key, m.type, m.stream, headers, m.payload, m.reason, m.attempts,
                     received))
                dead += 1
                outcomes.append("dead")
                continue
            cur = con.execute(
                "INSERT INTO events (source, version, message_id, key, type, stream, headers, payload, "
                "published_at, received_at) VALUES (?,?,?,?,?,?,?,?,?,?) "
                "ON CONFLICT (source, message_id) DO NOTHING",
                (source, version + 1, m.message_id, m.key, m.type, m.stream, headers, m.payload, published,
                 received))
            if cur.rowcount == 1:
                version += 1
                last = cur.lastrowid
                first = first if first is not None else last
                outcomes.append("stored")
            else:
                duplicates += 1
                outcomes.append("duplicate")
        con.execute("UPDATE streams SET version = ?, duplicates = ?, dead = ? WHERE source = ?",
                    (version, duplicates, dead, source))
        return Appended(outcomes, first, last)

    def mark_absorbed(self, source: str, position: int, error: str | None = None) -> None:
        """Copy the table's new mark (after the warehouse committed it), or the last absorb's error."""
        con = self._con()
        con.execute("INSERT OR IGNORE INTO streams (source) VALUES (?)", (source,))
        if error is not None:
            con.execute("UPDATE streams SET absorb_error = ? WHERE source = ?", (error, source))
            return
        con.execute("UPDATE streams SET absorbed = ?, absorbed_at = ?, absorb_error = NULL WHERE source = ?",
                    (position, _now(), source))

    def forget(self, source: str, keep: float, *, absorbed: int) -> int:
        """Retention: delete events of *source* received more than *keep* seconds ago, but only those at or
        before *absorbed* (the table has them). The number deleted."""
        cutoff = (datetime.now(UTC) - timedelta(seconds=keep)).isoformat()
        con = self._con()
        cur = con.execute("DELETE FROM events WHERE source = ? AND received_at < ? AND position <= ?",
                          (source, cutoff, absorbed))
        return cur.rowcount

    # -- reading --------------------------------------------------------------------------------------

    def read(self, source: str, *, after: int = 0, upto: int | None = None, since: str | None = None,
             until: str | None = None, limit: int = 5000) -> Iterator[list[Event]]:
        """The events of *source* after position *after* (up to *upto*; received between *since* and
        *until*, ISO times), in position order, *limit* at a time (bounded memory)."""
        con = self._con()
        while True:
            sql = f"SELECT {_EVENT_COLUMNS} FROM events WHERE source = ? AND position > ?"
            args: list[Any] = [source, after]
            if upto is not None:
                sql += " AND position <= ?"
                args.append(upto)
            if since is not None:
                sql += " AND received_at >= ?"
                args.append(since)
            if until is not None:
                sql += " AND received_at <= ?"
                args.append(until)
            rows = con.execute(sql + " ORDER BY position LIMIT ?", (*args, limit)).fetchall()
            if not rows:
                return
            yield [Event(*r) for r in rows]
            after = rows[-1][0]

    def position_after(self, source: str, after: int, n: int) -> int:
        """The position of the *n*-th event of *source* after *after* (the last one when there are fewer)."""
        row = self._con().execute("SELECT max(position) FROM (SELECT position FROM events WHERE source = ? AND "
                                  "position > ? ORDER BY position LIMIT ?)", (source, after, n)).fetchone()
        return int(row[0] or after)

    def position_at(self, source: str, when: str, *, first: bool) -> int:
        """The first position of *source* received at or after *when* (*first*), or the last one received at
        or before it; 0 when there is none."""
        sql = ("SELECT min(position) FROM events WHERE source = ? AND received_at >= ?" if first else
               "SELECT max(position) FROM events WHERE source = ? AND received_at <= ?")
        row = self._con().execute(sql, (source, when)).fetchone()
        return int(row[0] or 0)

    def last_position(self, source: str) -> int:
        row = self._con().execute("SELECT max(position) FROM events WHERE source = ?", (source,)).fetchone()
        return int(row[0] or 0)

    def status(self, sources: Sequence[str]) -> list[StreamStatus]:
        con = self._con()
        out = []
        for source in sources:
            row = con.execute("SELECT version, duplicates, dead, absorbed, absorbed_at, absorb_error FROM streams "
                              "WHERE source = ?", (source,)).fetchone() or (0, 0, 0, 0, None, None)
            count, last = con.execute("SELECT count(*), coalesce(max(position), 0) FROM events WHERE source = ?",
                                      (source,)).fetchone()
            pending = con.execute("SELECT count(*) FROM events WHERE source = ? AND position > ?",
                                  (source, row[3])).fetchone()[0]
            dead_now = con.execute("SELECT count(*) FROM dead_letters WHERE source = ?", (source,)).fetchone()[0]
            out.append(StreamStatus(source, count, last, row[0], row[1], dead_now, row[3], pending, row[4], row[5]))
        return out

    def dead_letters(self, source: str | None = None, ids: Sequence[int] | None = None) -> list[DeadLetter]:
        sql, args = "SELECT * FROM dead_letters WHERE 1=1", list[Any]()
        if source is not None:
            sql += " AND source = ?"
            args.append(source)
        if ids:
            sql += f" AND id IN ({','.join('?' * len(ids))})"
            args.extend(ids)
        return [DeadLetter(*r) for r in self._con().execute(sql + " ORDER BY id", args).fetchall()]

    def resolve_dead(self, letter: DeadLetter, retried: Incoming) -> str:
        """Send a dead letter through again, in one transaction: appended as an event (and removed from the
        dead letters) when *retried* has no reason, else kept with the new reason and one more attempt."""
        con = self._con()
        try:
            con.execute("BEGIN IMMEDIATE")
            if retried.reason is not None:
                con.execute("UPDATE dead_letters SET reason = ?, attempts = attempts + 1, dead_at = ? WHERE id = ?",
                            (retried.reason, _now(), letter.id))
                outcome = "dead"
            else:
                con.execute("DELETE FROM dead_letters WHERE id = ?", (letter.id,))
                outcome = self._write(con, letter.source, [retried]).outcomes[0]
            con.execute("COMMIT")
        except sqlite3.Error as exc:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise EventStoreError(f"retrying dead letter {letter.id} of {letter.source} failed: {exc}") from None
        return outcome


def store_path(warehouse_url: str, root: Path) -> Path:
    """Where the SQLite store of a DuckDB warehouse lives: next to its file (``X.duckdb`` → ``X.events.sqlite``);
    an in-memory warehouse's in the project's ``.hub``."""
    raw = warehouse_url[len("duckdb:///"):].split("?", 1)[0]
    if raw in ("", ":memory:"):
        return root / ".hub" / "events.sqlite"
    path = Path(raw)
    return path.with_name(path.name.removesuffix(".duckdb") + ".events.sqlite")


def open_store(warehouse_url: str, root: Path) -> EventStore:
    """The event store of a warehouse (see the module notes on the layout)."""
    if warehouse_url.startswith("duckdb:"):
        return EventStore(store_path(warehouse_url, root))
    raise EventStoreError("the event store of a PostgreSQL warehouse (tables in the warehouse database) is not "
                          "implemented yet; use a DuckDB warehouse for stream sources")
