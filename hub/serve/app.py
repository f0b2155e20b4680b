"""The ASGI application of ``hub serve`` (Starlette): webhooks into the event store, runs, OpenAPI, health.

**A webhook call** (``POST <path>`` of a pushed stream source, :attr:`hub.protocols.Protocol.pushed`):

1. a body larger than the system's ``max_body`` gets **413** (by ``Content-Length`` before reading, else while
   streaming, so an oversize body is never held whole);
2. the call is authenticated on the raw body (signature, API key or bearer JWT: :mod:`adapters.webhook`); a
   failure gets **401** and nothing is stored (**503** when the issuer's key set cannot be read);
3. the payload is read as the source's ``format`` says and its delivery id decided (``id:`` path, else the
   delivery header, else the body's SHA-256); a signature seen before with another delivery id is a replay:
   **401**;
4. it is appended to the event store in one transaction, and only after the commit the answer is **202**:
   ``{"status": "stored" | "duplicate" | "dead", ...}``. The same delivery again is stored once; the second
   answer is still 202 and says ``duplicate``, so a partner retrying after a lost answer stops retrying. A
   payload that does not parse is kept in the dead letters (``hub events retry`` after fixing the spec) and
   answered 202 ``dead`` with the reason: a 4xx would make the partner resend what can never parse.

Stored events are absorbed into their tables by a listener that only absorbs (:mod:`hub.events.listen`),
unless ``--no-absorb`` (then ``hub listen`` or the Dagster sensors do it).

**Flows** with ``trigger: {http: {system}}``: ``POST /flows/<name>/run``, authenticated as the webhook system
(its signature, API key or JWT; 401 otherwise, nothing started), starts a ``hub run --asset <flow>`` process
(202 with its id; 409 while this server's previous run of the flow is still going); ``GET
/flows/<name>/runs/<id>`` reports it to the same caller.

**Runs**: ``POST /runs`` ``{"pipeline", "partition"?, "assets"?}`` with ``Authorization: Bearer <token>`` (a
token of ``$HUB_SERVE_TOKEN``, comma-separated for rotation; without it the endpoints are off) starts a
``hub run`` subprocess (:mod:`hub.serve.runs`) and answers 202 with its id; ``GET /runs/{id}`` reports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route as HttpRoute

from hub.errors import AuthUnavailable, HubError, Unauthorized
from hub.events.payloads import PayloadReader
from hub.events.store import EventStore, open_store
from hub.serve.runs import RunLauncher
from hub.spec.loader import Pipeline

log = logging.getLogger("hub.serve")

_CONTENT_TYPES = {"json": "application/json", "xml": "application/xml", "csv": "text/csv",
                  "bytes": "application/octet-stream"}


class BodyTooLarge(HubError):
    """A request body is larger than its limit (413)."""


@dataclass
class Route:
    """One webhook path: the source it feeds and its receiver (from the source's protocol)."""

    pipeline: Pipeline
    source: str
    receiver: Any
    reader: PayloadReader
    store: EventStore
    accepted: int = 0
    duplicates: int = 0
    refused: int = 0


@dataclass
class ServeOptions:
    run_tokens: list[str] = field(default_factory=list)  # bearer tokens for /runs (empty: runs are off)
    absorb: bool = True  # absorb stored events into the tables (a listener that only absorbs)
    absorb_every: float = 1.0
    run_wait: float = 0.0  # seconds a stopping server gives launched runs (they are never killed)

    @classmethod
    def from_env(cls, **kw: Any) -> ServeOptions:
        tokens = [t.strip() for t in os.environ.get("HUB_SERVE_TOKEN", "").split(",") if t.strip()]
        return cls(run_tokens=tokens, **kw)


def routes(pipelines: list[Pipeline]) -> list[Route]:
    """Every pushed stream source of *pipelines* with its receiver; :class:`HubError` when two share a path."""
    out: dict[str, Route] = {}
    for pipeline in pipelines:
        for source in pipeline.sources.values():
            if source.stream is None or not source.protocol.pushed:
                continue
            receiver = source.protocol.receiver(pipeline, source)
            known = out.get(receiver.path)
            if known is not None:
                raise HubError(f"{pipeline.path}: sources.{source.name} is served at {receiver.path}, like "
                               f"sources.{known.source} of {known.pipeline.path}: each webhook needs its own path")
            out[receiver.path] = Route(pipeline, source.name, receiver,
                                       PayloadReader(source.stream, f"sources.{source.name}"),
                                       open_store(pipeline.warehouse_url, pipeline.root))
    return list(out.values())


async def _body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"body of {declared} bytes is over the limit of {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


@dataclass
class FlowTrigger:
    """A flow started by ``POST /flows/<name>/run``: its pipeline, the caller's checks (the webhook system of
    ``trigger: {http: {system}}``) and the run this server launched last."""

    pipeline: Pipeline
    flow: str
    system: str
    caller: Any
    last_run: str | None = None
    started: int = 0
    refused: int = 0


def flow_triggers(pipelines: list[Pipeline]) -> dict[str, FlowTrigger]:
    """Every flow with ``trigger: {http}`` of *pipelines*; :class:`HubError` when two specs name one flow."""
    out: dict[str, FlowTrigger] = {}
    for pipeline in pipelines:
        for name, flow in pipeline.spec.flows.items():
            if flow.trigger.http is None:
                continue
            if name in out:
                raise HubError(f"{pipeline.path}: flows.{name} is served at /flows/{name}/run, like the flow of "
                               f"{out[name].pipeline.path}: flows started over HTTP need distinct names")
            system = flow.trigger.http.system
            caller = pipeline.spec.systems[system].protocol.caller(pipeline, system)
            out[name] = FlowTrigger(pipeline, name, system, caller)
    return out


class Server:
    """The state behind the application: routes, flow triggers, run launcher, absorbing listener."""

    def __init__(self, pipelines: list[Pipeline], options: ServeOptions) -> None:
        self.pipelines = {p.name: p for p in pipelines}
        self.options = options
        self.routes = {r.receiver.path: r for r in routes(pipelines)}
        self.flows = flow_triggers(pipelines)
        self.launcher = RunLauncher()
        self.listener: Any = None
        self.stopping = False

    # -- webhooks --------------------------------------------------------------------------------------

    async def webhook(self, request: Request) -> JSONResponse:
        route = self.routes[request.url.path]
        receiver = route.receiver
        try:
            body = await _body(request, receiver.max_body)
        except BodyTooLarge as exc:
            route.refused += 1
            return _error(413, str(exc))
        try:
            received = await receiver.receive(dict(request.headers), body)
            incoming = route.reader.incoming(received.message)
            receiver.claim(received.verified, incoming.message_id)  # a replay: Unauthorized
        except Unauthorized as exc:
            route.refused += 1
            log.warning("%s %s: 401 %s", request.method, request.url.path, exc)
            return _error(401, f"unauthorized: {exc}")
        except AuthUnavailable as exc:
            log.warning("%s %s: 503 %s", request.method, request.url.path, exc)
            return JSONResponse({"error": f"cannot authenticate now: {exc}"}, status_code=503,
                                headers={"Retry-After": "30"})
        try:
            appended = await asyncio.to_thread(route.store.append, route.source, [incoming])
        except HubError as exc:
            log.error("%s: storing delivery %s failed: %s", route.source, incoming.message_id, exc)
            return JSONResponse({"error": "the event store is not available; retry later"}, status_code=503,
                                headers={"Retry-After": "10"})
        outcome = appended.outcomes[0]
        if outcome == "duplicate":
            route.duplicates += 1
        else:
            route.accepted += 1
        if self.listener is not None and outcome == "stored":
            self.listener.wake()
        answer: dict[str, Any] = {"status": outcome, "source": route.source, "delivery_id": incoming.message_id}
        if appended.first is not None:
            answer["position"] = appended.first
        if outcome == "dead":
            answer["reason"] = incoming.reason
        return JSONResponse(answer, status_code=202)

    # -- runs ------------------------------------------------------------------------------------------

    def _authorize_runs(self, request: Request) -> JSONResponse | None:
        if not self.options.run_tokens:
            return _error(404, "runs are not enabled on this server (set HUB_SERVE_TOKEN)")
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and any(hmac.compare_digest(token.strip().encode(), t.encode())
                                              for t in self.options.run_tokens):
            return None
        return JSONResponse({"error": "unauthorized: a bearer token of HUB_SERVE_TOKEN is required"},
                            status_code=401, headers={"WWW-Authenticate": "Bearer"})

    async def start_run(self, request: Request) -> JSONResponse:
        refused = self._authorize_runs(request)
        if refused is not None:
            return refused
        if self.stopping:
            return _error(503, "the server is stopping")
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "expected a JSON body {\"pipeline\": ..., \"partition\": ..., \"assets\": [...]}")
        if not isinstance(body, dict) or not isinstance(body.get("pipeline"), str):
            return _error(400, "pipeline: required (the pipeline's name)")
        pipeline = self.pipelines.get(body["pipeline"])
        if pipeline is None:
            return _error(404, f"unknown pipeline {body['pipeline']!r} (served: {', '.join(self.pipelines)})")
        partition, assets = body.get("partition"), body.get("assets") or []
        if partition is not None and not isinstance(partition, str):
            return _error(400, "partition: expected a partition key such as 2024-01-31")
        if not isinstance(assets, list) or not all(isinstance(a, str) for a in assets):
            return _error(400, "assets: expected a list of asset names")
        known = set(pipeline.sources) | set(pipeline.spec.models)
        unknown = [a for a in assets if a not in known]
        if unknown:
            return _error(400, f"unknown asset(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        if partition is not None and not all(a in pipeline.sources and pipeline.sources[a].per_file
                                             for a in assets or ["-"]):
            from hub.dagster.run import partition_keys  # Dagster, only when a partition is checked

            try:
                partition_keys(pipeline, partition=partition)
            except HubError as exc:
                return _error(400, str(exc))
        run = await asyncio.to_thread(self.launcher.launch, pipeline, partition=partition, assets=assets)
        log.info("run %s: %s", run.id, " ".join(run.command))
        return JSONResponse({"run_id": run.id, "status": run.status(), "url": f"/runs/{run.id}"}, status_code=202)

    async def get_run(self, request: Request) -> JSONResponse:
        refused = self._authorize_runs(request)
        if refused is not None:
            return refused
        run = self.launcher.runs.get(request.path_params["run_id"])
        if run is None:
            return _error(404, "unknown run id (runs are remembered by the server that started them)")
        return JSONResponse(await asyncio.to_thread(run.describe))

    # -- flows started over HTTP -------------------------------------------------------------------------

    async def _authenticate_flow(self, request: Request) -> tuple[FlowTrigger | None, JSONResponse | None]:
        """The flow of the path and an error answer, or (trigger, None) once the caller is authenticated
        against the flow's webhook system (on the raw body; a signature seen with another body is a replay)."""
        trigger = self.flows.get(request.path_params["flow"])
        if trigger is None:
            return None, _error(404, f"no flow {request.path_params['flow']!r} is started over HTTP here "
                                     f"(flows with trigger http: {', '.join(sorted(self.flows)) or 'none'})")
        try:
            body = await _body(request, trigger.caller.max_body)
        except BodyTooLarge as exc:
            trigger.refused += 1
            return None, _error(413, str(exc))
        try:
            verified = await trigger.caller.verify(dict(request.headers), body)
            trigger.caller.claim(verified, f"{request.method} {request.url.path} {hashlib.sha256(body).hexdigest()}")
        except Unauthorized as exc:
            trigger.refused += 1
            log.warning("%s %s: 401 %s", request.method, request.url.path, exc)
            return None, _error(401, f"unauthorized: {exc}")
        except AuthUnavailable as exc:
            log.warning("%s %s: 503 %s", request.method, request.url.path, exc)
            return None, JSONResponse({"error": f"cannot authenticate now: {exc}"}, status_code=503,
                                      headers={"Retry-After": "30"})
        request.state.body = body
        return trigger, None

    async def start_flow(self, request: Request) -> JSONResponse:
        """``POST /flows/<name>/run``: a ``hub run --asset <flow>`` process, recorded on the Dagster instance
        like every run; the delivery ledger makes a second call send only what is new. While a run this server
        started for the flow is still going, the answer is 409 with that run (nothing new is started)."""
        trigger, refused = await self._authenticate_flow(request)
        if refused is not None:
            return refused
        assert trigger is not None
        if self.stopping:
            return _error(503, "the server is stopping")
        if request.state.body.strip() not in (b"", b"{}"):
            return _error(400, "expected an empty body (or {}): the flow reads its declared input from the "
                               "warehouse")
        running = self.launcher.runs.get(trigger.last_run or "")
        if running is not None and running.status() == "running":
            return JSONResponse({"error": f"flow {trigger.flow} is already running", "run_id": running.id,
                                 "status": "running", "url": f"/flows/{trigger.flow}/runs/{running.id}"},
                                status_code=409, headers={"Retry-After": "10"})
        run = await asyncio.to_thread(self.launcher.launch, trigger.pipeline, partition=None, assets=[trigger.flow])
        trigger.last_run, trigger.started = run.id, trigger.started + 1
        log.info("flow %s: run %s: %s", trigger.flow, run.id, " ".join(run.command))
        return JSONResponse({"run_id": run.id, "flow": trigger.flow, "status": run.status(),
                             "url": f"/flows/{trigger.flow}/runs/{run.id}"}, status_code=202)

    async def get_flow_run(self, request: Request) -> JSONResponse:
        """``GET /flows/<name>/runs/<id>``: a run of the flow this server started (the same authentication)."""
        trigger, refused = await self._authenticate_flow(request)
        if refused is not None:
            return refused
        assert trigger is not None
        run = self.launcher.runs.get(request.path_params["run_id"])
        if run is None or run.assets != [trigger.flow]:
            return _error(404, "unknown run id of this flow (runs are remembered by the server that started them)")
        return JSONResponse(await asyncio.to_thread(run.describe))

    # -- the rest --------------------------------------------------------------------------------------

    async def health(self, request: Request) -> JSONResponse:
        sources = {r.source: {"path": p, "accepted": r.accepted, "duplicates": r.duplicates, "refused": r.refused}
                   for p, r in self.routes.items()}
        status = "stopping" if self.stopping else "ok"
        flows = {name: {"started": t.started, "refused": t.refused} for name, t in self.flows.items()}
        return JSONResponse({"status": status, "webhooks": sources, "flows": flows,
                             "runs_running": len(self.launcher.running()), "absorbing": self.listener is not None},
                            status_code=503 if self.stopping else 200)

    async def openapi_doc(self, request: Request) -> JSONResponse:
        return JSONResponse(openapi(self))

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        task = None
        pushed = [r.pipeline for r in self.routes.values()]
        if self.options.absorb and pushed:
            from hub.events.listen import Listener, ListenOptions

            names = [r.source for r in self.routes.values()]
            self.listener = Listener(list({id(p): p for p in pushed}.values()), sources=names,
                                     options=ListenOptions(absorb_every=self.options.absorb_every,
                                                           progress_every=60.0),
                                     echo=lambda line: log.info("%s", line))
            task = asyncio.create_task(self.listener.run(handle_signals=False))
        try:
            yield
        finally:
            self.stopping = True
            if task is not None:
                self.listener.stop()
                with contextlib.suppress(Exception):
                    await task  # the last absorb
            if self.options.run_wait:
                await asyncio.to_thread(self.launcher.wait, self.options.run_wait)
            for route in self.routes.values():
                route.store.close()


def openapi(server: Server) -> dict[str, Any]:
    """The OpenAPI 3.1 document of this server: one operation per webhook path, the runs, health."""
    schemes: dict[str, Any] = {"runToken": {"type": "http", "scheme": "bearer",
                                            "description": "A token of $HUB_SERVE_TOKEN."}}
    paths: dict[str, Any] = {}
    for path, route in sorted(server.routes.items()):
        rec = route.receiver
        source = route.pipeline.sources[route.source]
        scheme_name = f"{source.system_name}_{rec.auth_kind}"
        schemes[scheme_name] = rec.security_scheme()
        fmt = source.stream.format if source.stream else "json"
        paths[path] = {"post": {
            "operationId": f"webhook_{route.source}",
            "summary": f"Deliver an event to {route.pipeline.name}.{route.source}",
            "description": source.spec.description or f"Stored in the event store, absorbed into table "
                                                       f"{route.source}. Idempotent on the delivery id.",
            "security": [{scheme_name: []}],
            "requestBody": {"required": True, "content": {_CONTENT_TYPES[fmt]: {"schema": {}}}},
            "responses": {
                "202": {"description": "Durably stored (or a duplicate of a stored delivery, or dead-lettered)",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Accepted"}}}},
                "401": {"description": "Not authenticated (bad, missing, stale or replayed): nothing stored"},
                "413": {"description": f"Body larger than {rec.max_body} bytes"},
                "503": {"description": "The credentials or the store cannot be checked now: retry later"}}}}
    for name, trigger in sorted(server.flows.items()):
        scheme_name = f"{trigger.system}_{trigger.caller.auth_kind}"
        schemes[scheme_name] = trigger.caller.security_scheme()
        flow = trigger.pipeline.spec.flows[name]
        paths[f"/flows/{name}/run"] = {"post": {
            "operationId": f"run_flow_{name}", "summary": f"Start flow {trigger.pipeline.name}.{name}",
            "description": (flow.description or f"flow {name}") + ": a run over the flow's declared input (the "
                           "delivery ledger sends each effect once however often it is started).",
            "security": [{scheme_name: []}],
            "responses": {"202": {"description": "Started: run_id, status, url"},
                          "401": {"description": "Not authenticated: nothing started"},
                          "409": {"description": "A run of the flow is still going (its run_id)"},
                          "413": {"description": f"Body larger than {trigger.caller.max_body} bytes"}}}}
        paths[f"/flows/{name}/runs/{{run_id}}"] = {"get": {
            "operationId": f"get_flow_run_{name}", "summary": f"A run of flow {name}: status, exit code, log tail",
            "security": [{scheme_name: []}],
            "parameters": [{"name": "run_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": {"description": "The run"}, "404": {"description": "Unknown run id"}}}}
    paths["/runs"] = {"post": {
        "operationId": "start_run", "summary": "Start a pipeline run (a `hub run` process)",
        "security": [{"runToken": []}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["pipeline"],
            "properties": {"pipeline": {"type": "string", "enum": sorted(server.pipelines)},
                           "partition": {"type": "string"},
                           "assets": {"type": "array", "items": {"type": "string"}}}}}}},
        "responses": {"202": {"description": "Started: run_id, status, url"}, "400": {"description": "Bad request"},
                      "401": {"description": "No or a wrong bearer token"}, "404": {"description": "Unknown "
                                                                                      "pipeline, or runs off"}}}}
    paths["/runs/{run_id}"] = {"get": {
        "operationId": "get_run", "summary": "A started run: status, exit code, log tail",
        "security": [{"runToken": []}],
        "parameters": [{"name": "run_id", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {"200": {"description": "The run"}, "404": {"description": "Unknown run id"}}}}
    paths["/health"] = {"get": {"operationId": "health", "summary": "Liveness and per-webhook counters",
                                "responses": {"200": {"description": "Serving"},
                                              "503": {"description": "Stopping"}}}}
    return {"openapi": "3.1.0",
            "info": {"title": "Hub", "version": "1",
                     "description": "Webhooks into the hub's event store, and pipeline runs (docs/events.md)."},
            "paths": paths,
            "components": {"securitySchemes": schemes, "schemas": {"Accepted": {
                "type": "object", "required": ["status", "source", "delivery_id"],
                "properties": {"status": {"type": "string", "enum": ["stored", "duplicate", "dead"]},
                               "source": {"type": "string"}, "delivery_id": {"type": "string"},
                               "position": {"type": "integer"}, "reason": {"type": "string"}}}}}}


def build_app(pipelines: list[Pipeline], options: ServeOptions | None = None) -> Starlette:
    """The application serving *pipelines*' webhooks (and runs of them)."""
    server = Server(pipelines, options or ServeOptions.from_env())
    http = [HttpRoute(path, server.webhook, methods=["POST"]) for path in server.routes]
    http += [HttpRoute("/runs", server.start_run, methods=["POST"]),
             HttpRoute("/runs/{run_id}", server.get_run, methods=["GET"]),
             HttpRoute("/flows/{flow}/run", server.start_flow, methods=["POST"]),
             HttpRoute("/flows/{flow}/runs/{run_id}", server.get_flow_run, methods=["GET"]),
             HttpRoute("/health", server.health, methods=["GET"]),
             HttpRoute("/openapi.json", server.openapi_doc, methods=["GET"])]
    app = Starlette(routes=http, lifespan=server.lifespan)
    app.state.server = server
    return app
