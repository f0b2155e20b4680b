"""SFTP's actions for the catalog and their guarded execution: every file drop the spec declares (list its
files, or read one) and ``<system>.put`` for flows. A guarded call (:func:`sftp_call`) lists the drop or reads one
file's records through the SFTP adapter.

Imported by the plugin's hooks on first use (it needs :mod:`hub.agent`, above the spec layer); the guard
(and pyarrow with it) only by the calls, so building the catalog stays light.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from hub.agent.catalog import Action
from hub.errors import Refused
from hub.spec.loader import Pipeline

if TYPE_CHECKING:
    from hub.agent.guard import Fetched

SFTP_INPUT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "file": {"type": "string", "description": "A file of the drop to read (a name from the listing); without "
                                                  "it, the files are listed."},
        "limit": {"type": "integer", "minimum": 1, "description": "Records (or files) to return at most."},
    },
    "required": [],
    "additionalProperties": False,
}


def sftp_from_spec(pipeline: Pipeline, system: str) -> list[Action]:
    out = []
    for source in pipeline.sources.values():
        if source.system_name != system:
            continue
        files = source.config.files
        short = source.name.removeprefix(f"{system}_") or source.name
        props: dict[str, Any] = {}
        for path, col in source.spec.column_specs():
            ctype = col.type or "string"
            js: dict[str, Any] = {"type": "string"}
            if ctype.startswith(("int", "bigint")):
                js = {"type": "integer"}
            elif ctype.startswith(("float", "double")):
                js = {"type": "number"}
            elif ctype == "date":
                js = {"type": "string", "format": "date"}
            elif ctype.startswith("timestamp"):
                js = {"type": "string", "format": "date-time"}
            elif ctype.startswith("decimal"):
                js = {"type": "string", "format": "decimal"}
            elif ctype == "bool":
                js = {"type": "boolean"}
            props[col.name or path] = {**js, "x-source-field": path}
        out.append(Action(
            name=f"{system}.{short}", system=system, protocol="sftp",
            description=f"Files of the drop {files.path}/{files.glob} ({source.config.format.kind})"
                        + (f": {source.spec.description}" if source.spec.description else "")
                        + "; without `file` lists the ready files, with it reads that file's records",
            input_schema=copy.deepcopy(SFTP_INPUT),
            output_schema={"type": "object", "properties": props},
            side_effect="read", binding={"path": files.path, "glob": files.glob, "source": source.name},
            pipeline=pipeline.name))
    return out


def sftp_call(pipeline: Pipeline, action: Action, params: dict[str, Any], limit: int) -> Fetched:
    from hub.agent.guard import Fetched, take  # pyarrow: only when calling, so building the catalog stays light
    from hub.files import build_sftp

    source = pipeline.sources[str(action.binding["source"])]
    adapter = build_sftp(pipeline, source)
    cfg = adapter.source
    want = min(int(params.get("limit") or limit), limit)
    with adapter.session() as session:
        listed = session.list_files(cfg.files.path, cfg.files.glob, recursive=cfg.files.recursive,
                                    ignore=cfg.files.ignore)
        name = params.get("file")
        if not name:
            ready = {f.path for f in adapter.ready_files(session)}
            files = sorted(listed, key=lambda f: (f.mtime, f.path), reverse=True)
            return Fetched([{"file": f.name, "path": f.path, "size": f.size,
                             "modified": datetime.fromtimestamp(f.mtime, UTC).isoformat(), "ready": f.path in ready}
                            for f in files[:want]], len(files))
        remote = next((f for f in listed if f.name == name or f.path == name), None)
        if remote is None:
            raise Refused(f"{action.name}: no file {name!r} in {cfg.files.path} matching {cfg.files.glob} "
                          f"(files: {', '.join(sorted(f.name for f in listed)[:20]) or 'none'})")
        copy = adapter.fetch(session, remote)
    try:
        return Fetched(*take(adapter.batches(copy), want))
    finally:
        copy.path.unlink(missing_ok=True)


def put_action(pipeline: Pipeline, system: str, protocol: str) -> Action:
    """``<system>.put``: one file written by flows (:func:`hub.protocols.sftp.send.sftp_send`)."""
    return Action(
        name=f"{system}.put", system=system, protocol=protocol,
        description=f"Put one file on {system}: written under a temporary name and renamed, replacing a file "
                    "of the same name (idempotent by name)",
        input_schema={"type": "object", "required": ["path", "body"], "properties": {
            "path": {"type": "string", "minLength": 1, "pattern": r"^[^\x00]*[^/\x00]$",
                     "description": "The remote file (folders are created)."},
            "body": {"description": "The file's content: a string as it is (UTF-8), anything else as JSON."}}},
        output_schema={"type": "object", "properties": {"path": {"type": "string"}, "bytes": {"type": "integer"},
                                                        "sha256": {"type": "string"}}},
        side_effect="write", binding={"kind": "put", "idempotent": True}, pipeline=pipeline.name)
