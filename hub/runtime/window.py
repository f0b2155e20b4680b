"""Partition windows and the ``{{ partition.* }}`` templating of spec values.

Templates use Jinja's sandbox with strict undefined names, so a typo such as ``{{ partition.strat }}``
is an error naming the field (and the names that exist) instead of an empty string sent to a partner's
API; and with the limits of :mod:`hub.runtime.sandbox` (output at most 64 KiB per value, no loops, no
``9**(9**9)`` or ``'a'*2000000000``), so a spec value cannot hang or exhaust a run. ``hub validate``
renders every template against a sample window (:func:`sample_window`), so these are found before a run.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from jinja2 import Template, TemplateError, UndefinedError
from pydantic import BaseModel

from hub.errors import HubError
from hub.runtime.sandbox import (
    MAX_TEMPLATE,
    LimitedEnvironment,
    TemplateLimitError,
    UnknownName,
    budgeted,
    check_statements,
    collect,
)

_Model = TypeVar("_Model", bound=BaseModel)
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


_env = LimitedEnvironment(undefined=UnknownName, autoescape=False, keep_trailing_newline=True)
_env.add_filter("strftime", lambda value, fmt: value.strftime(fmt))

#: Shown in errors; longer templates are cut.
_SHOWN = 80


def is_template(value: str) -> bool:
    return bool(_TEMPLATE.search(value))


def sample_window(kind: str | None = None, start: date | None = None, timezone: str = "UTC") -> Window:
    """The first partition of ``partitions: {kind: {start, timezone}}`` (2024-01-01, daily, UTC when the
    pipeline has none): what ``hub validate`` renders templates against, and contract snapshots sample."""
    first = datetime.combine(start or date(2024, 1, 1), time(), ZoneInfo(timezone))
    if kind == "monthly":
        end = first.replace(year=first.year + (first.month == 12), month=first.month % 12 + 1)
    else:
        end = first + timedelta(days=1)
    return Window(key=first.date().isoformat(), start=first, end=end)


@dataclass(frozen=True)
class KeyPartition:
    """A partition named by its key alone, without a time window: one file of a source partitioned per file
    (a flow after it runs per file). Templates see ``partition.key`` only."""

    key: str

    def context(self) -> dict[str, Any]:
        return {"partition": {"key": self.key}}


def render(value: str, window: Window | KeyPartition | None, *, field: str) -> str:
    """Render one templated string for *window*. Non-templates are returned unchanged."""
    if not is_template(value):
        return value
    if window is None:
        raise HubError(f"{field}: '{_short(value)}' uses partition templating, but the pipeline has no partitions")
    return _render(value, window.context(), field)


def render_with(value: str, context: dict[str, Any], *, field: str) -> str:
    """Render one templated string with an explicit context (e.g. ``run.date`` for exports)."""
    if not is_template(value):
        return value
    return _render(value, context, field)


def render_tree(value: Any, window: Window | None, *, field: str) -> Any:
    """Render templates in every string of a nested dict/list."""
    if isinstance(value, str):
        return render(value, window, field=field)
    if isinstance(value, Mapping):
        return {k: render_tree(v, window, field=f"{field}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [render_tree(v, window, field=f"{field}[{i}]") for i, v in enumerate(value)]
    return value


def render_config(config: _Model, window: Window | None, *, field: str) -> _Model:
    """*config* (a source's protocol block) with its templates rendered for *window*, validated again."""
    return type(config).model_validate(render_tree(config.model_dump(by_alias=True, exclude_none=True), window,
                                                   field=field))


def check_template(value: str, *, field: str, context: dict[str, Any] | None = None) -> str | None:
    """Return a problem description when *value* is not a valid template, else None (used by validation).
    With *context* (a sample window's), the template is also rendered, so names that do not exist and
    values beyond the limits of :mod:`hub.runtime.sandbox` are found before a run."""
    if not is_template(value):
        return None
    try:
        if context is None:
            _parse(value, field)
        else:
            _render(value, context, field)
    except HubError as exc:
        return str(exc)
    return None


def _short(value: str) -> str:
    return value if len(value) <= _SHOWN else value[:_SHOWN] + "..."


def _parse(value: str, field: str) -> Template:
    """The compiled template, refused when it is too long or uses statements spec templates may not."""
    if len(value) > MAX_TEMPLATE:
        raise HubError(f"{field}: template of {len(value):,} characters; templates may have at most "
                       f"{MAX_TEMPLATE:,}")
    try:
        ast = _env.parse(value)
        check_statements(ast)
        return _env.from_string(ast)
    except TemplateLimitError as exc:
        raise HubError(f"{field}: template '{_short(value)}' refused: {exc}") from None
    except TemplateError as exc:
        raise HubError(f"{field}: invalid template '{_short(value)}': {exc}") from None
    except RecursionError:
        raise HubError(f"{field}: invalid template '{_short(value)}': nested too deeply") from None


def _render(value: str, context: dict[str, Any], field: str) -> str:
    """Render with the sandbox's limits; every failure becomes a :class:`HubError` naming *field*."""
    with budgeted():  # compiling folds constants (filters on literals run then): inside the budget too
        template = _parse(value, field)
        try:
            return collect(template.generate(context))
        except TemplateLimitError as exc:
            raise HubError(f"{field}: template '{_short(value)}' refused: {exc}") from None
        except UndefinedError as exc:
            raise HubError(f"{field}: cannot render template '{_short(value)}': {exc}"
                           f"{_known_names(str(exc), context)}") from None
        except TemplateError as exc:
            raise HubError(f"{field}: cannot render template '{_short(value)}': {exc}") from None
        except (ArithmeticError, TypeError, ValueError, LookupError, AttributeError, RecursionError) as exc:
            raise HubError(f"{field}: cannot render template '{_short(value)}': "
                           f"{type(exc).__name__}: {exc}") from None


def _leaf_names(context: Mapping[str, Any], prefix: str = "") -> list[str]:
    out: list[str] = []
    for key, value in context.items():
        name = f"{prefix}{key}"
        out += _leaf_names(value, f"{name}.") if isinstance(value, Mapping) else [name]
    return out


def _known_names(message: str, context: Mapping[str, Any]) -> str:
    """' (did you mean partition.start?); names: partition.key, ...' for an unknown name."""
    names = _leaf_names(context)
    m = re.search(r"unknown name '([^']*)'", message)
    close = difflib.get_close_matches(m.group(1), [n.rsplit(".", 1)[-1] for n in names], n=1) if m else []
    hint = next((f" (did you mean {n}?)" for n in names if close and n.rsplit(".", 1)[-1] == close[0]), "")
    return f"{hint}; the names are: {', '.join(names)}"
