"""The keys every stream source has, whatever its broker (AMQP, NATS JetStream, MQTT, Kafka ...).

A stream source's block mixes these with its protocol's own keys (queue, subject, topic ...): the loader
takes these out first (:data:`STREAM_KEYS`) and validates the rest against the protocol's source model, so
an error in either is reported at ``sources.<name>.<key>`` with its line.

* ``format``: how a payload is read: ``json`` (default), ``xml``, ``csv`` (lines; ``fields`` names the
  columns, else the first line of each message is its header) or ``bytes`` (one record ``{"payload": ...}``).
* ``id``: where the message id is in the payload (a JSONPath for JSON, an XPath for XML, a field name for
  CSV). Default: the broker's id; a message with neither gets the SHA-256 of its payload, so the same
  payload published twice is stored once.
* ``records``: where the records are when one message holds several (a JSONPath / XPath); default: the
  payload is one record.
* ``keep``: how long stored events are kept (``90d``); events a table has not absorbed yet are never deleted.
* ``max_deliver``: a message delivered this many times is dead-lettered instead of being tried again.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from hub.runtime.duration import seconds

#: The keys of a stream source's block that are the hub's, not its broker's.
STREAM_KEYS = ("format", "fields", "delimiter", "id", "records", "keep", "max_deliver")
DEFAULT_MAX_DELIVER = 5


class StreamKeys(BaseModel):
    """How a stream source's payloads are read and how long its events are kept."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["json", "xml", "csv", "bytes"] = Field("json", description="json | xml | csv | bytes")
    fields: list[str] | None = Field(None, description="csv: the column names of each line (default: the first "
                                                       "line of each message is a header).")
    delimiter: str = Field(",", min_length=1, max_length=1, description="csv: the field separator.")
    id: str | None = Field(None, description="Where the message id is in the payload (JSONPath, XPath, or a CSV "
                                             "field). Default: the broker's id, else a SHA-256 of the payload.")
    records: str | None = Field(None, description="Where the records are in a payload holding several "
                                                  "(JSONPath or XPath). Default: the payload is one record.")
    keep: float | None = Field(None, gt=0, description="Retention of stored events (30d, 12h); events not yet "
                                                       "absorbed into the table are never deleted.")
    max_deliver: int = Field(DEFAULT_MAX_DELIVER, ge=2, le=1000,
                             description="Deliveries after which a message goes to the dead letters.")

    @field_validator("keep", mode="before")
    @classmethod
    def _keep(cls, value: Any) -> Any:
        return None if value is None else seconds(value)

    @field_validator("fields")
    @classmethod
    def _fields(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if value is not None and info.data.get("format") != "csv":
            raise ValueError("fields is only for format csv")
        return value

    @field_validator("id", "records")
    @classmethod
    def _path(cls, value: str | None, info: ValidationInfo) -> str | None:
        fmt = info.data.get("format")
        if value is None or fmt not in ("json", "xml", "bytes"):
            return value
        if fmt == "bytes":
            raise ValueError("format bytes has no paths (the payload is opaque)")
        problem = path_problem(fmt, value)
        if problem:
            raise ValueError(problem)
        return value


def path_problem(fmt: str, path: str) -> str | None:
    """Why *path* is not a usable JSONPath (json) or XPath (xml), or None."""
    if fmt == "json":
        from adapters.rest import JSONPathError, compile_path

        if not path.strip().startswith("$"):
            return f"'{path}' is not a JSONPath (expected e.g. $.order.id)"
        try:
            compile_path(path)
        except JSONPathError as exc:
            return str(exc)
        return None
    from lxml import etree

    try:
        etree.XPath(path)
    except etree.XPathSyntaxError as exc:
        return f"'{path}' is not a valid XPath: {exc}"
    return None


def split_keys(block: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the hub's stream keys, the broker's keys) of a source block."""
    ours = {k: v for k, v in block.items() if k in STREAM_KEYS}
    return ours, {k: v for k, v in block.items() if k not in STREAM_KEYS}
