"""GraphQL (:mod:`adapters.graphql`) as a hub protocol: sources (a query paged by Relay cursors or offsets),
contracts of what each source's query selects, agent actions (query fields read, mutation fields write) and
``hub catalog graphql``.

This package and the adapter are the whole of GraphQL in the hub: every layer reaches it through the
registry (docs/protocols.md). The plugin is this module; the flow send (:mod:`~hub.protocols.graphql.send`)
is imported by its hook on first use.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from adapters.graphql import GraphQLSourceConfig, GraphQLSystemConfig
from hub.errors import HubError
from hub.protocols import ExtractRun, Protocol
from hub.runtime.retry import RetryConfig
from hub.runtime.secrets import mask_url

if TYPE_CHECKING:
    from graphql import GraphQLSchema

    from adapters.graphql import (
        GraphQLSource,
    )
    from hub.spec.loader import Pipeline
    from hub.spec.models import ResolvedSource


class GraphQLProtocol(Protocol):
    name = "graphql"
    system_model = GraphQLSystemConfig
    source_model = GraphQLSourceConfig
    order = 50
    renders_templates = False  # only the variables are templates (GraphQLSourceConfig.rendered)
    prompt_keys = "query, variables, records, paginate: {relay: {}}"

    def extractor(self, run: ExtractRun) -> GraphQLSource:
        from adapters.graphql import GraphQLSource  # the client, on first use
        from hub.materialize import state_dir

        source = run.source
        return GraphQLSource(self.resolve_system(source.system_name, source.system),
                             source.config.rendered(run.window, field=f"sources.{source.name}"),
                             name=source.name, batch_size=run.batch_size, system_name=source.system_name,
                             state_dir=state_dir(run.pipeline.root), max_duration=source.spec.max_duration)

    def write_target(self, binding: dict[str, Any]) -> str | None:
        """``graphql mutation setProductPrice``."""
        if binding.get("field"):
            return f"{self.name} {binding.get('operation') or 'field'} {binding['field']}"
        return None

    def endpoint(self, source: ResolvedSource) -> str | None:
        op = source.config.operation()
        name = source.config.operation_name or (op.name.value if op.name else op.operation.value)
        return f"{mask_url(source.system.config.endpoint)} {name}"

    # -- contracts ------------------------------------------------------------------------------------------

    def _schema(self, pipeline: Pipeline, system: str) -> GraphQLSchema:
        """The system's schema as it is now: its SDL file, or the live endpoint introspected."""
        from adapters.graphql import schema_of  # the client, on first use
        from hub.materialize import state_dir

        block = pipeline.spec.systems[system]
        schema, _ = schema_of(self.resolve_system(system, block), root=pipeline.root, system_name=system,
                              state_dir=state_dir(pipeline.root))
        return schema

    def collect(self, pipeline: Pipeline, system: str) -> dict[str, Any]:
        """Per source, what its query selects resolved against today's schema (types with nullability, the
        arguments it passes, the fields each selected object offers): :func:`adapters.graphql.selection_contract`.
        Taken without validating the query, so a live schema that lost a field yields a document that says so."""
        from adapters.graphql import selection_contract  # the client, on first use
        schema = self._schema(pipeline, system)
        sources = {s.name: selection_contract(schema, s.config.query, s.config.operation_name, check=False)
                   for s in pipeline.sources.values() if s.system_name == system}
        flows = self._flow_contracts(pipeline, system, schema)
        return {"sources": dict(sorted(sources.items())), **({"flows": flows} if flows else {})}

    def _flow_contracts(self, pipeline: Pipeline, system: str, schema: GraphQLSchema) -> dict[str, Any]:
        """Per call a flow makes (``<flow>.<step>`` and, for compensations and verifications, ``:<why>``): the
        arguments and input fields it sends and the response fields its outputs read
        (:func:`adapters.graphql.call_contract`), so renaming one is a breaking change for the flow."""
        from adapters.graphql import call_contract  # the client, on first use
        from hub.contracts.usage import jsonpath_to_path
        from hub.spec.flows import flow_calls

        out: dict[str, Any] = {}
        for call in flow_calls(pipeline.spec.flows, system):
            reads = [p for p in (jsonpath_to_path(e) for e in call.outputs.values()) if p is not None]
            doc = call_contract(schema, call.operation, call.params, reads,
                                prefer="query" if call.why in ("lookup", "verify") else "mutation")
            key = f"{call.flow}.{call.step}" + ("" if call.why in ("call", "lookup") else f":{call.why}")
            out[key] = {"flow": call.flow, "step": call.step, **doc}
        return dict(sorted(out.items()))

    def compare(self, pipeline: Pipeline, system: str, before: dict[str, Any], after: dict[str, Any]) -> list[Any]:
        """Each source's selection, snapshot against today: a removed or retyped field, or one that became
        nullable, breaks the source that selects it (:func:`adapters.graphql.compare`)."""
        from adapters.graphql import compare  # the client, on first use
        from hub.contracts.diff import Change

        out = []
        now = after.get("sources") or {}
        for name, was in sorted((before.get("sources") or {}).items()):
            if name not in now:
                continue  # the source left the pipeline: nothing of the system changed
            for c in compare(was, now[name]):
                out.append(Change(system=system, element=f"{name} query", field=c.path, what=c.change,
                                  before=c.before, after=c.after, breaking=c.breaking,
                                  used_by=[f"{name} (selects {c.path})"] if c.breaking else [], sources=[name]))
        live = after.get("flows") or {}
        for key, was in sorted((before.get("flows") or {}).items()):
            if key not in live or was.get("flow") not in pipeline.spec.flows:
                continue  # the call left the flows: nothing of the system changed
            flow, step = was["flow"], was["step"]
            for c in compare(was, live[key]):
                verb = "sends" if "(" in c.path else "reads"
                out.append(Change(system=system, element=f"flow {flow} step {step}", field=c.path, what=c.change,
                                  before=c.before, after=c.after, breaking=c.breaking,
                                  used_by=[f"flow {flow} ({step} {verb} {c.path})"] if c.breaking else [],
                                  sources=[]))
        return out

    # -- the agent ------------------------------------------------------------------------------------------

    searchable_inputs = True

    def actions(self, pipeline: Pipeline, system: str) -> list[Any]:
        """Every query field (read) and mutation field (write) of the schema, with a document that calls it."""
        from adapters.graphql import describe  # the client, on first use
        schema = self._schema(pipeline, system)
        block = pipeline.spec.systems[system]
        catalog = describe(schema, source=block.config.schema_file or mask_url(block.config.endpoint))
        return [self._action(pipeline, system, schema, op) for op in [*catalog["queries"], *catalog["mutations"]]]

    def spec_actions(self, pipeline: Pipeline, system: str) -> list[Any]:
        """Without the schema: one read action per source, calling the source's own query."""
        from hub.agent.catalog import Action

        out = []
        for source in pipeline.sources.values():
            if source.system_name != system:
                continue
            config: GraphQLSourceConfig = source.config
            op = config.operation()
            variables: dict[str, Any] = {v.variable.name.value: {} for v in op.variable_definitions or ()}
            out.append(Action(
                name=f"{system}.{source.name}", system=system, protocol=self.name,
                description=f"GraphQL query of source {source.name}"
                            + (f": {source.spec.description}" if source.spec.description else ""),
                input_schema={"type": "object", "properties": variables},
                output_schema={"type": "object", "properties": {c: {} for c in source.spec.output_columns() or []}},
                side_effect="read",
                binding={"operation": "query", "field": source.name, "document": config.query,
                         "operation_name": config.operation_name, "records": config.records,
                         "relay": bool(config.paginate and config.paginate.relay), "source": source.name},
                pipeline=pipeline.name))
        return out

    def _action(self, pipeline: Pipeline, system: str, schema: GraphQLSchema, op: dict[str, Any]) -> Any:
        from adapters.graphql import call_document  # the client, on first use
        from hub.agent.catalog import Action

        kind = op["operation"]
        doc = call_document(schema, kind, op["name"])
        output = op.get("output") or {}
        record = output.get("items", output) if output.get("type") == "array" else output
        props = record.get("properties") or {}
        if doc.records.endswith(".nodes") or doc.records.endswith(".node"):  # the connection's node type
            nodes = props.get("nodes") or {}
            record = nodes.get("items", nodes) if nodes else record
        description = op.get("description") or f"GraphQL {kind} {op['name']} returning {op['returns']}"
        return Action(
            name=f"{system}.{op['name']}", system=system, protocol=self.name,
            description=f"{description} ({kind} {op['name']})",
            input_schema=op.get("arguments") or {"type": "object", "properties": {}},
            output_schema=record if isinstance(record, dict) else {},
            side_effect=op["kind"],  # read (query field) or write (mutation field)
            binding={"operation": kind, "field": op["name"], "document": doc.text, "records": doc.records,
                     "relay": doc.relay},
            pipeline=pipeline.name)

    def execute(self, pipeline: Pipeline, action: Any, params: dict[str, Any], limit: int) -> Any:
        """One call of the action's document with *params* as variables. A mutation is sent exactly once,
        never retried (the guard has checked its approval); a query retries as sources do."""
        from adapters.graphql import GraphQLEndpoint, records_at  # the client, on first use
        from hub.agent.guard import Fetched
        from hub.materialize import state_dir

        block = pipeline.spec.systems[action.system]
        system: GraphQLSystemConfig = self.resolve_system(action.system, block)
        if action.binding.get("operation") == "mutation":
            system = system.model_copy(update={"retries": RetryConfig(max=0)})
        endpoint = GraphQLEndpoint(system, system_name=action.system, name=action.name,
                                   state_dir=state_dir(pipeline.root))
        data = endpoint.execute_sync(str(action.binding["document"]), params,
                                     action.binding.get("operation_name"), label=action.name)
        records = [r if isinstance(r, dict) else {"value": r}
                   for r in records_at(data, str(action.binding["records"]))]
        return Fetched(records[:limit], len(records))

    sends = True

    def send(self, pipeline: Pipeline, action: Any, request: dict[str, Any], *, idempotency_key: str | None = None,
             key_header: str | None = None) -> Any:
        """A flow's mutation, sent once (:func:`hub.protocols.graphql.send.graphql_send`)."""
        from hub.protocols.graphql.send import graphql_send

        return graphql_send(pipeline, action, request, idempotency_key=idempotency_key, key_header=key_header)

    def reads_action(self, source: ResolvedSource, binding: dict[str, Any]) -> bool:
        """The source's query calls the action's root field (or the action is the source's own query)."""
        if binding.get("source") == source.name:
            return True
        op = source.config.operation()
        fields = {getattr(sel, "name", None) and sel.name.value for sel in op.selection_set.selections}
        return binding.get("operation") == "query" and binding.get("field") in fields

    def plan_source(self, binding: dict[str, Any], params: dict[str, Any]) -> dict[str, Any] | None:
        if binding.get("operation") != "query":
            return None  # a source only reads
        out: dict[str, Any] = {"query": binding["document"], "records": binding["records"]}
        if binding.get("operation_name"):
            out["operation_name"] = binding["operation_name"]
        if params:
            out["variables"] = params
        if binding.get("relay"):
            out["paginate"] = {"relay": {}}
        return out

    def source_params(self, config: Any) -> dict[str, Any]:
        return dict(config.variables or {})

    def catalog_command(self) -> Callable[..., None]:
        """``hub catalog graphql URL|SDL``: Query fields (reads) and Mutation fields (writes) as JSON Schema."""
        import typer

        from adapters.graphql import catalog_of  # the client, on first use

        def catalog_graphql(
            target: str = typer.Argument(..., help="GraphQL endpoint URL (introspected) or SDL file."),
            as_json: bool = typer.Option(False, "--json", help="Print the whole catalog as JSON (with JSON Schemas)."),
        ) -> None:
            """List the queries and mutations of a GraphQL schema, arguments and results as JSON Schema."""
            import json

            try:
                catalog = catalog_of(target)
            except HubError as exc:
                typer.echo(f"error: {exc}", err=True)
                raise typer.Exit(1) from None
            if as_json:
                typer.echo(json.dumps(catalog, indent=2))
                return
            for op in [*catalog["queries"], *catalog["mutations"]]:
                args = ", ".join((op.get("arguments") or {}).get("properties") or {})
                typer.echo(f"{op['kind']:5} {op['name']}({args}) -> {op['returns']}")
            typer.echo("(--json for the JSON Schemas)")

        return catalog_graphql


PROTOCOL = GraphQLProtocol()
