"""Pydantic models of the pipeline spec (one YAML file per pipeline in ``pipelines/``).

Protocol-specific keys (for REST: ``request``, ``records``, ``paginate``) are validated against the
adapter's own config model once the source's system is known, see :mod:`hub.spec.loader`.
"""

from __future__ import annotations

import re
from datetime import date
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from adapters.sftp import ExportFormat
from hub import protocols
from hub.runtime.choice import exactly_one
from hub.runtime.duration import seconds
from hub.spec.flows import FlowSpec
from hub.spec.rules import RuleSpec, TypeName
from hub.spec.stream import StreamKeys

NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
#: ``max_duration`` of a source when the spec gives none: 6 hours.
DEFAULT_MAX_DURATION = 6 * 3600.0
_NAME_RE = re.compile(NAME)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _WindowPartitions(_Strict):
    start: date = Field(description="First partition (inclusive).")
    timezone: str = "UTC"
    end_offset: int = Field(0, ge=0, description="Also run this many partitions past the last complete one.")

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone '{v}' (expected an IANA name such as UTC or Europe/Paris)") from None
        return v


class PartitionsConfig(_Strict):
    daily: _WindowPartitions | None = None
    monthly: _WindowPartitions | None = None

    @model_validator(mode="after")
    def _one(self) -> PartitionsConfig:
        exactly_one(self, ("daily", "monthly"), " (or `partitions: none`)")
        return self

    @property
    def kind(self) -> Literal["daily", "monthly"]:
        return "daily" if self.daily else "monthly"

    @property
    def window(self) -> _WindowPartitions:
        w = self.daily or self.monthly
        assert w is not None
        return w


class SystemAgentConfig(_Strict):
    """How the agent layer (``hub agent``, ``hub mcp``) may use a system."""

    reads: list[str] = Field(default_factory=list, description="Operations that only read, whatever their name "
                                                               "says (SOAP: overrides the Get/List/... rule).")
    writes: list[str] = Field(default_factory=list, description="Operations that change the system, whatever "
                                                                "their name says.")
    budget: int | None = Field(None, ge=0, description="Calls per agent session to this system (default: the "
                                                       "pipeline's agent.budget).")
    rate_limit: float | None = Field(None, gt=0, description="At most this many calls per second to the system.")


FlowEffect = Literal["create", "update", "delete"]


class AgentConfig(_Strict):
    """The pipeline's policy for the agent layer: which write actions may be called at all (each call also
    needs an explicit approval), and how many calls a session may make."""

    allow_writes: list[str] = Field(default_factory=list, description="Write actions that may be called "
                                                                      "with approval, e.g. crm.post_customers.")
    budget: int = Field(100, ge=0, description="Calls per agent session and system (see systems.*.agent.budget).")
    max_rows: int = Field(100, ge=1, le=100_000, description="Records a call returns at most (the total is "
                                                              "counted).")
    flow_effects: list[FlowEffect] = Field(
        default_factory=lambda: list[FlowEffect](["create", "update"]),
        description="The side effects a flow `hub agent plan` writes may have: a request whose verb or action "
                    "deletes or overwrites data (delete, reset, truncate, overwrite ... or a DELETE) is refused "
                    "unless 'delete' is listed. Planned flows still need an approval to run.")


class _SystemBase(_Strict):
    """A connection: exactly one protocol block (one optional field per registered protocol, see
    :func:`_system_model`) plus the keys every system has."""

    @model_validator(mode="after")
    def _one(self) -> _SystemBase:
        exactly_one(self, protocols.names(), " (the protocol block)")
        return self

    @property
    def kind(self) -> str:
        """The name of the system's protocol (its block's key)."""
        return exactly_one(self, protocols.names())

    @property
    def protocol(self) -> protocols.Protocol:
        return protocols.get(self.kind)

    @property
    def config(self) -> Any:
        """The protocol block, validated by the protocol's ``system_model``."""
        return getattr(self, self.kind)


def _system_model() -> type[_SystemBase]:
    """``SystemConfig`` with one optional block per registered protocol, so pydantic validates a block with its
    protocol's own model and reports errors at ``systems.<name>.<protocol>.<field>``."""
    blocks: dict[str, Any] = {p.name: (p.system_model | None, None) for p in protocols.all()}
    return create_model("SystemConfig", __base__=_SystemBase, __module__=__name__, **blocks,
                        description=(str | None, None), agent=(SystemAgentConfig | None, None))


if TYPE_CHECKING:
    class SystemConfig(_SystemBase):
        description: str | None
        agent: SystemAgentConfig | None

        def __getattr__(self, name: str) -> Any: ...
else:
    SystemConfig = _system_model()


class ColumnSpec(_Strict):
    name: str | None = Field(None, description="Column name in the warehouse (default: the last path part).")
    type: TypeName | None = Field(None, description="string, int64, float64, bool, date, timestamp, timestamptz, "
                                               "decimal(p,s), json ...")
    format: str | None = Field(None, description="How a date or timestamp is written, e.g. %d.%m.%Y.")
    decimal_point: str | None = Field(None, max_length=1, description="Decimal separator, e.g. ',' (1234,50).")
    thousands: str | None = Field(None, max_length=1, description="Thousands separator to drop, e.g. '.'.")

    def formats(self) -> dict[str, str]:
        return {k: v for k, v in (("format", self.format), ("decimal_point", self.decimal_point),
                                  ("thousands", self.thousands)) if v}


class ChildSpec(_Strict):
    """A repeated child of each record (an order's lines) loaded into a table of its own."""

    path: str = Field(description="Dotted path of the repeated element within the record, e.g. Lines.OrderLine.")
    description: str | None = None
    columns: dict[str, str | ColumnSpec] | None = Field(
        None, description="Child field -> new name, or {name, type}; the parent's primary key columns "
                          "always come first.")

    def column_specs(self) -> list[tuple[str, ColumnSpec]]:
        return _column_specs(self.columns)


def _column_specs(columns: dict[str, str | ColumnSpec] | None) -> list[tuple[str, ColumnSpec]]:
    out = []
    for path, spec in (columns or {}).items():
        cs = ColumnSpec(name=spec) if isinstance(spec, str) else spec
        out.append((path, cs.model_copy(update={"name": cs.name or path.split(".")[-1]})))
    return out


class SourceSpec(BaseModel):
    """Keys every source has; the protocol keys are kept in ``model_extra`` until the system is known."""

    model_config = ConfigDict(extra="allow")

    system: str
    description: str | None = None
    primary_key: list[str] = Field(default_factory=list)
    partitioned: bool | None = Field(
        None, description="Load per partition (replace exactly that partition). Default: true when the "
                          "source's request uses {{ partition.* }} templating, else the source is reference "
                          "data loaded whole (merged on primary_key, or replaced).")
    columns: dict[str, str | ColumnSpec] | None = Field(
        None, description="Source field (dotted path for nested) -> new name, or {name, type}. "
                          "When given, only these columns are kept.")
    children: dict[str, ChildSpec] = Field(
        default_factory=dict, description="Child tables: table name -> the repeated element they hold.")
    rules: dict[str, RuleSpec] = Field(
        default_factory=dict, description="Row rules checked before the load: column -> {not_null, type, min, "
                                          "max, regex, in, unique}; failing rows go to quarantine.")
    max_bad_rows: int | None = Field(None, ge=0, description="More rejected rows (mapping and rules) than this "
                                                             "fail the load: nothing is loaded.")
    max_bad_fraction: float | None = Field(None, ge=0, le=1, description="Same, as a fraction of the rows read.")
    max_duration: float = Field(DEFAULT_MAX_DURATION, gt=0, description=(
        "Time budget of one extraction (30s, 5m, 6h; default 6h): a source still running after it is stopped "
        "with an error naming it, and nothing is loaded. Raise it for sources that really take longer."))

    @field_validator("max_duration", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return seconds(value)

    @field_validator("primary_key", mode="before")
    @classmethod
    def _pk(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    def column_specs(self) -> list[tuple[str, ColumnSpec]]:
        """(source path, spec with the name filled in) for every declared column."""
        return _column_specs(self.columns)

    def output_columns(self) -> list[str] | None:
        return [c.name or "" for _, c in self.column_specs()] if self.columns else None


class ModelSpec(_Strict):
    sql: str
    description: str | None = None
    depends_on: list[str] = Field(default_factory=list, description="Tables outside this pipeline it reads.")


class ExportSpec(_Strict):
    """An outbound drop: a warehouse table or query written as a file to an SFTP folder."""

    system: str
    path: str = Field(description="Remote file path; may use {{ run.date }} / {{ run.timestamp }}.")
    table: str | None = Field(None, description="A table or model of the warehouse.")
    sql: str | None = Field(None, description="Or a query over the warehouse's tables.")
    format: ExportFormat
    description: str | None = None

    @model_validator(mode="after")
    def _one(self) -> ExportSpec:
        exactly_one(self, ("table", "sql"))
        return self


#: The hub's own events a spec's ``publish:`` can send (hub.events.publish).
HubEvent = Literal["asset.materialized", "file.loaded", "contract.broken", "quarantine.threshold_exceeded"]
HUB_EVENTS: tuple[HubEvent, ...] = ("asset.materialized", "file.loaded", "contract.broken",
                                    "quarantine.threshold_exceeded")


class PublishSpec(BaseModel):
    """``publish:``: the hub's own events go to a broker (choreography). Besides ``system`` and ``events`` the
    block holds the broker's target keys (AMQP ``exchange``/``routing_key``, NATS ``subject``/``jetstream``),
    validated by the system's protocol (``publish_model``)."""

    model_config = ConfigDict(extra="allow")

    system: str = Field(description="A broker system of this spec (amqp, nats ...).")
    events: list[HubEvent] = Field(default_factory=lambda: list(HUB_EVENTS),
                                   description="Which events (default: all).")

    @property
    def target(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class PipelineSpec(_Strict):
    pipeline: str = Field(pattern=NAME)
    description: str = ""
    warehouse: str | None = Field(None, description="duckdb:///path/to/file.duckdb or postgresql://user@host/db "
                                                    "(default: HUB_WAREHOUSE or warehouse/hub.duckdb in the project)")
    partitions: PartitionsConfig | None = None
    schedule: str | None = None
    systems: dict[str, SystemConfig] = Field(default_factory=dict)
    sources: dict[str, SourceSpec] = Field(default_factory=dict)
    models: dict[str, ModelSpec] = Field(default_factory=dict)
    exports: dict[str, ExportSpec] = Field(default_factory=dict)
    checks: dict[str, str] = Field(default_factory=dict, description="Asset (source, child table or model) -> "
                                                                  "its expectation suite, a file relative to "
                                                                  "the project root.")
    agent: AgentConfig | None = Field(None, description="What the agent layer may do (hub agent, hub mcp).")
    publish: PublishSpec | None = Field(None, description="Publish the hub's own events to a broker "
                                                          "(hub.events.publish).")
    flows: dict[str, FlowSpec] = Field(default_factory=dict, description="Multi-step workflows that act on "
                                                                         "systems (docs/flows.md).")

    @field_validator("partitions", mode="before")
    @classmethod
    def _none(cls, v: Any) -> Any:
        return None if v in ("none", "None", False) else v

    @field_validator("schedule")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not _valid_cron(v):
            raise ValueError(f"'{v}' is not a valid cron expression (expected e.g. '0 6 * * *')")
        return v


class ResolvedSource(BaseModel):
    """A source whose protocol keys were validated against its system's protocol (``config``)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str
    spec: SourceSpec
    system_name: str
    system: SystemConfig
    config: Any = Field(description="The source's protocol keys, validated by its protocol's source_model.")
    partitioned: bool = False
    stream: StreamKeys | None = Field(None, description="A stream source's format, id, records, keep and "
                                                        "max_deliver (hub.spec.stream).")

    @property
    def kind(self) -> str:
        return self.system.kind

    @property
    def protocol(self) -> protocols.Protocol:
        return protocols.get(self.system.kind)

    @property
    def per_file(self) -> bool:
        """File drops are partitioned by file (one dynamic partition per file), not by time."""
        return self.protocol.unit == "file"

    @property
    def incremental(self) -> bool:
        """Reads only what changed since the last run (a cursor column), merged on the primary key."""
        return self.protocol.incremental_cursor(self.config) is not None


def _valid_cron(cron: str) -> bool:
    """Whether Dagster accepts *cron* as a schedule: croniter's parse (the library Dagster vendors for its
    schedules) with Dagster's extra rules (exactly five fields; no 30th or 31st of February). Importing Dagster
    to ask it costs half a second on every ``hub validate``; tests/test_spec.py checks the two agree."""
    from croniter import croniter

    if not croniter.is_valid(cron):
        return False
    expanded, *_ = croniter.expand(cron)
    if len(expanded) != 5:
        return False
    return not (expanded[3] == [2] and len(expanded[2]) == 1 and expanded[2][0] in {30, 31})


def valid_name(name: str) -> bool:
    return bool(_NAME_RE.match(name))
