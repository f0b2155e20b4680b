"""Typed configuration of SQL systems and table/query sources, as written in a spec."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hub.runtime.choice import exactly_one
from hub.runtime.duration import seconds
from hub.runtime.secrets import Address
from hub.runtime.settings import SystemSettings


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class WritableTable(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: list[str] = Field(default_factory=list, description="Columns that identify a row (update and upsert).")
    modes: list[str] = Field(default_factory=lambda: ["insert", "update", "upsert"],
                             description="What flows may do: insert, update, upsert.")


class SqlWrites(BaseModel):
    """``writes:`` of a SQL system: what flows may change. Sources and the agent never write."""

    model_config = ConfigDict(extra="forbid")

    tables: dict[str, WritableTable] = Field(default_factory=dict)
    procedures: list[str] = Field(default_factory=list, description="Stored procedures flows may call.")
    schema_: Address | None = Field(None, alias="schema", description="The schema of the tables and procedures.")


class SqlSystemConfig(SystemSettings, _Strict):  # retries, rate_limit, circuit_breaker: hub.runtime.settings
    """The ``sql:`` block of a system: one database, reached through SQLAlchemy."""

    url: Address = Field(description="SQLAlchemy URL, e.g. postgresql://user:${DB_PASSWORD}@host/db, "
                                 "mysql+pymysql://..., sqlite:///path/file.db, mssql+pyodbc://...")
    connect_args: dict[str, Any] = Field(default_factory=dict, description="Passed to the DBAPI driver's connect().")
    writes: SqlWrites | None = Field(None, description="Tables and procedures flows may write (sources and the "
                                                       "agent only ever read).")
    text_encoding: str | None = Field(
        None, description="Codec of text the driver hands over as bytes (a legacy database storing cp1252 or "
                          "latin-1 in text columns, a PostgreSQL SQL_ASCII database): decoded to text.")
    timezone: str | None = Field(
        None, description="Time zone that naive timestamps (TIMESTAMP WITHOUT TIME ZONE, DATETIME) are in: "
                          "they become UTC instants. Default: they stay naive.")
    fast_path: bool = Field(True, description="PostgreSQL: read through ADBC (COPY, binary, in C++) instead of "
                                              "the DBAPI driver.")
    connect_timeout: float = Field(15.0, gt=0)
    statement_timeout: str | float = Field(
        "15m", description="Longest a statement may run on the database (a duration: 90s, 15m, 2h; 0: no "
                           "limit). PostgreSQL: statement_timeout (ADBC reads the whole table in one COPY, so "
                           "this bounds the extract) and idle_in_transaction_session_timeout; MySQL: "
                           "max_execution_time, MariaDB: max_statement_time; SQLite: the query is interrupted. "
                           "A query that runs longer fails (not retried).")

    @field_validator("statement_timeout")
    @classmethod
    def _timeout(cls, v: str | float) -> str | float:
        if seconds(v) < 0:
            raise ValueError("statement_timeout must not be negative (0: no limit)")
        return v

    @property
    def statement_timeout_s(self) -> float:
        """The statement timeout in seconds (0: none)."""
        return seconds(self.statement_timeout)

    @field_validator("text_encoding")
    @classmethod
    def _codec(cls, v: str | None) -> str | None:
        if v is not None:
            import codecs

            try:
                codecs.lookup(v)
            except LookupError:
                raise ValueError(f"unknown text encoding '{v}' (expected a Python codec: cp1252, latin-1 ...)") \
                    from None
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str | None) -> str | None:
        if v is not None:
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

            try:
                ZoneInfo(v)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown timezone '{v}' (expected an IANA name such as Europe/Paris)") from None
        return v


class IncrementalConfig(_Strict):
    """Read only rows changed since the last run, by a cursor column."""

    cursor: str = Field(description="A column that grows with every change: a timestamp (updated_at) or an "
                                    "increasing id.")
    lookback: str | int | None = Field(
        None, description="Re-read this much before the high-water mark, for rows committed late: a duration "
                          "(10m, 2h, 1d) for a timestamp cursor, a number for an id cursor. Merging on the "
                          "primary key makes the re-read rows replace themselves.")
    initial: str | int | None = Field(None, description="Lower bound of the first run (default: everything).")

    @field_validator("lookback")
    @classmethod
    def _lookback(cls, v: str | int | None) -> str | int | None:
        if isinstance(v, str):
            seconds(v)  # ValueError names the expected forms
        elif isinstance(v, int) and v < 0:
            raise ValueError("lookback must not be negative")
        return v


class SqlSourceConfig(_Strict):
    """The protocol keys of a SQL source: a table (or view) or one read-only query."""

    table: str | None = Field(None, description="Table or view name.")
    schema_: str | None = Field(None, alias="schema", description="Schema of the table (default: the connection's).")
    select: list[str] | None = Field(None, description="Only these columns of the table (default: all).")
    query: str | None = Field(None, description="One SELECT (or WITH ... SELECT) statement; :name placeholders "
                                                "are bound from params.")
    params: dict[str, Any] = Field(default_factory=dict, description="Bound parameters of the query; values may "
                                                                     "use {{ partition.start }} templating.")
    incremental: IncrementalConfig | None = None
    trim_char: bool = Field(False, description="Strip the blank padding of CHAR(n) columns.")
    batch_rows: int = Field(100_000, ge=100, le=10_000_000, description="Rows per Arrow batch.")

    @model_validator(mode="after")
    def _one(self) -> SqlSourceConfig:
        exactly_one(self, ("table", "query"))
        if self.select is not None and self.table is None:
            raise ValueError("select: picks columns of a table; with query, list the columns in the query")
        if self.params and self.query is None:
            raise ValueError("params: are bound into a query (a table source has no placeholders)")
        return self
