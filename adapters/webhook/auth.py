"""Checking that a webhook call comes from its partner: HMAC signatures, API keys, bearer JWTs.

Every check runs on the raw body before anything is parsed or stored. A refusal is
:class:`Unauthorized` (the server answers 401 and stores nothing); a check that cannot be made now (the
issuer's key set is unreachable) is :class:`AuthUnavailable` (503: the partner retries later).

Replays: a Stripe-style signature covers a timestamp, and one further than ``tolerance`` from now is stale.
Every verified signature is remembered (``remember``, bounded in number) with the delivery id it came with:
the same signature again with the same delivery id is the partner retrying (the store drops it as a
duplicate); with another delivery id it is someone replaying a captured call under a fresh id, and refused.
The memory is the serving process's: a restarted server forgets it, which the delivery-id idempotence of the
store covers for honest retries and the timestamp tolerance bounds for Stripe-style signatures.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import jwt

from adapters._http import OriginPolicy
from adapters.webhook.config import ApiKeyAuth, HmacAuth, JwtAuth
from hub.errors import AdapterError, AuthUnavailable, Unauthorized


@dataclass(frozen=True)
class Verified:
    """Who called (a key's index, the token's subject) and the signature to remember against replays."""

    subject: str
    signature: str | None = None


class SeenSignatures:
    """Signatures verified lately and the delivery id each came with (see the module notes)."""

    def __init__(self, ttl: float, capacity: int = 100_000) -> None:
        self.ttl, self.capacity = ttl, capacity
        self._seen: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def claim(self, signature: str, delivery_id: str, now: float | None = None) -> None:
        """Record *signature* for *delivery_id*; :class:`Unauthorized` when it was seen with another id."""
        now = time.monotonic() if now is None else now
        while self._seen:
            oldest, (_, expires) = next(iter(self._seen.items()))
            if expires > now and len(self._seen) < self.capacity:
                break
            del self._seen[oldest]
        known = self._seen.get(signature)
        if known is not None and known[0] != delivery_id:
            raise Unauthorized("replayed signature: it was already used for another delivery")
        self._seen[signature] = (delivery_id, now + self.ttl)
        self._seen.move_to_end(signature)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None


class HmacVerifier:
    def __init__(self, auth: HmacAuth) -> None:
        self.auth = auth
        self.seen = SeenSignatures(max(auth.remember, auth.tolerance))
        self._keys = [s.encode() for s in auth.all_secrets]

    def _matches(self, signed: bytes, given: str) -> bool:
        return any(hmac.compare_digest(hmac.new(k, signed, hashlib.sha256).hexdigest(), given.strip().lower())
                   for k in self._keys)

    async def verify(self, headers: Mapping[str, str], body: bytes, now: float | None = None) -> Verified:
        name = self.auth.signature_header
        value = _header(headers, name)
        if not value:
            raise Unauthorized(f"missing signature header {name}")
        if self.auth.style == "github":
            scheme, _, digest = value.partition("=")
            if scheme.strip().lower() != "sha256" or not digest:
                raise Unauthorized(f"{name}: expected sha256=<hex digest>")
            if not self._matches(body, digest):
                raise Unauthorized(f"{name}: signature does not match the body")
            return Verified("hmac", digest.strip().lower())
        parts: dict[str, list[str]] = {}
        for item in value.split(","):
            k, _, v = item.strip().partition("=")
            parts.setdefault(k, []).append(v)
        stamp, sigs = (parts.get("t") or [""])[0], parts.get("v1") or []
        if not stamp.isdigit() or not sigs:
            raise Unauthorized(f"{name}: expected t=<unix time>,v1=<hex digest>")
        now = time.time() if now is None else now
        if abs(now - int(stamp)) > self.auth.tolerance:
            raise Unauthorized(f"{name}: timestamp {stamp} is outside the tolerance of {self.auth.tolerance:.0f}s "
                               "(stale or replayed)")
        signed = stamp.encode() + b"." + body
        match = next((s for s in sigs if self._matches(signed, s)), None)
        if match is None:
            raise Unauthorized(f"{name}: signature does not match the body")
        return Verified("hmac", f"{stamp}:{match.strip().lower()}")

    def claim(self, verified: Verified, delivery_id: str) -> None:
        if verified.signature is not None:
            self.seen.claim(verified.signature, delivery_id)


class ApiKeyVerifier:
    def __init__(self, auth: ApiKeyAuth) -> None:
        self.auth = auth
        self._keys = [k.encode() for k in auth.all_keys]

    async def verify(self, headers: Mapping[str, str], body: bytes, now: float | None = None) -> Verified:
        given = _header(headers, self.auth.header)
        if not given:
            raise Unauthorized(f"missing API key header {self.auth.header}")
        for i, key in enumerate(self._keys):
            if hmac.compare_digest(key, given.encode()):
                return Verified(f"api_key[{i}]")
        raise Unauthorized(f"{self.auth.header}: unknown API key")

    def claim(self, verified: Verified, delivery_id: str) -> None:
        return None


class JwksCache:
    """The issuer's key set, fetched with httpx under an origin policy (requests, redirects included, go to the
    JWKS URL's origin only), cached for *ttl* seconds; an unknown key id refetches at most every 30 s."""

    REFETCH_AFTER = 30.0

    def __init__(self, url: str, ttl: float, *, system: str = "webhook", timeout: float = 10.0) -> None:
        self.url, self.ttl, self.timeout = url, ttl, timeout
        self.policy = OriginPolicy.of(system, [url])
        self._keys: dict[str, Any] = {}
        self._fetched = 0.0
        self._lock = asyncio.Lock()

    async def _fetch(self) -> None:
        try:
            async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=True,
                                         event_hooks=self.policy.async_hooks()) as client:
                response = await client.get(self.url)
                response.raise_for_status()
                keyset = jwt.PyJWKSet.from_dict(response.json())
        except (httpx.HTTPError, ValueError, jwt.PyJWKSetError, AdapterError) as exc:
            raise AuthUnavailable(f"the key set {self.url} cannot be read: {type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
        self._keys = {k.key_id or "": k for k in keyset.keys}
        self._fetched = time.monotonic()

    async def key(self, kid: str | None) -> Any:
        async with self._lock:
            age = time.monotonic() - self._fetched
            if not self._fetched or age > self.ttl or (kid not in self._keys and age > self.REFETCH_AFTER):
                await self._fetch()
        found = self._keys.get(kid or "")
        if found is None and kid is None and len(self._keys) == 1:
            found = next(iter(self._keys.values()))
        if found is None:
            raise Unauthorized(f"the token's key id {kid!r} is not in the issuer's key set")
        return found


class JwtVerifier:
    def __init__(self, auth: JwtAuth, *, system: str = "webhook") -> None:
        self.auth = auth
        self.jwks = JwksCache(auth.jwks_url, auth.cache, system=system)

    async def verify(self, headers: Mapping[str, str], body: bytes, now: float | None = None) -> Verified:
        value = _header(headers, "Authorization") or ""
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("missing bearer token (Authorization: Bearer <JWT>)")
        token = token.strip()
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"malformed token: {exc}") from None
        if header.get("alg") not in self.auth.algorithms:
            raise Unauthorized(f"token algorithm {header.get('alg')!r} is not accepted "
                               f"({', '.join(self.auth.algorithms)})")
        key = await self.jwks.key(header.get("kid"))
        try:
            claims = jwt.decode(token, key.key, algorithms=list(self.auth.algorithms), audience=self.auth.audience,
                                issuer=self.auth.issuer, leeway=self.auth.leeway,
                                options={"require": ["exp", "iss", "aud"]})
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"token refused: {exc}") from None
        if self.auth.scopes:
            granted = claims.get("scope", claims.get("scp", ""))
            granted = set(granted.split() if isinstance(granted, str) else granted or [])
            missing = [s for s in self.auth.scopes if s not in granted]
            if missing:
                raise Unauthorized(f"token lacks scope(s) {', '.join(missing)}")
        return Verified(str(claims.get("sub", "jwt")))

    def claim(self, verified: Verified, delivery_id: str) -> None:
        return None


Verifier = HmacVerifier | ApiKeyVerifier | JwtVerifier


def verifier(auth: HmacAuth | ApiKeyAuth | JwtAuth, *, system: str = "webhook") -> Verifier:
    """The verifier of a system's resolved ``auth`` block (one per system, kept for the server's life: it holds
    the seen signatures and the cached key set)."""
    if isinstance(auth, HmacAuth):
        return HmacVerifier(auth)
    if isinstance(auth, ApiKeyAuth):
        return ApiKeyVerifier(auth)
    return JwtVerifier(auth, system=system)


def sign_github(secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value of *body* (partners, tests, the demo bank)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def sign_stripe(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The ``Stripe-Signature`` value of *body* at *timestamp* (default now)."""
    stamp = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={digest}"
