"""GraphQL (:mod:`adapters.graphql`) as a hub protocol: sources (a query paged by Relay cursors or offsets) and
``hub catalog graphql``. Contracts and agent actions are not wired yet (the adapter has
``selection_contract``/``compare`` and ``catalog_of`` for them); their hooks keep the "not supported" defaults."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from adapters.graphql import GraphQLSource, GraphQLSourceConfig, GraphQLSystemConfig, catalog_of
from hub.errors import HubError
from hub.protocols import ExtractRun, Protocol
from hub.runtime.secrets import mask_url

if TYPE_CHECKING:
    from hub.spec.models import ResolvedSource


class GraphQLProtocol(Protocol):
    name = "graphql"
    system_model = GraphQLSystemConfig
    source_model = GraphQLSourceConfig
    order = 50
    renders_templates = False  # only the variables are templates (GraphQLSourceConfig.rendered)
    prompt_keys = "query, variables, records, paginate: {relay: {}}"

    def extractor(self, run: ExtractRun) -> GraphQLSource:
        from hub.materialize import state_dir

        source = run.source
        return GraphQLSource(self.resolve_system(source.system_name, source.system),
                             source.config.rendered(run.window, field=f"sources.{source.name}"),
                             name=source.name, batch_size=run.batch_size, system_name=source.system_name,
                             state_dir=state_dir(run.pipeline.root), max_duration=source.spec.max_duration)

    def endpoint(self, source: ResolvedSource) -> str | None:
        op = source.config.operation()
        name = source.config.operation_name or (op.name.value if op.name else op.operation.value)
        return f"{mask_url(source.system.config.endpoint)} {name}"

    def catalog_command(self) -> Callable[..., None]:
        """``hub catalog graphql URL|SDL``: Query fields (reads) and Mutation fields (writes) as JSON Schema."""
        import typer

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
