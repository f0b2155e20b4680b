"""Webhooks (:mod:`adapters.webhook`) as a hub protocol: stream sources whose messages partners *push* to
``hub serve`` (``pushed = True``). They have the stream keys of every stream source (format, id, records,
keep, max_deliver: :mod:`hub.spec.stream`) and are absorbed from the event store like broker sources; there is
no consumer to pull, so :meth:`stream` says where the messages arrive instead."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from adapters.webhook import WebhookSourceConfig, WebhookSystemConfig
from hub.errors import ProtocolError
from hub.protocols import Protocol, SourceCheck
from hub.protocols._streams import StreamContract, stream_only

if TYPE_CHECKING:
    from adapters.webhook import WebhookCaller, WebhookReceiver
    from hub.spec.loader import Pipeline
    from hub.spec.models import ResolvedSource


class WebhookProtocol(StreamContract, Protocol):  # contracts: the payloads stored, as for brokers
    name = "webhook"
    system_model = WebhookSystemConfig
    source_model = WebhookSourceConfig
    unit = "stream"
    pushed = True
    renders_templates = False
    order = 62
    prompt_keys = "path, delivery_header"

    def __init__(self) -> None:
        self._verifiers: dict[tuple[str, str], Any] = {}  # one per system: its replay memory and key set

    def time_partitioned(self, check: SourceCheck) -> bool:
        return stream_only(check)

    def check_source(self, check: SourceCheck) -> None:
        """Two sources of a spec cannot share a path (``hub serve`` checks across specs when it starts)."""
        name = check.loc[-1]
        for other, spec in check.spec.sources.items():
            if other != name and (spec.model_extra or {}).get("path") == check.config.path \
                    and spec.system in check.spec.systems and check.spec.systems[spec.system].kind == self.name:
                check.problem(("path",), f"sources.{other} is served at the same path")

    def stream(self, pipeline: Pipeline, source: ResolvedSource) -> Any:
        raise ProtocolError(f"sources.{source.name}: webhook deliveries are pushed to `hub serve` (POST "
                            f"{source.config.path}); there is no consumer to pull")

    def receiver(self, pipeline: Pipeline, source: ResolvedSource) -> WebhookReceiver:
        """The receiving end of *source*, secrets resolved; sources of one system share its verifier."""
        from adapters.webhook import WebhookReceiver, verifier  # the client, on first use
        key = (str(pipeline.path), source.system_name)
        system: WebhookSystemConfig = self.resolve_system(source.system_name, source.system)
        if key not in self._verifiers:
            self._verifiers[key] = verifier(system.auth, system=source.system_name)
        return WebhookReceiver(system, source.config, self._verifiers[key], name=source.name)

    def caller(self, pipeline: Pipeline, system_name: str) -> WebhookCaller:
        """The checks of calls the system makes to ``hub serve`` (a flow's HTTP trigger), secrets resolved;
        it shares the verifier (replay memory, key set) of the system's webhook sources."""
        from adapters.webhook import WebhookCaller, verifier  # the client, on first use
        key = (str(pipeline.path), system_name)
        system: WebhookSystemConfig = self.resolve_system(system_name, pipeline.spec.systems[system_name])
        if key not in self._verifiers:
            self._verifiers[key] = verifier(system.auth, system=system_name)
        return WebhookCaller(system, self._verifiers[key], name=system_name)

    def endpoint(self, source: ResolvedSource) -> str | None:
        return f"POST {source.config.path} ({source.system.config.auth.type})"


PROTOCOL = WebhookProtocol()
