"""Secret resolution and masking.

Specs reference secrets as ``${VAR}`` (or ``${VAR:-default}``); they are resolved from the environment
only when a system is actually used, so loading definitions never needs credentials. Every resolved
secret value is registered here, and :func:`mask` replaces any registered value (and credentials in
URLs) before text reaches a log, an exception or Dagster metadata.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from hub.errors import SecretError

_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_MASK = "***"
_lock = threading.Lock()
_known: set[str] = set()
# Query parameters whose values are credentials whatever the spec calls them.
SENSITIVE_PARAMS = {"api_key", "apikey", "key", "token", "access_token", "password", "secret", "client_secret",
                    "signature", "sig"}


def has_reference(value: str) -> bool:
    """True when *value* contains a ``${VAR}`` reference."""
    return bool(_REF.search(value))


def referenced_vars(value: str) -> list[str]:
    """Names of the environment variables *value* refers to (without a default)."""
    return [m.group(1) for m in _REF.finditer(value) if m.group(2) is None]


def resolve(value: str, *, field: str, env: Mapping[str, str] | None = None, secret: bool = True) -> str:
    """Replace every ``${VAR}`` in *value* from the environment.

    *field* names the spec field for the error message. Resolved values are registered for masking when
    *secret* is true (the default: a value worth keeping in the environment is worth hiding).
    """
    environ = os.environ if env is None else env

    def sub(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        got = environ.get(name)
        if got is None:
            if default is not None:
                return default
            raise SecretError(f"{field}: environment variable {name} is not set (referenced as ${{{name}}})")
        if secret:
            register(got)
        return got

    return _REF.sub(sub, value)


#: Fields whose resolved values are addresses, not credentials: kept readable in logs and metadata.
NOT_SECRET_FIELDS = frozenset({"base_url", "url", "token_url", "host", "port", "path", "username", "wsdl",
                               "address", "service", "cert", "key", "openapi"})


def resolve_tree(value: Any, *, field: str) -> Any:
    """Resolve references in every string of a nested dict/list structure.

    Resolved values are registered as secrets unless the field is an address (``NOT_SECRET_FIELDS``).
    """
    if isinstance(value, str):
        if not has_reference(value):
            return value
        leaf = field.rsplit(".", 1)[-1]
        return resolve(value, field=field, secret=leaf not in NOT_SECRET_FIELDS)
    if isinstance(value, dict):
        return {k: resolve_tree(v, field=f"{field}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_tree(v, field=f"{field}[{i}]") for i, v in enumerate(value)]
    return value


def register(secret: str) -> None:
    """Remember *secret* so :func:`mask` hides it from now on. Very short values are not worth masking."""
    if secret and len(secret) >= 4:
        with _lock:
            _known.add(secret)
        _mask_log_records()


_log_factory_installed = False


def _mask_log_records() -> None:
    """From the first registered secret on, mask every log record as it is created: libraries log what the
    hub never sees (httpx logs each request's URL, with its query parameters, at INFO)."""
    global _log_factory_installed
    with _lock:
        if _log_factory_installed:
            return
        _log_factory_installed = True
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            text = record.getMessage()
        except Exception:  # a malformed record: let logging report it as it would
            return record
        masked = mask(text)
        if masked != text:
            record.msg, record.args = masked, None
        return record

    logging.setLogRecordFactory(factory)


def mask(text: str) -> str:
    """Hide every registered secret in *text*."""
    with _lock:
        known = sorted(_known, key=len, reverse=True)
    for s in known:
        if s in text:
            text = text.replace(s, _MASK)
    return text


def mask_url(url: str, extra_params: frozenset[str] | set[str] = frozenset()) -> str:
    """Mask user:password in the authority and credential-like query parameters of *url*."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return mask(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{_MASK}@{netloc.rsplit('@', 1)[1]}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        sensitive = SENSITIVE_PARAMS | {p.lower() for p in extra_params}
        query = urlencode([(k, _MASK if k.lower() in sensitive else v) for k, v in pairs], safe="*")
    return mask(urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment)))
