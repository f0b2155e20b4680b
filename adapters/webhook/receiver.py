"""One webhook source as ``hub serve`` sees it: its path, body limit, authentication and the message a call
becomes (in the :class:`adapters.messages.Message` shape every stream source's events have)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from adapters._http import credential_header
from adapters.messages import Message
from adapters.webhook.auth import Verified, Verifier
from adapters.webhook.config import HmacAuth, JwtAuth, WebhookSourceConfig, WebhookSystemConfig

#: Headers never stored with an event: the transport's own (credentials are dropped by name and value too).
_TRANSPORT = {"host", "content-length", "connection", "transfer-encoding", "keep-alive", "expect", "te",
              "upgrade", "proxy-authorization", "forwarded", "x-forwarded-for", "x-real-ip"}


@dataclass
class Received:
    """An authenticated call: the message to store and what authenticated it (for the replay memory)."""

    message: Message
    verified: Verified


class WebhookCaller:
    """Authenticates the calls one webhook system makes to the hub outside a source (a flow's HTTP trigger):
    the same checks as its webhook sources, with nothing stored."""

    def __init__(self, system: WebhookSystemConfig, verifier: Verifier, *, name: str) -> None:
        self.system, self.verifier, self.name = system, verifier, name

    @property
    def max_body(self) -> int:
        return self.system.max_body

    @property
    def auth_kind(self) -> str:
        return self.system.auth.type

    def security_scheme(self) -> dict[str, Any]:
        """The OpenAPI security scheme of the system's calls."""
        return security_scheme(self.system)

    async def verify(self, headers: Mapping[str, str], body: bytes) -> Verified:
        """Who called; :class:`hub.errors.Unauthorized` (or ``AuthUnavailable``) otherwise."""
        return await self.verifier.verify(headers, body)

    def claim(self, verified: Verified, request_id: str) -> None:
        """Remember the call's signature with *request_id*; the same signature with another id is a replay."""
        self.verifier.claim(verified, request_id)


def security_scheme(system: WebhookSystemConfig) -> dict[str, Any]:
    """The OpenAPI security scheme of a webhook system's calls (``hub serve``'s /openapi.json)."""
    auth = system.auth
    if isinstance(auth, JwtAuth):
        return {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                "description": f"An access token of {auth.issuer} for {auth.audience}."}
    if isinstance(auth, HmacAuth):
        return {"type": "apiKey", "in": "header", "name": auth.signature_header,
                "description": f"HMAC-SHA256 signature of the body ({auth.style} style)."}
    return {"type": "apiKey", "in": "header", "name": auth.header, "description": "API key."}


class WebhookReceiver(WebhookCaller):
    """Authenticates calls to one webhook source (as :class:`WebhookCaller` does for its system) and turns them
    into messages."""

    def __init__(self, system: WebhookSystemConfig, source: WebhookSourceConfig, verifier: Verifier, *,
                 name: str) -> None:
        super().__init__(system, verifier, name=name)
        self.source = source

    @property
    def path(self) -> str:
        return self.source.path

    async def receive(self, headers: Mapping[str, str], body: bytes) -> Received:
        """The message of an authentic call; :class:`hub.errors.Unauthorized` otherwise (nothing is stored),
        :class:`hub.errors.AuthUnavailable` when the check cannot be made now."""
        verified = await self.verifier.verify(headers, body)
        lowered = {k.lower(): v for k, v in headers.items()}

        def pick(name: str | None) -> str | None:
            return lowered.get(name.lower()) if name else None

        kept = {k: v for k, v in lowered.items() if k not in _TRANSPORT and not credential_header(k, v)}
        message = Message(payload=body, stream=self.source.path, id=pick(self.source.delivery_header) or None,
                          key=pick(self.source.key_header), type=pick(self.source.type_header), headers=kept,
                          timestamp=datetime.now(UTC))
        return Received(message, verified)

