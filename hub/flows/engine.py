"""Running a flow: items from the warehouse, steps per item, every write through the delivery ledger.

:class:`FlowRun` reads the flow's input (a table, model or query of the warehouse, grouped by key when the
flow aggregates), then runs the steps of each item (``concurrency`` items at a time):

* ``call``: parameters evaluated from the item and earlier steps' outputs, validated against the action's
  input schema (nothing breaking it is sent), looked up in the ledger (an unchanged payload already
  delivered is skipped, its outputs reused), recorded ``sent`` (committed), sent once through the
  protocol's :meth:`~hub.protocols.Protocol.send`, and the outcome recorded with an audit row (deferred:
  committed with the next ``sent`` row, :class:`~hub.flows.ledger.Ledger`);
* ``lookup``: a read through the protocol's guarded execution, its first record's outputs as the step's
  (merged into the item with ``merge: true``);
* ``map``: fields computed from templates, picked by JSONPath and converted to a type;
* ``foreach``: the nested steps per element of a list, ``max_concurrency`` at a time, each element keyed
  in the ledger by ``key:`` (default: its position);
* ``branch``: the first branch whose condition holds; ``when:`` on any step skips it.

Items take turns to call systems (sends, lookups, verify lookups) in input order, ``concurrency`` at a time;
``prepare_ahead`` more items are prepared meanwhile, up to their first write: evaluated, validated and
recorded ``sent``, so the rows of several items are committed in one transaction while earlier items' requests
are in flight — one commit per batch of items instead of two per request, each row still committed before its
request leaves. An item prepared when the run stops (``max_failures``) is not sent: its row is put back.

Errors follow ``on_error`` (fail, skip, dead_letter, compensate: the item's completed calls undone in
reverse order by their ``compensate:`` calls, recorded in the ledger too). ``retry`` re-sends only what is
safe to send again: a call whose action reads, or that carries an idempotency key, or a request that never
left the host. An item that fails does not stop the others; more than ``max_failures`` failed items stop the
run. A dry run evaluates and validates every request and reports it with what the ledger would do, and sends
nothing.
"""

from __future__ import annotations

import contextvars
import dataclasses
import json
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from hub import protocols
from hub.agent.catalog import Action, Catalog, build_catalog
from hub.agent.params import checker, closed
from hub.errors import DeliveryFailed, DeliveryUnknown, HubError, Refused
from hub.flows.audit import audit_row
from hub.flows.ledger import DONE, OPEN, Delivery, Ledger, canonical, idempotency_key, payload_hash, summary
from hub.runtime import tracing
from hub.runtime.expr import evaluate, truthy
from hub.runtime.secrets import mask
from hub.runtime.window import KeyPartition, Window, render
from hub.spec.flows import FlowSpec, MapField, StepSpec
from hub.spec.loader import Pipeline
from hub.warehouse.base import PARTITION_COLUMN, ident, literal

ITEM_STATUSES = ("ok", "skipped", "failed", "dead", "unknown", "compensated", "planned")
FAILED = frozenset({"failed", "dead", "unknown", "compensated"})
#: Item outcomes that end an item until its input changes.
ENDED = frozenset({"dead", "compensated"})
#: Seconds a thread whose item ended sleeps after waking the next item (:meth:`_Turns.leave`): long enough for the
#: woken thread to take the GIL, short against a request.
HANDOFF = 0.0001
#: The ledger's step name of an item's own outcome (dead-lettered or compensated items).
ITEM_STEP = "__item__"


class FlowStopped(HubError):
    """More items failed than the flow's ``max_failures``; the run stopped (items done stay done)."""


@dataclass
class Planned:
    """A request a dry run would send (or that the ledger would skip)."""

    item_key: str
    step: str
    action: str
    request: dict[str, Any]
    ledger: str  # send | skip (already delivered) | resend (payload changed) | resolve (unknown outcome)
    idempotency_key: str | None = None


@dataclass
class ItemResult:
    key: str
    fields: dict[str, Any]
    status: str = "ok"
    outputs: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    sent: int = 0
    skipped: int = 0


@dataclass
class FlowReport:
    flow: str
    run_id: str
    dry_run: bool
    items: list[ItemResult] = field(default_factory=list)
    planned: list[Planned] = field(default_factory=list)
    stopped: str | None = None
    commits: int = 0  # ledger transactions written (DuckDB): rows are batched, see hub.flows.ledger

    def count(self, status: str) -> int:
        return sum(1 for i in self.items if i.status == status)

    @property
    def sent(self) -> int:
        return sum(i.sent for i in self.items)

    @property
    def skipped(self) -> int:
        return sum(i.skipped for i in self.items)

    @property
    def failed(self) -> int:
        return sum(1 for i in self.items if i.status in FAILED)


class _Withdrawn(Exception):
    """The run stopped before a prepared item's turn: the item is not run (its ledger row was put back)."""


class _ItemFailed(Exception):
    """An item's step failed; *status* is what the item becomes (after on_error handled it)."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class _Done:
    """A completed call of an item, for compensation."""

    step: StepSpec
    path: str
    context: dict[str, Any]
    attempts: int


@dataclass
class _Turn:
    """An item's place in :class:`_Turns` (shared by the item's foreach elements)."""

    index: int
    admitted: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Turns:
    """Items call systems in input order, at most *slots* (the flow's ``concurrency``) at a time.

    An item is admitted before its first call and holds its slot until it ends; an item that calls nothing
    (every write skipped by the ledger) passes without a slot. Admission in input order keeps a run at
    ``concurrency: 1`` sending in key order although ``prepare_ahead`` items are being prepared at once. Only
    the one item that may go next is woken (an event per waiting item): waking every waiting thread on each
    change cost a third of a millisecond per item under the GIL."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._lock = threading.Lock()
        self._active = 0
        self._next = 0  # the index admitted next
        self._passed: set[int] = set()  # items that ended without a turn, ahead of _next
        self._waiting: dict[int, threading.Event] = {}
        self._stopped = False

    def take(self, index: int) -> bool:
        """Wait for item *index*'s turn; False when the run stopped first."""
        with self._lock:
            if self._stopped:
                return False
            if index == self._next and self._active < self.slots:
                self._admit()
                return True
            event = self._waiting[index] = threading.Event()
        while True:
            event.wait()
            with self._lock:
                if self._stopped:
                    self._waiting.pop(index, None)
                    return False
                if index == self._next and self._active < self.slots:
                    del self._waiting[index]
                    self._admit()
                    return True
                event.clear()

    def leave(self, index: int, admitted: bool) -> None:
        """Item *index* ended (with its slot when *admitted*). When that woke the item that goes next and it is the
        only one that may call (``concurrency: 1``), this thread steps aside for a moment (:data:`HANDOFF`): it would
        otherwise go on to prepare another item holding the GIL, and the woken item — whose request is all the run
        waits for — would wait for the GIL until then (~0.2 ms per item). With more slots other requests are in
        flight meanwhile, and the sleep (~20 µs of CPU) would only cost."""
        with self._lock:
            if admitted:
                self._active -= 1
            elif index == self._next:
                self._advance()
            else:
                self._passed.add(index)
            woken = self._wake()
        if woken and self.slots == 1:
            time.sleep(HANDOFF)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            for event in self._waiting.values():
                event.set()

    def _admit(self) -> None:
        self._active += 1
        self._advance()
        self._wake()

    def _advance(self) -> None:
        self._next += 1
        while self._next in self._passed:
            self._passed.discard(self._next)
            self._next += 1

    def _wake(self) -> bool:
        """Wake the item that may go next, if it waits and a slot is free (lock held); True when it did."""
        event = self._waiting.get(self._next)
        if event is not None and self._active < self.slots:
            event.set()
            return True
        return False


@dataclass
class _Item:
    key: str
    fields: dict[str, Any]
    outputs: dict[str, Any] = field(default_factory=dict)
    done: list[_Done] = field(default_factory=list)
    sent: int = 0
    skipped: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    turn: _Turn = field(default_factory=lambda: _Turn(-1, admitted=True))


def jsonable(value: Any) -> Any:
    """Values the warehouse and templates produce, made JSON: Decimal → int or float, dates → ISO text."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() and abs(value) < 2**53 else float(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return value


def convert(value: Any, type_name: str | None, *, field: str) -> Any:
    """*value* converted to a spec type name (``map`` steps)."""
    if type_name is None or value is None:
        return value
    t = str(type_name).lower().replace(" ", "")
    try:
        if t in ("string", "str", "text"):
            return value if isinstance(value, str) else json.dumps(jsonable(value)) if isinstance(
                value, (dict, list)) else str(jsonable(value))
        if t in ("int64", "int32", "int16", "int8", "int", "integer"):
            return int(Decimal(str(value)))
        if t in ("float64", "float32", "float", "double"):
            return float(value)
        if t in ("bool", "boolean"):
            if isinstance(value, str):
                low = value.strip().lower()
                if low in ("true", "1", "yes", "y"):
                    return True
                if low in ("false", "0", "no", "n", ""):
                    return False
                raise ValueError(f"'{value}' is not a boolean")
            return bool(value)
        if t.startswith("decimal"):
            scale = int(t.rstrip(")").split(",")[1]) if "," in t else 0
            return Decimal(str(value)).quantize(Decimal(1).scaleb(-scale))
        if t == "date":
            return value.isoformat()[:10] if isinstance(value, (date, datetime)) else date.fromisoformat(
                str(value)[:10]).isoformat()
        if t.startswith("timestamp"):
            ts = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
            return ts.isoformat()
        if t == "json":
            return json.loads(value) if isinstance(value, str) else value
    except (ValueError, ArithmeticError, TypeError) as exc:
        raise HubError(f"{field}: cannot convert {value!r} to {type_name}: {exc}") from None
    raise HubError(f"{field}: unknown type {type_name}")


def pick(path: str, doc: Any) -> Any:
    """The JSONPath *path* in *doc*: the first match, or every match when the path has a wildcard."""
    from adapters.rest import select

    found = select(path, jsonable(doc))
    if "*" in path or ".." in path:
        return found
    return found[0] if found else None


class FlowRun:
    """One run of one flow (see the module docstring)."""

    def __init__(self, pipeline: Pipeline, flow: str, *, dry_run: bool = False, limit: int | None = None,
                 run_id: str | None = None, catalog: Catalog | None = None,
                 echo: Callable[[str], None] | None = None, window: Window | KeyPartition | None = None,
                 approve: bool = False) -> None:
        if flow not in pipeline.spec.flows:
            raise HubError(f"no flow '{flow}' in pipeline {pipeline.name} (flows: "
                           f"{', '.join(pipeline.spec.flows) or 'none'})")
        partitioned = pipeline.flow_partitioned(flow) or pipeline.flow_files(flow) is not None
        if partitioned and window is None:
            raise HubError(f"flow {flow} runs per partition of {pipeline.spec.flows[flow].trigger.after}: name one "
                           "(hub run --asset FLOW --partition KEY, or the Dagster UI)")
        self.pipeline, self.name = pipeline, flow
        #: the partition a partitioned flow runs for: a time window, or a file of a source loaded per file
        self.window = window if partitioned else None
        self.spec: FlowSpec = pipeline.spec.flows[flow]
        if not self.spec.approved and not dry_run and not approve:
            raise Refused(unapproved(pipeline, flow))
        self.dry_run = dry_run
        self.limit = limit if limit is not None else self.spec.input.limit
        self.run_id = run_id or f"flow-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
        self.echo = echo or (lambda _msg: None)
        self._catalog = catalog
        self._actions: dict[str, Action] = {}
        self.ledger: Ledger | None = None
        self.report = FlowReport(flow, self.run_id, dry_run)
        self._failures = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._catalog_lock = threading.Lock()
        self._trace_id: str | None = None
        self._checks: dict[str, Callable[[dict[str, Any]], list[str]]] = {}
        self._turns = _Turns(self.spec.concurrency)

    # --- set-up ----------------------------------------------------------------------------------------

    def action(self, name: str) -> Action:
        """The catalog's action *name* (the catalog of the flow's systems is read once, on first use)."""
        if name in self._actions:
            return self._actions[name]
        with self._catalog_lock:  # items run concurrently: the catalog is read once
            if self._catalog is None:
                systems = {a.split(".", 1)[0] for a in _action_names(self.spec)}
                self._catalog = build_catalog([self.pipeline], systems=systems)
        try:
            found = self._catalog.get(name)
        except HubError as exc:
            system = name.split(".", 1)[0]
            why = self._catalog.errors.get(system)
            raise HubError(f"flow {self.name}: {exc}" + (f" (system {system} could not be read: {why})"
                                                          if why else "")) from None
        self._actions[name] = found
        return found

    def items(self) -> list[dict[str, Any]]:
        """The flow's input rows (grouped when it aggregates), in key order, at most :attr:`limit`."""
        from hub.warehouse import connect

        inp = self.spec.input
        wh = connect(self.pipeline.warehouse_url)
        if inp.table is not None:
            if inp.table not in wh.tables():
                raise HubError(f"flows.{self.name}.input.table: table {inp.table} is not in the warehouse yet "
                               "(materialize it first)")
            sql = f"SELECT * FROM {ident(inp.table)}"
            if self.window is not None:  # a partitioned flow reads its partition's rows only
                sql += f" WHERE {ident(PARTITION_COLUMN)} = {literal(self.window.key)}"
        else:
            sql = render(str(inp.sql), self.window, field=f"flows.{self.name}.input.sql")
        try:  # the flow's own SELECT of a table needs no sandbox (nor sqlglot's check of user SQL)
            rows = wh.query(sql, sandboxed=inp.table is None).to_pylist()
        except HubError as exc:
            where = "table" if inp.table is not None else "sql"
            raise HubError(f"flows.{self.name}.input.{where}: the input cannot be read ({exc}); are the tables it "
                           f"reads materialized ({', '.join(self.pipeline.flow_deps.get(self.name, [])) or '-'})?"
                           ) from None
        keys = inp.aggregate.by if inp.aggregate else inp.key
        for i, row in enumerate(rows[:1]):
            missing = [k for k in keys if k not in row]
            if missing:
                raise HubError(f"flows.{self.name}.input: the input has no column(s) {', '.join(missing)} "
                               f"(columns: {', '.join(row)}) (row {i + 1})")
        if inp.aggregate is not None:
            groups: dict[tuple[Any, ...], dict[str, Any]] = {}
            for row in rows:
                gk = tuple(row[k] for k in inp.aggregate.by)
                group = groups.setdefault(gk, {**{k: row[k] for k in inp.aggregate.by}, inp.aggregate.collect: []})
                group[inp.aggregate.collect].append(row)
            rows = list(groups.values())
        rows.sort(key=lambda r: tuple(str(r[k]) for k in inp.key))
        return rows[: self.limit] if self.limit is not None else rows

    def item_key(self, row: dict[str, Any]) -> str:
        return ",".join(f"{k}={jsonable(row[k])}" for k in self.spec.input.key)

    # --- the run ---------------------------------------------------------------------------------------

    def run(self) -> FlowReport:
        """Run the flow over its items; the report says what happened to each.

        A flow that writes (not a dry run) holds the warehouse's writer lock (:mod:`hub.warehouse.lock`) from
        reading its input to writing its results: its ledger keeps the DuckDB file open for the whole run, so a
        ``hub run``, a Dagster step or another flow waits for it (and it for them) instead of failing to open
        the file."""
        from hub.warehouse.lock import writer_lock

        if self.dry_run:
            return self._run()
        with writer_lock(self.pipeline.warehouse_url, what=f"flow {self.name} ({self.run_id})", say=self.echo):
            return self._run()

    def _run(self) -> FlowReport:
        """The run, with the warehouse held open for it when it writes (:meth:`~hub.warehouse.base.Warehouse.held`:
        its input, ledger, results and ``_hub_calls`` then share one open DuckDB file; user SQL of the input runs
        sandboxed, before)."""
        from hub.warehouse import connect

        if self.dry_run:
            return self._run_items(self.items())
        rows = self.items() if self.spec.input.table is None else None
        with connect(self.pipeline.warehouse_url).held():
            return self._run_items(self.items() if rows is None else rows)

    def _run_items(self, rows: list[dict[str, Any]]) -> FlowReport:
        from hub.warehouse.calls import calls_sink

        self.ledger = Ledger(self.pipeline.warehouse_url, self.pipeline.name, self.name, read_only=self.dry_run)
        sink = None if self.dry_run else calls_sink(self.pipeline.warehouse_url)
        with tracing.asset_scope(self.name, run_id=self.run_id, pipeline=self.pipeline.name, sink=sink,
                                 kind="flow") as scope:
            ctx = scope.span.get_span_context()
            self._trace_id = format(ctx.trace_id, "032x") if ctx.is_valid else \
                format(tracing.run_ids(self.run_id)[0], "032x")
            results: list[ItemResult | None] = [None] * len(rows)

            def one(i: int, row: dict[str, Any]) -> None:
                if self._stop.is_set():
                    return
                results[i] = self._item(row, i)

            # items call in turns, `concurrency` at a time; `prepare_ahead` more are prepared meanwhile (a dry
            # run writes no ledger rows, so it has nothing to prepare)
            workers = self.spec.concurrency + (0 if self.dry_run else self.spec.prepare_ahead)
            try:
                if workers == 1:
                    for i, row in enumerate(rows):
                        one(i, row)
                else:
                    with ThreadPoolExecutor(workers, thread_name_prefix=f"flow-{self.name}") as pool:
                        futures = [pool.submit(contextvars.copy_context().run, one, i, row)
                                   for i, row in enumerate(rows)]
                        wait(futures)  # woken once, not per item (the main thread took the GIL 1,000 times)
                        for f in futures:
                            f.result()
            finally:
                self.ledger.close()  # before the calls and results are written through connections of their own
                self.report.commits = self.ledger.commits
            self.report.items = [r for r in results if r is not None]
        if not self.dry_run:
            self._write_results()
        return self.report

    def _item(self, row: dict[str, Any], index: int) -> ItemResult | None:
        """Run one item; None when the run stopped before its turn (nothing of it was sent)."""
        item = _Item(self.item_key(row), dict(row), turn=_Turn(index))
        try:
            return self._run_item(row, item)
        except _Withdrawn:
            return None
        finally:
            self._turns.leave(index, item.turn.admitted)

    def _run_item(self, row: dict[str, Any], item: _Item) -> ItemResult:
        result = ItemResult(item.key, {k: jsonable(row[k]) for k in self.spec.input.key})
        assert self.ledger is not None
        marker = self.ledger.get(ITEM_STEP, item.key)  # the item's hash only when it is compared or recorded
        if marker is not None and marker.status in ENDED and marker.payload_hash == _item_hash(row):
            # a dead-lettered or compensated item is finished: not run again until its input changes (or
            # `hub flows review --resolve FLOW:__item__:KEY --as resend`)
            result.status, result.error = marker.status, marker.error
            self.echo(f"{result.status:<11} {item.key}: unchanged since it ended {marker.status} (run {marker.run_id})")
            return result
        try:
            self._steps(self.spec.steps, item, self._context(item), "")
            result.status = "planned" if self.dry_run else ("ok" if item.sent or not item.skipped else "skipped")
        except _ItemFailed as exc:
            result.status, result.error = exc.status, mask(str(exc))
        except HubError as exc:  # a template, a conversion, an unknown action: this item fails, not the run
            result.status, result.error = "failed", mask(str(exc))
        result.outputs, result.sent, result.skipped = jsonable(item.outputs), item.sent, item.skipped
        if result.status in ENDED and not self.dry_run:
            self.ledger.record(Delivery(self.name, ITEM_STEP, item.key, self.pipeline.name, "", _item_hash(row),
                                        status=result.status, error=result.error, run_id=self.run_id,
                                        trace_id=self._trace_id))
        if result.status in FAILED:
            with self._lock:
                self._failures += 1
                limit = self.spec.max_failures
                if limit is not None and self._failures > limit and not self._stop.is_set():
                    self._stop.set()
                    self._turns.stop()
                    self.report.stopped = (f"{self._failures} item(s) failed, more than max_failures={limit}: the "
                                           "run stopped; items already done stay done")
        self.echo(f"{result.status:<11} {item.key}" + (f": {result.error}" if result.error else ""))
        return result

    def _context(self, item: _Item, each: Any = None) -> dict[str, Any]:
        ctx = {"item": item.fields, "steps": item.outputs, "flow": {"name": self.name},
               "run": {"id": self.run_id, "date": datetime.now(UTC).date().isoformat()}}
        if each is not None:
            ctx["each"] = each
        return ctx

    def _steps(self, steps: list[StepSpec], item: _Item, ctx: dict[str, Any], prefix: str) -> None:
        for step in steps:
            where = f"flows.{self.name}.steps.{step.name}"
            if step.when is not None and not truthy(step.when, ctx, field=f"{where}.when"):
                continue
            if step.call is not None:
                self._call(step, item, ctx, prefix + step.name)
            elif step.lookup is not None:
                self._lookup(step, item, ctx, where)
            elif step.map is not None:
                out = {}
                for name, spec in step.map.items():
                    mf = MapField.model_validate(spec) if isinstance(spec, dict) and "value" in spec else \
                        MapField(value=spec)
                    value = evaluate(mf.value, ctx, field=f"{where}.map.{name}")
                    if mf.path:
                        value = pick(mf.path, value)
                    out[name] = convert(value, mf.type, field=f"{where}.map.{name}")
                item.outputs[step.name] = out
            elif step.foreach is not None:
                self._foreach(step, item, ctx, prefix, where)
            elif step.branch is not None:
                for b, br in enumerate(step.branch):
                    if br.when is None or truthy(br.when, ctx, field=f"{where}.branch.{b}.when"):
                        self._steps(br.steps, item, ctx, prefix)
                        break

    def _foreach(self, step: StepSpec, item: _Item, ctx: dict[str, Any], prefix: str, where: str) -> None:
        elements = evaluate(step.foreach, ctx, field=f"{where}.foreach")
        if isinstance(elements, str):
            elements = json.loads(elements)
        if not isinstance(elements, list):
            raise HubError(f"{where}.foreach: expected a list, got {type(elements).__name__}")
        outputs: list[Any] = [None] * len(elements)
        errors: list[_ItemFailed] = []

        def one(i: int, element: Any) -> None:
            ectx = {**ctx, "each": element, "steps": dict(item.outputs)}
            ekey = evaluate(step.key, ectx, field=f"{where}.key") if step.key else i
            sub = _Item(item.key, item.fields, ectx["steps"], turn=item.turn)
            try:
                self._steps(step.steps, sub, ectx, f"{prefix}{step.name}[{ekey}].")
            except _ItemFailed as exc:
                errors.append(exc)
            finally:
                with item.lock:
                    item.sent += sub.sent
                    item.skipped += sub.skipped
                    item.done.extend(sub.done)
            outputs[i] = {s.name: sub.outputs.get(s.name) for s in step.steps if s.name in sub.outputs}

        if step.max_concurrency == 1 or len(elements) <= 1:
            for i, element in enumerate(elements):
                one(i, element)
        else:
            with ThreadPoolExecutor(step.max_concurrency, thread_name_prefix=f"flow-{step.name}") as pool:
                futures = [pool.submit(contextvars.copy_context().run, one, i, el) for i, el in enumerate(elements)]
                for f in futures:
                    f.result()
        item.outputs[step.name] = outputs
        if errors:
            raise errors[0]

    # --- reads -----------------------------------------------------------------------------------------

    def _read(self, action_name: str, params: dict[str, Any], where: str, item: _Item) -> list[dict[str, Any]]:
        from hub.agent.guard import execute

        action = self.action(action_name)
        request = jsonable(params)
        self._validate(action, request, where)
        assert self._catalog is not None
        if not self._take_turn(item):
            raise _Withdrawn()
        fetched = execute(self._catalog, action, request, 1000)
        return [jsonable(r) for r in fetched.records]

    def _lookup(self, step: StepSpec, item: _Item, ctx: dict[str, Any], where: str) -> None:
        assert step.lookup is not None
        params = evaluate(step.params, ctx, field=f"{where}.params")
        attempts = step.retry.attempts if step.retry else 1
        for attempt in range(1, attempts + 1):
            try:
                records = self._read(step.lookup, params, where, item)
                break
            except HubError:
                if attempt == attempts:
                    raise
                time.sleep(step.retry.backoff * 2 ** (attempt - 1) if step.retry else 0)
        first = records[0] if records else None
        out = {name: pick(path, first) for name, path in step.output.items()} if step.output else (first or {})
        item.outputs[step.name] = out
        if step.merge and isinstance(out, dict):
            item.fields.update(out)

    # --- writes ----------------------------------------------------------------------------------------

    def _take_turn(self, item: _Item) -> bool:
        """Before *item*'s first call: wait for its turn (:class:`_Turns`); False when the run stopped first."""
        turn = item.turn
        if turn.admitted:
            return True
        with turn.lock:  # foreach elements of one item share its turn
            if not turn.admitted:
                if not self._turns.take(turn.index):
                    return False
                turn.admitted = True
        return True

    def _withdraw(self, delivery: Delivery, previous: Delivery | None) -> None:
        """The run stopped before the turn of an item whose row was recorded ``sent``: nothing left, so the row
        is put back as it was (``pending`` when the item had none), committed."""
        assert self.ledger is not None
        if previous is not None:
            self.ledger.record(dataclasses.replace(previous))
            return
        delivery.status, delivery.attempts = "pending", delivery.attempts - 1
        delivery.error = "not sent: the run stopped before this item's turn"
        self.ledger.record(delivery)

    def _validate(self, action: Action, request: dict[str, Any], where: str) -> None:
        """Refuse *request* when it breaks the action's input schema: nothing is sent."""
        check = self._checks.get(action.name)
        if check is None:  # one checker per action (items run concurrently: building one twice is harmless)
            schema = action.input_schema or {"type": "object"}
            if protocols.get(action.protocol).closed_inputs(action):
                schema = closed(schema)
            check = self._checks[action.name] = checker(schema)
        found = check(request)
        if found:
            raise _ItemFailed("failed", f"{where}: the request to {action.name} breaks its schema, so it was not "
                                        f"sent: {'; '.join(found)}")

    def _call(self, step: StepSpec, item: _Item, ctx: dict[str, Any], path: str) -> None:
        where = f"flows.{self.name}.steps.{step.name}"
        assert step.call is not None
        try:
            self._deliver(step, step.call, step.params, item, ctx, path, where, step.verify)
        except _ItemFailed as exc:
            if exc.status == "unknown":
                raise  # an effect that may exist is neither compensated nor skipped: it waits for review
            if step.on_error == "skip":
                item.outputs[step.name] = None
                return
            if step.on_error == "dead_letter":
                self._mark(path, item.key, "dead", str(exc))
                raise _ItemFailed("dead", str(exc)) from None
            if step.on_error == "compensate":
                undone = self._compensate(item)
                raise _ItemFailed("compensated", f"{exc}; compensated: {', '.join(undone) or 'nothing to undo'}") \
                    from None
            raise

    def _mark(self, path: str, item_key: str, status: str, error: str) -> None:
        assert self.ledger is not None
        row = self.ledger.get(path, item_key)
        if row is not None and not self.dry_run:
            row.status, row.error, row.run_id = status, mask(error)[:2000], self.run_id
            self.ledger.record(row)

    def _deliver(self, step: StepSpec, action_name: str, params: dict[str, Any], item: _Item,
                 ctx: dict[str, Any], path: str, where: str, verify: Any) -> None:
        """One write of *item* through the ledger (see the module docstring)."""
        assert self.ledger is not None
        action = self.action(action_name)
        request = jsonable(evaluate(params, ctx, field=f"{where}.params"))
        digest = payload_hash(action.name, request)
        key = idempotency_key(self.name, path, item.key, digest)
        keyed = step.idempotency is not None
        if step.idempotency is not None and step.idempotency.param:
            _place_key(request, step.idempotency.param, key)
        self._validate(action, request, where)
        row = self.ledger.get(path, item.key)
        same = row is not None and row.payload_hash == digest
        name = path.rsplit(".", 1)[-1]
        if row is not None and row.status in DONE and (same or step.mode == "insert"):
            item.outputs[name] = row.outputs
            item.skipped += 1
            item.done.append(_Done(step, path, dict(ctx), row.attempts))
            if self.dry_run:
                self.report.planned.append(Planned(item.key, path, action.name, request, "skip", key))
            return
        if row is not None and row.status == "dead" and same:
            raise _ItemFailed("dead", f"{where}: dead-lettered in an earlier run ({row.error}); change the payload "
                                      "or resolve it with `hub flows review`")
        if row is not None and row.status in OPEN and same:
            if self.dry_run:
                self.report.planned.append(Planned(item.key, path, action.name, request, "resolve", key))
                item.outputs[name] = {}
                return
            if not self._resolve(step, action, row, item, ctx, path, where, verify, keyed):
                return  # resolved: it took effect
        if self.dry_run:
            what = "send" if row is None else ("resend" if not same else "send")
            self.report.planned.append(Planned(item.key, path, action.name, request, what, key))
            item.outputs[name] = {k: f"<{path}.{k}>" for k in step.output} if step.output else {}
            return
        attempts = step.retry.attempts if step.retry is not None else 1
        safe = keyed or action.side_effect == "read" or bool(action.binding.get("idempotent"))
        masked = _masked(request)  # the ledger's summary and the audit row's parameters
        delivery = Delivery(self.name, path, item.key, self.pipeline.name, action.name, digest,
                            attempts=row.attempts if row is not None and same else 0,
                            idempotency_key=key if keyed else None,
                            request=summary(masked), created_at=row.created_at if row else datetime.now(UTC))
        for attempt in range(1, attempts + 1):
            delivery.status, delivery.attempts, delivery.run_id = "sent", delivery.attempts + 1, self.run_id
            delivery.error, delivery.trace_id = None, self._trace_id
            # queued at once, committed (with the rows of the items prepared meanwhile) before anything leaves
            written = self.ledger.record(delivery, durable=False)
            if not self._take_turn(item):
                self._withdraw(delivery, row)
                raise _Withdrawn()
            self.ledger.commit(written)
            started = time.monotonic()
            try:
                sent = protocols.get(action.protocol).send(self.pipeline, action, request,
                                                           idempotency_key=key if keyed else None,
                                                           key_header=step.idempotency.header if keyed and
                                                           step.idempotency else None)
            except DeliveryUnknown as exc:
                message = str(exc)
                again = safe and attempt < attempts
                if not again and verify is not None:
                    if self._verified(step, action, delivery, item, ctx, where, verify, started, request):
                        return
                    again = attempt < attempts  # verified absent: sending again is safe
                    if not again:
                        self._outcome(delivery, action, request, "failed", message, started, masked=masked)
                        raise _ItemFailed("failed", f"{where}: {message}; verify found no effect") from None
                if again:
                    self._outcome(delivery, action, request, "sent", message, started, masked=masked)
                    self._sleep(step, attempt)
                    continue
                self._outcome(delivery, action, request, "unknown", message, started, masked=masked)
                raise _ItemFailed("unknown", f"{where}: {message}; parked as unknown (declare verify: or an "
                                             "idempotency key to resolve it; see `hub flows review`)") from None
            except DeliveryFailed as exc:
                message = str(exc)
                if exc.retryable and attempt < attempts and (safe or exc.status is None):
                    self._outcome(delivery, action, request, "failed", message, started, masked=masked)
                    self._sleep(step, attempt)
                    continue
                self._outcome(delivery, action, request, "failed", message, started, masked=masked)
                raise _ItemFailed("failed", f"{where}: {message}") from None
            except HubError as exc:  # refused by the adapter before sending (parameters, WSDL)
                self._outcome(delivery, action, request, "failed", str(exc), started, masked=masked)
                raise _ItemFailed("failed", f"{where}: {exc}") from None
            doc = jsonable(sent.response)
            outputs = self._outputs(step, doc)
            delivery.outputs, delivery.response = outputs, summary(doc)
            self._outcome(delivery, action, request, "ok", sent.summary, started, sent.response, masked=masked)
            item.outputs[name] = outputs
            item.sent += 1
            item.done.append(_Done(step, path, dict(ctx), delivery.attempts))
            return

    def _outputs(self, step: StepSpec, response: Any) -> dict[str, Any]:
        doc = jsonable(response)
        if step.output:
            return {name: pick(p, doc) for name, p in step.output.items()}
        return doc if isinstance(doc, dict) else {"response": doc}

    def _sleep(self, step: StepSpec, attempt: int) -> None:
        if step.retry is not None:
            time.sleep(step.retry.backoff * 2 ** (attempt - 1))

    def _outcome(self, delivery: Delivery, action: Action, request: dict[str, Any], status: str, message: str,
                 started: float, response: Any = None, *, masked: Any = None) -> None:
        """Record *delivery*'s outcome with its audit row (*masked*: the request already masked, if at hand)."""
        assert self.ledger is not None
        delivery.status = status
        delivery.error = None if status == "ok" else mask(message)[:2000]
        audit = audit_row(run_id=self.run_id, flow=self.name, action=action, params=request,
                          outcome="ok" if status == "ok" else ("unknown" if status in OPEN else "error"),
                          message=message, started=started, response=response, trace_id=self._trace_id,
                          masked=masked)
        # deferred: committed with the next `sent` row (or within ledger.FLUSH_AFTER); lost in a crash, the row
        # stays `sent`, which a later run resolves like any request whose answer was not recorded
        self.ledger.record(delivery, audit=audit, durable=False)

    def _resolve(self, step: StepSpec, action: Action, row: Delivery, item: _Item, ctx: dict[str, Any], path: str,
                 where: str, verify: Any, keyed: bool) -> bool:
        """A delivery left ``sent`` or ``unknown`` by an earlier run: True when it must be sent (again), False
        when verify found it took effect; :class:`_ItemFailed` (unknown) when nothing can tell."""
        if verify is not None:
            # found: it took effect (recorded ok); absent: it must be sent
            return not self._verified(step, action, row, item, ctx, where, verify, time.monotonic(), None)
        if keyed or action.binding.get("idempotent"):
            return True  # the partner deduplicates on the key, or the action is idempotent (an SQL upsert, a
            #              file put by name): sending again cannot act twice
        if row.status == "sent":
            row.status, row.error = "unknown", ("an earlier run sent this request and stopped before its answer "
                                                "was recorded")
            row.run_id = self.run_id
            self.ledger.record(row) if self.ledger else None
        raise _ItemFailed("unknown", f"{where}: an earlier run sent this request and its outcome is unknown; it is "
                                     "not sent again without verify: or an idempotency key (`hub flows review`)")

    def _verified(self, step: StepSpec, action: Action, delivery: Delivery, item: _Item, ctx: dict[str, Any],
                  where: str, verify: Any, started: float, request: dict[str, Any] | None) -> bool:
        """Run the step's ``verify:`` lookup; when it finds the effect, record the delivery ``ok``."""
        assert self.ledger is not None
        records = self._read(verify.call, evaluate(verify.params, ctx, field=f"{where}.verify.params"),
                             f"{where}.verify", item)
        vctx = {**ctx, "result": records}
        if not truthy(verify.found, vctx, field=f"{where}.verify.found"):
            return False
        outputs = {name: evaluate(tpl, vctx, field=f"{where}.verify.output.{name}")
                   for name, tpl in verify.output.items()} if verify.output else (records[0] if records else {})
        delivery.outputs = jsonable(outputs)
        delivery.response = summary({"verified": records[:5]})
        delivery.run_id = self.run_id
        self._outcome(delivery, action, request or {}, "ok", "verified: the effect exists", started)
        name = delivery.step.rsplit(".", 1)[-1]
        item.outputs[name] = delivery.outputs
        item.sent += 1
        item.done.append(_Done(step, delivery.step, dict(ctx), delivery.attempts))
        return True

    def _compensate(self, item: _Item) -> list[str]:
        """Undo *item*'s completed calls in reverse order with their ``compensate:`` calls (each once, through
        the ledger); the undone deliveries become ``compensated``, so a later run sends them again."""
        undone: list[str] = []
        for done in reversed(item.done):
            comp = done.step.compensate
            if comp is None:
                continue
            where = f"flows.{self.name}.steps.{done.step.name}.compensate"
            cstep = StepSpec(name=f"{done.step.name}__compensate", call=comp.call, params=comp.params,
                             retry=done.step.retry, idempotency=done.step.idempotency)
            ctx = dict(done.context)  # its "steps" are the outputs of the item (or foreach element) it ran in
            self._deliver(cstep, comp.call, comp.params, item, ctx, f"{done.path}.compensate#{done.attempts}",
                          where, None)
            self._mark(done.path, item.key, "compensated", "undone by its compensate: call")
            undone.append(done.path)
        return undone

    # --- results ---------------------------------------------------------------------------------------

    def _write_results(self) -> None:
        """The flow's table: one row per item (key, status, outputs, error), merged on the item key."""
        import pyarrow as pa

        from hub import owners
        from hub.warehouse import LoadRequest, connect

        if not self.report.items:
            return
        now = datetime.now(UTC)
        rows = [{"item_key": r.key, "status": r.status, "key": canonical(r.fields), "outputs": canonical(r.outputs),
                 "error": r.error, "sent": r.sent, "skipped": r.skipped, "run_id": self.run_id, "updated_at": now}
                for r in self.report.items]  # a partitioned flow's rows carry their partition (_hub_partition)
        schema = pa.schema([("item_key", pa.string()), ("status", pa.string()), ("key", pa.string()),
                            ("outputs", pa.string()), ("error", pa.string()), ("sent", pa.int64()),
                            ("skipped", pa.int64()), ("run_id", pa.string()),
                            ("updated_at", pa.timestamp("us", tz="UTC"))])
        wh = connect(self.pipeline.warehouse_url)
        owners.check(wh, self.pipeline, [self.name])
        with wh.begin(LoadRequest(table=self.name, mode="merge", run_id=self.run_id, primary_key=("item_key",),
                                  partition=self.window.key if self.window is not None else None)) as load:
            load.write(pa.RecordBatch.from_pylist(rows, schema=schema))
            owners.claim(load, self.pipeline, [self.name], self.run_id)
            load.commit()


def _item_hash(row: dict[str, Any]) -> str:
    """The hash of an item's input row (its ``__item__`` ledger row): computed only for an item that ended or
    has such a row, not for every item of every run."""
    return payload_hash(ITEM_STEP, jsonable(row))


def _place_key(request: dict[str, Any], name: str, key: str) -> None:
    """The idempotency key as the parameter *name*, or as a field of an object parameter when *name* is dotted
    (``body.message_id``: a message's consumers deduplicate on a field of its body). Set after the payload
    hash, which therefore does not depend on the key derived from it."""
    head, dot, rest = name.partition(".")
    if dot and name not in request and isinstance(request.get(head), dict):
        inner = dict(request[head])
        _place_key(inner, rest, key)
        request[head] = inner
    else:
        request[name] = key


def _masked(request: dict[str, Any]) -> Any:
    from hub.agent.guard import mask_params

    return mask_params(request)


def _action_names(flow: FlowSpec) -> set[str]:
    from hub.spec.flows import walk

    names: set[str] = set()
    for _, step, _ in walk(flow.steps, ()):
        for a in (step.call, step.lookup, step.compensate.call if step.compensate else None,
                  step.verify.call if step.verify else None):
            if a:
                names.add(a)
    return names


def unapproved(pipeline: Pipeline, flow: str) -> str:
    """Why a flow an agent planned (``approved: false``) does not run, and the command that runs it."""
    by = pipeline.spec.flows[flow].planned_by
    return (f"flow {flow} of {pipeline.path.name} was planned by {by or 'an agent'} and is not approved: nothing was "
            f"sent. Review its writes with `hub flow run {flow} --spec {pipeline.path} --dry-run`, then run it with "
            f"`hub flow run {flow} --spec {pipeline.path} --approve` (or set approved: true in the spec)")


def run_flow(pipeline: Pipeline, flow: str, **kwargs: Any) -> FlowReport:
    """Run *flow* of *pipeline* once (see :class:`FlowRun`)."""
    return FlowRun(pipeline, flow, **kwargs).run()
