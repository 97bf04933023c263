"""One writer per store: a lock file beside the database that a second build or refresh waits on or fails on."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout


class StoreBusy(RuntimeError):
    """Another process holds the store's write lock."""


@contextmanager
def store_lock(db_path: Path | str, *, wait: float = 0.0) -> Iterator[None]:
    """Hold `<db>.lock` for the duration; wait up to `wait` seconds (-1 = forever), else raise StoreBusy."""
    db_path = Path(db_path)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(db_path) + ".lock")
    owner = Path(str(db_path) + ".owner")
    try:
        lock.acquire(timeout=wait)
    except Timeout:
        holder = owner.read_text().strip() if owner.exists() else "unknown"
        raise StoreBusy(
            f"{db_path} is being written by another clado process (pid {holder}); "
            f"wait for it to finish or pass --wait SECONDS"
        ) from None
    try:
        owner.write_text(str(os.getpid()))
        yield
    finally:
        owner.unlink(missing_ok=True)
        lock.release()
