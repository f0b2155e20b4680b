"""SOAP (:mod:`adapters.soap`) as a hub protocol.

The plugin is this module; what its hooks need from the layers above the spec is in the package's submodules,
imported by the hooks on first use: :mod:`~hub.protocols.soap.contract` (collect, usage, compare),
:mod:`~hub.protocols.soap.actions` (the catalog's actions and their guarded calls) and
:mod:`~hub.protocols.soap.send` (flow writes)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from adapters.soap import SoapSourceConfig, SoapSystemConfig
from hub.errors import HubError
from hub.protocols import ExtractRun, Protocol
from hub.runtime.secrets import mask_url
from hub.runtime.window import render_config

if TYPE_CHECKING:
    from adapters.soap import SoapSource
    from hub.spec.loader import Pipeline
    from hub.spec.models import ResolvedSource


class SoapProtocol(Protocol):
    name = "soap"
    system_model = SoapSystemConfig
    source_model = SoapSourceConfig
    prompt_keys = "operation, params, records, paginate"
    order = 20

    def extractor(self, run: ExtractRun) -> SoapSource:
        """The SOAP adapter; repeated children declared as child tables stay lists."""
        from adapters.soap import SoapSource  # the client, on first use
        from hub.materialize import cache_dir, state_dir

        source, pipeline = run.source, run.pipeline
        return SoapSource(self.resolve_system(source.system_name, source.system),
                          render_config(source.config, run.window, field=f"sources.{source.name}"),
                          name=source.name, batch_size=run.batch_size, cache_dir=cache_dir(pipeline) / "wsdl",
                          base_dir=pipeline.root, lists={c.path for c in source.spec.children.values()},
                          system_name=source.system_name, state_dir=state_dir(pipeline.root),
                          max_duration=source.spec.max_duration)

    def endpoint(self, source: ResolvedSource) -> str | None:
        system: SoapSystemConfig = source.system.config
        return f"{mask_url(system.address or system.wsdl)} {source.config.operation}"


    def collect(self, pipeline: Pipeline, system: str) -> dict[str, Any]:
        """The WSDL's service, port and operations, and whether each source's first response still matches."""
        from hub.protocols.soap.contract import collect_soap

        return collect_soap(pipeline, system)

    def compare(self, pipeline: Pipeline, system: str, before: dict[str, Any], after: dict[str, Any]) -> list[Any]:
        from hub.protocols.soap.contract import compare_soap, soap_usage

        return compare_soap(system, before, after, soap_usage(pipeline, system, before))

    searchable_inputs = True

    def actions(self, pipeline: Pipeline, system: str) -> list[Any]:
        """Every operation of the WSDL's chosen service and port."""
        from hub.protocols.soap.actions import soap_actions

        return soap_actions(pipeline, system)

    def execute(self, pipeline: Pipeline, action: Any, params: dict[str, Any], limit: int) -> Any:
        from hub.protocols.soap.actions import soap_call

        return soap_call(pipeline, action, params, limit)

    def reads_action(self, source: ResolvedSource, binding: dict[str, Any]) -> bool:
        return bool(source.config.operation == binding.get("operation"))

    def plan_source(self, binding: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"operation": binding.get("operation")}
        if params:
            out["params"] = params
        if binding.get("records"):
            out["records"] = binding["records"]
        return out

    def source_params(self, config: Any) -> dict[str, Any]:
        return dict(config.params or {})

    sends = True

    def send(self, pipeline: Pipeline, action: Any, request: dict[str, Any], *, idempotency_key: str | None = None,
             key_header: str | None = None) -> Any:
        """A flow's write call, sent once (:func:`hub.protocols.soap.send.soap_send`)."""
        from hub.protocols.soap.send import soap_send

        return soap_send(pipeline, action, request, idempotency_key=idempotency_key, key_header=key_header)

    def catalog_command(self) -> Callable[..., None]:
        """``hub catalog soap WSDL``: every service, port and operation, inputs and outputs as JSON Schema."""
        import typer

        def catalog_soap(
            wsdl: str = typer.Argument(..., help="WSDL URL or file."),
            as_json: bool = typer.Option(False, "--json", help="Print the whole catalog as JSON (with JSON Schemas)."),
            operation: str = typer.Option(None, "--operation", "-o", help="Only this operation, in full."),
        ) -> None:
            """List every service, port and operation of a WSDL, inputs and outputs as JSON Schema."""
            import json

            from rich.console import Console
            from rich.markup import escape

            from adapters.soap import load_wsdl
            from adapters.soap.catalog import describe

            console = Console(soft_wrap=True)
            try:
                loaded = load_wsdl(SoapSystemConfig(wsdl=wsdl, wsdl_cache_ttl=0))
            except HubError as exc:
                raise _fail(str(exc)) from None
            catalog = describe(loaded)
            if operation:
                found = [op for s in catalog["services"] for p in s["ports"] for op in p["operations"]
                         if op["name"] == operation]
                if not found:
                    raise _fail(f"no operation {operation} in {wsdl}")
                typer.echo(json.dumps(found[0], indent=2))
                return
            if as_json:
                typer.echo(json.dumps(catalog, indent=2))
                return
            for service in catalog["services"]:
                console.print(f"[bold]service {service['name']}[/]")
                for port in service["ports"]:
                    console.print(f"  port {port['name']} (SOAP {port['soap_version']}) {port['address']}")
                    for op in port["operations"]:
                        params = ", ".join(f"{k}: {_json_type(v)}" for k, v in
                                           ((op["input"] or {}).get("properties") or {}).items())
                        out = ", ".join(f"{k}: {_json_type(v)}" for k, v in
                                        ((op["output"] or {}).get("properties") or {}).items())
                        console.print(f"    {escape(op['name'])}({escape(params)}) -> {escape(out or '()')}")
            console.print("(--json for the JSON Schemas, --operation NAME for one operation)")

        return catalog_soap


def _fail(message: str) -> Exception:
    """The command's error: printed to stderr, exit status 1."""
    import typer

    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def _json_type(schema: dict[str, Any]) -> str:
    """A short type name for a JSON Schema, for the human listing."""
    if "anyOf" in schema:
        return _json_type(schema["anyOf"][0]) + "?"
    kind = schema.get("type", "any")
    if kind == "array":
        return f"[{_json_type(schema.get('items') or {})}]"
    if kind == "object":
        return str(schema.get("x-xsd-type", "object")).rsplit("}", 1)[-1]
    return str(schema.get("x-xsd-type", kind))

PROTOCOL = SoapProtocol()
