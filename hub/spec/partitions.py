"""The time partitions of a pipeline without Dagster: keys, windows, the last complete one.

``hub run`` runs without importing Dagster (0.5 s and 100 MB of the fixed cost of a small run), so the
partition arithmetic Dagster's ``DailyPartitionsDefinition`` / ``MonthlyPartitionsDefinition`` does for the
hub's specs is done here, with the same answers: keys ``%Y-%m-%d`` in the pipeline's timezone, windows
``[start, end)``, the last partition the last complete window as of now plus ``end_offset``; a monthly
pipeline's first partition is the first whole month from its start. ``tests/test_fastrun.py`` compares
these answers with Dagster's. The Dagster definitions (:mod:`hub.dagster.definitions`) still use Dagster's
classes, which the UI and schedules need.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from hub.errors import HubError, PartitionKeyError
from hub.runtime.window import Window
from hub.spec.models import PartitionsConfig

FMT = "%Y-%m-%d"


def _month_after(d: date) -> date:
    return date(d.year + (d.month == 12), d.month % 12 + 1, 1)


def _first(cfg: PartitionsConfig) -> date:
    start = cfg.window.start
    if cfg.kind == "monthly" and start.day != 1:
        return _month_after(start)
    return start


def _next(cfg: PartitionsConfig, d: date) -> date:
    return d + timedelta(days=1) if cfg.kind == "daily" else _month_after(d)


def _at(cfg: PartitionsConfig, d: date) -> datetime:
    return datetime.combine(d, time(), ZoneInfo(cfg.window.timezone))


def window(cfg: PartitionsConfig, key: str) -> Window:
    """The window of partition *key* (assumed valid: :func:`check_key`)."""
    d = datetime.strptime(key, FMT).date()
    return Window(key=key, start=_at(cfg, d), end=_at(cfg, _next(cfg, d)))


def last_key(cfg: PartitionsConfig, now: datetime | None = None) -> str | None:
    """The last complete partition as of *now* (default: the clock), plus ``end_offset``; None before the
    first partition is complete."""
    tz = ZoneInfo(cfg.window.timezone)
    today = (now or datetime.now(tz)).astimezone(tz).date()
    # the window that holds *now* is incomplete; the one before it is the last complete one
    current = today if cfg.kind == "daily" else today.replace(day=1)
    last = current - timedelta(days=1) if cfg.kind == "daily" else _month_before(current)
    for _ in range(cfg.window.end_offset):
        last = _next(cfg, last)
    return last.strftime(FMT) if last >= _first(cfg) else None


def _month_before(d: date) -> date:
    return date(d.year - (d.month == 1), (d.month - 2) % 12 + 1, 1)


def _valid(cfg: PartitionsConfig, key: str, now: datetime | None = None) -> bool:
    try:
        d = datetime.strptime(key, FMT).date()
    except ValueError:
        return False
    if d.strftime(FMT) != key or d < _first(cfg) or (cfg.kind == "monthly" and d.day != 1):
        return False
    last = last_key(cfg, now)
    return last is not None and key <= last


def check_key(cfg: PartitionsConfig, key: str, pipeline_name: str) -> None:
    if not _valid(cfg, key):
        raise PartitionKeyError(f"partition '{key}' is not a partition of pipeline '{pipeline_name}' "
                                f"(format {FMT}, first {_first(cfg).strftime(FMT)}, last {last_key(cfg)})")


def keys_in_range(cfg: PartitionsConfig, start: str, end: str) -> list[str]:
    out = []
    d, stop = datetime.strptime(start, FMT).date(), datetime.strptime(end, FMT).date()
    while d <= stop:
        out.append(d.strftime(FMT))
        d = _next(cfg, d)
    return out


def partition_keys(cfg: PartitionsConfig | None, where: str, pipeline_name: str, *, partition: str | None = None,
                   start: str | None = None, end: str | None = None) -> list[str | None]:
    """The partitions to run: one, a range, or (by default) the last complete one; ``[None]`` for a pipeline
    without partitions. *where* (the spec's path) starts the messages."""
    if cfg is None:
        if partition or start or end:
            raise HubError(f"{where}: pipeline '{pipeline_name}' has no partitions; drop --partition/--from/--to")
        return [None]
    if partition:
        check_key(cfg, partition, pipeline_name)
        return [partition]
    if start or end:
        if not (start and end):
            raise HubError("--from and --to go together")
        check_key(cfg, start, pipeline_name)
        check_key(cfg, end, pipeline_name)
        keys = keys_in_range(cfg, start, end)
        if not keys:
            raise HubError(f"--from {start} --to {end}: empty range (is --from after --to?)")
        return list(keys)
    last = last_key(cfg)
    if last is None:
        raise HubError(f"{where}: no complete partition yet (partitions start {cfg.window.start})")
    return [last]
