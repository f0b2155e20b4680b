"""The protocol registry: one plugin per protocol, read by every layer.

A protocol (REST, SOAP, SFTP, SQL, or a third party's) is the unit of extension. It implements
:class:`Protocol` once, next to its adapter, and every layer asks the registry instead of switching on
protocol names: the spec takes the system block's key and the source keys' model from it, materialization
asks it for an extractor, the Dagster definitions for the endpoint and metadata, contracts, the action
catalog, the guard, the planner and ``hub catalog`` for what the protocol supports.

Every hook but the configuration models has a default that says "not supported" (or does nothing), so a
protocol implements only what it can do. Plugins are found two ways, both loaded once:

* every public module or subpackage of this package (``hub/protocols/rest/``, ``hub/protocols/nats.py`` ...)
  that defines ``PROTOCOL``;
* the entry-point group ``hub.protocols`` of installed distributions (``pyproject.toml``:
  ``[project.entry-points."hub.protocols"] name = "package.module:PROTOCOL"``), for third parties.

A plugin module is imported while the spec models are built, so at module level it may import only its
adapter's public API, :mod:`hub.errors`, :mod:`hub.runtime` and this module; anything above the spec layer
(materialization, contracts, the agent, flows) it imports inside the hook that needs it. A built-in plugin is a
package whose submodules hold that code (``contract``, ``actions``, ``send``), imported by its hooks on first
use. See docs/protocols.md.
"""

from __future__ import annotations

import importlib
import pkgutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal
from typing import Protocol as _Structural

from pydantic import BaseModel

from hub.errors import ProtocolError

if TYPE_CHECKING:
    import pyarrow as pa

    from hub.runtime.window import Window
    from hub.spec.loader import Pipeline
    from hub.spec.models import PipelineSpec, ResolvedSource, SourceSpec, SystemConfig
    from hub.warehouse import Load, Warehouse

#: The entry-point group third-party protocols register in.
GROUP = "hub.protocols"
Loc = tuple[str | int, ...]


class Extractor(_Structural):
    """What the hub needs from an adapter's source (structural: adapters do not subclass it)."""

    def batches(self) -> Iterator[pa.RecordBatch]: ...

    def details(self) -> dict[str, Any]: ...


@dataclass
class SourceCheck:
    """What a protocol's spec checks see of one source: its location, its validated protocol block, the
    source's common keys and the whole spec; :meth:`problem` reports with file and line."""

    loc: Loc
    config: Any
    source: SourceSpec
    system: Any
    spec: PipelineSpec
    report: Callable[[Loc, str], None]

    def problem(self, where: Loc, message: str) -> None:
        self.report((*self.loc, *where), message)


@dataclass
class ExtractRun:
    """One extraction of a source: what :meth:`Protocol.extractor` builds the adapter for."""

    pipeline: Pipeline
    source: ResolvedSource
    window: Window | None
    warehouse: Warehouse | None = None
    full_refresh: bool = False
    batch_size: int = 10_000
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Sent:
    """What a write call (:meth:`Protocol.send`) answered: the decoded response (a JSON document, a SOAP
    response as plain dicts and lists, affected rows), the HTTP status when there is one, a short summary."""

    response: Any
    status: int | None = None
    summary: str = ""


class Protocol:
    """One protocol, implemented once next to its adapter. Subclasses set :attr:`name`, :attr:`system_model`
    and :attr:`source_model` and override the hooks they support; the defaults say "not supported"."""

    #: The key of the system block in a spec (``systems.crm.rest``) and the kind shown in the UI.
    name: ClassVar[str]
    #: The system block's model (address, credentials, retries, limits ...).
    system_model: ClassVar[type[BaseModel]]
    #: The model of a source's protocol keys (everything but the keys every source has).
    source_model: ClassVar[type[BaseModel]]
    #: Position in lists and messages ("expected exactly one of: rest, soap, ..."); built-ins come first.
    order: ClassVar[int] = 100
    #: Every string of a source block is a template rendered per partition (false: the block is literal).
    renders_templates: ClassVar[bool] = True
    #: The unit of work of a source: ``window`` (a time partition, or the whole source; :meth:`extractor`),
    #: ``file`` (a dropped file is one dynamic partition, ingested exactly once by :mod:`hub.files`;
    #: :meth:`file_extractor`) or ``stream`` (messages; :meth:`stream`).
    unit: ClassVar[Literal["window", "file", "stream"]] = "window"
    #: Systems of this kind take outbound file drops (``exports:``, :mod:`hub.exports`).
    exports: ClassVar[bool] = False
    #: Messages of this kind's stream sources are pushed to the hub (``hub serve``, :meth:`receiver`) instead of
    #: pulled from a broker: ``hub listen`` and the sensors absorb them but open no consumer.
    pushed: ClassVar[bool] = False
    #: The model of a ``publish:`` block's target keys on a system of this kind (None: cannot publish).
    publish_model: ClassVar[type[BaseModel] | None] = None

    # -- the spec -------------------------------------------------------------------------------------------

    def check_source(self, check: SourceCheck) -> None:
        """Cross-reference checks pydantic cannot do alone (JSONPaths, read-only SQL ...); report problems."""

    def time_partitioned(self, check: SourceCheck) -> bool:
        """False when sources of this kind are never partitioned by time (file drops, incremental reads);
        the plugin reports ``partitioned: true`` as a problem itself."""
        return True

    def incremental_cursor(self, config: Any) -> str | None:
        """The cursor column of a source that reads only what changed since its last run, else None."""
        return None

    # -- runs -----------------------------------------------------------------------------------------------

    def field(self, system_name: str) -> str:
        """Where a system's block is in the spec, for messages: ``systems.<name>.<protocol>``."""
        return f"systems.{system_name}.{self.name}"

    def resolve_system(self, system_name: str, system: SystemConfig, *, root: Path | None = None) -> Any:
        """The system's block with its secrets resolved (:func:`hub.runtime.secrets.resolve_config`); *root*
        is the project root, for protocols whose blocks hold relative paths."""
        from hub.runtime.secrets import resolve_config

        return resolve_config(system.config, field=self.field(system_name))

    def extractor(self, run: ExtractRun) -> Extractor:
        """The adapter reading *run*'s source for its window, with secrets resolved and templates rendered."""
        raise ProtocolError(f"sources.{run.source.name}: protocol {self.name} does not extract by partition")

    def file_extractor(self, pipeline: Pipeline, source: ResolvedSource) -> Any:
        """The adapter of a file-drop source (``unit = "file"``): lists, fetches and reads files."""
        raise ProtocolError(f"sources.{source.name}: protocol {self.name} has no file drops")

    def stream(self, pipeline: Pipeline, source: ResolvedSource) -> Any:
        """The consumer of a ``stream`` source's messages (the listen direction of docs/architecture.md)."""
        raise ProtocolError(f"sources.{source.name}: protocol {self.name} has no message streams")

    def receiver(self, pipeline: Pipeline, source: ResolvedSource) -> Any:
        """The receiving end of a pushed stream source (:attr:`pushed`): what ``hub serve`` needs — ``path``,
        ``max_body``, ``auth_kind``, ``async receive(headers, body)`` (authenticates, raises
        :class:`hub.errors.Unauthorized`, returns ``.message``) and ``claim(received, message_id)`` (replays)."""
        raise ProtocolError(f"sources.{source.name}: protocol {self.name} does not receive pushed messages")

    def caller(self, pipeline: Pipeline, system_name: str) -> Any:
        """How calls from system *system_name* to ``hub serve`` outside a stream source (a flow's
        ``trigger: {http}``) are authenticated (:attr:`pushed` protocols): ``max_body``, ``auth_kind``,
        ``security_scheme()``, ``async verify(headers, body)`` (raises :class:`hub.errors.Unauthorized`) and
        ``claim(verified, request_id)`` (replays)."""
        raise ProtocolError(f"systems.{system_name}: protocol {self.name} does not authenticate calls to the hub")

    def publish(self, pipeline: Pipeline, system_name: str, target: Any, events: list[dict[str, Any]]) -> None:
        """Publish the hub's own *events* (JSON documents: asset materialized, file loaded ...) to *target*
        (the ``publish:`` block's keys, validated by :attr:`publish_model`) on the system's broker, confirmed
        by the broker before returning; :mod:`hub.events.publish` calls it and never lets a failure fail a
        load."""
        raise ProtocolError(f"systems.{system_name}: protocol {self.name} cannot publish the hub's events")

    def before_commit(self, load: Load, source: ResolvedSource, adapter: Extractor, run_id: str) -> None:
        """Runs in the load's transaction before it commits (the SQL high-water mark is saved here)."""

    def endpoint(self, source: ResolvedSource) -> str | None:
        """What a source reads, masked, for asset metadata (``hub/endpoint``)."""
        return None

    def upload(self, pipeline: Pipeline, system_name: str, local: Path, remote: str) -> None:
        """Put the export file *local* at *remote* on the system, atomically (:attr:`exports` protocols)."""
        raise ProtocolError(f"systems.{system_name}: protocol {self.name} takes no exports")

    # -- contracts ------------------------------------------------------------------------------------------

    def collect(self, pipeline: Pipeline, system: str) -> dict[str, Any] | None:
        """The contract document of *system* as the pipeline sees it now, read through the adapter and the
        credentials a run uses (:mod:`hub.contracts.collect`); None: the protocol has no contract."""
        return None

    def compare(self, pipeline: Pipeline, system: str, before: dict[str, Any], after: dict[str, Any]) -> list[Any]:
        """Every change from the snapshot *before* to the live document *after*
        (:class:`hub.contracts.diff.Change`), breaking when a source of the pipeline uses what changed."""
        raise ProtocolError(f"systems.{system}: protocol {self.name} has no contract comparison")

    # -- the agent ------------------------------------------------------------------------------------------

    #: Action inputs are specific to each action and worth indexing for search (SQL/SFTP take generic options).
    searchable_inputs: ClassVar[bool] = False
    #: The source keys, in a line of the LLM planner's prompt (:mod:`hub.agent.llm`); empty: not offered.
    prompt_keys: ClassVar[str] = ""
    #: A source's ``params`` are the inputs of the action it reads (SQL: bind parameters of its query instead).
    params_are_inputs: ClassVar[bool] = True

    def actions(self, pipeline: Pipeline, system: str) -> list[Any]:
        """The actions an agent may call on *system* (:class:`hub.agent.catalog.Action`), read from the live
        system through the adapter; may raise, then :meth:`spec_actions` stand in."""
        return []

    def spec_actions(self, pipeline: Pipeline, system: str) -> list[Any]:
        """The actions the spec alone describes, when the live system cannot be read."""
        return []

    def write_effect(self, binding: dict[str, Any]) -> Literal["create", "update", "delete"] | None:
        """What a write bound to *binding* does, when the protocol knows it from the binding (REST: the HTTP
        method); None: the planner reads it from the verb the action's name starts with."""
        return None

    def write_target(self, binding: dict[str, Any]) -> str | None:
        """Where a write bound to *binding* goes, in words, for approvals (``POST /customers``); None: the
        binding's operation, table or path names it."""
        return None

    def closed_inputs(self, action: Any) -> bool:
        """The guard refuses parameters the action's input schema does not name."""
        return True

    def execute(self, pipeline: Pipeline, action: Any, params: dict[str, Any], limit: int) -> Any:
        """Run *action* once for the guard (:mod:`hub.agent.guard`), which has checked policy and parameters:
        the first *limit* records and the total (:class:`hub.agent.guard.Fetched`)."""
        raise ProtocolError(f"{action.name}: protocol {self.name} has no callable actions")

    def reads_action(self, source: ResolvedSource, binding: dict[str, Any]) -> bool:
        """*source* reads the action bound to *binding* (the planner starts from such a source)."""
        return False

    def plan_source(self, binding: dict[str, Any], params: dict[str, Any]) -> dict[str, Any] | None:
        """The protocol keys of a source reading the action bound to *binding*, with the time *params* mapped
        to the partition; None when the protocol cannot plan sources."""
        return None

    def source_params(self, config: Any) -> dict[str, Any]:
        """The parameters a source sends (checked by the planner against the action's inputs)."""
        return {}

    def planned_columns(self, config: Any) -> list[str] | None:
        """The columns a source selects, when its protocol block says (None: unknown)."""
        return None

    # -- flows (writes) ---------------------------------------------------------------------------------------

    #: :meth:`send` is implemented: flows may call this protocol's actions (:mod:`hub.flows`).
    sends: ClassVar[bool] = False

    def send(self, pipeline: Pipeline, action: Any, request: dict[str, Any], *, idempotency_key: str | None = None,
             key_header: str | None = None) -> Sent:
        """Send one write call of *action* (:class:`hub.agent.catalog.Action`) with the parameters *request*
        exactly once, for a flow whose ledger recorded it as sent just before: no retries here (the flow
        decides), the system's rate limit and circuit breaker apply, the call is traced (``_hub_calls``,
        ``traceparent``). *idempotency_key* travels in the header *key_header* where the protocol has
        headers. Raises :class:`hub.errors.DeliveryFailed` when the partner answered with a failure (or
        nothing was sent) and :class:`hub.errors.DeliveryUnknown` when the request went out and no answer
        came."""
        raise ProtocolError(f"{action.name}: protocol {self.name} cannot send writes from flows")

    # -- the command line -----------------------------------------------------------------------------------

    def catalog_command(self) -> Callable[..., None] | None:
        """A typer command for ``hub catalog <name>``: describe a system from its address alone (a WSDL, a
        database URL), without a spec; None when the protocol has none."""
        return None

    def __repr__(self) -> str:
        return f"<protocol {self.name}>"


_lock = threading.Lock()
_registry: dict[str, Protocol] | None = None


def _instance(obj: Any, where: str) -> Protocol:
    proto = obj() if isinstance(obj, type) else obj
    if not isinstance(proto, Protocol):
        raise ProtocolError(f"{where}: expected a hub.protocols.Protocol (subclass or instance), got {obj!r}")
    for attr in ("name", "system_model", "source_model"):
        if not hasattr(proto, attr):
            raise ProtocolError(f"{where}: protocol {type(proto).__name__} does not set `{attr}`")
    return proto


def _add(found: dict[str, Protocol], proto: Protocol, where: str) -> None:
    known = found.get(proto.name)
    if known is not None and type(known) is not type(proto):
        raise ProtocolError(f"{where}: protocol '{proto.name}' is already registered by {type(known).__module__}")
    found.setdefault(proto.name, proto)


def _discover() -> dict[str, Protocol]:
    """The plugin modules of this package, then the ``hub.protocols`` entry points, ordered for messages."""
    found: dict[str, Protocol] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "PROTOCOL"):
            _add(found, _instance(module.PROTOCOL, module.__name__), module.__name__)
    for ep in entry_points(group=GROUP):
        try:
            obj = ep.load()
        except Exception as exc:
            raise ProtocolError(f"entry point {GROUP}:{ep.name} ({ep.value}) does not load: {exc}") from exc
        proto = _instance(obj, f"entry point {GROUP}:{ep.name}")
        if proto.name != ep.name:
            raise ProtocolError(f"entry point {GROUP}:{ep.name} names protocol '{proto.name}'; use the same name")
        _add(found, proto, f"entry point {GROUP}:{ep.name}")
    return dict(sorted(found.items(), key=lambda kv: (kv[1].order, kv[0])))


def registry() -> dict[str, Protocol]:
    """Every protocol by name, loaded on first use."""
    global _registry
    if _registry is None:
        with _lock:
            if _registry is None:
                _registry = _discover()
    return _registry


def all() -> list[Protocol]:
    """Every registered protocol, built-ins first."""
    return list(registry().values())


def names() -> tuple[str, ...]:
    return tuple(registry())


def get(kind: str) -> Protocol:
    """The protocol named *kind*; :class:`ProtocolError` naming the known ones otherwise."""
    proto = registry().get(kind)
    if proto is None:
        raise ProtocolError(f"unknown protocol '{kind}' (known: {', '.join(registry()) or 'none'})")
    return proto


def of(source: ResolvedSource) -> Protocol:
    """The protocol of *source*'s system."""
    return get(source.kind)
