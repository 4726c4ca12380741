"""`embeddings.h5`: the frames' embeddings, appended record by record (outputs.py).

`EmbeddingFile` appends rows to resizable HDF5 datasets through `DroppableFile`,
which turns every write into a no-op once the file is being thrown away.
"""

from __future__ import annotations

import io
import os
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .record_result import RecordResult

_H5_GROWTH = 4096


class DroppableFile(io.RawIOBase):
    """The embeddings file's bytes, as h5py's `fileobj` driver writes them.

    `drop()` turns every later write, truncate and flush into a no-op. HDF5 flushes its
    caches while closing a file; on a full disk that flush fails again, HDF5 then
    leaves the file open, and its objects' later cleanup prints tracebacks (or
    crashes). With the writes dropped, closing a file that is being thrown away
    cannot fail.
    """

    def __init__(self, path: Path):
        super().__init__()
        self.file = path.open("w+b")
        self._dropped = False

    def drop(self) -> None:
        self._dropped = True

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self.file.readinto(buffer)

    def write(self, data: Any) -> int:
        if self._dropped:
            return memoryview(data).nbytes
        return self.file.write(data)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self.file.seek(offset, whence)

    def tell(self) -> int:
        return self.file.tell()

    def truncate(self, size: int | None = None) -> int:
        if self._dropped:
            return self.file.tell() if size is None else size
        return self.file.truncate(size)

    def flush(self) -> None:
        if not self._dropped and not self.file.closed:
            self.file.flush()

    def fileno(self) -> int:
        return self.file.fileno()

    def close(self) -> None:
        try:
            if self._dropped:
                with suppress(OSError):
                    self.file.close()  # its own buffer's flush may fail: the fd closes
            else:
                self.file.close()
        finally:
            super().close()


class EmbeddingFile:
    """Appends rows to resizable HDF5 datasets `ids`, `nucleotide`, `protein`."""

    def __init__(self, path: Path, dims: tuple[int, int]):
        import h5py  # here: virnucd imports this module, and needs h5py only for embeddings

        self._raw = DroppableFile(path)
        try:
            self._file = h5py.File(self._raw, "w")
        except BaseException:
            self._raw.drop()
            self._raw.close()
            raise
        self._rows = 0
        string = h5py.string_dtype(encoding="ascii")
        self._ids = self._file.create_dataset(
            "ids", (0,), string, maxshape=(None,), chunks=(_H5_GROWTH,), track_times=False
        )
        self._sets = [
            self._file.create_dataset(
                name, (0, dim), "f4", maxshape=(None, dim), chunks=(256, dim), track_times=False
            )
            for name, dim in zip(("nucleotide", "protein"), dims, strict=True)
        ]

    def append(self, result: RecordResult) -> None:
        n = len(result.frame_ids)
        if n == 0:
            return
        if result.nucleotide is None or result.protein is None:
            raise ValueError(f"record {result.record_id}: embeddings were not kept")
        end = self._rows + n
        self._ids.resize((end,))
        self._ids[self._rows : end] = result.frame_ids
        for dataset, rows in zip(self._sets, (result.nucleotide, result.protein), strict=True):
            dataset.resize((end, dataset.shape[1]))
            dataset[self._rows : end] = rows
        self._rows = end

    def close(self) -> None:
        """Flush, fsync and close: the file is complete on disk."""
        if self._file.id.valid:
            self._file.flush()
            self._file.close()
        if not self._raw.closed:
            self._raw.flush()
            os.fsync(self._raw.fileno())
            self._raw.close()

    def discard(self) -> None:
        """Close without writing anything more; never raises (the file is deleted next)."""
        self._raw.drop()
        with suppress(Exception):
            if self._file.id.valid:
                self._file.close()
        with suppress(Exception):
            self._raw.close()
