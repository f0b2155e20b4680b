"""Reading message payloads as a stream source declares (``format``, ``id``, ``records``: hub.spec.stream).

The same reader runs twice: when a message arrives (it must parse, and its id is taken from it, or it goes
to the dead letters while the rest keeps flowing) and when a table absorbs stored events (its records
become Arrow rows). JSON is parsed with :mod:`hub.runtime.jsonsafe` (repeated keys marked, nesting
bounded), XML with DTDs refused (:mod:`hub.runtime.xmlsafe`).
"""

from __future__ import annotations

import csv
import hashlib
import io
from typing import Any

import orjson

from adapters.messages import Message
from hub.errors import HubError
from hub.events.store import Incoming
from hub.runtime import jsonsafe, xmlsafe
from hub.spec.stream import StreamKeys


class PayloadError(HubError):
    """A payload does not parse as its source's ``format`` says (the message is dead-lettered)."""


def content_id(payload: bytes) -> str:
    """The id of a message that has none: the SHA-256 of its payload (a re-published payload is a duplicate)."""
    return "sha256:" + hashlib.sha256(payload).hexdigest()


def _local(tag: Any) -> str:
    text = str(tag)
    return text.rsplit("}", 1)[-1]


def element_record(el: Any) -> Any:
    """An XML element as a record: attributes as ``@name``, children by local name (repeated ones as a
    list), the text of a leaf as its value."""
    children = [c for c in el if isinstance(c.tag, str)]
    if not children and not el.attrib:
        return el.text
    out: dict[str, Any] = {f"@{_local(k)}": v for k, v in el.attrib.items()}
    for child in children:
        name, value = _local(child.tag), element_record(child)
        if name in out:
            if not isinstance(out[name], list):
                out[name] = [out[name]]
            out[name].append(value)
        else:
            out[name] = value
    if not children and el.text and el.text.strip():
        out["#text"] = el.text
    return out


class PayloadReader:
    """Parses the payloads of one stream source."""

    def __init__(self, keys: StreamKeys, where: str) -> None:
        self.keys, self.where = keys, where

    def parse(self, payload: bytes) -> Any:
        """The payload as a document; :class:`PayloadError` with the reason when it does not parse."""
        fmt = self.keys.format
        try:
            if fmt == "json":
                return jsonsafe.loads(payload)
            if fmt == "xml":
                return xmlsafe.fromstring(payload, self.where)
            if fmt == "csv":
                text = payload.decode("utf-8")
                reader = csv.reader(io.StringIO(text), delimiter=self.keys.delimiter)
                rows = [r for r in reader if r]
                fields = self.keys.fields
                if fields is None:
                    if not rows:
                        raise PayloadError("empty CSV payload (expected a header line)")
                    fields, rows = rows[0], rows[1:]
                bad = next((i for i, r in enumerate(rows) if len(r) != len(fields)), None)
                if bad is not None:
                    raise PayloadError(f"CSV line {bad + 1} has {len(rows[bad])} fields, expected {len(fields)}")
                return [dict(zip(fields, r, strict=True)) for r in rows]
            return payload
        except PayloadError:
            raise
        except (orjson.JSONDecodeError, ValueError, UnicodeDecodeError, HubError) as exc:
            raise PayloadError(f"payload is not valid {fmt}: {str(exc).splitlines()[0][:300]}") from None

    def message_id(self, doc: Any, payload: bytes, broker_id: str | None) -> str:
        """The id at the declared path, else the broker's, else the payload's SHA-256."""
        path = self.keys.id
        if path is not None:
            found = self._select(path, doc)
            if found:
                value = found[0]
                value = value.text if hasattr(value, "text") else value
                if value is not None and not isinstance(value, dict | list):
                    return str(value)
            raise PayloadError(f"no message id at {path} in the payload")
        return broker_id or content_id(payload)

    def records(self, doc: Any) -> list[Any]:
        """The records a parsed payload holds."""
        fmt = self.keys.format
        if fmt == "bytes":
            return [{"payload": doc}]
        if fmt == "csv":
            return list(doc)
        found = [doc] if self.keys.records is None else self._select(self.keys.records, doc)
        if fmt == "xml":
            return [element_record(e) if hasattr(e, "tag") else {"value": e} for e in found]
        if len(found) == 1 and isinstance(found[0], list) and self.keys.records is not None:
            return list(found[0])  # $.items names the array itself
        return found

    def _select(self, path: str, doc: Any) -> list[Any]:
        if self.keys.format == "json":
            from adapters.rest import select

            return select(path, doc)
        if self.keys.format == "xml":
            found = doc.xpath(path)
            return found if isinstance(found, list) else [found]
        if self.keys.format == "csv":
            return [doc[0].get(path)] if doc else []
        return []

    def incoming(self, message: Message, max_deliver: int | None = None) -> Incoming:
        """*message* ready for the store: its id, or a reason to dead-letter it (it does not parse, its id is
        missing, or it was delivered *max_deliver* times)."""
        max_deliver = max_deliver or self.keys.max_deliver
        reason = None
        mid = message.id or content_id(message.payload)
        try:
            doc = self.parse(message.payload)
            mid = self.message_id(doc, message.payload, message.id)
        except PayloadError as exc:
            reason = str(exc)
        if reason is None and message.attempts >= max_deliver:
            reason = f"delivered {message.attempts} times (max_deliver {max_deliver})"
        return Incoming(message_id=mid, payload=message.payload, key=message.key, type=message.type,
                        stream=message.stream, headers=dict(message.headers), published_at=message.timestamp,
                        attempts=message.attempts, reason=reason)
