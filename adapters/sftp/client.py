"""The SFTP file-drop source: which files are ready, fetching one, reading it, and tidying up after.

The hub drives it file by file (see :mod:`hub.files`), because each file is its own unit of exactly-once
ingestion: downloaded to a local spool, hashed, checked against the ledger, loaded in one transaction,
and only then archived or deleted on the server.
"""

from __future__ import annotations

import contextlib
import contextvars
import fnmatch
import hashlib
import json
import os
import posixpath
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pyarrow as pa

from adapters.sftp import _formats
from adapters.sftp._session import RemoteFile, SftpSession
from adapters.sftp.config import FilesConfig, SftpSourceConfig, SftpSystemConfig
from hub.errors import AdapterError, TransportError
from hub.runtime.growing import Growing


@dataclass(frozen=True)
class LocalCopy:
    """A downloaded file: where it is locally and what it is."""

    remote: RemoteFile
    path: Path
    sha256: str
    size: int
    resumed_from: int = 0  # byte offset a partial copy of an earlier attempt was continued from
    resumed_in_run: int = 0  # broken transfers this fetch continued after reconnecting


class Fetching:
    """A download in progress (:meth:`SftpSource.start_fetch`): the spool file grows on disk while a reader
    (:meth:`open`) reads it, and :meth:`result` is the finished :class:`LocalCopy`, hashed and checked as
    :meth:`SftpSource.fetch` gives it, or the download's error."""

    def __init__(self, remote: RemoteFile, path: Path) -> None:
        self.remote, self.path = remote, path
        self._file = Growing(path)
        self._copy: LocalCopy | None = None

    def _written(self, size: int) -> None:
        self._file.written(size)

    def _finish(self, copy: LocalCopy | None, error: BaseException | None) -> None:
        self._copy = copy
        if copy is not None:
            self._file.written(copy.size)
        self._file.finish(error)

    def done(self) -> bool:
        """Whether the download has finished (either way)."""
        return self._file.done

    def complete(self) -> bool:
        """Whether the download has finished and succeeded."""
        return self._file.done and self._file.error is None

    def result(self) -> LocalCopy:
        """The local copy, once the download is complete, checked and hashed; raises the download's error."""
        self._file.wait()
        assert self._copy is not None
        return self._copy

    def abandon(self) -> None:
        """Wake readers waiting for more bytes: they raise :class:`FetchAbandoned` (the reading stopped early;
        the download itself runs on)."""
        self._file.stop_readers(FetchAbandoned(f"{self.remote.name}: the reader stopped before the end"))

    def open(self) -> IO[bytes]:
        """A reader of the copy from its first byte, seekable within what is on disk, that waits for the bytes it
        asks for and ends only where the complete file ends (raising the download's error if it failed)."""
        return self._file.open(_formats.BLOCK)


class FetchAbandoned(AdapterError):
    """A reader of a download in progress was told to stop (:meth:`Fetching.abandon`)."""


def ready(files: list[RemoteFile], cfg: FilesConfig, markers: set[str], now: float,
          seen: dict[str, tuple[int, int, float]] | None = None) -> list[RemoteFile]:
    """The files that are completely uploaded.

    With a done marker, exactly the marked files. Otherwise a file whose size and mtime have not changed
    for ``stable_for`` seconds: by its mtime's age, and, when *seen* holds earlier observations
    (path -> size, mtime, first seen at), also by having looked the same since at least that long ago —
    which catches uploaders that set an old mtime before the data is complete.
    """
    if cfg.done_marker:
        return [f for f in files if f.path + cfg.done_marker in markers]
    out = []
    for f in files:
        if now - f.mtime < cfg.stable_for:
            continue
        if seen is not None:
            before = seen.get(f.path)
            if before is None or before[:2] != (f.size, f.mtime) or now - before[2] < cfg.stable_for:
                continue
        out.append(f)
    return out


class SftpSource:
    """One file drop: a folder on an SFTP server, a pattern, a format."""

    def __init__(self, system: SftpSystemConfig, source: SftpSourceConfig, *, name: str = "sftp",
                 base_dir: Path | None = None, spool_dir: Path | None = None, batch_size: int = 65_536,
                 system_name: str | None = None, state_dir: Path | None = None) -> None:
        self.system, self.source, self.name = system, source, name
        self.base_dir, self.spool_dir, self.batch_size = base_dir, spool_dir, batch_size
        self.system_name, self.state_dir = system_name, state_dir

    @property
    def url(self) -> str:
        s = self.system
        return f"sftp://{s.username}@{s.host}:{s.port}{self.source.files.path}"

    def session(self) -> SftpSession:
        return SftpSession(self.system, self.base_dir, system_name=self.system_name, state_dir=self.state_dir)

    def listing(self, session: SftpSession) -> tuple[list[RemoteFile], set[str]]:
        """All candidate files (matching the pattern) and the paths of done markers present."""
        files_cfg = self.source.files
        everything = session.list_files(files_cfg.path, "*", recursive=files_cfg.recursive, ignore=files_cfg.ignore)
        marker = files_cfg.done_marker
        markers = {f.path for f in everything if marker and f.path.endswith(marker)}
        pattern = files_cfg.glob
        files = [f for f in everything if not (marker and f.path.endswith(marker))
                 and fnmatch.fnmatchcase(f.name if files_cfg.recursive else posixpath.basename(f.path), pattern)]
        return files, markers

    def ready_files(self, session: SftpSession, now: float | None = None) -> list[RemoteFile]:
        files, markers = self.listing(session)
        return ready(files, self.source.files, markers, time.time() if now is None else now)

    def observe(self, session: SftpSession, seen: dict[str, tuple[int, int, float]]
                ) -> tuple[list[RemoteFile], list[RemoteFile], float]:
        """(every candidate file, the ready ones, when they were judged: after the listing) for a sensor that
        keeps earlier observations in *seen* (:func:`ready`), so it needs nothing of this module but the source."""
        files, markers = self.listing(session)
        now = time.time()
        return files, ready(files, self.source.files, markers, now, seen), now

    def find(self, session: SftpSession, name: str) -> RemoteFile | None:
        """The file whose partition key (path below the folder) is *name*."""
        files, _ = self.listing(session)
        return next((f for f in files if f.name == name), None)

    def fetch(self, session: SftpSession, remote: RemoteFile) -> LocalCopy:
        """Download *remote* to the spool and hash it. Refuses a file that changed while being copied.

        The copy is made under a name derived from the source and the remote path, with a note of the remote
        size and mtime: a download that fails for good (retries exhausted, the process killed) leaves its
        partial copy, and the next fetch of the same, unchanged file continues from its last byte instead of
        copying it again (a retry within the run continues the same way, see ``SftpSession.download``).

        The local name never contains the remote one: a partner's name may be as long as the server allows
        (255 bytes, and a prefix would push it past the local limit) or not be UTF-8; readers get the remote
        name separately (:meth:`batches`)."""
        return self._copy(session, remote, *self._spool(remote))

    def start_fetch(self, session: SftpSession, remote: RemoteFile) -> Fetching:
        """:meth:`fetch` in a thread of its own: returns at once, and the download's reads overlap with reading the
        copy (:meth:`Fetching.open`) instead of preceding it. The session is the download's until it is done."""
        local, note = self._spool(remote)
        fetching = Fetching(remote, local)

        def run() -> None:
            try:
                copy = self._copy(session, remote, local, note, written=fetching._written)
            except BaseException as exc:  # handed to whoever waits for the copy
                fetching._finish(None, exc)
            else:
                fetching._finish(copy, None)

        # the download's call is recorded in the asset's scope (hub.runtime.tracing): its context goes along
        threading.Thread(target=contextvars.copy_context().run, args=(run,), name="hub-sftp-fetch",
                         daemon=True).start()
        return fetching

    def _spool(self, remote: RemoteFile) -> tuple[Path, Path | None]:
        """Where *remote* is copied to (existing: a partial copy to continue), and the note that says of which
        version of it (None: a temporary file)."""
        if self.spool_dir is None:
            fd, name = tempfile.mkstemp(prefix="hub-sftp-")
            os.close(fd)
            return Path(name), None
        folder = self.spool_dir / "partial"
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = hashlib.sha256(self.name.encode() + b"\0" + remote.remote).hexdigest()[:32]
        local = folder / f"{key}.data"
        note = folder / f"{key}.json"
        version = {"path": remote.path, "size": remote.size, "mtime": remote.mtime}
        previous: object = None
        with contextlib.suppress(OSError, ValueError):
            previous = json.loads(note.read_text())
        if previous != version or not local.exists():
            local.unlink(missing_ok=True)  # another version of the file (or none): start from byte 0
            note.write_text(json.dumps(version))
        local.touch(mode=0o600)  # a reader may open it before the first byte arrives
        return local, note

    def _copy(self, session: SftpSession, remote: RemoteFile, local: Path, note: Path | None,
              written: Any = None) -> LocalCopy:
        """Fetch into *local* (continuing a partial copy when *note* records it); keep the partial copy only
        when the transfer broke (the next fetch resumes it), never when the file changed or is refused.
        *written*: see ``SftpSession.download``."""
        start = local.stat().st_size if local.exists() else 0
        resumes_before = len(session.resumed_at)
        try:
            size = session.download(remote.remote, local, resume=True, written=written)
            after = session.stat(remote.remote)
            if after != (remote.size, remote.mtime) or size != remote.size:
                raise AdapterError(
                    f"{self.url}: {remote.name} changed while it was being copied (listed {remote.size} bytes, "
                    f"mtime {remote.mtime}; now {after}); it is still being written, try again later")
            digest = hashlib.sha256()
            with local.open("rb") as fh:
                while chunk := fh.read(1 << 20):
                    digest.update(chunk)
        except BaseException as exc:
            if note is None or not (isinstance(exc, TransportError) or not isinstance(exc, Exception)):
                local.unlink(missing_ok=True)
                if note is not None:
                    note.unlink(missing_ok=True)
            raise
        if note is not None:
            note.unlink(missing_ok=True)  # complete: an ordinary local copy from now on
        return LocalCopy(remote, local, digest.hexdigest(), size, resumed_from=start,
                         resumed_in_run=len(session.resumed_at) - resumes_before - (1 if start else 0))

    def streams(self, remote: RemoteFile) -> bool:
        """Whether *remote*'s records can be read while it downloads (:meth:`batches` of a :class:`Fetching`): JSON
        lines, XML and fixed width that are not compressed. The others need the whole file: Parquet and archives
        seek to their end, CSV is read by the warehouse (hub/files_csv.py) from the complete copy."""
        fmt = self.source.format
        return (fmt.jsonl is not None or fmt.xml is not None or fmt.fixed_width is not None) \
            and _formats.compression(fmt, remote.name) == "none"

    def batches(self, copy: LocalCopy | Fetching, notes: _formats.ReadNotes | None = None
                ) -> Iterator[pa.RecordBatch]:
        """The file's records (see :mod:`adapters.sftp._formats` for the reserved columns); what the reader
        noticed on the way (a likely mis-declared encoding) is added to *notes*. A :class:`Fetching` (only when
        :meth:`streams`) is read as it downloads."""
        if isinstance(copy, Fetching):
            with copy.open() as stream:
                yield from _formats.read(copy.path, self.source.format, name=copy.remote.name,
                                         base_dir=self.base_dir, batch_size=self.batch_size, notes=notes,
                                         stream=stream, size=copy.remote.size)
            return
        yield from _formats.read(copy.path, self.source.format, name=copy.remote.name, base_dir=self.base_dir,
                                 batch_size=self.batch_size, notes=notes)

    def finish(self, session: SftpSession, remote: RemoteFile) -> str:
        """After the commit: archive, delete or leave the file (and drop its done marker). Returns what was done."""
        after = self.source.after
        marker = self.source.files.done_marker
        done = remote.remote + marker.encode() if marker else b""
        if marker and session.exists(done):
            session.remove(done)
        if after.move_to:
            return f"moved to {session.move(remote.remote, after.move_to)}"
        if after.delete:
            session.remove(remote.remote)
            return "deleted"
        return "left in place"
