"""Staging: batches are spooled to Parquet files before the load transaction starts.

Why stage instead of inserting batch by batch? The extraction can take minutes and fail half-way; a
warehouse transaction held open that long would block other writers (DuckDB allows one) and a failure
would have to roll back a huge transaction. Spooling keeps memory bounded (one batch at a time), keeps
the load transaction short, and lets the warehouse read all staged rows in one vectorized statement.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from types import TracebackType

import pyarrow as pa
import pyarrow.parquet as pq


def _loadable(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Columns that are null in every row of a batch carry no type; stage them as text."""
    if not any(pa.types.is_null(f.type) for f in batch.schema):
        return batch
    arrays = [col.cast(pa.string()) if pa.types.is_null(col.type) else col for col in batch.columns]
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


class Stage:
    """A private folder of Parquet files holding the rows of one load; removed on exit.

    Consecutive batches with the same schema go into one file; a schema change (a new field appears,
    a field's inferred type differs) starts a new file, and the warehouse unions the files by name.
    """

    def __init__(self, root: str | Path | None = None) -> None:
        if root is not None:
            Path(root).mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix="hub-stage-", dir=root))
        self.rows = 0
        self.files: list[Path] = []
        self._writer: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None

    def write(self, batch: pa.RecordBatch) -> None:
        """Append *batch* (empty batches and batches without columns are skipped)."""
        if batch.num_rows == 0 or batch.num_columns == 0:
            return
        batch = _loadable(batch)
        if self._writer is None or not batch.schema.equals(self._schema):
            self._close_writer()
            # Zero-padded names: the load reads files in the order they were written (merge: last wins).
            path = self.path / f"part-{len(self.files):06d}.parquet"
            self._writer = pq.ParquetWriter(path, batch.schema, compression="zstd")
            self._schema = batch.schema
            self.files.append(path)
        self._writer.write_batch(batch)
        self.rows += batch.num_rows

    def _close_writer(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def seal(self) -> list[Path]:
        """Finish writing and return the staged files, in write order."""
        self._close_writer()
        return list(self.files)

    def close(self) -> None:
        self._close_writer()
        shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> Stage:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
