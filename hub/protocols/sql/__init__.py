"""SQL databases (:mod:`adapters.sql`) as a hub protocol.

The plugin is this module; what its hooks need from the layers above the spec is in the package's submodules,
imported by the hooks on first use: :mod:`~hub.protocols.sql.contract` (collect, usage, compare),
:mod:`~hub.protocols.sql.actions` (the catalog's reads and writes, and the guarded reads) and
:mod:`~hub.protocols.sql.send` (flow writes)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters.sql import SqlSourceConfig, SqlSystemConfig
from hub.errors import HubError
from hub.protocols import ExtractRun, Protocol, SourceCheck
from hub.runtime.secrets import mask_url
from hub.runtime.window import render_config

if TYPE_CHECKING:
    from adapters.sql import SqlSource
    from hub.protocols import Extractor
    from hub.spec.loader import Pipeline
    from hub.spec.models import ResolvedSource, SystemConfig
    from hub.warehouse import Load


def dialect(url: str) -> str:
    """The SQLAlchemy dialect name of a URL (before ${VAR} references are resolved)."""
    scheme = url.split(":", 1)[0].split("+", 1)[0].lower()
    return {"postgres": "postgresql"}.get(scheme, scheme)


class SqlProtocol(Protocol):
    name = "sql"
    system_model = SqlSystemConfig
    source_model = SqlSourceConfig
    prompt_keys = "table"
    order = 40

    def check_source(self, check: SourceCheck) -> None:
        """An incremental source needs a key to merge on; a query must only read."""
        from adapters.sql import WriteRefused, check_read_only  # the client, on first use
        sql: SqlSourceConfig = check.config
        if sql.incremental is not None and not check.source.primary_key:
            check.problem(("primary_key",), "an incremental source needs primary_key: re-read rows (the lookback, "
                                            "rows changed again) are merged on it")
        if sql.query is not None:
            try:
                check_read_only(sql.query, dialect(check.system.url), where="query")
            except WriteRefused as exc:
                check.problem(("query",), str(exc).removeprefix("query: "))

    def time_partitioned(self, check: SourceCheck) -> bool:
        if check.config.incremental is None:
            return True
        if check.source.partitioned:
            check.problem(("partitioned",), "an incremental source reads what changed since its last run; "
                                            "it is not also partitioned by time")
        return False

    def incremental_cursor(self, config: Any) -> str | None:
        return config.incremental.cursor if config.incremental is not None else None

    def resolve_system(self, system_name: str, system: SystemConfig, *, root: Path | None = None) -> SqlSystemConfig:
        """A relative SQLite path is taken from the project root."""
        cfg: SqlSystemConfig = super().resolve_system(system_name, system)
        url = cfg.url
        if root is not None and url.startswith("sqlite:///") and not url.startswith("sqlite:////") \
                and url != "sqlite:///:memory:":
            cfg = cfg.model_copy(update={"url": f"sqlite:///{root / url[len('sqlite:///'):]}"})
        return cfg

    def extractor(self, run: ExtractRun) -> SqlSource:
        """The SQL adapter; an incremental source starts from the mark the warehouse keeps (none on a full
        refresh or without a warehouse)."""
        from adapters.sql import SqlSource  # the client, on first use
        from hub.materialize import state_dir
        from hub.state import read_mark

        source, pipeline = run.source, run.pipeline
        mark = run.extra.get("high_water_mark")
        if mark is None and run.warehouse is not None and source.incremental:
            mark = read_mark(run.warehouse, source.name)
        return SqlSource(self.resolve_system(source.system_name, source.system, root=pipeline.root),
                         render_config(source.config, run.window, field=f"sources.{source.name}"),
                         name=source.name, high_water_mark=mark, full_refresh=run.full_refresh,
                         system_name=source.system_name, state_dir=state_dir(pipeline.root))

    def before_commit(self, load: Load, source: ResolvedSource, adapter: Extractor, run_id: str) -> None:
        """An incremental source's new high-water mark is saved in the load's transaction."""
        from adapters.sql import SqlSource  # the client, on first use
        from hub.state import save_mark

        incremental = source.config.incremental
        if isinstance(adapter, SqlSource) and incremental is not None:
            save_mark(load, source.name, incremental.cursor, adapter.high_water_mark, adapter.cursor_kind, run_id)

    def endpoint(self, source: ResolvedSource) -> str | None:
        return f"{mask_url(source.system.config.url)} {source.config.table or 'query'}"


    def collect(self, pipeline: Pipeline, system: str) -> dict[str, Any]:
        """Columns, types and keys of the tables the sources read (database reflection)."""
        from hub.protocols.sql.contract import collect_sql

        return collect_sql(pipeline, system)

    def compare(self, pipeline: Pipeline, system: str, before: dict[str, Any], after: dict[str, Any]) -> list[Any]:
        from hub.protocols.sql.contract import compare_sql, sql_usage

        return compare_sql(system, before, after, sql_usage(pipeline, system))

    params_are_inputs = False

    def actions(self, pipeline: Pipeline, system: str) -> list[Any]:
        """Every table and view (of the schemas the sources read), read-only."""
        from hub.protocols.sql.actions import sql_actions, write_actions

        reads = sql_actions(pipeline, system)
        return reads + write_actions(pipeline, system, reads)

    def execute(self, pipeline: Pipeline, action: Any, params: dict[str, Any], limit: int) -> Any:
        from hub.errors import Refused
        from hub.protocols.sql.actions import sql_call

        if action.binding.get("write"):
            raise Refused(f"{action.name}: SQL writes are for flows only (hub flow run); the agent only reads")
        return sql_call(pipeline, action, params, limit)

    sends = True

    def send(self, pipeline: Pipeline, action: Any, request: dict[str, Any], *, idempotency_key: str | None = None,
             key_header: str | None = None) -> Any:
        """A flow's write to a table or procedure of ``writes:`` (:func:`hub.protocols.sql.send.sql_send`)."""
        from hub.protocols.sql.send import sql_send

        return sql_send(pipeline, action, request, idempotency_key=idempotency_key, key_header=key_header)

    def reads_action(self, source: ResolvedSource, binding: dict[str, Any]) -> bool:
        return bool(source.config.table is not None and source.config.table == binding.get("table"))

    def plan_source(self, binding: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"table": binding.get("table")}
        if binding.get("schema"):
            out["schema"] = binding["schema"]
        return out

    def source_params(self, config: Any) -> dict[str, Any]:
        return dict(config.params or {})

    def planned_columns(self, config: Any) -> list[str] | None:
        return list(config.select) if config.select else None
    def catalog_command(self) -> Callable[..., None]:
        """``hub catalog sql URL``: tables and views, columns, types, keys, JSON Schema."""
        import typer

        def catalog_sql(
            url: str = typer.Argument(..., help="SQLAlchemy URL, e.g. postgresql://user@host/db or sqlite:///file.db; "
                                                "${VAR} references are resolved from the environment."),
            schema: str = typer.Option(None, "--schema", help="Schema to list (default: the connection's)."),
            as_json: bool = typer.Option(False, "--json", help="Print the whole catalog as JSON (with JSON Schemas)."),
            table: str = typer.Option(None, "--table", "-t", help="Only this table, in full."),
        ) -> None:
            """List the tables and views of a database: columns, types, primary and foreign keys, JSON Schema."""
            import json

            from rich.console import Console
            from rich.markup import escape

            from adapters.sql.catalog import describe
            from hub.runtime.secrets import resolve

            console = Console(soft_wrap=True)
            try:
                catalog = describe(SqlSystemConfig(url=resolve(url, field="url")), schema=schema)
            except HubError as exc:
                raise _fail(str(exc)) from None
            if table:
                found = [t for t in catalog["tables"] if t["name"] == table]
                if not found:
                    raise _fail(f"no table or view {table} in {catalog['url']} "
                                f"(tables: {', '.join(t['name'] for t in catalog['tables'])})")
                typer.echo(json.dumps(found[0], indent=2))
                return
            if as_json:
                typer.echo(json.dumps(catalog, indent=2))
                return
            console.print(f"[bold]{escape(catalog['url'])}[/] ({catalog['dialect']})")
            for t in catalog["tables"]:
                pk = set(t["primary_key"])
                cols = ", ".join(f"{'*' if c['name'] in pk else ''}{c['name']}: {c['type']}"
                                 + (f" → {c['arrow']}" if c.get("arrow") else "") for c in t["columns"])
                console.print(f"  {t['kind']} [bold]{escape(t['name'])}[/]({escape(cols)})")
                for fk in t["foreign_keys"]:
                    target = f"{fk['references']}({', '.join(fk['referred_columns'])})"
                    console.print(f"      {', '.join(fk['columns'])} -> {target}")
            console.print("(* primary key; SQL type → the Arrow type the hub loads it as; --json for the JSON "
                          "Schemas, --table NAME for one table)")

        return catalog_sql


def _fail(message: str) -> Exception:
    """The command's error: printed to stderr, exit status 1."""
    import typer

    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


PROTOCOL = SqlProtocol()
