"""What the HTTP-based adapters (REST, SOAP) share: the broken-body signal and the final error after
retries, so a transport failure reads the same whichever protocol ran over it; and the origin policy that
keeps credentials with the system they belong to."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import httpx

from hub.errors import AdapterError, ForeignOriginError, ResponseFormatError, TransportError
from hub.runtime.secrets import SENSITIVE_PARAMS, mask, mask_url


class BrokenBody(Exception):
    """The status line and headers arrived but the connection broke while the body was read.

    Retried like a transport error; reported with the status and how much of the body arrived."""

    def __init__(self, status: int, received: int, declared: str | None, cause: str) -> None:
        super().__init__(cause)
        self.status, self.received, self.declared, self.cause = status, received, declared, cause


def gave_up(what: str, exc: BrokenBody | httpx.TransportError, attempts: int) -> AdapterError:
    """The error to raise once retries of *what* (e.g. ``GET https://...``) are exhausted."""
    if isinstance(exc, BrokenBody):
        return ResponseFormatError(
            f"{what}: HTTP {exc.status} body truncated: the connection broke after {exc.received} of "
            f"{exc.declared or 'an unknown number of'} bytes ({exc.cause}); gave up after {attempts} attempts")
    error = TransportError(f"{what}: {type(exc).__name__}: {mask(str(exc)) or 'connection failed'} "
                           f"(gave up after {attempts} attempts)")
    # no connection was made, so no request left the host (a write may be sent again safely)
    error.not_sent = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))
    return error


# --- origin pinning ------------------------------------------------------------------------------------

#: The port an http(s) URL means when it names none (shared with the WSDL import rule).
DEFAULT_PORTS = {"http": 80, "https": 443}
#: Header names that carry credentials whatever the spec calls them (lower case, matched as substrings).
_CREDENTIAL_HEADER_WORDS = ("auth", "token", "key", "secret", "cookie", "session", "password", "signature")


def origin(url: str | httpx.URL) -> str:
    """``scheme://host:port`` of *url*, the default port written out, so equal origins compare equal."""
    u = httpx.URL(str(url)) if not isinstance(url, httpx.URL) else url
    scheme = u.scheme.lower()
    port = u.port or DEFAULT_PORTS.get(scheme, 0)
    return f"{scheme}://{u.host.lower()}:{port}"


def credential_header(name: str, value: str) -> bool:
    """True when the header *name*: *value* carries a credential: a registered secret (every value written as
    ``${VAR}`` in a spec is one) or a name that says so (Authorization, X-API-Key, Cookie, ...)."""
    lowered = name.lower()
    return mask(value) != value or any(word in lowered for word in _CREDENTIAL_HEADER_WORDS)


@dataclass(frozen=True)
class OriginPolicy:
    """Where a system's requests may go.

    *trusted* origins are the system's own (its base URL, its OAuth2 token URL, addresses the spec names):
    requests there carry the credentials. *allowed* origins are the extra hosts a spec lists on purpose
    (``allowed_origins:``, e.g. a CDN that serves report pages): requests there are sent with every
    credential removed (auth headers, secret headers, API keys in the query). Any other origin is refused
    before a byte is sent, whichever way the URL arrived (a ``next`` link, a ``Link`` header, a redirect,
    an address in a WSDL), so a partner — or an attacker who controls one response — cannot collect the
    token by pointing the hub elsewhere."""

    system: str
    trusted: frozenset[str]
    allowed: frozenset[str] = frozenset()
    secret_params: frozenset[str] = frozenset()

    @classmethod
    def of(cls, system: str, trusted: Iterable[str | None], allowed: Iterable[str] = (),
           secret_params: Iterable[str] = ()) -> OriginPolicy:
        """A policy from URLs (any URL of an origin will do; None entries are skipped)."""
        return cls(system, frozenset(origin(u) for u in trusted if u),
                   frozenset(origin(u if "://" in u else f"https://{u}") for u in allowed),
                   frozenset(p.lower() for p in secret_params))

    def check(self, request: httpx.Request) -> None:
        """Let *request* go as it is (trusted origin), strip its credentials (allowed origin), or refuse it."""
        where = origin(request.url)
        if where in self.trusted:
            return
        if where in self.allowed:
            self._strip(request)
            return
        raise ForeignOriginError(
            f"{self.system}: refused to send {request.method} {mask_url(str(request.url))}: {where} is not the "
            f"system's origin ({', '.join(sorted(self.trusted))}). The URL came from the partner (a pagination "
            "link, a redirect or an address in a response); credentials are never sent to another origin. If "
            "that host is legitimate, list it under the system's allowed_origins (it is then called without "
            "credentials).")

    def _strip(self, request: httpx.Request) -> None:
        for name in [n for n, v in request.headers.items() if credential_header(n, v)]:
            del request.headers[name]
        params = request.url.params
        drop = [k for k, v in params.multi_items()
                if k.lower() in SENSITIVE_PARAMS or k.lower() in self.secret_params or mask(v) != v]
        url = request.url
        for key in drop:
            url = url.copy_remove_param(key)
        request.url = url
        if mask(str(url)) != str(url):  # a secret in the path itself: never send it
            raise ForeignOriginError(f"{self.system}: refused to send a request to {mask_url(str(url))}: the URL "
                                     "holds a credential and its origin is not the system's")

    def hooks(self) -> dict[str, list[Callable[[httpx.Request], None]]]:
        """``event_hooks`` for an ``httpx.Client``: every request, redirects included, passes :meth:`check`."""
        return {"request": [self.check]}

    def async_hooks(self) -> dict[str, list[Callable[[httpx.Request], Awaitable[None]]]]:
        """The same for an ``httpx.AsyncClient``."""

        async def check(request: httpx.Request) -> None:
            self.check(request)

        return {"request": [check]}
