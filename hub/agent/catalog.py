"""The action catalog: every operation the systems of the pipelines offer, as typed actions.

Actions are generated from what the systems describe themselves, read live through the hub's adapters:

* SOAP: every operation of the chosen service and port of the WSDL (:func:`adapters.soap.catalog.describe`);
  input and output JSON Schemas from the XSD;
* REST: every path and method of the system's OpenAPI document (``openapi:``; OpenAPI 3.0/3.1 and Swagger
  2.0, ``$ref`` resolved), or, without one, the requests the spec's sources declare;
* SQL: every table and view (:func:`adapters.sql.catalog.describe`), read-only;
* SFTP: every file drop the spec declares (list and read its files).

Side effects: HTTP GET/HEAD/OPTIONS and SQL are reads, POST/PUT/PATCH/DELETE writes (an OpenAPI operation may
say otherwise with ``x-hub-side-effect: read|write``); a SOAP operation is a read when its name starts with
Get/List/Find/Search/Query/Check/Read/Describe/Fetch, else a write; ``systems.<name>.agent.reads`` /
``writes`` override both.

Search (:meth:`Catalog.search`, :mod:`hub.agent.search`) fuses keywords (BM25 with a synonym map and
character n-grams) with meaning (sentence embeddings of a model shipped in a wheel, run offline,
:mod:`hub.agent.embed`); without the model it falls back to keywords.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hub.errors import HubError
from hub.runtime.secrets import mask
from hub.spec.loader import Pipeline

if TYPE_CHECKING:
    from hub.agent.search import HybridIndex


@dataclass(frozen=True)
class Action:
    """One thing an agent can do with a system."""

    name: str            # stable: "<system>.<operation>", e.g. "erp.GetOrders", "crm.get_customers"
    system: str          # system name in the spec
    protocol: str        # rest | soap | sql | sftp
    description: str
    input_schema: dict[str, Any]   # JSON Schema of the parameters
    output_schema: dict[str, Any]  # JSON Schema of one record
    side_effect: str     # "read" | "write"
    binding: dict[str, Any]  # rest {method, path, records?}, soap {operation, records?}, sql {table, schema?},
    #                          sftp {path, glob, source}
    pipeline: str = ""   # the pipeline whose spec declares the system

    def summary(self) -> dict[str, Any]:
        """Name, system, protocol, side effect and description: what a listing shows."""
        return {"name": self.name, "system": self.system, "protocol": self.protocol,
                "side_effect": self.side_effect, "description": self.description}

    def to_dict(self) -> dict[str, Any]:
        return {**self.summary(), "pipeline": self.pipeline, "binding": self.binding,
                "input_schema": self.input_schema, "output_schema": self.output_schema}


# --- the catalog -----------------------------------------------------------------------------------------

@dataclass
class Catalog:
    """The actions of a set of pipelines' systems, searchable."""

    actions: list[Action]
    #: systems that could not be read (system -> reason); their actions are missing or come from the spec only
    errors: dict[str, str] = field(default_factory=dict)
    pipelines: dict[str, Pipeline] = field(default_factory=dict, repr=False)  # pipeline name -> pipeline
    #: search by meaning: None when the model is installed (else keywords, warned once), True required, False off
    semantic: bool | None = field(default=None, repr=False)
    #: where the action vectors are kept between builds (default: see :func:`hub.agent.embed.default_store_path`)
    vector_store: Path | None = field(default=None, repr=False)
    _index: HybridIndex | None = field(default=None, init=False, repr=False)
    _by_name: dict[str, Action] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self._by_name = {a.name: a for a in self.actions}

    def __len__(self) -> int:
        return len(self.actions)

    def __iter__(self) -> Any:
        return iter(self.actions)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def get(self, name: str) -> Action:
        """The action called *name*; a :class:`HubError` naming the closest names when there is none."""
        found = self._by_name.get(name)
        if found is not None:
            return found
        lowered = {n.lower(): n for n in self._by_name}
        if name.lower() in lowered:
            return self._by_name[lowered[name.lower()]]
        close = difflib.get_close_matches(name, list(self._by_name), n=5, cutoff=0.5)
        if not close:
            close = [a.name for a in self.search(name, limit=3)]
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise HubError(f"no action named '{name}' in the catalog ({len(self.actions)} actions){hint}")

    def pipeline_of(self, action: Action) -> Pipeline:
        if action.pipeline in self.pipelines:
            return self.pipelines[action.pipeline]
        raise HubError(f"action {action.name}: pipeline '{action.pipeline}' is not loaded")

    def pipeline_of_name(self, name: str) -> Pipeline:
        if name in self.pipelines:
            return self.pipelines[name]
        raise HubError(f"pipeline '{name}' is not loaded (pipelines: {', '.join(self.pipelines) or 'none'})")

    def search(self, query: str, limit: int = 10) -> list[Action]:
        """The actions that best match *query*, best first, by keywords and by meaning
        (:class:`hub.agent.search.HybridIndex`); an empty query lists the first *limit* actions."""
        return [a for a, _ in self.scored(query, limit)]

    @property
    def index(self) -> HybridIndex:
        """The search index, built on first use (the action vectors from the disk cache where known)."""
        if self._index is None:
            root = next((p.root for p in self.pipelines.values() if getattr(p, "root", None)), None)
            from hub.agent.embed import default_store_path  # numpy and the model only when searching
            from hub.agent.search import HybridIndex

            store = self.vector_store or default_store_path(Path(root) if root else None)
            self._index = HybridIndex(self.actions, semantic=self.semantic, store_path=store)
        return self._index

    def scored(self, query: str, limit: int = 10) -> list[tuple[Action, float]]:
        if not query.strip():
            return [(a, 0.0) for a in self.actions[:limit]]
        exact = self._by_name.get(query.strip())
        out = [(self.actions[i], round(s, 4)) for i, s in self.index.rank(query, limit)]
        if exact is not None:
            out = [(exact, 2.0), *[(a, s) for a, s in out if a is not exact][: limit - 1]]
        return out


def build_catalog(pipelines: list[Pipeline], *, systems: Iterable[str] | None = None) -> Catalog:
    """The catalog of every system of *pipelines* (only *systems* when given), read from the live systems.

    A system that cannot be read does not stop the catalog: its reason is kept in :attr:`Catalog.errors`
    and, where the spec says enough (REST requests, SFTP drops), actions come from the spec alone.
    A system declared by several pipelines is read once (the first pipeline's declaration).
    """
    wanted = set(systems) if systems is not None else None
    actions: list[Action] = []
    errors: dict[str, str] = {}
    seen: set[str] = set()
    for pipeline in pipelines:
        for system, cfg in pipeline.spec.systems.items():
            if system in seen or (wanted is not None and system not in wanted):
                continue
            seen.add(system)
            try:
                found = cfg.protocol.actions(pipeline, system)
            except Exception as exc:  # a system that cannot be described must not hide the others
                errors[system] = mask(str(exc) if isinstance(exc, HubError) else f"{type(exc).__name__}: {exc}")
                found = cfg.protocol.spec_actions(pipeline, system)  # what the spec alone says
            actions.extend(_with_policy(pipeline, system, a) for a in found)
    unique: dict[str, Action] = {}
    for a in actions:
        unique.setdefault(a.name, a)
    return Catalog(actions=list(unique.values()), errors=errors, pipelines={p.name: p for p in pipelines})


def _with_policy(pipeline: Pipeline, system: str, action: Action) -> Action:
    """*action* with the system's agent policy applied: ``agent: {writes: [...], reads: [...]}`` overrides the
    side effect a protocol inferred (by verb, HTTP method ...). Applied here, once, for every protocol."""
    agent = pipeline.spec.systems[system].agent
    operation = action.name.split(".", 1)[1] if "." in action.name else action.name
    side_effect = action.side_effect
    if agent is not None:
        if operation in agent.writes or action.name in agent.writes:
            side_effect = "write"
        elif operation in agent.reads or action.name in agent.reads:
            side_effect = "read"
    return dataclasses.replace(action, side_effect=side_effect, pipeline=action.pipeline or pipeline.name)
