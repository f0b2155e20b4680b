"""Partition windows and the ``{{ partition.* }}`` templating of spec values.

Templates use Jinja's sandbox with strict undefined names, so a typo such as ``{{ partition.strat }}``
is an error naming the field instead of an empty string sent to a partner's API.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from hub.errors import HubError

_TEMPLATE = re.compile(r"{{.*?}}|{%.*?%}", re.S)


@dataclass(frozen=True)
class Window:
    """The time window of one partition: ``start`` inclusive, ``end`` exclusive, both timezone-aware."""

    key: str
    start: datetime
    end: datetime

    def context(self) -> dict[str, Any]:
        return {
            "partition": {
                "key": self.key,
                "start": self.start.isoformat(),
                "end": self.end.isoformat(),
                "start_date": self.start.date().isoformat(),
                "end_date": self.end.date().isoformat(),
                "start_dt": self.start,
                "end_dt": self.end,
                "start_epoch": int(self.start.timestamp()),
                "end_epoch": int(self.end.timestamp()),
            }
        }


_env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
_env.filters["strftime"] = lambda value, fmt: value.strftime(fmt)


def is_template(value: str) -> bool:
    return bool(_TEMPLATE.search(value))


def render(value: str, window: Window | None, *, field: str) -> str:
    """Render one templated string for *window*. Non-templates are returned unchanged."""
    if not is_template(value):
        return value
    if window is None:
        raise HubError(f"{field}: '{value}' uses partition templating, but the pipeline has no partitions")
    try:
        return _env.from_string(value).render(window.context())
    except TemplateError as exc:
        raise HubError(f"{field}: cannot render template '{value}': {exc}") from exc


def render_with(value: str, context: dict[str, Any], *, field: str) -> str:
    """Render one templated string with an explicit context (e.g. ``run.date`` for exports)."""
    if not is_template(value):
        return value
    try:
        return _env.from_string(value).render(context)
    except TemplateError as exc:
        raise HubError(f"{field}: cannot render template '{value}': {exc}") from exc


def render_tree(value: Any, window: Window | None, *, field: str) -> Any:
    """Render templates in every string of a nested dict/list."""
    if isinstance(value, str):
        return render(value, window, field=field)
    if isinstance(value, Mapping):
        return {k: render_tree(v, window, field=f"{field}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [render_tree(v, window, field=f"{field}[{i}]") for i, v in enumerate(value)]
    return value


def check_template(value: str, *, field: str) -> str | None:
    """Return a problem description when *value* is not a valid template, else None (used by validation)."""
    if not is_template(value):
        return None
    try:
        _env.parse(value)
    except TemplateError as exc:
        return f"{field}: invalid template '{value}': {exc}"
    return None
