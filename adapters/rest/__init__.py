"""REST adapter (httpx): auth, pagination, retries, concurrent pages, Arrow batches."""

from typing import TYPE_CHECKING

from adapters.rest.config import AuthConfig, PaginateConfig, RestSourceConfig, RestSystemConfig
from hub.runtime.lazy import lazy

if TYPE_CHECKING:
    from adapters.rest._auth import build_auth, origin_policy
    from adapters.rest._jsonpath import JSONPathError, compile_path, first, select, simple_steps
    from adapters.rest.client import Page, RestSource, RestStats

__all__ = ["AuthConfig", "JSONPathError", "Page", "PaginateConfig", "RestSource", "RestSourceConfig", "RestStats",
           "RestSystemConfig", "build_auth", "compile_path", "first",
           "origin_policy", "select", "simple_steps"]

#: Clients load on first use (hub.runtime.lazy): the registry imports only the models.
__getattr__ = lazy(__name__, {
    "build_auth": "adapters.rest._auth",
    "origin_policy": "adapters.rest._auth",
    "JSONPathError": "adapters.rest._jsonpath",
    "compile_path": "adapters.rest._jsonpath",
    "first": "adapters.rest._jsonpath",
    "select": "adapters.rest._jsonpath",
    "simple_steps": "adapters.rest._jsonpath",
    "Page": "adapters.rest.client",
    "RestSource": "adapters.rest.client",
    "RestStats": "adapters.rest.client",
})
