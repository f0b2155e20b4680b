"""``hub serve``: the hub's HTTP entry point — partner webhooks into the event store, authenticated pipeline
runs, its own OpenAPI document (docs/events.md#webhooks-hub-serve)."""

from hub.serve.app import Route, ServeOptions, build_app, routes

__all__ = ["Route", "ServeOptions", "build_app", "routes"]
