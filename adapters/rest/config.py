"""Typed configuration of REST systems and sources, as written in a pipeline spec.

These pydantic models are the single definition of the ``rest`` system block and of a REST source's
``request`` / ``records`` / ``paginate`` keys: the spec loader embeds them, the adapter consumes them.
Variants (auth kinds, pagination kinds) are written as single-key mappings — ``{bearer: ...}``,
``{page_number: {...}}`` — the style dlt and Camel users know, and exactly one key is allowed.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hub.runtime.choice import exactly_one
from hub.runtime.duration import seconds
from hub.runtime.secrets import Address
from hub.runtime.settings import SystemSettings


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _OneOf(_Strict):
    """Exactly one of the optional fields must be given."""

    @model_validator(mode="after")
    def _exactly_one(self) -> _OneOf:
        exactly_one(self, list(type(self).model_fields))
        return self

    @property
    def kind(self) -> str:
        return next(name for name in type(self).model_fields if getattr(self, name) is not None)


# --- auth ---------------------------------------------------------------------------------------------

class ApiKeyAuth(_Strict):
    name: str = Field(description="Header or query parameter name, e.g. X-API-Key or api_key.")
    value: str = Field(description="The key; use ${ENV_VAR}.")
    location: Literal["header", "query"] = Field("header", alias="in")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class BasicAuth(_Strict):
    username: Address
    password: str


class OAuth2ClientCredentials(_Strict):
    token_url: Address
    client_id: str
    client_secret: str
    scope: str | None = None
    audience: str | None = None
    # Some servers want the credentials as form fields instead of HTTP Basic (RFC 6749 §2.3.1 allows both).
    client_auth: Literal["basic", "body"] = "basic"


class AuthConfig(_OneOf):
    bearer: str | None = Field(None, description="A static bearer token; use ${ENV_VAR}.")
    api_key: ApiKeyAuth | None = None
    basic: BasicAuth | None = None
    oauth2: OAuth2ClientCredentials | None = None


# --- pagination ----------------------------------------------------------------------------------------

#: ``paginate.max_pages`` when the spec gives none.
DEFAULT_MAX_PAGES = 10_000

class PageNumberPaginate(_Strict):
    param: str = "page"
    start: int = 1
    size_param: str | None = None
    size: int | None = Field(None, gt=0)
    total_pages: str | None = Field(None, description="JSONPath to the total page count in the first response.")
    total_count: str | None = Field(None, description="JSONPath to the total record count (needs size).")

    @model_validator(mode="after")
    def _count_needs_size(self) -> PageNumberPaginate:
        if self.total_count and not self.size:
            raise ValueError("total_count needs size (records per page) to compute the page count")
        return self


class OffsetPaginate(_Strict):
    offset_param: str = "offset"
    limit_param: str = "limit"
    limit: int = Field(100, gt=0)
    start: int = 0
    total: str | None = Field(None, description="JSONPath to the total record count in the first response.")


class CursorPaginate(_Strict):
    param: str = Field("cursor", description="Query parameter that carries the cursor on the next request.")
    cursor_path: str = Field(description="JSONPath to the next cursor in the body; absent/null/empty ends.")


class NextUrlPaginate(_Strict):
    path: str = Field(description="JSONPath to the URL of the next page in the body; absent/null ends.")


class LinkHeaderPaginate(_Strict):
    rel: str = "next"


class PaginateConfig(_OneOf):
    page_number: PageNumberPaginate | None = None
    offset: OffsetPaginate | None = None
    cursor: CursorPaginate | None = None
    next_url: NextUrlPaginate | None = None
    link_header: LinkHeaderPaginate | None = None
    max_pages: int = Field(DEFAULT_MAX_PAGES, gt=0, description=(
        "Safety stop against an API that hands out a next page forever (default 10,000): reaching it is an "
        "error, not silence. Raise it for sources that really have more pages."))

    @model_validator(mode="after")
    def _exactly_one(self) -> PaginateConfig:  # max_pages is not a variant
        exactly_one(self, ("page_number", "offset", "cursor", "next_url", "link_header"))
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("page_number", "offset", "cursor", "next_url", "link_header")
                    if getattr(self, k) is not None)


# --- system and request ---------------------------------------------------------------------------------

class TimeoutConfig(_Strict):
    connect: float = Field(10.0, gt=0)
    read: float = Field(60.0, gt=0)


class HttpCacheConfig(_Strict):
    """``cache: {ttl: 1h}``: GET responses are kept under .hub/cache/http and served for ``ttl`` without a
    request; after that they are revalidated (If-None-Match / If-Modified-Since, a 304 serves the copy)."""

    ttl: float = Field(3600.0, ge=0, description="Seconds (or 30s, 5m, 1h) a stored response is used as is.")

    @field_validator("ttl", mode="before")
    @classmethod
    def _duration(cls, value: object) -> float:
        return seconds(value)


class RestSystemConfig(SystemSettings, _Strict):  # retries, rate_limit, circuit_breaker: hub.runtime.settings
    """The ``rest:`` block of a system."""

    base_url: Address
    auth: AuthConfig | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    params: dict[str, str | int | float | bool] = Field(default_factory=dict)
    timeout: float | TimeoutConfig = Field(default_factory=TimeoutConfig)
    cache: HttpCacheConfig | None = Field(None, description="HTTP caching of GET responses (reference data).")
    concurrency: int = Field(8, ge=1, le=64, description="Pages fetched at once when the total is known.")
    verify: bool | str = Field(True, description="TLS verification: true, or a CA bundle path. Never off silently.")
    allowed_origins: list[str] = Field(default_factory=list, description=(
        "Other origins (https://host[:port]) that pagination links and redirects may lead to. They are called "
        "without credentials; any origin neither here nor the base URL's is refused (adapters._http)."))
    max_response_bytes: int = Field(256 * 1024 * 1024, gt=0, description="Larger bodies are refused.")
    openapi: Address | None = Field(None, description="The API's OpenAPI document (URL, or a file relative to the "
                                                  "project): recorded by `hub contracts snapshot` and compared "
                                                  "by `hub contracts test`.")


class RequestConfig(_Strict):
    path: str = ""
    method: Literal["GET", "POST"] = "GET"
    params: dict[str, str | int | float | bool] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)
    json_body: dict[str, object] | None = Field(None, alias="json")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class RestSourceConfig(_Strict):
    """The REST-specific keys of a source."""

    request: RequestConfig = Field(default_factory=RequestConfig)
    records: str = Field("$", description="JSONPath selecting the records in each response.")
    paginate: PaginateConfig | None = None
