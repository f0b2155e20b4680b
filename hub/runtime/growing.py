"""A file one thread writes while others read it from its first byte.

Why: a transfer (an SFTP drop's download, a SOAP response's body) is parsed while it arrives, so that the parse
overlaps the transfer. A reader must wait for bytes not written yet, end only where the complete file ends, and raise
the writer's error when the transfer broke off; the owner may stop a reader that waits (the load gave up). Used by
``adapters/sftp/client.py`` (``Fetching``) and ``adapters/soap/_transport.py`` (``Spooled``).
"""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import IO, Any


class Growing:
    """The state of a file being written: how many bytes a reader may read, whether the writer is done, and why
    it stopped early. The writer calls :meth:`written` and then :meth:`finish`; readers come from :meth:`open`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._cond = threading.Condition()
        self._size = 0  # bytes of the file a reader may read
        self._done = False
        self._error: BaseException | None = None
        self._stopped: BaseException | None = None  # raised to readers that wait (:meth:`stop_readers`)

    # --- the writer ---------------------------------------------------------------------------------------

    def written(self, size: int) -> None:
        """The file now holds *size* bytes a reader may read."""
        with self._cond:
            self._size = size
            self._cond.notify_all()

    def finish(self, error: BaseException | None = None) -> None:
        """The writer is done: the file is complete, or *error* says why it is not."""
        with self._cond:
            self._done, self._error = True, error
            self._cond.notify_all()

    # --- the owner and readers ------------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        """Whether the writer has finished (either way)."""
        with self._cond:
            return self._done

    @property
    def error(self) -> BaseException | None:
        """Why the writer stopped before the end (None while it writes, and when it completed the file)."""
        with self._cond:
            return self._error

    def wait(self) -> int:
        """Until the writer has finished: the file's size, or the writer's error raised."""
        with self._cond:
            while not self._done:
                self._cond.wait()
            if self._error is not None:
                raise self._error
            return self._size

    def stop_readers(self, error: BaseException) -> None:
        """Readers waiting for more bytes raise *error* (the reading stopped early; the writer runs on)."""
        with self._cond:
            self._stopped = error
            self._cond.notify_all()

    def available(self, offset: int) -> int:
        """Wait until the file holds more than *offset* bytes, or is complete: the bytes a reader may read then (the
        end of the file once complete). Raises the writer's error when it failed."""
        with self._cond:
            while self._size <= offset and not self._done and self._stopped is None:
                self._cond.wait()
            if self._stopped is not None:
                raise self._stopped
            if self._size > offset:
                return self._size
            if self._error is not None:
                raise self._error
            return self._size

    def open(self, buffer_size: int = 1 << 20) -> IO[bytes]:
        """A reader from the first byte, seekable within what is written, whose reads wait for the bytes they ask
        for (a buffered ``read(n)`` returns *n* bytes unless the file ends first)."""
        return io.BufferedReader(_Reader(self), buffer_size)


class _Reader(io.RawIOBase):
    """The raw reader behind :meth:`Growing.open`."""

    def __init__(self, growing: Growing) -> None:
        self.growing, self.pos = growing, 0
        self.file = growing.path.open("rb", buffering=0)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        end = self.growing.available(self.pos)
        if end <= self.pos:
            return 0
        with memoryview(buffer) as view:
            self.file.seek(self.pos)
            n = self.file.readinto(view[:min(len(view), end - self.pos)]) or 0
        self.pos += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos}.get(whence)
        if base is None:  # from the end: once there is one
            base = self.growing.wait()
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self.pos = base + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def close(self) -> None:
        if not self.closed:
            self.file.close()
        super().close()
