"""Large XML drops parsed in a worker process of their own.

Why: reading XML is Python work from end to end — libxml2's parse through lxml, one dict per record, the
Arrow batches — and it holds the GIL almost all the time, so the download, the mapping and the warehouse's
inserts wait for it in turn (docs/benchmarks.md: reading while downloading gained nothing for XML). A worker
process has its own GIL: it runs the very reader the hub runs in-process (:func:`hub.runtime.xmlrecords.read_xml`)
over the bytes this process feeds it, and hands each Arrow batch back over a pipe in Arrow's IPC format, while
this process downloads, maps, checks and loads the previous batch on the other core.

The worker costs a second Python (about 0.3 s to start, 150-180 MB at its peak), so it is opt-in: files of at
least ``xml.process_from`` bytes take this way, and none by default.

The exchange is plain: this process writes the file's bytes to the worker's stdin (from any stream: a download
in progress, a decompressed member); the worker writes frames to its stdout, each a kind byte and
a length, then either one complete IPC stream holding one batch (``B``), or a pickled exception the reader
raised (``E``: the same error, of the same class, as the in-process reader gives). Only this process's own
worker is unpickled. A worker that dies without a frame saying why is an :class:`AdapterError` with its
standard error's last line.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pyarrow as pa

import hub
from hub.errors import AdapterError, HubError

_HEADER = struct.Struct("<cQ")
#: The worker's batches hold at most this many records: its memory is added to this process's, and 16,384 records
#: keep it under 100 MB above its imports (65,536: 130 MB); this process's loads take batches of any size.
WORKER_BATCH = 16_384
_FEED = 1 << 20
#: the folder holding the ``hub`` package: the worker imports it from there even when the hub is not installed
_ROOT = str(Path(next(iter(hub.__path__))).resolve().parent)


def read_xml(stream: IO[bytes], record: str, name: str, batch_size: int, max_depth: int
             ) -> Iterator[pa.RecordBatch]:
    """What :func:`hub.runtime.xmlrecords.read_xml` yields for *stream*, parsed by a worker process."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, env.get("PYTHONPATH")) if p)
    with tempfile.TemporaryFile(prefix="hub-xml-worker-") as errors:
        worker = subprocess.Popen(
            [sys.executable, "-m", "hub.runtime.xmlprocess", record, name, str(min(batch_size, WORKER_BATCH)),
             str(max_depth)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors, env=env)
        assert worker.stdin is not None and worker.stdout is not None
        feeder = _Feeder(stream, worker.stdin, name)
        feeder.start()
        try:
            yield from _frames(worker.stdout, name)
            feeder.join()
            if feeder.error is not None:  # the download failed or stopped: its error, not a truncated parse
                raise feeder.error
            if worker.wait() != 0:
                raise AdapterError(f"{name}: the XML reader process failed: {_last_line(errors)}")
        except HubError:
            if feeder.error is not None:
                raise feeder.error from None
            raise
        finally:
            feeder.stop()  # its read may be waiting for a download: it ends on its own, it holds nothing
            if worker.poll() is None:
                worker.kill()
            worker.wait()
            worker.stdout.close()


class _Feeder(threading.Thread):
    """Copies the file's bytes into the worker's stdin; keeps the error of the stream it reads, if any."""

    def __init__(self, stream: IO[bytes], pipe: IO[bytes], name: str) -> None:
        super().__init__(name=f"hub-xml-feed-{name}", daemon=True)
        self.stream, self.pipe = stream, pipe
        self.error: BaseException | None = None
        self._stopped = False

    def run(self) -> None:
        try:
            while not self._stopped:
                block = self.stream.read(_FEED)
                if not block:
                    break
                self.pipe.write(block)
        except (BrokenPipeError, ValueError):  # the worker ended (an error frame says why) or was stopped
            pass
        except BaseException as exc:  # handed to the reading thread, which raises it
            self.error = exc
        finally:
            with contextlib.suppress(BrokenPipeError, OSError):
                self.pipe.close()

    def stop(self) -> None:
        self._stopped = True


def _frames(out: IO[bytes], name: str) -> Iterator[pa.RecordBatch]:
    while True:
        header = out.read(_HEADER.size)
        if not header:
            return
        if len(header) != _HEADER.size:
            raise AdapterError(f"{name}: the XML reader process ended in the middle of a batch")
        kind, size = _HEADER.unpack(header)
        body = out.read(size)
        if len(body) != size:
            raise AdapterError(f"{name}: the XML reader process ended in the middle of a batch")
        if kind == b"B":
            yield from pa.ipc.open_stream(body).read_all().to_batches()
        else:
            raise _exception(body, name)


def _exception(body: bytes, name: str) -> BaseException:
    try:
        exc = pickle.loads(body)  # written by this process's own worker
    except Exception:  # an exception that does not unpickle
        return AdapterError(f"{name}: the XML reader process failed")
    return exc if isinstance(exc, BaseException) else AdapterError(f"{name}: {exc!r}")


def _last_line(errors: IO[bytes]) -> str:
    errors.seek(0)
    lines = errors.read().decode("utf-8", "replace").strip().splitlines()
    return lines[-1] if lines else "no message"


def _serve(record: str, name: str, batch_size: int, max_depth: int) -> None:
    """The worker: read stdin, write frames to stdout."""
    from hub.runtime.xmlrecords import read_xml

    # Arrow's default pool (mimalloc) keeps ~30 MB more of what the batches freed than the system allocator does;
    # this process does nothing else that would gain from it
    pa.set_memory_pool(pa.system_memory_pool())
    out = sys.stdout.buffer
    try:
        for batch in read_xml(sys.stdin.buffer, record, name, batch_size, max_depth):
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, batch.schema) as writer:
                writer.write_batch(batch)
            body = sink.getvalue()
            out.write(_HEADER.pack(b"B", body.size))
            out.write(body)
    except HubError as exc:
        body = pickle.dumps(exc)
        out.write(_HEADER.pack(b"E", len(body)))
        out.write(body)
    out.flush()


if __name__ == "__main__":
    _serve(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
