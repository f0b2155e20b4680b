"""Webhooks: partners calling the hub (``hub serve``). Configuration models and the checks that a call is
authentic (HMAC signatures in the GitHub and Stripe styles, API keys, OAuth2 bearer JWTs against a JWKS).
No server here: :mod:`hub.serve` is the ASGI application; this package never imports Dagster."""

from typing import TYPE_CHECKING

from adapters.webhook.config import (
    RESERVED_PATHS,
    ApiKeyAuth,
    HmacAuth,
    JwtAuth,
    WebhookSourceConfig,
    WebhookSystemConfig,
    size_bytes,
)
from hub.runtime.lazy import lazy

if TYPE_CHECKING:
    from adapters.webhook.auth import (
        AuthUnavailable,
        SeenSignatures,
        Unauthorized,
        Verified,
        Verifier,
        sign_github,
        sign_stripe,
        verifier,
    )
    from adapters.webhook.receiver import Received, WebhookCaller, WebhookReceiver

__all__ = [
    "RESERVED_PATHS",
    "ApiKeyAuth",
    "AuthUnavailable",
    "HmacAuth",
    "JwtAuth",
    "Received",
    "SeenSignatures",
    "Unauthorized",
    "Verified",
    "Verifier",
    "WebhookCaller",
    "WebhookReceiver",
    "WebhookSourceConfig",
    "WebhookSystemConfig",
    "sign_github",
    "sign_stripe",
    "size_bytes",
    "verifier",
]

#: Clients load on first use (hub.runtime.lazy): the registry imports only the models.
__getattr__ = lazy(__name__, {
    "AuthUnavailable": "adapters.webhook.auth",
    "SeenSignatures": "adapters.webhook.auth",
    "Unauthorized": "adapters.webhook.auth",
    "Verified": "adapters.webhook.auth",
    "Verifier": "adapters.webhook.auth",
    "sign_github": "adapters.webhook.auth",
    "sign_stripe": "adapters.webhook.auth",
    "verifier": "adapters.webhook.auth",
    "Received": "adapters.webhook.receiver",
    "WebhookCaller": "adapters.webhook.receiver",
    "WebhookReceiver": "adapters.webhook.receiver",
})
