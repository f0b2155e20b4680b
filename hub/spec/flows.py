"""``flows:`` of a spec: coordinated multi-step workflows that act on systems (docs/flows.md).

A flow reads items from the warehouse (a table, model or query), and runs its steps for each item: calls
of actions of any protocol (``call``), lookups that enrich the item (``lookup``), field mappings (``map``),
conditions (``when``) and branches (``branch``), fan-out over a list (``foreach``). Items may be grouped by
key first (``input.aggregate``), so one call carries many rows. What the flows send is recorded per item
in the delivery ledger (:mod:`hub.flows.ledger`), so a re-run never repeats a completed effect.

This module holds the models and the checks that need nothing but the spec (names, references between
steps, fields of the item, templates); the checks against the systems' actions (an action that does not
exist, a parameter the action does not take, a value of the wrong type) need the live catalogs and run in
:mod:`hub.flows.check`, from ``hub validate``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hub.errors import HubError
from hub.runtime.choice import exactly_one
from hub.runtime.expr import references
from hub.spec.rules import TypeName

Loc = tuple[str | int, ...]
NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
#: Names a template of a step may read.
ROOTS = ("item", "steps", "flow", "run")
ON_ERROR = ("fail", "skip", "dead_letter", "compensate")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class HttpTrigger(_Strict):
    """``trigger: {http: {system: ops}}``: ``POST /flows/<flow>/run`` on ``hub serve`` starts a run. The caller
    authenticates as the webhook *system* (its ``webhook:`` block: HMAC signature, API key or bearer JWT), so
    there is never an open endpoint; the run reads the flow's declared input like any other trigger."""

    system: str = Field(description="A webhook system (systems.<name>.webhook): how callers authenticate.")


class TriggerSpec(_Strict):
    """When a flow runs: exactly one of the keys. ``events``: after each batch of new events a stream source's
    sensor absorbs into its table (the flow's items are then its input, usually that table; the ledger sends
    each item once however often the flow runs). ``http``: on an authenticated call to ``hub serve``."""

    manual: bool | None = Field(None, description="Only when started (`hub flow run`, the Dagster UI).")
    schedule: str | None = Field(None, description="A cron expression (a Dagster schedule).")
    after: str | None = Field(None, description="After each materialization of this asset (a source, child "
                                                "table or model of the pipeline).")
    events: str | None = Field(None, description="After new events of this stream source are absorbed into "
                                                 "its table (hub listen, or the source's sensor).")
    http: HttpTrigger | None = Field(None, description="On POST /flows/<flow>/run to hub serve, authenticated "
                                                       "as this webhook system ({system: <name>}, or the name).")

    @field_validator("http", mode="before")
    @classmethod
    def _system_name(cls, v: Any) -> Any:
        return {"system": v} if isinstance(v, str) else v

    @model_validator(mode="after")
    def _one(self) -> TriggerSpec:
        exactly_one(self, ("manual", "schedule", "after", "events", "http"))
        return self

    @field_validator("schedule")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        from hub.spec.models import _valid_cron

        if v is not None and not _valid_cron(v):
            raise ValueError(f"'{v}' is not a valid cron expression (expected e.g. '0 6 * * *')")
        return v


class AggregateSpec(_Strict):
    """Items grouped by key before the steps run: one item per group, with the group's rows in a list."""

    by: list[str] = Field(min_length=1, description="Columns whose values form a group (and the item key).")
    collect: str = Field("rows", pattern=NAME, description="The name of the list of rows in each item.")

    @field_validator("by", mode="before")
    @classmethod
    def _list(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


class InputSpec(_Strict):
    """What a flow runs over: rows of a table or model of the warehouse, or a query over them."""

    table: str | None = Field(None, description="A source, child table or model of the pipeline.")
    sql: str | None = Field(None, description="Or one SELECT over the pipeline's tables.")
    key: list[str] = Field(min_length=1, description="Columns that identify an item (its key in the ledger).")
    fields: list[str] | None = Field(None, description="The columns the input has (checked against templates; "
                                                       "default: the source's declared columns, when any).")
    aggregate: AggregateSpec | None = None
    limit: int | None = Field(None, ge=1, description="At most this many items per run.")

    @field_validator("key", mode="before")
    @classmethod
    def _list(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _one(self) -> InputSpec:
        exactly_one(self, ("table", "sql"))
        return self


class RetrySpec(_Strict):
    attempts: int = Field(3, ge=1, le=20, description="Attempts in all (the first included).")
    backoff: float = Field(0.5, ge=0, le=300, description="Seconds before the second attempt, doubling.")


class IdempotencySpec(_Strict):
    """How the deterministic idempotency key of a delivery travels to the partner."""

    header: str | None = Field(None, description="An HTTP header (REST: Idempotency-Key).")
    param: str | None = Field(None, description="Or a parameter of the action (SOAP/GraphQL/SQL: a field the "
                                                "partner deduplicates on), or a field of one (body.message_id).")

    @model_validator(mode="after")
    def _one(self) -> IdempotencySpec:
        exactly_one(self, ("header", "param"))
        return self


class CallSpec(_Strict):
    """A call of an action with templated parameters (compensations and verifications)."""

    call: str = Field(description="The action, <system>.<operation> (see `hub catalog actions`).")
    params: dict[str, Any] = Field(default_factory=dict)


class VerifySpec(CallSpec):
    """A read that tells whether a write whose answer was lost took effect."""

    found: str = Field(description="A condition over `result` (the lookup's records, a list): true when the "
                                   "write took effect, e.g. \"result | length > 0\".")
    output: dict[str, str] = Field(default_factory=dict, description="The step's outputs, read from `result` "
                                                                     "when the write is found.")


class MapField(_Strict):
    value: Any = Field(description="A template or literal (a single {{ expression }} keeps its type).")
    path: str | None = Field(None, description="A JSONPath applied to the value (first match, or all with [*]).")
    type: TypeName | None = Field(None, description="Convert: string, int64, float64, bool, decimal(p,s), date, "
                                                    "timestamp, json.")


class BranchSpec(_Strict):
    when: str | bool | None = Field(None, description="The condition; omitted: the branch taken otherwise.")
    steps: list[StepSpec] = Field(default_factory=list)


class StepSpec(_Strict):
    """One step of a flow: exactly one of call, lookup, map, foreach, branch."""

    name: str = Field(pattern=NAME, description="Unique in the flow; outputs are `steps.<name>.<field>`.")
    description: str | None = None
    when: str | bool | None = Field(None, description="Run the step only when this holds (else it is skipped).")
    call: str | None = Field(None, description="An action <system>.<operation> that writes (or reads).")
    lookup: str | None = Field(None, description="An action read to enrich the item (never in the ledger).")
    map: dict[str, Any] | None = Field(None, description="Fields computed from the item and earlier steps.")
    foreach: str | None = Field(None, description="A list (a {{ expression }}): the steps run per element, as "
                                                  "`each`.")
    branch: list[BranchSpec] | None = Field(None, description="The first branch whose `when` holds runs.")
    params: dict[str, Any] = Field(default_factory=dict, description="The action's parameters (templates).")
    output: dict[str, str] = Field(default_factory=dict, description="Output name -> JSONPath into the response.")
    merge: bool = Field(False, description="lookup: merge the outputs into the item.")
    key: str | None = Field(None, description="foreach: the element's key in the ledger (default: its position).")
    max_concurrency: int = Field(1, ge=1, le=64, description="foreach: elements in flight at once.")
    steps: list[StepSpec] = Field(default_factory=list, description="foreach: the steps per element.")
    mode: Literal["insert", "upsert"] = Field("upsert", description=(
        "A changed payload for a key already delivered: upsert sends it again, insert never does."))
    idempotency: IdempotencySpec | None = None
    retry: RetrySpec | None = None
    on_error: Literal["fail", "skip", "dead_letter", "compensate"] = "fail"
    compensate: CallSpec | None = Field(None, description="The call that undoes this step (a saga).")
    verify: VerifySpec | None = Field(None, description="Resolves an unknown outcome (sent, no answer).")

    @model_validator(mode="after")
    def _one(self) -> StepSpec:
        kind = exactly_one(self, ("call", "lookup", "map", "foreach", "branch"), " (the step's kind)")
        if self.steps and kind != "foreach":
            raise ValueError("`steps:` belongs to foreach steps (branches list theirs under branch)")
        if kind not in ("call", "lookup") and (self.params or self.output):
            raise ValueError("`params:` and `output:` belong to call and lookup steps")
        call_only = self.idempotency or self.verify or self.compensate
        if kind != "call" and (call_only or (self.retry and kind != "lookup")):
            raise ValueError("idempotency, verify, compensate and retry belong to call steps "
                                 "(lookups may retry)")
        return self

    @property
    def kind(self) -> str:
        return exactly_one(self, ("call", "lookup", "map", "foreach", "branch"))

    @property
    def action(self) -> str | None:
        return self.call or self.lookup


class FlowChecks(_Strict):
    """Asset-check thresholds: more items of a kind in a run than this fails the check and blocks what runs
    after the flow's asset; without a threshold any such item is a warning."""

    failed: int | None = Field(None, ge=0)
    dead: int | None = Field(None, ge=0)
    unknown: int | None = Field(None, ge=0)


class FlowSpec(_Strict):
    description: str | None = None
    trigger: TriggerSpec = Field(default_factory=lambda: TriggerSpec(manual=True))
    input: InputSpec
    steps: list[StepSpec] = Field(min_length=1)
    max_failures: int | None = Field(None, ge=0, description="More failed items than this stop the run (the "
                                                             "items already done stay done).")
    concurrency: int = Field(1, ge=1, le=64, description="Items calling systems at once.")
    prepare_ahead: int = Field(24, ge=0, le=256, description=(
        "Items prepared ahead of their turn to call (requests evaluated and validated, `sent` rows recorded "
        "in the ledger together in one transaction). After a crash, up to this many items more than "
        "`concurrency` can be left `sent` without having been sent: resolved like any unanswered request "
        "(idempotency key, verify:, or review). 0: each item's row is committed just before its own call."))
    checks: FlowChecks = Field(default_factory=FlowChecks)
    planned_by: str | None = Field(None, description="Who wrote the flow when a person did not (`hub agent plan` "
                                                     "and the request): shown when a run is refused.")
    approved: bool = Field(True, description="False for a flow an agent planned: it never runs (no trigger, no "
                                             "`hub flow run`) until a person approves it, with `hub flow run FLOW "
                                             "--approve` for one run or by setting this to true.")


def walk(steps: list[StepSpec], loc: Loc) -> Iterator[tuple[Loc, StepSpec, list[str]]]:
    """Every step (nested ones too) with its location and the names of the steps run before it."""
    yield from _walk(steps, loc, [])


def _walk(steps: list[StepSpec], loc: Loc, before: list[str]) -> Iterator[tuple[Loc, StepSpec, list[str]]]:
    seen = list(before)
    for i, step in enumerate(steps):
        sloc = (*loc, i)
        yield sloc, step, list(seen)
        if step.foreach is not None:
            yield from _walk(step.steps, (*sloc, "steps"), [*seen, step.name])
        for b, branch in enumerate(step.branch or []):
            yield from _walk(branch.steps, (*sloc, "branch", b, "steps"), seen)
        seen.append(step.name)
        if step.branch:  # a branch's steps are visible after it (their outputs may be missing: none when skipped)
            seen.extend(s.name for br in step.branch for s in br.steps)


def item_fields(flow: FlowSpec, columns: Callable[[str], list[str] | None]) -> list[str] | None:
    """The fields an item has, when known: input.fields, else the table's declared columns (*columns*);
    with aggregate, the group's key columns and the collected list."""
    base = flow.input.fields or (columns(flow.input.table) if flow.input.table else None)
    if flow.input.aggregate is not None:
        return [*flow.input.aggregate.by, flow.input.aggregate.collect]
    return base


def check_flows(flows: dict[str, FlowSpec], assets: set[str], systems: set[str], tables_of_sql: Callable[
        [str, Loc], set[str] | None], columns: Callable[[str], list[str] | None],
        report: Callable[[Loc, str], None], streams: set[str] | None = None,
        callers: set[str] | None = None, by_time: set[str] | None = None,
        sample: dict[str, Any] | None = None, by_file: set[str] | None = None) -> dict[str, list[str]]:
    """Checks every flow against the spec alone; returns the tables each flow reads (its upstream assets).
    *streams*: the pipeline's stream sources (``trigger: {events: ...}`` names one); *callers*: the systems
    that call the hub and say how they authenticate (``trigger: {http: ...}`` names one); *by_time*: the
    tables loaded per time partition (a flow after one is partitioned like it); *sample*: the first
    partition's template names, which a partitioned flow's input query is rendered with; *by_file*: the tables
    loaded per file (a flow after one runs per file, with ``partition.key`` only)."""
    from hub.runtime.window import is_template

    streams = streams or set()
    callers = callers or set()
    by_time = by_time or set()
    by_file = by_file or set()
    deps: dict[str, list[str]] = {}
    for name, flow in flows.items():
        loc: Loc = ("flows", name)
        if name in assets:
            report(loc, f"'{name}' is already a source, child table, model or export; a flow is an asset and its "
                        "table holds one row per item, so the names must be unique")
        read: set[str] = set()
        if flow.input.table is not None:
            if flow.input.table not in assets:
                report((*loc, "input", "table"), f"'{flow.input.table}' is not a source, child table or model of "
                                                 f"this pipeline ({', '.join(sorted(assets)) or 'none'})")
            else:
                read.add(flow.input.table)
        elif flow.input.sql is not None:
            per_file = flow.trigger.after is not None and flow.trigger.after in by_file and is_template(flow.input.sql)
            sql = _sample_sql(flow.input.sql, (*loc, "input", "sql"),
                              {"partition": {"key": "file.csv"}} if per_file else sample, report)
            found = tables_of_sql(sql, (*loc, "input", "sql")) if sql is not None else None
            unknown = sorted(t for t in found or () if t not in assets)
            if unknown:
                report((*loc, "input", "sql"), f"reads unknown table(s) {', '.join(unknown)}")
            read |= {t for t in found or () if t in assets}
        trig = flow.trigger
        if trig.after is not None and trig.after not in assets:
            report((*loc, "trigger", "after"), f"'{trig.after}' is not an asset of this pipeline")
        if trig.after is not None:
            read.add(trig.after)
        if trig.events is not None:
            if trig.events not in streams:
                report((*loc, "trigger", "events"), f"'{trig.events}' is not a stream source of this pipeline "
                                                    f"(stream sources: {', '.join(sorted(streams)) or 'none'})")
            read.add(trig.events)
        if trig.after is not None and trig.after in by_file and (
                flow.input.table in by_file or (flow.input.sql is not None and is_template(flow.input.sql))):
            # a flow after a file drop that reads that drop's rows runs per file; one that reads a whole table or
            # an untemplated query runs over all of it after each file (the ledger skips what was sent)
            _check_partitioning(flow, loc, True, by_file, report, unit="file")
        else:
            _check_partitioning(flow, loc, trig.after is not None and trig.after in by_time, by_time, report)
        if trig.http is not None and trig.http.system not in callers:
            report((*loc, "trigger", "http", "system"),
                   f"'{trig.http.system}' is not a system that calls the hub (a webhook: block declaring its auth; "
                   f"such systems: {', '.join(sorted(callers)) or 'none'}): an HTTP trigger is never open")
        fields = item_fields(flow, columns)
        agg = flow.input.aggregate
        if fields is not None and agg is None:
            for i, k in enumerate(flow.input.key):
                if k not in fields:
                    report((*loc, "input", "key", i), f"'{k}' is not a field of the input ({', '.join(fields)})")
        if agg is not None:
            for i, k in enumerate(flow.input.key):
                if k not in agg.by:
                    report((*loc, "input", "key", i), f"'{k}' is not one of aggregate.by ({', '.join(agg.by)}): "
                                                      "a group's key is its aggregate.by columns")
        names: dict[str, Loc] = {}
        for sloc, step, before in walk(flow.steps, (*loc, "steps")):
            if step.name in names:
                report((*sloc, "name"), f"step '{step.name}' is defined twice in flow {name} (names are keys of "
                                        "the ledger and of `steps.<name>`)")
            names.setdefault(step.name, sloc)
            _check_step(step, sloc, before, fields, systems, report, names_in_foreach(flow.steps, step))
            if step.on_error == "compensate" and not any(
                    s.compensate for _, s, _ in walk(flow.steps, ()) if s.name in before or s is step):
                report((*sloc, "on_error"), "on_error: compensate, but no earlier step of the flow declares "
                                            "compensate: (what would undo them?)")
        deps[name] = sorted(read)
    return deps


def _sample_sql(sql: str, loc: Loc, sample: dict[str, Any] | None, report: Callable[[Loc, str], None]) -> str | None:
    """*sql* with its partition templates rendered for the first partition (None, reported, when they fail)."""
    from hub.runtime.window import is_template, render_with

    if not is_template(sql):
        return sql
    try:
        return render_with(sql, sample or {}, field=".".join(map(str, loc)))
    except HubError as exc:
        report(loc, str(exc).split(": ", 1)[-1])
        return None


def _check_partitioning(flow: FlowSpec, loc: Loc, partitioned: bool, by_time: set[str],
                        report: Callable[[Loc, str], None], *, unit: str = "time") -> None:
    """A partitioned flow (``after:`` a time-partitioned table, or a table loaded per file: *unit*) must read
    only its partition: its input is a table partitioned the same way (filtered on ``_hub_partition``) or a
    query using ``{{ partition.* }}``; a flow that is not partitioned has no partition to template."""
    from hub.runtime.window import is_template

    inp = flow.input
    templated = inp.sql is not None and is_template(inp.sql)
    by = "by time" if unit == "time" else "per file"
    if partitioned and inp.table is not None and inp.table not in by_time:
        report((*loc, "input", "table"), f"the flow runs per {'partition' if unit == 'time' else 'file'} of "
                                         f"{flow.trigger.after}, but {inp.table} is not partitioned {by}: read a "
                                         f"table partitioned {by}, or a query that selects the partition with "
                                         "{{ partition.key }}" + (" / {{ partition.start }}" if unit == "time" else ""))
    if partitioned and inp.sql is not None and not templated:
        example = "where _hub_partition = '{{ partition.key }}'" + (
            " or a time column between '{{ partition.start }}' and '{{ partition.end }}'" if unit == "time" else "")
        report((*loc, "input", "sql"), f"the flow runs per {'partition' if unit == 'time' else 'file'} of "
                                       f"{flow.trigger.after}: the query must select that "
                                       f"{'partition' if unit == 'time' else 'file'}'s rows, e.g. {example}")
    if not partitioned and templated:
        report((*loc, "input", "sql"), "the query uses templates, but the flow has no partitions (only a flow "
                                       "triggered `after:` a table partitioned by time or per file runs per "
                                       "partition)")


def names_in_foreach(steps: list[StepSpec], target: StepSpec) -> bool:
    """Whether *target* runs inside a foreach (then `each` is defined)."""
    for step in steps:
        if step.foreach is not None and (any(s is target for s in step.steps) or names_in_foreach(step.steps,
                                                                                                    target)):
            return True
        for br in step.branch or []:
            if names_in_foreach(br.steps, target):
                return True
    return False


def _check_step(step: StepSpec, loc: Loc, before: list[str], fields: list[str] | None, systems: set[str],
                report: Callable[[Loc, str], None], in_foreach: bool) -> None:
    for key in ("call", "lookup"):
        action = getattr(step, key)
        if action is not None:
            _check_action(action, (*loc, key), systems, report)
    for part, call in (("compensate", step.compensate), ("verify", step.verify)):
        if call is not None:
            _check_action(call.call, (*loc, part, "call"), systems, report)
    roots = (*ROOTS, "each") if in_foreach else ROOTS
    templates: list[tuple[Loc, Any, bool, tuple[str, ...]]] = []
    if step.when is not None and not isinstance(step.when, bool):
        templates.append(((*loc, "when"), step.when, True, roots))
    templates += [(tl, v, False, roots) for tl, v in _strings((*loc, "params"), step.params)]
    templates += [(tl, v, False, roots) for tl, v in _strings((*loc, "map"), step.map or {})]
    if step.foreach is not None:
        templates.append(((*loc, "foreach"), step.foreach, False, roots))
    if step.key is not None:
        templates.append(((*loc, "key"), step.key, False, (*roots, "each")))
    for b, br in enumerate(step.branch or []):
        if br.when is not None and not isinstance(br.when, bool):
            templates.append(((*loc, "branch", b, "when"), br.when, True, roots))
    mine = [*before, step.name]  # a compensation and a verification see the step's own outputs
    if step.compensate is not None:
        templates += [(tl, v, False, roots) for tl, v in _strings((*loc, "compensate", "params"),
                                                                   step.compensate.params)]
    if step.verify is not None:
        templates += [(tl, v, False, roots) for tl, v in _strings((*loc, "verify", "params"), step.verify.params)]
        templates.append(((*loc, "verify", "found"), step.verify.found, True, (*roots, "result")))
        templates += [(tl, v, False, (*roots, "result")) for tl, v in _strings((*loc, "verify", "output"),
                                                                                step.verify.output)]
    for tloc, text, condition, allowed in templates:
        visible = mine if "compensate" in tloc or "verify" in tloc else before
        _check_template(tloc, text, condition, allowed, visible, fields, report)
    for out, path in step.output.items():
        _check_jsonpath((*loc, "output", out), path, report)
    for field, spec in (step.map or {}).items():
        if isinstance(spec, dict):
            try:
                parsed = MapField.model_validate(spec)
            except Exception as exc:  # pydantic's message, shortened
                report((*loc, "map", field), f"expected a template, or {{value, path, type}}: {exc}".split("\n")[0])
                continue
            if parsed.path:
                _check_jsonpath((*loc, "map", field, "path"), parsed.path, report)
    if step.max_concurrency > 1 and step.foreach is None:
        report((*loc, "max_concurrency"), "max_concurrency belongs to foreach steps (flows have `concurrency:`)")
    branches = step.branch or []
    for b, br in enumerate(branches[:-1]):
        if br.when is None:
            report((*loc, "branch", b, "when"), "only the last branch may leave out `when:` (the otherwise branch)")


def _check_action(action: str, loc: Loc, systems: set[str], report: Callable[[Loc, str], None]) -> None:
    system, dot, operation = action.partition(".")
    if not dot or not operation:
        report(loc, f"'{action}' is not an action name (expected <system>.<operation>, see `hub catalog actions`)")
    elif system not in systems:
        report(loc, f"unknown system '{system}' (systems: {', '.join(sorted(systems)) or 'none defined'})")


def _check_jsonpath(loc: Loc, path: str, report: Callable[[Loc, str], None]) -> None:
    from adapters.rest import JSONPathError, compile_path

    try:
        compile_path(path)
    except (JSONPathError, Exception) as exc:  # the JSONPath library raises its own errors too
        report(loc, f"'{path}' is not a valid JSONPath: {exc}")


def _strings(loc: Loc, value: Any) -> list[tuple[Loc, str]]:
    if isinstance(value, str):
        return [(loc, value)]
    if isinstance(value, dict):
        return [f for k, v in value.items() for f in _strings((*loc, k), v)]
    if isinstance(value, list):
        return [f for i, v in enumerate(value) for f in _strings((*loc, i), v)]
    return []


def _check_template(loc: Loc, text: str, condition: bool, roots: tuple[str, ...], before: list[str],
                    fields: list[str] | None, report: Callable[[Loc, str], None]) -> None:
    try:
        refs = references(text, field=".".join(map(str, loc)), condition=condition)
    except HubError as exc:
        report(loc, str(exc).split(": ", 1)[1])
        return
    for ref in refs:
        root = ref[0]
        if root not in roots:
            report(loc, f"unknown name '{root}' in '{text}' (names: {', '.join(roots)})")
        elif root == "item" and len(ref) > 1 and fields is not None and ref[1] not in fields:
            report(loc, f"'{ref[1]}' is not a field of the item (fields: {', '.join(fields)})")
        elif root == "steps" and len(ref) > 1 and ref[1] not in before:
            report(loc, f"'steps.{ref[1]}' is not a step that runs before this one "
                        f"(earlier steps: {', '.join(before) or 'none'})")


BranchSpec.model_rebuild()
StepSpec.model_rebuild()


class FlowCall(BaseModel):
    """A call a flow makes to one system (for consumer-driven contracts: what the flow sends and reads)."""

    flow: str
    step: str
    operation: str  # the action's name after "<system>."
    params: dict[str, Any]
    outputs: dict[str, str]  # output name -> JSONPath into the response
    why: str  # call | compensate | verify | lookup


def flow_calls(flows: dict[str, FlowSpec], system: str) -> list[FlowCall]:
    """Every call the flows make to *system* (calls, lookups, compensations, verifications)."""
    out: list[FlowCall] = []
    for name, flow in flows.items():
        for _, step, _ in walk(flow.steps, ()):
            found = [(step.call, step.params, step.output, "call"), (step.lookup, step.params, step.output, "lookup")]
            if step.compensate is not None:
                found.append((step.compensate.call, step.compensate.params, {}, "compensate"))
            if step.verify is not None:
                found.append((step.verify.call, step.verify.params, {}, "verify"))
            for action, params, outputs, why in found:
                if action and action.partition(".")[0] == system:
                    out.append(FlowCall(flow=name, step=step.name, operation=action.partition(".")[2],
                                        params=params, outputs=outputs, why=why))
    return out
