"""Row rules: per-column checks applied to every batch before it is written, and the bad-row threshold.

A source's ``rules:`` maps an (output) column to checks::

    rules:
      order_id: {not_null: true, unique: true}
      amount:   {type: "decimal(14,2)", min: 0, max: 100000}
      status:   {in: [open, paid, shipped, cancelled]}
      email:    {regex: "^[^@ ]+@[^@ ]+$"}

Everything is evaluated column-wise with ``pyarrow.compute``; only the rows that fail are looked at one by
one (to write their quarantine entry). A row that fails goes to ``<asset>__quarantine`` with the rule
(``rules.<column>.<check>``) at the start of its reason, and is not loaded. ``unique`` (and, for a source
with rules and a ``primary_key``, the key) holds across all batches of one load: the first row with a value
is kept, later ones are quarantined.

:class:`Threshold` counts rejected rows (from the mapping and from rules) against ``max_bad_rows`` /
``max_bad_fraction``; beyond it the load fails, and since it fails inside the load's transaction, nothing
is loaded.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hub.errors import HubError, ThresholdExceeded
from hub.spec.rules import RuleSpec  # the spec's model of `rules:`; evaluated here
from hub.transform.mapping import ERROR_COLUMN, LINE_COLUMN, RAW_COLUMN, Column, Mapped, _cast
from hub.transform.types import parse_type


class RowRules:
    """The ``rules:`` of one source, applied batch by batch within one load."""

    def __init__(self, rules: Mapping[str, RuleSpec], *, primary_key: Sequence[str] = (), where: str) -> None:
        """*primary_key*: checked for uniqueness across the load too (when *rules* are given)."""
        self.rules = dict(rules)
        self.where = where
        key = tuple(primary_key) if rules else ()
        # a one-column key that already has `unique` needs no second check
        self.key = () if len(key) == 1 and key[0] in self.rules and self.rules[key[0]].unique else key
        self._seen: dict[str, set[Hashable]] = {c: set() for c, r in self.rules.items() if r.unique}
        self._seen_keys: set[Hashable] = set()
        self._int_keys: _IntKeys | None = None  # an integer-like one-column key: kept compact (see _IntKeys)
        self._present: set[str] = set()
        self._columns: list[str] = []
        self._rows = 0
        self._bounds: dict[tuple[str, str, pa.DataType], Any] = {}

    def __bool__(self) -> bool:
        return bool(self.rules)

    def apply(self, mapped: Mapped, raw: pa.RecordBatch) -> Mapped:
        """*mapped* (the Mapper's result for *raw*) without the rows that break a rule; those are added to
        its quarantine. Quarantine rows are numbered like the Mapper's: the record's line in its file
        when the adapter reports it, else its index in *raw*."""
        batch = mapped.batch
        n = batch.num_rows
        if not self.rules or n == 0:
            return mapped
        self._rows += n
        self._columns = batch.schema.names
        bad = np.zeros(n, dtype=bool)
        found: list[tuple[int, str, str, Any, str]] = []  # (row in batch, check name, column, value, reason)

        def record(fail: pa.Array, check: str, column: str, arr: pa.Array, reason: Any) -> None:
            mask = _mask(fail)
            new = np.flatnonzero(mask & ~bad)
            if not len(new):
                return
            values = arr.take(pa.array(new)).to_pylist()
            for i, v in zip(new.tolist(), values, strict=True):
                found.append((i, f"rules.{column}.{check}", column, v, reason(v) if callable(reason) else reason))
            bad[new] = True

        for column, rule in self.rules.items():
            idx = batch.schema.get_field_index(column)
            if idx >= 0:
                self._present.add(column)
            arr = batch.column(idx) if idx >= 0 else pa.nulls(n)
            for check in rule.checks():
                if pa.types.is_null(arr.type) and check not in ("not_null", "type"):
                    continue  # no values at all: nulls pass every other check
                if check == "not_null":
                    record(arr.is_null(), check, column, arr, f"{column} is null")
                elif check == "type":
                    assert rule.type is not None
                    target = parse_type(rule.type)
                    cast, failed = _cast(arr, Column((column,), column, target))
                    if failed:
                        fail = np.zeros(n, dtype=bool)
                        fail[list(failed)] = True
                        record(pa.array(fail), check, column, arr,
                               lambda v, t=rule.type: f"{v!r} is not a {t}")
                    arr = cast
                    if idx >= 0:
                        batch = batch.set_column(idx, column, cast)
                elif check in ("min", "max"):
                    bound = self._bound(column, check, getattr(rule, check), arr.type)
                    if bound is None:
                        continue
                    fail = pc.less(arr, bound) if check == "min" else pc.greater(arr, bound)
                    word, limit = ("less" if check == "min" else "greater"), getattr(rule, check)
                    record(fail, check, column, arr, lambda v, w=word, b=limit: f"{v!r} is {w} than {b!r}")
                elif check == "regex":
                    assert rule.regex is not None
                    text = self._text(arr, column, check)
                    fail = pc.and_(pc.invert(pc.match_substring_regex(text, rule.regex)), text.is_valid())
                    record(fail, check, column, arr, lambda v, p=rule.regex: f"{v!r} does not match {p!r}")
                elif check == "in":
                    assert rule.in_ is not None
                    allowed = self._value_set(column, rule.in_, arr.type)
                    fail = pc.and_(pc.invert(pc.is_in(arr, value_set=allowed)), arr.is_valid())
                    shown = ", ".join(map(str, rule.in_[:10])) + (", ..." if len(rule.in_) > 10 else "")
                    record(fail, check, column, arr, lambda v, s=shown: f"{v!r} is not one of [{s}]")
        # uniqueness last, among the rows every other rule let through
        claimed: list[tuple[set[Hashable], np.ndarray, list[Any]]] = []  # values each check took, by row
        for column, seen in self._seen.items():
            idx = batch.schema.get_field_index(column)
            if idx < 0:
                continue
            arr = batch.column(idx)
            dupes, rows, values = _repeats(seen, arr, ~bad)
            took = ~np.isin(rows, dupes)
            claimed.append((seen, rows[took], [v for v, t in zip(values, took.tolist(), strict=True) if t]))
            if len(dupes):
                fail = np.zeros(n, dtype=bool)
                fail[dupes] = True
                record(pa.array(fail), "unique", column, arr,
                       lambda v, c=column: f"{c} {v!r} was already seen in this load")
        if self.key and all(batch.schema.get_field_index(k) >= 0 for k in self.key):
            cols = [batch.column(k) for k in self.key]
            keys = cols[0] if len(cols) == 1 else pa.StructArray.from_arrays(cols, names=list(self.key))
            if self._int_keys is None and not self._seen_keys and _IntKeys.takes(keys.type):
                self._int_keys = _IntKeys()
            if self._int_keys is not None and _IntKeys.takes(keys.type):
                dupes = self._int_keys.repeats(keys, ~bad)
            else:
                if self._int_keys is not None:  # the key's type changed mid-load: carry on in a Python set
                    self._seen_keys.update(self._int_keys.values())
                    self._int_keys = None
                dupes, _, _ = _repeats(self._seen_keys, keys, ~bad)
            if len(dupes):
                fail = np.zeros(n, dtype=bool)
                fail[dupes] = True
                label = ", ".join(self.key)
                found.extend((int(i), "rules.primary_key.unique", label, keys[int(i)].as_py(),
                              f"primary key ({label}) {keys[int(i)].as_py()!r} was already seen in this load")
                             for i in dupes if not bad[i])
                bad |= fail
        for seen, rows, values in claimed:  # a value is only taken by a row that is loaded
            for i, v in zip(rows.tolist(), values, strict=True):
                if bad[i] and v is not None:
                    seen.discard(v)
        if not found:
            return mapped if batch is mapped.batch else Mapped(batch, mapped.quarantine, mapped.kept)
        keep = ~bad
        positions = np.flatnonzero(_mask(mapped.kept)) if mapped.kept is not None else np.arange(n)
        lines = raw.column(LINE_COLUMN) if raw.schema.get_field_index(LINE_COLUMN) >= 0 else None
        texts = raw.column(RAW_COLUMN) if raw.schema.get_field_index(RAW_COLUMN) >= 0 else None
        found.sort(key=lambda f: f[0])
        # the record as the source sent it (its own names and JSON types: a price of -3 stays a number, where
        # the mapped row may hold it as text or a decimal), like the Mapper's quarantine records
        internal = {LINE_COLUMN, RAW_COLUMN, ERROR_COLUMN}  # the error column: null here, the hub's own
        records = [{k: v for k, v in rec.items() if k not in internal}
                   for rec in raw.take(pa.array([int(positions[f[0]]) for f in found])).to_pylist()]
        quarantine = []
        for (i, rule_name, column, value, reason), rec in zip(found, records, strict=True):
            at = int(positions[i])
            line = lines[at].as_py() if lines is not None else None
            text = texts[at].as_py() if texts is not None else None
            quarantine.append({
                "row": line if line is not None else at, "column": column,
                "value": None if value is None else str(value)[:200], "reason": f"{rule_name}: {reason}",
                "record": text if text is not None else json.dumps(rec, default=str, ensure_ascii=False)})
        kept = np.zeros(raw.num_rows, dtype=bool)
        kept[positions[keep]] = True
        return Mapped(batch.filter(pa.array(keep)), [*mapped.quarantine, *quarantine], pa.array(kept))

    def finish(self) -> None:
        """After the last batch: a rule whose column never appeared is a spec error, not a pass."""
        missing = [c for c in self.rules if c not in self._present]
        if self._rows and missing:
            raise HubError(f"{self.where}.rules.{missing[0]}: column {missing[0]} is not in the records "
                           f"(columns: {', '.join(self._columns)})")

    # --- values of the rules, in the column's type ---------------------------------------------------

    def _bound(self, column: str, check: str, value: Any, typ: pa.DataType) -> pa.Scalar | None:
        if pa.types.is_null(typ):
            return None
        key = (column, check, typ)
        if key not in self._bounds:
            try:
                self._bounds[key] = _scalar(value, typ)
            except (ValueError, TypeError, pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise HubError(f"{self.where}.rules.{column}.{check}: {value!r} cannot be compared with the "
                               f"column's values ({typ}): {exc}") from None
        return self._bounds[key]

    def _value_set(self, column: str, values: list[Any], typ: pa.DataType) -> pa.Array:
        key = (column, "in", typ)
        if key not in self._bounds:
            try:
                self._bounds[key] = pa.array([_scalar(v, typ).as_py() for v in values], type=typ) \
                    if not pa.types.is_null(typ) else pa.array(values)
            except (ValueError, TypeError, pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise HubError(f"{self.where}.rules.{column}.in: the values are not all of the column's type "
                               f"({typ}): {exc}") from None
        return self._bounds[key]

    def _text(self, arr: pa.Array, column: str, check: str) -> pa.Array:
        if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
            return arr
        try:
            return pc.cast(arr, pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise HubError(f"{self.where}.rules.{column}.{check}: the column's values ({arr.type}) are not "
                           "text") from None


def _mask(arr: pa.Array | pa.ChunkedArray | None) -> np.ndarray:
    """A boolean Arrow array as a numpy mask, null as False."""
    assert arr is not None
    return np.asarray(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), dtype=bool)


def _repeats(seen: set[Hashable], arr: pa.Array, eligible: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[Any]]:
    """Indices (among *eligible* rows) whose value is in *seen* or repeats an earlier row; adds the new
    values to *seen*. Nulls never repeat. Fast path: no repeat at all is one set operation in C.
    Also returns the eligible rows and their values (to give back values of rows rejected later)."""
    rows = np.flatnonzero(eligible)
    values = arr.take(pa.array(rows)).to_pylist() if len(rows) < len(arr) else arr.to_pylist()
    if pa.types.is_struct(arr.type):
        values = [None if v is None or None in v.values() else tuple(v.values()) for v in values]
    distinct = set(values)
    distinct.discard(None)
    nulls = values.count(None)
    if len(distinct) == len(values) - nulls and seen.isdisjoint(distinct):
        seen |= distinct
        return np.empty(0, dtype=np.int64), rows, values
    out = []
    for i, v in zip(rows.tolist(), values, strict=True):
        if v is None:
            continue
        if v in seen:
            out.append(i)
        else:
            seen.add(v)
    return np.array(out, dtype=np.int64), rows, values


class _IntKeys:
    """The values of an integer-like one-column primary key seen in one load, as sorted int64 runs.

    A Python set of every key of a 10-million-row file took about 600 MB; these runs take 8 bytes a key. New
    values go in as a sorted run; runs of similar length are merged (like a binary counter) up to :attr:`RUN`
    values, so each value is merged O(log RUN) times and a merge never copies more than 8 MB. Exact: the values
    themselves are kept."""

    RUN = 1 << 20

    def __init__(self) -> None:
        self._runs: list[np.ndarray] = []

    @staticmethod
    def takes(typ: pa.DataType) -> bool:
        """Whether keys of *typ* are kept here (their values map one to one onto int64)."""
        return bool(pa.types.is_integer(typ) and not pa.types.is_uint64(typ)) or pa.types.is_date32(typ)

    def values(self) -> set[Hashable]:
        return {int(v) for run in self._runs for v in run}

    def repeats(self, arr: pa.Array, eligible: np.ndarray) -> np.ndarray:
        """Like :func:`_repeats`: indices among *eligible* rows whose value was seen before (in this batch or
        an earlier one); nulls never repeat. Adds the new values."""
        eligible = eligible & _mask(arr.is_valid())
        rows = np.flatnonzero(eligible)
        if not len(rows):
            return np.empty(0, dtype=np.int64)
        ints = arr.cast(pa.int32()) if pa.types.is_date32(arr.type) else arr
        # nulls filled first: with nulls, to_numpy gives float64, which would round keys above 2**53
        values = np.asarray(pc.fill_null(ints, 0).to_numpy(zero_copy_only=False), dtype=np.int64)[rows]
        distinct, first = np.unique(values, return_index=True)
        is_first = np.zeros(len(values), dtype=bool)
        is_first[first] = True
        seen_before = np.zeros(len(distinct), dtype=bool)
        for run in self._runs:
            at = np.searchsorted(run, distinct)
            seen_before |= run[np.minimum(at, len(run) - 1)] == distinct
        # a row repeats when its value is not at its first row in the batch, or was seen in an earlier batch
        repeat = ~is_first
        repeat[first[seen_before]] = True
        self._add(distinct[~seen_before])
        return rows[repeat].astype(np.int64)

    def _add(self, new: np.ndarray) -> None:
        if not len(new):
            return
        self._runs.append(new)
        # merged only up to RUN values: a merge copies both runs, and a lookup in a few long runs is cheap
        while (len(self._runs) > 1 and len(self._runs[-2]) <= len(self._runs[-1])
               and len(self._runs[-2]) + len(self._runs[-1]) <= self.RUN):
            top = self._runs.pop()
            # disjoint (no value is added twice), so the union is the sorted concatenation; a stable sort merges
            # the two sorted runs in linear time, where np.union1d's hash-based unique (numpy 2.4) took 7 s for
            # two runs of 500,000 consecutive integers
            self._runs[-1] = np.sort(np.concatenate([self._runs[-1], top]), kind="stable")


def _scalar(value: Any, typ: pa.DataType) -> pa.Scalar:
    """*value* (from YAML) as a scalar comparable with a column of type *typ*."""
    if pa.types.is_timestamp(typ):
        ts = value if isinstance(value, datetime) else \
            datetime.combine(value, datetime.min.time()) if isinstance(value, date) else \
            datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        if typ.tz is not None and ts.tzinfo is None:
            ts = ts.replace(tzinfo=UTC)
        elif typ.tz is None and ts.tzinfo is not None:
            ts = ts.astimezone(UTC).replace(tzinfo=None)
        return pa.scalar(ts, type=typ)
    if pa.types.is_date(typ):
        d = value.date() if isinstance(value, datetime) else value if isinstance(value, date) else \
            date.fromisoformat(str(value))
        return pa.scalar(d, type=typ)
    if pa.types.is_decimal(typ):
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise TypeError(f"expected a number, got {type(value).__name__}")
        return pa.scalar(Decimal(str(value)))
    if pa.types.is_integer(typ) or pa.types.is_floating(typ):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"expected a number, got {type(value).__name__}")
        return pa.scalar(value)
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        return pa.scalar(value if isinstance(value, str) else str(value), type=typ)
    return pa.scalar(value).cast(typ)


class Threshold:
    """``max_bad_rows`` / ``max_bad_fraction`` over one load: rejected rows from the mapping and the rules."""

    def __init__(self, max_bad_rows: int | None, max_bad_fraction: float | None, *, where: str,
                 consequence: str = "nothing was loaded (the load was rolled back)") -> None:
        self.max_bad_rows = max_bad_rows
        self.max_bad_fraction = max_bad_fraction
        self.where = where
        self.consequence = consequence
        self.total = 0
        self.rejected = 0
        self.by_rule: Counter[str] = Counter()
        self.reasons: list[str] = []

    def reset(self) -> None:
        """Forget what was counted (a load that was rolled back is counted again by the next attempt)."""
        self.total, self.rejected, self.by_rule, self.reasons = 0, 0, Counter(), []

    def add(self, rows: int, rejected: list[dict[str, Any]]) -> None:
        """Count one batch: *rows* read, *rejected* of them quarantined. Fails at once when more rows than
        ``max_bad_rows`` were rejected (no need to read the rest)."""
        self.total += rows
        self.rejected += len(rejected)
        for q in rejected:
            reason = str(q.get("reason") or "")
            self.by_rule[reason.split(":", 1)[0] if reason.startswith("rules.") else "mapping"] += 1
            if len(self.reasons) < 3:
                self.reasons.append(reason)
        if self.max_bad_rows is not None and self.rejected > self.max_bad_rows:
            self._fail(final=False)

    def check(self) -> None:
        """After the last batch, before the commit."""
        over_rows = self.max_bad_rows is not None and self.rejected > self.max_bad_rows
        over_fraction = self.max_bad_fraction is not None and self.total and \
            self.rejected / self.total > self.max_bad_fraction
        if over_rows or over_fraction:
            self._fail(final=True)

    def _fail(self, *, final: bool) -> None:
        over_rows = self.max_bad_rows is not None and self.rejected > self.max_bad_rows
        limit = f"max_bad_rows={self.max_bad_rows}" if over_rows else f"max_bad_fraction={self.max_bad_fraction}"
        by = ", ".join(f"{rule} {n}" for rule, n in self.by_rule.most_common())
        raise ThresholdExceeded(f"{self.where}: {self.rejected} of {self.total} rows rejected, more than {limit}"
                       f"{'' if final else ' (counted so far: the load stopped there)'}; {self.consequence}. "
                       f"Rejected by: {by}. First reasons: " + "; ".join(self.reasons))
