"""REST adapter (httpx): auth, pagination, retries, concurrent pages, Arrow batches."""

from adapters.rest._auth import build_auth, origin_policy
from adapters.rest._jsonpath import JSONPathError, compile_path, select
from adapters.rest.client import Page, RestSource, RestStats
from adapters.rest.config import AuthConfig, PaginateConfig, RestSourceConfig, RestSystemConfig

__all__ = ["AuthConfig", "JSONPathError", "Page", "PaginateConfig", "RestSource", "RestSourceConfig", "RestStats",
           "RestSystemConfig", "build_auth", "compile_path",
           "origin_policy", "select"]
