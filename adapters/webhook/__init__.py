"""Webhooks: partners calling the hub (``hub serve``). Configuration models and the checks that a call is
authentic (HMAC signatures in the GitHub and Stripe styles, API keys, OAuth2 bearer JWTs against a JWKS).
No server here: :mod:`hub.serve` is the ASGI application; this package never imports Dagster."""

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
from adapters.webhook.config import (
    RESERVED_PATHS,
    ApiKeyAuth,
    HmacAuth,
    JwtAuth,
    WebhookSourceConfig,
    WebhookSystemConfig,
    size_bytes,
)
from adapters.webhook.receiver import Received, WebhookReceiver

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
    "WebhookReceiver",
    "WebhookSourceConfig",
    "WebhookSystemConfig",
    "sign_github",
    "sign_stripe",
    "size_bytes",
    "verifier",
]
