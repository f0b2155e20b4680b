"""SQL adapter (SQLAlchemy; ADBC for PostgreSQL): tables and read-only queries as Arrow batches,
incremental by a cursor column."""

from adapters.sql._engine import with_default_driver
from adapters.sql._guard import DENIED_FUNCTIONS, WriteRefused, check_functions, check_read_only
from adapters.sql.client import SqlSource
from adapters.sql.config import IncrementalConfig, SqlSourceConfig, SqlSystemConfig, SqlWrites
from adapters.sql.writes import write

__all__ = ["DENIED_FUNCTIONS", "IncrementalConfig", "SqlSource", "SqlSourceConfig", "SqlSystemConfig", "SqlWrites",
           "WriteRefused", "check_functions", "check_read_only", "with_default_driver", "write"]
