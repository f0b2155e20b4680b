"""JSON from partners, parsed without being fooled or exhausted.

Three things a plain ``orjson.loads`` lets through:

* **Duplicate keys.** JSON parsers keep the last value of a repeated key without a word, so
  ``{"amount": 10, "amount": 1000}`` loads as 1000 and nobody knows there was a choice. The parsed
  document is checked for lost members at C speed (a member is lost exactly when re-serializing the
  document yields fewer ``:`` separators than the body had); only a document that lost some is parsed
  again slowly, with every object that repeated a key marked (:class:`DuplicateKeys`), so the records
  holding one are quarantined with the key named instead of loaded with a guess.
* **Nesting.** Converting a record nested 1,000 levels deep to Arrow took 4 GB and half a minute; the
  depth of every nested value is checked before conversion (:func:`problem`, default
  :data:`MAX_DEPTH`), and a record deeper than that is quarantined.
* **Size.** A page of hundreds of MB parsed whole becomes ten times its size in Python objects. Pages
  above :data:`STREAM_ABOVE` bytes are spooled to a temporary file and streamed (:func:`stream_records`): read
  one batch at a time with ijson's C parser, so memory holds one batch of Python objects (the body stays on disk).
"""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Iterator
from typing import IO, Any

import orjson

#: Deepest nesting of a record's values (the record itself is level 1) converted into a table.
MAX_DEPTH = 64
_PARSE_RECURSION = 4000
#: Bodies larger than this are streamed record by record rather than parsed whole.
STREAM_ABOVE = 32 * 1024 * 1024


class DuplicateKeys(dict[str, Any]):
    """A JSON object that repeated a key; the last value is kept, as parsers do, and the keys are noted."""

    __slots__ = ("duplicates",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.duplicates: list[str] = []

    def __setitem__(self, key: str, value: Any) -> None:  # ijson's builder adds members one by one
        if key in self and key not in self.duplicates:
            self.duplicates.append(key)
        super().__setitem__(key, value)


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    marked = DuplicateKeys(obj)
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen and key not in marked.duplicates:
            marked.duplicates.append(key)
        seen.add(key)
    return marked


def _lost_members(body: bytes | str, doc: Any) -> bool:
    """True when parsing *body* dropped an object member (a repeated key). Every member has one ``:``
    outside strings and serializing keeps every ``:`` inside strings, so fewer colons after a round trip
    means a member went missing. A ``\\u003a`` escape would add a colon on the way back: such bodies are
    treated as suspicious, and parsed the slow, exact way."""
    if isinstance(body, str):
        escaped, colons = "\\u003a" in body or "\\u003A" in body, body.count(":")
    else:
        escaped, colons = b"\\u003a" in body or b"\\u003A" in body, body.count(b":")
    if escaped:
        return True
    try:
        return orjson.dumps(doc).count(b":") < colons
    except TypeError:  # nested beyond what orjson writes (255 levels): check it the exact way
        return True


def loads(body: bytes | str) -> Any:
    """Parse *body* like ``orjson.loads`` (same errors), with objects that repeated a key marked
    :class:`DuplicateKeys` so :func:`problem` reports them."""
    doc = orjson.loads(body)
    if (isinstance(doc, dict | list) and doc) and _lost_members(body, doc):
        # orjson reads up to 1,024 levels; the standard parser needs the recursion limit to follow it there
        if sys.getrecursionlimit() < _PARSE_RECURSION:
            sys.setrecursionlimit(_PARSE_RECURSION)
        try:
            return json.loads(body, object_pairs_hook=_pairs)
        except RecursionError:
            raise orjson.JSONDecodeError("nested too deeply to check for repeated keys", "", 0) from None
    return doc


def _shown(where: str) -> str:
    return where if len(where) <= 60 else where[:60] + "..."


def _check(value: Any, budget: int, limit: int, where: str) -> str | None:
    if budget <= 0:
        return f"{_shown(where) or 'the record'} nests deeper than {limit} levels (the limit for JSON records)"
    if value.__class__ is DuplicateKeys and value.duplicates:
        keys = ", ".join(repr(k) for k in value.duplicates)
        return (f"{_shown(where) or 'the record'} repeats the key {keys} (JSON keeps only the last value; "
                "refusing to guess)")
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in items:
        cls = item.__class__
        if cls is dict or cls is list or cls is DuplicateKeys:
            found = _check(item, budget - 1, limit, f"{where}.{key}" if where else str(key))
            if found:
                return found
    return None


def problem(value: Any, max_depth: int = MAX_DEPTH, where: str = "", level: int = 1) -> str | None:
    """Why the container *value*, at nesting *level* of its record (the record itself is level 1), cannot be
    loaded as it is: a repeated key anywhere in it, or nesting beyond *max_depth*; None when it is fine."""
    return _check(value, max_depth - level + 1, max_depth, where)


# --- streaming large bodies ----------------------------------------------------------------------------

def ijson_prefix(steps: list[tuple[str, Any]]) -> str | None:
    """The ijson prefix for a simple JSONPath made of names and ``[*]`` (``$.data[*]`` -> ``data.item``),
    or None when the path cannot be streamed (indexes, filters)."""
    parts: list[str] = []
    for kind, arg in steps:
        if kind == "k" and "." not in arg:
            parts.append(arg)
        elif kind == "*":
            parts.append("item")
        else:
            return None
    return ".".join(parts)


def stream_records(body: bytes | IO[bytes], prefix: str, batch_size: int) -> Iterator[list[Any]]:
    """The values at ijson *prefix* in *body*, in lists of up to *batch_size*: one list of Python objects
    exists at a time. Every object is a :class:`DuplicateKeys` (a dict that notes repeated keys, if any)."""
    import ijson  # only large pages need it

    values = ijson.items(body, prefix, use_float=True, map_type=DuplicateKeys)
    while chunk := list(itertools.islice(values, batch_size)):
        yield chunk


def first_value(body: bytes | IO[bytes], prefix: str) -> Any:
    """The first value at ijson *prefix* in *body* (None when absent): pagination fields of a streamed page."""
    import ijson

    return next(iter(ijson.items(body, prefix, use_float=True)), None)
