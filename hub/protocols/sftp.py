"""SFTP file drops (:mod:`adapters.sftp`) as a hub protocol."""

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
        from hub.contracts.collect import collect_sftp

        return collect_sftp(pipeline, system)

    def compare(self, pipeline: Pipeline, system: str, before: dict[str, Any], after: dict[str, Any]) -> list[Any]:
        from hub.contracts.diff import compare_sftp
        from hub.contracts.usage import sftp_usage

        return compare_sftp(system, before, after, sftp_usage(pipeline, system))

    def actions(self, pipeline: Pipeline, system: str) -> list[Any]:
        """One action per drop the spec declares: list its files, or read one; and ``<system>.put``, a file
        written by flows."""
        from hub.agent.catalog import Action, sftp_from_spec

        put = Action(
            name=f"{system}.put", system=system, protocol=self.name,
            description=f"Put one file on {system}: written under a temporary name and renamed, replacing a file "
                        "of the same name (idempotent by name)",
            input_schema={"type": "object", "required": ["path", "body"], "properties": {
                "path": {"type": "string", "minLength": 1, "pattern": r"^[^\x00]*[^/\x00]$",
                         "description": "The remote file (folders are created)."},
                "body": {"description": "The file's content: a string as it is (UTF-8), anything else as JSON."}}},
            output_schema={"type": "object", "properties": {"path": {"type": "string"}, "bytes": {"type": "integer"},
                                                            "sha256": {"type": "string"}}},
            side_effect="write", binding={"kind": "put", "idempotent": True}, pipeline=pipeline.name)
        return [*sftp_from_spec(pipeline, system), put]

    sends = True

    def send(self, pipeline: Pipeline, action: Any, request: dict[str, Any], *, idempotency_key: str | None = None,
             key_header: str | None = None) -> Sent:
        """Write the file atomically (:meth:`adapters.sftp.SftpSession.upload_atomic`: a temporary name, then a
        rename): readers never see half a file, and putting the same name again replaces it with the same
        content, so sending again cannot act twice. No connection: nothing was written (failed, retryable);
        refused (permissions, a missing root): failed; the link lost mid-put: unknown (safe to send again)."""
        import hashlib
        import tempfile

        import orjson

        from adapters.sftp import AuthenticationError, HostKeyError, SftpSession
        from hub.errors import AdapterError, DeliveryFailed, DeliveryUnknown
        from hub.materialize import state_dir

        path, body = str(request["path"]), request["body"]
        data = body.encode() if isinstance(body, str) else orjson.dumps(body)
        cfg = self.resolve_system(action.system, pipeline.spec.systems[action.system])
        where = f"{action.name}: put {path}"
        with tempfile.TemporaryDirectory(prefix="hub-put-") as tmp, \
                SftpSession(cfg, pipeline.root, system_name=action.system,
                            state_dir=state_dir(pipeline.root)) as session:
            local = Path(tmp) / "body"
            local.write_bytes(data)
            try:
                session.connect()
            except (HostKeyError, AuthenticationError) as exc:
                raise DeliveryFailed(f"{where}: {exc}; nothing was written") from None
            except AdapterError as exc:  # the server cannot be reached (after the system's retries)
                raise DeliveryFailed(f"{where}: {exc}; nothing was written", retryable=True) from None
            try:
                session.upload_atomic(local, path)
            except AdapterError as exc:  # the connection broke: the file may be there (sending again is safe)
                raise DeliveryUnknown(f"{where}: {exc}; the file may have been written") from None
            except Exception as exc:  # the server's SFTP status answers: permission denied, no such folder ...
                raise DeliveryFailed(f"{where}: refused by the server ({type(exc).__name__}: {exc})") from None
        return Sent({"path": path, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}, None,
                    f"put {path} ({len(data)} bytes)")

    def spec_actions(self, pipeline: Pipeline, system: str) -> list[Any]:
        return self.actions(pipeline, system)

    def execute(self, pipeline: Pipeline, action: Any, params: dict[str, Any], limit: int) -> Any:
        from hub.agent.guard import sftp_call

        return sftp_call(pipeline, action, params, limit)

    def reads_action(self, source: ResolvedSource, binding: dict[str, Any]) -> bool:
        files = source.config.files
        return bool(files.path == binding.get("path") and files.glob == binding.get("glob"))

    def plan_source(self, binding: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        return {"files": {"path": binding.get("path", "/"), "glob": binding.get("glob", "*")}, "format": {"csv": {}}}

PROTOCOL = SftpProtocol()
