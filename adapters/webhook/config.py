"""Configuration of webhook systems (how a partner authenticates its calls) and webhook sources (where).

A webhook system is a partner that *calls* the hub (``hub serve``): its block says how the hub checks that a
call really comes from it — an HMAC-SHA256 signature over the body (GitHub or Stripe style, with a timestamp
tolerance), an API key in a header, or an OAuth2 bearer JWT checked against the issuer's JWKS — and how large
a body may be. Secrets are written ``${VAR}`` and resolved when the server starts.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hub.runtime.duration import seconds
from hub.runtime.secrets import Address
from hub.runtime.settings import SystemSettings

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|kib|mb|mib|gb|gib)?\s*$", re.I)
_UNITS = {None: 1, "b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2, "gb": 1000**3, "gib": 1024**3}


def size_bytes(value: Any) -> int:
    """``1MiB``, ``512kb``, ``2000000`` → bytes."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    match = _SIZE.match(str(value))
    if not match:
        raise ValueError(f"expected a size such as 1MiB, 512kB or 1000000, got {value!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower() if match.group(2) else None])


Algorithm = Literal["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]


class _Auth(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HmacAuth(_Auth):
    """An HMAC-SHA256 signature of the body with a shared secret.

    ``github``: ``X-Hub-Signature-256: sha256=<hex of HMAC(body)>`` (no timestamp is signed: a replay is
    refused by the memory of recent signatures). ``stripe``: ``Stripe-Signature: t=<unix time>,v1=<hex of
    HMAC("<t>.<body>")>`` (several ``v1`` while a secret rotates); a ``t`` further than *tolerance* from now
    is refused as stale."""

    type: Literal["hmac"]
    style: Literal["github", "stripe"] = Field("github", description="github | stripe (see above).")
    secret: str | None = Field(None, description="The shared secret, as ${VAR}.")
    secrets: list[str] = Field(default_factory=list, description="Several secrets, while one is being rotated.")
    header: str | None = Field(None, description="The signature's header (default X-Hub-Signature-256 for github, "
                                                 "Stripe-Signature for stripe).")
    tolerance: float = Field(300.0, gt=0, description="How far the signed timestamp may be from now (stripe).")
    remember: float = Field(86_400.0, gt=0, description="How long a seen signature is remembered: the same "
                                                        "signature with another delivery id is a replay.")

    @field_validator("tolerance", "remember", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return seconds(value)

    @model_validator(mode="after")
    def _one_secret(self) -> HmacAuth:
        if not self.secret and not self.secrets:
            raise ValueError("secret: required (the shared secret, e.g. ${PARTNER_WEBHOOK_SECRET})")
        return self

    @property
    def all_secrets(self) -> list[str]:
        return [s for s in [self.secret, *self.secrets] if s]

    @property
    def signature_header(self) -> str:
        return self.header or ("Stripe-Signature" if self.style == "stripe" else "X-Hub-Signature-256")


class ApiKeyAuth(_Auth):
    """A key in a header (compared in constant time); several keys while one is being rotated."""

    type: Literal["api_key"]
    header: str = Field("X-API-Key", description="The header carrying the key.")
    key: str | None = Field(None, description="The key, as ${VAR}.")
    keys: list[str] = Field(default_factory=list, description="Several keys, while one is being rotated.")

    @model_validator(mode="after")
    def _one_key(self) -> ApiKeyAuth:
        if not self.key and not self.keys:
            raise ValueError("key: required (e.g. ${PARTNER_API_KEY})")
        return self

    @property
    def all_keys(self) -> list[str]:
        return [k for k in [self.key, *self.keys] if k]


class JwtAuth(_Auth):
    """``Authorization: Bearer <JWT>``, an OAuth2 access token signed by the issuer's keys (its JWKS), with
    its audience, issuer and expiry checked. Only asymmetric algorithms: a shared-secret token would let
    anyone holding the secret mint them."""

    type: Literal["jwt"]
    jwks_url: Address = Field(description="The issuer's JSON Web Key Set (e.g. https://idp.example.com/.well-known/"
                                      "jwks.json); fetched over HTTPS, from that origin only.")
    audience: str | list[str] = Field(description="The audience the token must name (this hub's API).")
    issuer: str = Field(description="The issuer the token must name (iss).")
    algorithms: list[Algorithm] = Field(default_factory=lambda: list[Algorithm](["RS256"]), min_length=1,
                                        description="Accepted signing algorithms (asymmetric only).")
    leeway: float = Field(30.0, ge=0, le=600, description="Seconds of clock skew allowed on exp/nbf/iat.")
    cache: float = Field(300.0, gt=0, description="How long the key set is cached (an unknown key id refetches "
                                                  "it, at most every 30 s).")
    scopes: list[str] = Field(default_factory=list, description="Scopes the token must have (scope / scp).")

    @field_validator("cache", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return seconds(value)

    @field_validator("jwks_url")
    @classmethod
    def _https(cls, value: str) -> str:
        if not value.startswith(("https://", "http://", "${")):
            raise ValueError(f"expected an http(s) URL, got {value!r}")
        return value


WebhookAuth = Annotated[HmacAuth | ApiKeyAuth | JwtAuth, Field(discriminator="type")]


class WebhookSystemConfig(SystemSettings):
    """``systems.<name>.webhook``: a partner that calls the hub, and how its calls are authenticated."""

    auth: WebhookAuth = Field(description="hmac | api_key | jwt (every call is authenticated; a call that is not "
                                          "gets 401 and nothing is stored).")
    max_body: int = Field(1024 * 1024, gt=0, description="Largest body accepted (1MiB, 256kB ...): larger gets 413.")

    @field_validator("max_body", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        return size_bytes(value)


class WebhookSourceConfig(BaseModel):
    """The keys of a webhook source: the path the partner posts to, and where the delivery id is.

    The delivery id is what makes a retried delivery a duplicate: the hub's ``id:`` key (a path in the payload)
    when set, else the header *delivery_header* (X-GitHub-Delivery, X-Delivery-Id ...), else the SHA-256 of
    the body."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="The URL path the partner posts to (e.g. /hooks/payments).")
    delivery_header: str | None = Field(None, description="The header holding the delivery id.")
    type_header: str | None = Field(None, description="The header naming the event type (X-GitHub-Event ...).")
    key_header: str | None = Field(None, description="The header holding the event's key, if any.")

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not re.fullmatch(r"/[A-Za-z0-9._~\-/]*", value) or "//" in value or value.endswith("/"):
            raise ValueError(f"expected an absolute URL path such as /hooks/payments, got {value!r}")
        if value in RESERVED_PATHS or value.startswith(("/runs", "/flows")):
            raise ValueError(f"{value} is one of hub serve's own paths ({', '.join(RESERVED_PATHS)}, /runs, "
                             "/flows/<flow>/run)")
        return value


#: Paths ``hub serve`` answers itself.
RESERVED_PATHS = ("/", "/health", "/openapi.json", "/runs")
