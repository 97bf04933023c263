"""Append-only float32 row files beside the store, read through a memory map.

Embeddings used to be one SQLite blob per row; at a million records that is a million rows to read and copy.
Here each dimension has one flat file (`<store>.vectors/d384.f32`); the store keeps key → row in SQLite. Rows
are appended and synced before their keys are committed, so a key never points at bytes not yet written, and
a crash leaves at most unreferenced rows at the end.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np


class VectorFile:
    """One dimension's rows: `append` returns the first new row, `rows` reads rows through a memory map."""

    def __init__(self, path: Path, dim: int):
        self.path, self.dim = path, dim
        self._lock = threading.Lock()
        self._map: np.ndarray | None = None

    def __len__(self) -> int:
        """Whole rows in the file (a torn partial row at the end does not count)."""
        return self.path.stat().st_size // (4 * self.dim) if self.path.exists() else 0

    def append(self, rows: np.ndarray) -> int:
        """Write the rows at the end (synced to disk) and return the index of the first one."""
        rows = np.ascontiguousarray(rows, dtype=np.float32).reshape(-1, self.dim)
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("ab") as handle:
                first = handle.tell() // (4 * self.dim)
                handle.truncate(first * 4 * self.dim)  # drop a torn partial row left by a crash mid-write
                handle.write(rows.tobytes())
                handle.flush()
                os.fsync(handle.fileno())
            self._map = None
        return first

    def rows(self, index: np.ndarray) -> np.ndarray:
        """Copies of the given rows (n, dim)."""
        with self._lock:
            if self._map is None or (len(index) and int(np.max(index)) >= len(self._map)):
                self._map = np.memmap(self.path, dtype=np.float32, mode="r", shape=(len(self), self.dim))
            return np.array(self._map[np.asarray(index, dtype=np.int64)])
