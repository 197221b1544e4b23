"""An append-only column of numbers that moves to a temporary file once it outgrows a memory budget.

A long simulation's records (segments, stepped iterations, decode-step ends)
grow with the run; :class:`SpillArray` keeps only the newest ``limit_bytes``
of them in memory (a stdlib ``array``, cheap to append to one value at a
time) and appends older values to an anonymous temporary file, which the
operating system deletes when the array is closed or collected. Reads take any
slice back as a numpy array, from the file and the buffer alike, so readers do
not need to know where a value lives.
"""
from __future__ import annotations

import os
import tempfile
from array import array

import numpy as np

_DTYPES = {"q": np.int64, "d": np.float64}


class SpillArray:
    """Values of one ``typecode`` ("q": int64, "d": float64); see the module doc."""

    LIMIT = 1 << 20

    def __init__(self, typecode: str, limit_bytes: int | None = None):
        self.typecode = typecode
        self.dtype = np.dtype(_DTYPES[typecode])
        self.buf = array(typecode)                 # the newest values (append / extend to it directly)
        self._limit = (self.LIMIT if limit_bytes is None else limit_bytes) // self.dtype.itemsize
        self._file = None
        self._flushed = 0                          # values in the file

    def __len__(self) -> int:
        return self._flushed + len(self.buf)

    @property
    def itemsize(self) -> int:
        return self.dtype.itemsize

    def append(self, value) -> None:
        self.buf.append(value)
        if len(self.buf) >= self._limit:
            self.spill()

    def extend(self, values) -> None:
        self.buf.extend(values)
        if len(self.buf) >= self._limit:
            self.spill()

    def extend_array(self, values: np.ndarray) -> None:
        self.buf.frombytes(np.ascontiguousarray(values, dtype=self.dtype).tobytes())
        if len(self.buf) >= self._limit:
            self.spill()

    def spill(self) -> None:
        """Move the buffer to the file (callers that append to ``buf`` directly call :meth:`check`)."""
        if not len(self.buf):
            return
        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix="kvsim-spill-")
        os.pwrite(self._file.fileno(), self.buf.tobytes(), self._flushed * self.dtype.itemsize)
        self._flushed += len(self.buf)
        self.buf = array(self.typecode)

    def check(self) -> None:
        if len(self.buf) >= self._limit:
            self.spill()

    def read(self, a: int, b: int) -> np.ndarray:
        """Values ``a .. b-1`` as a new numpy array."""
        b = min(b, len(self))
        if b <= a:
            return np.zeros(0, self.dtype)
        size = self.dtype.itemsize
        parts = []
        if a < self._flushed:
            fb = min(b, self._flushed)
            raw = os.pread(self._file.fileno(), (fb - a) * size, a * size)
            parts.append(np.frombuffer(raw, dtype=self.dtype))
        if b > self._flushed:
            lo = max(a, self._flushed) - self._flushed
            parts.append(np.frombuffer(self.buf, dtype=self.dtype)[lo:b - self._flushed].copy())
        return parts[0].copy() if len(parts) == 1 and a < self._flushed else np.concatenate(parts)

    def chunks(self, size: int):
        """Consecutive pieces of at most ``size`` values, in order."""
        for a in range(0, len(self), size):
            yield self.read(a, a + size)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
