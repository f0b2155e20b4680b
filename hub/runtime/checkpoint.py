"""Checkpoints of long extractions, so a retried load resumes instead of fetching everything again.

A load stays one transaction (a failed run leaves the warehouse exactly as it was), so a checkpoint
cannot point into committed rows. Instead, while a load is open, every batch the adapter hands over is
also appended to a **spool** on disk (one Arrow IPC stream per batch, under the hub's state dir), and the
adapter's resume token after that batch (the next page request, cursor, continuation token) is written
next to it atomically (temp file, fsync, rename) together with the number of batches it covers and a
fingerprint of the source's spec and partition window. The next attempt for the same asset, partition
and fingerprint replays the spooled batches into its new load transaction (no network) and asks the
adapter to continue from the token. A commit deletes the spool.

A batch is spooled before it is written to the load, and the token is only advanced at page boundaries,
so the spool never claims rows it does not hold, and never holds rows the token would fetch again: no
duplicates, nothing skipped (given stable paging, which the adapter decides: see ``resume_blocker``).

Spools are kept only when the *source* failed (a transport error, retries exhausted, a kill); when the
mapping, the row rules or the warehouse failed, replaying the same rows would fail the same way, so the
spool is dropped and the next attempt reads the source afresh.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Protocol, runtime_checkable

import pyarrow as pa

from hub.errors import HubError

#: Where a token says what it resumes from, for messages and metadata ("page 7", "cursor abc", ...).
AT = "at"
#: A token meaning "the source has nothing more after this batch".
DONE: dict[str, Any] = {"kind": "done", AT: "the end (every page was spooled)"}
#: Spools older than this (seconds; ``$HUB_CHECKPOINT_TTL``) are not resumed: the source has moved on.
DEFAULT_TTL = 24 * 3600.0
_VERSION = 1
_STATE = "state.json"
#: LZ4 frames: about half the bytes on disk for typical API records, at a few GB/s. Compressed in the calling
#: thread: Arrow's thread pool bought nothing for batches of a few MB, competed with the load for the CPU and
#: grew the process by ~25 MB of per-thread codec memory (bench/rest_bench.py, hub_ckpt).
_WRITE = pa.ipc.IpcWriteOptions(compression="lz4", use_threads=False)

Token = dict[str, Any]


@runtime_checkable
class Resumable(Protocol):
    """What an adapter offers to be checkpointed."""

    def resume_blocker(self, window_closed: bool) -> str | None:
        """None when this source's paging is stable enough to resume from a token; else the reason why not.
        *window_closed*: the partition's window lies entirely in the past."""
        ...

    def resumable_batches(self, resume: Token | None) -> Iterator[tuple[pa.RecordBatch, Token | None]]:
        """The batches from the start (*resume* None) or from the token, each with the token that continues
        right after it, or None when the batch ends in the middle of a page (no resume point there)."""
        ...


def fingerprint(*parts: Any) -> str:
    """A stable hash of the source's (unresolved) spec and window: a spool only resumes the same extraction."""
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def ttl() -> float:
    raw = os.environ.get("HUB_CHECKPOINT_TTL")
    if not raw:
        return DEFAULT_TTL
    try:
        return float(raw)
    except ValueError:
        raise HubError(f"$HUB_CHECKPOINT_TTL: expected seconds, got {raw!r}") from None


def _safe(part: str) -> str:
    readable = re.sub(r"[^A-Za-z0-9._-]", "_", part)[:48]
    return f"{readable}-{hashlib.sha256(part.encode()).hexdigest()[:10]}"


@dataclass(frozen=True)
class ResumePoint:
    """What a spool holds: *batches* batches of *rows* rows, continued by *token*."""

    token: Token
    batches: int
    rows: int

    @property
    def described(self) -> str:
        return str(self.token.get(AT) or self.token.get("kind"))


@dataclass
class Checkpoint:
    """The spool of one (pipeline, asset, partition): batches, the resume token, a lock."""

    folder: Path
    fingerprint: str
    max_age: float = DEFAULT_TTL
    _lock: IO[bytes] | None = field(default=None, repr=False)
    _written: int = 0  # batch files on disk, including ones after the last token
    _batches: int = 0  # batches the state file covers
    _rows: int = 0
    _pending_rows: int = 0

    @classmethod
    def for_asset(cls, state_dir: Path, pipeline: str, asset: str, partition: str | None, fp: str) -> Checkpoint:
        folder = state_dir / "checkpoints" / _safe(pipeline) / _safe(asset) / _safe(partition or "_unpartitioned")
        return cls(folder, fp, ttl())

    # --- locking -----------------------------------------------------------------------------------------

    def acquire(self) -> bool:
        """Take the spool for this attempt; False when another process is extracting the same partition
        (it then runs without a checkpoint rather than mixing two spools)."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        fh = (self.folder / "lock").open("ab")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            return False
        self._lock = fh
        return True

    def release(self) -> None:
        if self._lock is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock.fileno(), fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    # --- reading -----------------------------------------------------------------------------------------

    def _state(self) -> dict[str, Any] | None:
        try:
            state: dict[str, Any] = json.loads((self.folder / _STATE).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {"version": -1}
        return state

    def resume_point(self) -> tuple[ResumePoint | None, str | None]:
        """The point to resume from, or (None, why not) when there is no usable spool (none: no reason)."""
        state = self._state()
        if state is None:
            return None, None
        if state.get("version") != _VERSION or not isinstance(state.get("token"), dict):
            return None, f"the checkpoint in {self.folder} is unreadable; starting over"
        if state.get("fingerprint") != self.fingerprint:
            return None, "the source's spec or partition window changed since the checkpoint; starting over"
        age = time.time() - float(state.get("updated", 0))
        if age > self.max_age:
            return None, f"the checkpoint is {age / 3600:.1f} h old (more than $HUB_CHECKPOINT_TTL); starting over"
        batches = int(state.get("batches", 0))
        missing = [i for i in range(batches) if not self._path(i).is_file()]
        if missing:
            return None, f"the checkpoint lacks spooled batch {missing[0]} in {self.folder}; starting over"
        return ResumePoint(state["token"], batches, int(state.get("rows", 0))), None

    def replay(self, point: ResumePoint) -> Iterator[pa.RecordBatch]:
        """The spooled batches, one at a time (memory stays at one batch)."""
        for i in range(point.batches):
            path = self._path(i)
            try:
                with pa.OSFile(str(path), "rb") as source:  # read into memory: the file may go after the commit
                    table = pa.ipc.open_stream(source).read_all()
            except (OSError, pa.ArrowInvalid) as exc:
                raise HubError(f"checkpoint batch {path} cannot be read back ({exc}); the load is rolled back - "
                               "delete the folder or run with --full-refresh") from None
            yield from table.to_batches()

    # --- writing -----------------------------------------------------------------------------------------

    def start(self, point: ResumePoint | None) -> None:
        """Continue the spool after *point* (None: start an empty one); batches beyond it are dropped."""
        self._batches = self._written = point.batches if point else 0
        self._rows = point.rows if point else 0
        self._pending_rows = 0
        if point is None:
            (self.folder / _STATE).unlink(missing_ok=True)
        for path in self.folder.glob("*.arrows"):
            try:
                index = int(path.stem)
            except ValueError:
                continue
            if index >= self._written:
                path.unlink(missing_ok=True)

    def append(self, batch: pa.RecordBatch, token: Token | None) -> None:
        """Spool *batch*; with a *token*, make everything spooled so far a resume point."""
        path = self._path(self._written)
        # Arrow's own file, not a Python one: the stream writer then compresses and writes every buffer without
        # the GIL. Through a Python file object each buffer's write is a call back into Python, which waits for
        # the GIL behind the adapter's fetch thread (it doubled the spooling time in bench/rest_bench.py).
        with pa.OSFile(str(path), "wb") as fh:  # unbuffered: every byte is in the OS once the writer closes
            with pa.ipc.new_stream(fh, batch.schema, options=_WRITE) as writer:
                writer.write_batch(batch)
            os.fsync(fh.fileno())
        self._written += 1
        self._pending_rows += batch.num_rows
        if token is not None:
            self._save(token)

    def _save(self, token: Token) -> None:
        self._batches, self._rows = self._written, self._rows + self._pending_rows
        self._pending_rows = 0
        state = {"version": _VERSION, "fingerprint": self.fingerprint, "updated": time.time(),
                 "batches": self._batches, "rows": self._rows, "token": token}
        temp = self.folder / f".{_STATE}.tmp"
        with temp.open("w") as fh:
            json.dump(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temp, self.folder / _STATE)
        dir_fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def discard(self) -> None:
        """Delete the spool (after a commit, a full refresh, or when it is stale)."""
        for path in self.folder.glob("*"):
            if path.name != "lock":
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        self._written = self._batches = self._rows = self._pending_rows = 0

    def _path(self, index: int) -> Path:
        return self.folder / f"{index:06d}.arrows"


class Resumption:
    """One attempt's use of a checkpoint: replay what an earlier attempt spooled, then spool what the adapter
    hands over. A context manager around the load: the spool goes on a clean exit (the load committed), stays
    when the source failed, and goes when anything else failed once the spool was read (the same rows would
    fail again)."""

    def __init__(self, checkpoint: Checkpoint | None, point: ResumePoint | None, details: dict[str, Any]) -> None:
        self.checkpoint, self.point = checkpoint, point
        self.details = details
        self.source_failed = False
        self.used = False  # batches() began: the spool was read (and is being extended)

    def batches(self, adapter: Any) -> Iterator[pa.RecordBatch]:
        """Spooled batches first (counted in ``resumed_rows``), then the adapter's, continuing from the token."""
        if self.checkpoint is None or not isinstance(adapter, Resumable):
            yield from adapter.batches()
            return
        point = self.point
        self.used = True
        if point is not None:
            for batch in self.checkpoint.replay(point):
                yield batch
            self.checkpoint.start(point)
            if point.token.get("kind") == DONE["kind"]:
                return
        else:
            self.checkpoint.start(None)
        for batch, token in self._guarded(adapter.resumable_batches(point.token if point else None)):
            self.checkpoint.append(batch, token)
            yield batch

    def _guarded(self, items: Iterator[tuple[pa.RecordBatch, Token | None]]
                 ) -> Iterator[tuple[pa.RecordBatch, Token | None]]:
        """Yield *items*, noting whether an exception came from the source (keep the spool) or not."""
        while True:
            try:
                item = next(items)
            except StopIteration:
                return
            except BaseException:
                self.source_failed = True
                raise
            yield item

    def __enter__(self) -> Resumption:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        checkpoint = self.checkpoint
        if checkpoint is None:
            return
        keep = False
        try:
            # Kept: the source broke (or the process is being stopped) — the next attempt resumes; or this attempt
            # failed before it read the spool (the warehouse could not be opened): the spool is as it was.
            keep = exc is not None and (self.source_failed or not isinstance(exc, Exception)
                                        or (not self.used and self.point is not None))
            if not keep:
                checkpoint.discard()
        finally:
            checkpoint.release()
        if not keep:  # nothing to resume: leave no empty folder per partition behind
            shutil.rmtree(checkpoint.folder, ignore_errors=True)


def open_resumption(adapter: Any, checkpoint: Checkpoint, *, window_closed: bool,
                    full_refresh: bool) -> Resumption:
    """The resumption of *adapter*'s extraction from *checkpoint* (see :class:`Resumption`); reports
    ``resumed`` and, when it did, ``resumed_from``, ``resumed_batches`` and ``resumed_rows``; when it did not
    although it might have, ``resume_reason``."""
    if not isinstance(adapter, Resumable):
        return Resumption(None, None, {})
    if os.environ.get("HUB_CHECKPOINTS", "").lower() in ("0", "off", "false", "no"):
        return Resumption(None, None, {"resumed": False, "resume_reason": "checkpoints are off ($HUB_CHECKPOINTS)"})
    blocker = adapter.resume_blocker(window_closed)
    if blocker is not None or full_refresh:
        if checkpoint.folder.exists() and checkpoint.acquire():  # an old spool must not outlive a full refresh
            checkpoint.discard()
            checkpoint.release()
            shutil.rmtree(checkpoint.folder, ignore_errors=True)
        reason = "full refresh: the extraction starts over" if full_refresh else blocker
        return Resumption(None, None, {"resumed": False, "resume_reason": reason})
    if not checkpoint.acquire():
        return Resumption(None, None, {"resumed": False, "resume_reason": "another run holds this partition's "
                                                                          "checkpoint; no checkpoint this time"})
    point, why = checkpoint.resume_point()
    if point is None:
        if why:
            checkpoint.discard()
        return Resumption(checkpoint, None, {"resumed": False, **({"resume_reason": why} if why else {})})
    return Resumption(checkpoint, point, {"resumed": True, "resumed_from": point.described,
                                          "resumed_batches": point.batches, "resumed_rows": point.rows})
