"""SQL adapter (SQLAlchemy; ADBC for PostgreSQL): tables and read-only queries as Arrow batches,
incremental by a cursor column."""

from typing import TYPE_CHECKING

from adapters.sql.config import IncrementalConfig, SqlSourceConfig, SqlSystemConfig, SqlWrites
from hub.runtime.lazy import lazy

if TYPE_CHECKING:
    from adapters.sql._engine import with_default_driver
    from adapters.sql._guard import DENIED_FUNCTIONS, WriteRefused, check_functions, check_read_only
    from adapters.sql.client import SqlSource
    from adapters.sql.writes import write

__all__ = ["DENIED_FUNCTIONS", "IncrementalConfig", "SqlSource", "SqlSourceConfig", "SqlSystemConfig", "SqlWrites",
           "WriteRefused", "check_functions", "check_read_only", "with_default_driver", "write"]

#: Clients load on first use (hub.runtime.lazy): the registry imports only the models.
__getattr__ = lazy(__name__, {
    "with_default_driver": "adapters.sql._engine",
    "DENIED_FUNCTIONS": "adapters.sql._guard",
    "WriteRefused": "adapters.sql._guard",
    "check_functions": "adapters.sql._guard",
    "check_read_only": "adapters.sql._guard",
    "SqlSource": "adapters.sql.client",
    "write": "adapters.sql.writes",
})
