"""Validation of an action's parameters against its full input JSON Schema, before anything is sent.

The guard (:mod:`hub.agent.guard`) calls :func:`problems` for every action of every protocol, so a call with
``{"page": "abc"}`` or ``{"page": 0}`` against ``{"type": "integer", "minimum": 1}`` is refused by the hub
instead of being sent and failing at the partner with a 400 (or, worse, being accepted and misread).

The schema is checked with :mod:`jsonschema`: the draft the schema declares (``$schema``), else Draft 2020-12,
with a format checker (``date``, ``email``, ``uuid``, ``ipv4``/``ipv6``, ``regex`` from jsonschema; ``date-time``
added here, as jsonschema's own needs an optional package). Every problem is reported at once, each naming
the parameter's path and what was expected. Values of secret-looking parameters and registered secrets never
appear in the messages.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from jsonschema import FormatChecker
from jsonschema.exceptions import SchemaError, ValidationError, best_match
from jsonschema.protocols import Validator
from jsonschema.validators import Draft202012Validator, validator_for

from hub.runtime.secrets import mask

_SECRET_KEY = re.compile(r"pass(word)?|secret|token|api[_-]?key|authorization|credential|private", re.I)
_MAX_VALUE = 80  # characters of a value shown in a message


def _is_datetime(value: object) -> bool:
    """RFC 3339 / ISO 8601 date and time (``2024-01-01T00:00:00Z``, with or without an offset): a date alone is
    not a date-time. Lenient on the offset because SOAP's xs:dateTime allows none."""
    if not isinstance(value, str):
        return True  # formats apply to strings only; the type keyword checks the rest
    if len(value) < 16 or value[10] not in "Tt ":
        raise ValueError(f"{value!r} is not an ISO 8601 date-time (YYYY-MM-DDTHH:MM[:SS][offset])")
    datetime.fromisoformat(value.replace("z", "Z"))
    return True


_CHECKERS: dict[str, FormatChecker] = {}


def format_checker(validator: type[Validator]) -> FormatChecker:
    """The formats the draft defines that jsonschema can check, plus ``date-time`` (see :func:`_is_datetime`);
    one per draft, built once."""
    key = validator.META_SCHEMA.get("$schema", validator.__name__)
    checker = _CHECKERS.get(key)
    if checker is None:
        checker = FormatChecker(formats=list(validator.FORMAT_CHECKER.checkers))
        if "date-time" not in checker.checkers:
            checker.checks("date-time", raises=ValueError)(_is_datetime)
        _CHECKERS[key] = checker
    return checker


def closed(schema: dict[str, Any]) -> dict[str, Any]:
    """*schema* refusing parameters it does not name (``additionalProperties: false`` at the top level)."""
    return {**schema, "additionalProperties": False}


def problems(schema: dict[str, Any], params: dict[str, Any]) -> list[str]:
    """Every way *params* break *schema*, one line each (``page: 'abc' is not of type 'integer'``), in parameter
    order; empty when they are valid. A schema that is not valid JSON Schema is a problem too (named), as the
    call could not be checked."""
    return checker(schema)(params)


def checker(schema: dict[str, Any]) -> Callable[[dict[str, Any]], list[str]]:
    """:func:`problems` for one *schema*, its validator looked up once: a flow checks every request of an action
    against the same schema, and finding the cached validator (by the schema's canonical JSON) costs more than
    checking a small request."""
    try:
        text = json.dumps(schema, sort_keys=True, default=str)
    except (TypeError, ValueError):
        text = None
    validator = _validator(text) if text is not None else _build(schema)

    def check(params: dict[str, Any]) -> list[str]:
        if isinstance(validator, str):
            return [validator]
        errors = sorted(validator.iter_errors(params), key=lambda e: [str(p) for p in e.absolute_path])
        out: list[str] = []
        for error in errors:
            out.extend(_describe(error, schema))
        return out

    return check


@functools.lru_cache(maxsize=512)
def _validator(schema_json: str) -> Validator | str:
    """The checked validator of a schema (by its canonical JSON): checking a schema costs milliseconds, and
    flows validate every request of an action against the same one."""
    return _build(json.loads(schema_json))


def _build(schema: dict[str, Any]) -> Validator | str:
    cls: type[Validator] = validator_for(schema, default=Draft202012Validator)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        return (f"the action's input schema is not valid JSON Schema at {where}: {exc.message}; the call cannot "
                "be checked, so it is not sent")
    return cls(schema, format_checker=format_checker(cls))


def _path(parts: Iterable[Any]) -> str:
    """``items[2].sku`` from ('items', 2, 'sku')."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _names(schema: Any) -> str:
    props = schema.get("properties") if isinstance(schema, dict) else None
    return ", ".join(props) if props else "none"


def _subschema(root: dict[str, Any], error: ValidationError) -> Any:
    """The schema the failing keyword belongs to (for the names of its properties)."""
    node: Any = root
    for part in list(error.absolute_schema_path)[:-1]:
        if isinstance(node, (dict, list)):
            try:
                node = node[part]
            except (KeyError, IndexError, TypeError):
                return {}
    return node


def _secret_path(parts: Iterable[Any]) -> bool:
    return any(isinstance(p, str) and _SECRET_KEY.search(p) for p in parts)


def _describe(error: ValidationError, root: dict[str, Any]) -> list[str]:
    """One or more lines for one jsonschema error, without secret values."""
    parts = list(error.absolute_path)
    here = _path(parts)
    prefix = f"{here}: " if here else ""
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        schema = _subschema(root, error)
        known = set((schema.get("properties") or {}) if isinstance(schema, dict) else {})
        patterns = list((schema.get("patternProperties") or {}) if isinstance(schema, dict) else {})
        extra = [k for k in error.instance if k not in known and not any(re.search(p, k) for p in patterns)]
        return [f"{_path([*parts, k])}: unknown parameter (expected one of: {_names(schema)})" for k in extra]
    if error.validator == "required":
        missing = re.match(r"'(.+)' is a required property", error.message)
        name = missing.group(1) if missing else error.message
        return [f"{_path([*parts, name])}: required parameter is missing "
                f"(parameters: {_names(_subschema(root, error))})"]
    message = error.message
    if error.context:  # anyOf / oneOf: the alternatives' own errors say more than "not valid under any of ..."
        # a nillable value (anyOf [schema, {type: null}], as SOAP's nillable elements are described) that is
        # not null failed the one real alternative: report that alternative's errors as if it stood alone
        real = [e for e in error.context if not (e.validator == "type" and e.validator_value == "null")]
        if real and len({e.relative_schema_path[0] for e in real}) == 1:
            return [line for e in real for line in _describe(e, root)]
        message += f" (closest: {best_match(real or error.context).message})"
    shown = repr(error.instance)
    if _secret_path(parts):
        message = message.replace(shown, "'***'")
    elif len(shown) > _MAX_VALUE:
        message = message.replace(shown, shown[:_MAX_VALUE] + "...")
    return [mask(prefix + message)]
