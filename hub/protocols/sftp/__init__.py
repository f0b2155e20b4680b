"""SFTP file drops (:mod:`adapters.sftp`) as a hub protocol.

The plugin is this module; what its hooks need from the layers above the spec is in the package's submodules,
imported by the hooks on first use: :mod:`~hub.protocols.sftp.contract` (collect, usage, compare),
:mod:`~hub.protocols.sftp.actions` (the catalog's actions and their guarded calls) and
:mod:`~hub.protocols.sftp.send` (flow writes)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters.sftp import SftpSourceConfig, SftpSystemConfig
from hub.protocols import Protocol, Sent, SourceCheck

if TYPE_CHECKING:
    from adapters.sftp import SftpSource
    from hub.spec.loader import Pipeline
    from hub.spec.models import ResolvedSource


class SftpProtocol(Protocol):
    name = "sftp"
    system_model = SftpSystemConfig
    source_model = SftpSourceConfig
    prompt_keys = "files: {path, glob}, format"
    order = 30
    renders_templates = False  # file patterns and folders are literal
    unit = "file"
    exports = True

    def time_partitioned(self, check: SourceCheck) -> bool:
        if check.source.partitioned:
            check.problem(("partitioned",), "file drops are partitioned by file, not by time")
        return False

    def file_extractor(self, pipeline: Pipeline, source: ResolvedSource) -> SftpSource:
        """The drop of *source*: lists ready files, fetches them into the pipeline's spool, reads them."""
        from adapters.sftp import SftpSource  # the client, on first use
        from hub.materialize import state_dir

        return SftpSource(self.resolve_system(source.system_name, source.system), source.config,
                          name=source.name, base_dir=pipeline.root, spool_dir=pipeline.spool_dir(),
                          system_name=source.system_name, state_dir=state_dir(pipeline.root))

    def upload(self, pipeline: Pipeline, system_name: str, local: Path, remote: str) -> None:
        """Uploaded under a temporary name and renamed, so the partner never picks up half a file."""
        from adapters.sftp import SftpSession  # the client, on first use
        cfg = self.resolve_system(system_name, pipeline.spec.systems[system_name])
        with SftpSession(cfg, pipeline.root, system_name=system_name) as session:
            session.upload_atomic(local, remote)


    def collect(self, pipeline: Pipeline, system: str) -> dict[str, Any]:
        """The layout of the newest ready (or archived) file of each drop."""
        from hub.protocols.sftp.contract import collect_sftp

        return collect_sftp(pipeline, system)

    def compare(self, pipeline: Pipeline, system: str, before: dict[str, Any], after: dict[str, Any]) -> list[Any]:
        from hub.protocols.sftp.contract import compare_sftp, sftp_usage

        return compare_sftp(system, before, after, sftp_usage(pipeline, system))

    def actions(self, pipeline: Pipeline, system: str) -> list[Any]:
        """One action per drop the spec declares: list its files, or read one; and ``<system>.put``, a file
        written by flows."""
        from hub.protocols.sftp.actions import put_action, sftp_from_spec

        return [*sftp_from_spec(pipeline, system), put_action(pipeline, system, self.name)]

    sends = True

    def send(self, pipeline: Pipeline, action: Any, request: dict[str, Any], *, idempotency_key: str | None = None,
             key_header: str | None = None) -> Sent:
        """A flow's file, put once and atomically (:func:`hub.protocols.sftp.send.sftp_send`)."""
        from hub.protocols.sftp.send import sftp_send

        return sftp_send(pipeline, action, request, idempotency_key=idempotency_key, key_header=key_header)

    def spec_actions(self, pipeline: Pipeline, system: str) -> list[Any]:
        return self.actions(pipeline, system)

    def execute(self, pipeline: Pipeline, action: Any, params: dict[str, Any], limit: int) -> Any:
        from hub.protocols.sftp.actions import sftp_call

        return sftp_call(pipeline, action, params, limit)

    def reads_action(self, source: ResolvedSource, binding: dict[str, Any]) -> bool:
        files = source.config.files
        return bool(files.path == binding.get("path") and files.glob == binding.get("glob"))

    def plan_source(self, binding: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        return {"files": {"path": binding.get("path", "/"), "glob": binding.get("glob", "*")}, "format": {"csv": {}}}

PROTOCOL = SftpProtocol()
