"""SQL adapter (SQLAlchemy; ADBC for PostgreSQL): tables and read-only queries as Arrow batches,
incremental by a cursor column."""

from adapters.sql._guard import WriteRefused, check_read_only
from adapters.sql.client import SqlSource
from adapters.sql.config import IncrementalConfig, SqlSourceConfig, SqlSystemConfig

__all__ = ["IncrementalConfig", "SqlSource", "SqlSourceConfig", "SqlSystemConfig", "WriteRefused",
           "check_read_only"]
