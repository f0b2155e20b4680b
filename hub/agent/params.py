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
from jsonschema.validators import (
    Draft6Validator,
    Draft7Validator,
    Draft201909Validator,
    Draft202012Validator,
    validator_for,
)

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
    valid = _accepting(text) if text is not None else None

    def check(params: dict[str, Any]) -> list[str]:
        if isinstance(validator, str):
            return [validator]
        if valid is not None and valid(params):
            return []
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


@functools.lru_cache(maxsize=512)
def _accepting(schema_json: str) -> Callable[[Any], bool] | None:
    """A quick yes for valid parameters of the schema (by its canonical JSON), or None: see :func:`_compile`."""
    validator = _validator(schema_json)
    if isinstance(validator, str) or type(validator) not in _DRAFTS:
        return None  # earlier drafts give some keywords other meanings (draft 4's boolean exclusiveMinimum...)
    return _compile(json.loads(schema_json), validator)


#: The drafts whose meaning of the keywords below :func:`_compile` follows.
_DRAFTS = (Draft6Validator, Draft7Validator, Draft201909Validator, Draft202012Validator)
#: Keywords :func:`_compile` knows (others that the draft defines leave the schema to jsonschema; keywords the
#: draft does not define are annotations to jsonschema, and to it).
_COMPILED = frozenset({"type", "properties", "required", "additionalProperties", "anyOf", "maxLength", "minLength",
                       "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "enum", "const", "pattern",
                       "format", "items", "minItems", "maxItems"})
_IGNORED = frozenset({"$schema", "title", "description", "default", "examples", "$comment", "deprecated",
                      "readOnly", "writeOnly"})


def _compile(schema: Any, validator: Validator, depth: int = 0) -> Callable[[Any], bool] | None:
    """A predicate true only for instances *validator* finds valid against *schema*, for the common keywords of
    actions' input schemas (see :data:`_COMPILED`), with the validator's own type checker and format checker;
    None when the schema uses anything else (``$ref``, ``oneOf``, ``patternProperties``, non-string enums...).
    It answers yes or "ask jsonschema" (false): a request it accepts is one jsonschema accepts, and any other
    is checked by jsonschema, for its messages. jsonschema's own walk (a validator evolved per keyword and
    value) cost ~60 µs for a three-field SOAP request, on every request of a flow."""
    if schema is True:
        return lambda instance: True
    if not isinstance(schema, dict) or depth > 32:
        return None
    known = validator.VALIDATORS
    is_type = validator.TYPE_CHECKER.is_type
    checks: list[Callable[[Any], bool]] = []
    for key, value in schema.items():
        if key in _IGNORED or (key not in known and key != "$schema"):
            continue  # annotations: jsonschema ignores them too
        if key not in _COMPILED:
            return None
        check = _keyword(key, value, schema, validator, is_type, depth)
        if check is None:
            return None
        checks.append(check)
    if not checks:
        return lambda instance: True
    if len(checks) == 1:
        return checks[0]
    return lambda instance: all(check(instance) for check in checks)


def _keyword(key: str, value: Any, schema: dict[str, Any], validator: Validator, is_type: Callable[[Any, str], bool],
             depth: int) -> Callable[[Any], bool] | None:
    """The check of one keyword (see :func:`_compile`), or None."""
    if key == "type":
        types = value if isinstance(value, list) else [value]
        if not all(isinstance(t, str) for t in types):
            return None
        plain = {"object": dict, "string": str, "array": list, "boolean": bool}
        if len(types) == 1 and types[0] in plain:  # the draft checkers' own tests for these four
            cls = plain[types[0]]
            return lambda instance: isinstance(instance, cls)
        return lambda instance: any(is_type(instance, t) for t in types)
    if key == "properties":
        if not isinstance(value, dict):
            return None
        subs = {name: _compile(sub, validator, depth + 1) for name, sub in value.items()}
        if any(sub is None for sub in subs.values()):
            return None
        pairs = list(subs.items())
        return lambda instance: not isinstance(instance, dict) or all(
            name not in instance or sub(instance[name]) for name, sub in pairs)  # type: ignore[misc]
    if key == "required":
        names = list(value) if isinstance(value, list) else None
        if names is None:
            return None
        return lambda instance: not isinstance(instance, dict) or all(name in instance for name in names)
    if key == "additionalProperties":
        if "patternProperties" in schema or not isinstance(schema.get("properties", {}), dict):
            return None
        named = frozenset(schema.get("properties", {}))
        if value is False:
            return lambda instance: not isinstance(instance, dict) or named.issuperset(instance)
        extra = _compile(value, validator, depth + 1)
        if extra is None:
            return None
        return lambda instance: not isinstance(instance, dict) or all(
            k in named or extra(v) for k, v in instance.items())
    if key == "anyOf":
        if not isinstance(value, list) or not value:
            return None
        options = [_compile(sub, validator, depth + 1) for sub in value]
        if any(option is None for option in options):
            return None
        return lambda instance: any(option(instance) for option in options)  # type: ignore[misc]
    if key in ("maxLength", "minLength", "minItems", "maxItems"):
        if not isinstance(value, int) or isinstance(value, bool):
            return None
        cls = str if key.endswith("Length") else list
        if key.startswith("max"):
            return lambda instance: not isinstance(instance, cls) or len(instance) <= value
        return lambda instance: not isinstance(instance, cls) or len(instance) >= value
    if key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        test = {"minimum": lambda x: x >= value, "maximum": lambda x: x <= value,
                "exclusiveMinimum": lambda x: x > value, "exclusiveMaximum": lambda x: x < value}[key]
        return lambda instance: not is_type(instance, "number") or test(instance)
    if key in ("enum", "const"):
        values = value if key == "enum" else [value]
        if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
            return None  # jsonschema's equality of other values (1 vs True vs 1.0) is its own
        allowed = frozenset(values)
        return lambda instance: isinstance(instance, str) and instance in allowed
    if key == "pattern":
        if not isinstance(value, str):
            return None
        try:
            compiled = re.compile(value)
        except re.error:
            return None
        return lambda instance: not isinstance(instance, str) or compiled.search(instance) is not None
    if key == "format":
        formats = validator.format_checker
        if formats is None or not isinstance(value, str):
            return lambda instance: True
        return lambda instance: bool(formats.conforms(instance, value))
    if key == "items":
        if not isinstance(value, (dict, bool)) or "prefixItems" in schema:
            return None
        item = _compile(value, validator, depth + 1) if value is not False else None
        if item is None:
            return None
        return lambda instance: not isinstance(instance, list) or all(item(v) for v in instance)
    return None


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
