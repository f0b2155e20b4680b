"""Secret resolution and masking.

Specs reference secrets as ``${VAR}`` (or ``${VAR:-default}``); they are resolved from the environment
only when a system is actually used, so loading definitions never needs credentials. Every resolved
secret value is registered here, and :func:`mask` replaces any registered value (and credentials in
URLs) before text reaches a log, an exception or Dagster metadata.

Masking looks for more than the exact value: a library that fails on a secret prints its ``repr`` (httpx's
``Illegal header value b'Bearer tok\\r'``), a JSON body carries it escaped, a URL percent-encoded, an HTTP
Basic header base64-encoded. Every registered secret is therefore masked in each of those forms, with and
without surrounding whitespace. Values holding control characters are refused when they are resolved,
naming the variable and never the value: a token ending in ``\\r`` (a ``.env`` file written on Windows)
is a mistake, and a header-injection attempt at worst.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import threading
import unicodedata
from collections.abc import Collection, Mapping
from typing import Annotated, Any, TypeVar, get_args, get_origin
from urllib.parse import parse_qsl, quote, quote_plus, urlencode, urlsplit, urlunsplit

from pydantic import BaseModel

from hub.errors import SecretError

_Model = TypeVar("_Model", bound=BaseModel)

_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_MASK = "***"
_lock = threading.Lock()
_known: set[str] = set()
_pattern: re.Pattern[str] | None = None  # every form of every known secret, longest first
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
        bad = _control_character(got)
        if bad is not None:
            raise SecretError(f"{field}: environment variable {name} holds a control character ({bad}); secrets "
                              "and addresses must be printable — a Windows line ending (\\r) in a .env file is "
                              "the usual cause. The value is not shown.")
        if secret:
            register(got)
        return got

    return _REF.sub(sub, value)


class _Address:
    """The marker of :data:`Address` (one instance, :data:`ADDRESS`)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "ADDRESS"


#: Marks a config field whose resolved value is an address, not a credential, so it stays readable in logs
#: and metadata: ``base_url: Address``, ``port: Annotated[int | str, ADDRESS]``. Every protocol declares this
#: on its own config models (a new protocol needs no edit here). A reference inside an address is still a
#: credential where a URL keeps credentials: its user info (``postgresql://app:${DB_PASSWORD}@db/erp``) and its
#: query string (``?token=${T}``) — see :func:`_credential_references`. Fields not marked are secrets: a
#: ``key`` names API keys and private keys.
ADDRESS = _Address()
Address = Annotated[str, ADDRESS]
_INDEX = re.compile(r"\[\d+\]$")
_addresses: dict[type[BaseModel], frozenset[str]] = {}


def address_fields(model: type[BaseModel]) -> frozenset[str]:
    """The names (aliases where set) of the fields marked :data:`ADDRESS` anywhere in *model* and the models
    its fields hold. A name that is an address in one place and unmarked text in another is left out: when in
    doubt, a value is a secret."""
    found = _addresses.get(model)
    if found is None:
        marked: set[str] = set()
        unmarked: set[str] = set()
        _walk_model(model, marked, unmarked, set())
        found = _addresses[model] = frozenset(marked - unmarked)
    return found


def _walk_model(model: type[BaseModel], marked: set[str], unmarked: set[str], seen: set[type]) -> None:
    if model in seen:
        return
    seen.add(model)
    for name, info in model.model_fields.items():
        key = info.alias or name
        models: list[type[BaseModel]] = []
        if ADDRESS in info.metadata or _annotation_marked(info.annotation, models):
            marked.add(key)
        else:
            unmarked.add(key)
        for inner in models:
            _walk_model(inner, marked, unmarked, seen)


def _annotation_marked(annotation: Any, models: list[type[BaseModel]]) -> bool:
    """Whether *annotation* (``Address | None``, ``list[Address]`` ...) carries the marker; collects the models
    it holds into *models* on the way."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        models.append(annotation)
        return False
    if get_origin(annotation) is Annotated:
        args = get_args(annotation)
        return ADDRESS in args[1:] or _annotation_marked(args[0], models)
    return any([_annotation_marked(arg, models) for arg in get_args(annotation)])


def _leaf(field: str) -> str:
    """The field's own name: ``systems.bus.nats.servers[0]`` -> ``servers``."""
    return _INDEX.sub("", field.rsplit(".", 1)[-1])


def _credential_references(template: str) -> list[str]:
    """Variables referenced where a URL carries credentials: between ``scheme://`` and the ``@`` that ends the
    user info, or in the query string. An address field's other references (host, port, path) stay readable."""
    names = []
    for match in _REF.finditer(template):
        before, after = template[:match.start()], template[match.end():]
        scheme_at = before.rfind("://")
        in_userinfo = scheme_at >= 0 and "@" in after.split("/", 1)[0] and not any(
            c in before[scheme_at + 3:] for c in "/@?#")
        if in_userinfo or "?" in before:
            names.append(match.group(1))
    return names


def resolve_tree(value: Any, *, field: str, addresses: Collection[str] = frozenset()) -> Any:
    """Resolve references in every string of a nested dict/list structure.

    Resolved values are registered as secrets unless the field is one of *addresses* (field names, from
    :func:`address_fields` of the structure's model).
    """
    if isinstance(value, str):
        if not has_reference(value):
            return value
        if _leaf(field) not in addresses:
            return resolve(value, field=field)
        resolved = resolve(value, field=field, secret=False)
        for name in _credential_references(value):
            got = os.environ.get(name)
            if got:
                register(got)
        return resolved
    if isinstance(value, dict):
        return {k: resolve_tree(v, field=f"{field}.{k}", addresses=addresses) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_tree(v, field=f"{field}[{i}]", addresses=addresses) for i, v in enumerate(value)]
    return value


def resolve_config(config: _Model, *, field: str) -> _Model:
    """*config* with every ``${VAR}`` reference resolved, validated again by its own model.

    The one place that dumps a system's config, resolves its secrets (registering them for masking) and
    validates the result, so every protocol, contract and agent call resolves a system the same way. *field*
    names the block in messages, e.g. ``systems.crm.rest``."""
    raw = resolve_tree(config.model_dump(by_alias=True, exclude_none=True), field=field,
                       addresses=address_fields(type(config)))
    return type(config).model_validate(raw)


def register_referenced(value: Any, *, field: str = "", addresses: Collection[str] = frozenset()) -> None:
    """Register, for masking, every secret a nested structure refers to that the environment holds, without
    failing on the ones it does not: for commands that only show stored data (``hub show``), which must
    mask the credentials of the spec's systems but need none of them to work."""
    if isinstance(value, str):
        names = [m.group(1) for m in _REF.finditer(value)] if _leaf(field) not in addresses \
            else _credential_references(value)
        for name in names:
            got = os.environ.get(name)
            if got:
                register(got)
    elif isinstance(value, dict):
        for k, v in value.items():
            register_referenced(v, field=f"{field}.{k}", addresses=addresses)
    elif isinstance(value, list):
        for v in value:
            register_referenced(v, field=field, addresses=addresses)


def _control_character(value: str) -> str | None:
    """The first control character of *value*, escaped (``\\r``, ``\\x00``), or None."""
    for ch in value:
        if unicodedata.category(ch) == "Cc":
            return repr(ch)[1:-1]
    return None


#: Forms shorter than this are not masked (they would hide ordinary words); base64 cores need more, as a
#: short one matches by chance inside unrelated base64 or hexadecimal text.
_MIN_FORM, _MIN_BASE64 = 4, 8


def _base64_cores(raw: bytes) -> set[str]:
    """Substrings that every base64 encoding of a text holding *raw* contains, whatever its offset.

    Base64 encodes 3 bytes as 4 characters, so *raw* looks different at each of the three byte offsets:
    for each, encode it behind 0-2 filler bytes and keep only the characters that depend on *raw* alone
    (HTTP Basic encodes ``user:password``: the password starts wherever the user name ends)."""
    cores: set[str] = set()
    for lead in range(3):
        encoded = base64.b64encode(b"\0" * lead + raw).decode("ascii")
        start = -(-lead * 4 // 3) if lead else 0  # characters touched by the filler
        usable = (lead + len(raw)) // 3 * 4  # characters of complete groups (the rest depend on what follows)
        core = encoded[start:usable]
        if len(core) >= _MIN_BASE64:
            cores.add(core)
            cores.add(core.replace("+", "-").replace("/", "_"))  # the URL-safe alphabet
    return cores


def forms(secret: str) -> set[str]:
    """Every form in which *secret* may reach a message: itself and stripped of surrounding whitespace; its
    ``repr`` (of the text and of its UTF-8 bytes), JSON string and URL encodings; base64 at any offset; and
    the same for its UTF-8 bytes misread as Latin-1."""
    out: set[str] = set()
    for value in {secret, secret.strip()}:
        if not value:
            continue
        raw = value.encode("utf-8", "surrogatepass")
        # a peer that reads the UTF-8 bytes as Latin-1 (HTTP header values) echoes them as mojibake
        for text in {value, raw.decode("latin-1")}:
            out |= {text, repr(text)[1:-1], json.dumps(text)[1:-1], json.dumps(text, ensure_ascii=False)[1:-1]}
        out |= {repr(raw)[2:-1], quote(value, safe=""), quote_plus(value, safe=""), quote(value)}
        out |= _base64_cores(raw)
    return {f for f in out if len(f) >= _MIN_FORM}


def register(secret: str) -> None:
    """Remember *secret* so :func:`mask` hides it, in every form :func:`forms` lists, from now on. Very short
    values are not worth masking."""
    global _pattern
    if secret and len(secret.strip()) >= 4:
        with _lock:
            if secret in _known:
                return
            _known.add(secret)
            every = set().union(*(forms(s) for s in _known))
            _pattern = re.compile("|".join(re.escape(f) for f in sorted(every, key=len, reverse=True)))
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
    """Hide every registered secret, in any of its forms, in *text*."""
    pattern = _pattern
    return text if pattern is None else pattern.sub(_MASK, text)


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
    if not netloc and url.startswith(f"{parts.scheme}://"):  # duckdb:///abs/path: urlunsplit drops the "//"
        shown = f"{parts.scheme}://{parts.path}" + (f"?{query}" if query else "") + \
            (f"#{parts.fragment}" if parts.fragment else "")
    else:
        shown = urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    return mask(shown)
