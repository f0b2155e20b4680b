"""``hub serve``: partner webhooks into the event store, authenticated runs, OpenAPI (docs/events.md)."""

from __future__ import annotations

import logging
from pathlib import Path

import typer
from rich.console import Console

from hub.errors import HubError

console = Console(soft_wrap=True)


def serve_command(
    specs: list[Path] = typer.Argument(None, help="Pipeline spec files (default: every spec in pipelines/)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface; put a "
                                                          "TLS-terminating proxy in front)."),
    port: int = typer.Option(8808, "--port", min=1, max=65535, help="Port to listen on."),
    absorb: bool = typer.Option(True, "--absorb/--no-absorb", help="Absorb stored events into the tables here "
                                                                   "(off: hub listen or the sensors do)."),
    grace: int = typer.Option(30, "--grace", min=0, help="Seconds SIGTERM waits for requests in flight."),
) -> None:
    """Serve the webhooks of the specs' pushed stream sources (202 only after the event store committed),
    POST /runs (bearer token of $HUB_SERVE_TOKEN), /openapi.json and /health; stops cleanly on SIGTERM."""
    import uvicorn

    from hub.cli.events import _pipelines
    from hub.runtime.secrets import mask
    from hub.serve import ServeOptions, build_app

    pipelines = _pipelines(specs)
    options = ServeOptions.from_env(absorb=absorb)
    try:
        app = build_app(pipelines, options)
    except HubError as exc:
        typer.echo(f"error: {mask(str(exc))}", err=True)
        raise typer.Exit(1) from None
    server = app.state.server
    for path, route in server.routes.items():
        console.print(f"POST {path} -> {route.pipeline.name}.{route.source}", highlight=False)
    for name, trigger in server.flows.items():
        console.print(f"POST /flows/{name}/run -> flow {trigger.pipeline.name}.{name} ({trigger.system}, "
                      f"{trigger.caller.auth_kind})", highlight=False)
    console.print(f"runs: {'POST /runs (bearer token)' if options.run_tokens else 'off (set HUB_SERVE_TOKEN)'}; "
                  f"OpenAPI at http://{host}:{port}/openapi.json", highlight=False)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = uvicorn.Config(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=grace,
                            proxy_headers=False, server_header=False)
    uvicorn.Server(config).run()


def register(app: typer.Typer) -> None:
    """Add ``hub serve`` to the ``hub`` command."""
    app.command("serve")(serve_command)
