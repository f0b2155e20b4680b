"""REST adapter (httpx): auth, pagination, retries, concurrent pages, Arrow batches."""

from adapters.rest._auth import origin_policy
from adapters.rest.client import Page, RestSource, RestStats
from adapters.rest.config import AuthConfig, PaginateConfig, RestSourceConfig, RestSystemConfig

__all__ = ["AuthConfig", "Page", "PaginateConfig", "RestSource", "RestSourceConfig", "RestStats",
           "RestSystemConfig", "origin_policy"]
