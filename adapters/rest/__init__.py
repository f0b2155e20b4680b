"""REST adapter (httpx): auth, pagination, retries, concurrent pages, Arrow batches."""

from adapters.rest._auth import build_auth, origin_policy
from adapters.rest._jsonpath import JSONPathError, compile_path, first, select, simple_steps
from adapters.rest.client import Page, RestSource, RestStats
from adapters.rest.config import AuthConfig, PaginateConfig, RestSourceConfig, RestSystemConfig

__all__ = ["AuthConfig", "JSONPathError", "Page", "PaginateConfig", "RestSource", "RestSourceConfig", "RestStats",
           "RestSystemConfig", "build_auth", "compile_path", "first",
           "origin_policy", "select", "simple_steps"]
