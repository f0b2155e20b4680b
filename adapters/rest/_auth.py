"""httpx auth flows for every auth kind a REST system can declare.

OAuth2 client credentials (RFC 6749 §4.4) caches the token until shortly before ``expires_in`` and,
when the API still answers 401 (revoked or rotated token), fetches a new token once and replays the
request — the behaviour users expect from requests-oauthlib or dlt's OAuth2 auth.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Generator

import httpx

from adapters._http import OriginPolicy
from adapters.rest.config import AuthConfig, OAuth2ClientCredentials, RestSystemConfig
from hub.errors import AdapterError
from hub.runtime.secrets import mask, mask_url, register


class BearerAuth(httpx.Auth):
    def __init__(self, token: str) -> None:
        self._header = f"Bearer {token}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header
        yield request


class ApiKeyAuth(httpx.Auth):
    def __init__(self, name: str, value: str, location: str) -> None:
        self._name, self._value, self._location = name, value, location

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self._location == "header":
            request.headers[self._name] = self._value
        else:
            request.url = request.url.copy_merge_params({self._name: self._value})
        yield request


class OAuth2ClientCredentialsAuth(httpx.Auth):
    """Client-credentials grant with a shared, thread-safe token cache."""

    requires_response_body = True
    #: Refresh this many seconds before the server-declared expiry, to absorb clock skew and latency.
    EXPIRY_MARGIN = 30.0

    def __init__(self, cfg: OAuth2ClientCredentials) -> None:
        self._cfg = cfg
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0
        self._generation = 0
        self.fetches = 0  # how many tokens were obtained; reported in run metadata

    def _valid_token(self) -> tuple[str, int] | None:
        with self._lock:
            if self._token and time.monotonic() < self._expires_at:
                return self._token, self._generation
        return None

    def _token_request(self) -> httpx.Request:
        data = {"grant_type": "client_credentials"}
        if self._cfg.scope:
            data["scope"] = self._cfg.scope
        if self._cfg.audience:
            data["audience"] = self._cfg.audience
        headers = {"Accept": "application/json"}
        if self._cfg.client_auth == "body":
            data.update(client_id=self._cfg.client_id, client_secret=self._cfg.client_secret)
            request = httpx.Request("POST", self._cfg.token_url, data=data, headers=headers)
        else:
            request = httpx.Request("POST", self._cfg.token_url, data=data, headers=headers)
            pair = f"{self._cfg.client_id}:{self._cfg.client_secret}".encode()
            request.headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        return request

    def _store(self, response: httpx.Response, generation_seen: int) -> tuple[str, int]:
        url = mask_url(str(response.request.url))
        if response.status_code != 200:
            raise AdapterError(
                f"OAuth2 token request to {url} failed: HTTP {response.status_code}: {mask(response.text[:200])}"
            )
        try:
            body = response.json()
            token = str(body["access_token"])
        except (ValueError, KeyError, TypeError) as exc:
            raise AdapterError(f"OAuth2 token response from {url} has no access_token ({exc})") from exc
        expires_in = float(body.get("expires_in") or 3600)
        register(token)
        with self._lock:
            if self._generation == generation_seen:  # nobody refreshed meanwhile: ours is the new token
                self._token = token
                self._expires_at = time.monotonic() + max(expires_in - self.EXPIRY_MARGIN, 0.0)
                self._generation += 1
                self.fetches += 1
            return self._token or token, self._generation

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        cached = self._valid_token()
        if cached is None:
            with self._lock:
                generation = self._generation
            token, generation = self._store((yield self._token_request()), generation)
        else:
            token, generation = cached
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            token, _ = self._store((yield self._token_request()), generation)
            request.headers["Authorization"] = f"Bearer {token}"
            yield request


def build_auth(cfg: AuthConfig | None) -> httpx.Auth | None:
    """The httpx auth object for *cfg* (secrets already resolved)."""
    if cfg is None:
        return None
    if cfg.bearer is not None:
        register(cfg.bearer)
        return BearerAuth(cfg.bearer)
    if cfg.api_key is not None:
        register(cfg.api_key.value)
        return ApiKeyAuth(cfg.api_key.name, cfg.api_key.value, cfg.api_key.location)
    if cfg.basic is not None:
        register(cfg.basic.password)
        return httpx.BasicAuth(cfg.basic.username, cfg.basic.password)
    if cfg.oauth2 is not None:
        register(cfg.oauth2.client_secret)
        return OAuth2ClientCredentialsAuth(cfg.oauth2)
    return None


def origin_policy(cfg: RestSystemConfig, system: str, *urls: str | None) -> OriginPolicy:
    """Where requests of the REST system *cfg* may go: its base URL's origin, its OAuth2 token URL's and
    *urls* the spec itself names (a source path given as a full URL, the OpenAPI document) carry the
    credentials; ``allowed_origins`` are called without them; nothing else is called at all."""
    auth = cfg.auth
    token_url = auth.oauth2.token_url if auth is not None and auth.oauth2 is not None else None
    key_param = auth.api_key.name if auth is not None and auth.api_key is not None else None
    return OriginPolicy.of(system, (cfg.base_url, token_url, *urls), cfg.allowed_origins,
                           [key_param] if key_param else [])
