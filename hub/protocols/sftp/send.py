"""SFTP's flow writes (:meth:`hub.protocols.sftp.SftpProtocol.send`): one file put exactly once, as
:mod:`hub.flows.senders` describes.

Imported by the plugin's hook on first use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hub.protocols import Sent
from hub.protocols.sftp import PROTOCOL
from hub.spec.loader import Pipeline


def sftp_send(pipeline: Pipeline, action: Any, request: dict[str, Any], *, idempotency_key: str | None,
              key_header: str | None) -> Sent:
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
    cfg = PROTOCOL.resolve_system(action.system, pipeline.spec.systems[action.system])
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
