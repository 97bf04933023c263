"""Export files that appear whole or not at all: written under temporary names beside their real ones, then
renamed onto them (os.replace) once the store has committed the version they describe."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LEFTOVER = re.compile(r"^\..+\.(\d+)-[0-9a-f]{12}\.tmp$")  # .<name>.<pid>-<hex>.tmp


class StagedFiles:
    """Files staged in `directory`: `path(name)` is where to write `name` for now, `publish` puts them in place."""

    def __init__(self, directory: Path):
        self.directory = directory
        self._pending: dict[str, Path] = {}

    def path(self, name: str) -> Path:
        """The temporary file standing in for `directory/name` (the same one on every call)."""
        if name not in self._pending:
            self._pending[name] = self.directory / f".{name}.{os.getpid()}-{uuid.uuid4().hex[:12]}.tmp"
        return self._pending[name]

    def publish(self) -> None:
        """Flush every staged file to disk, then rename each onto its real name."""
        for temporary in self._pending.values():
            _fsync(temporary)
        for name, temporary in self._pending.items():
            os.replace(temporary, self.directory / name)
        _fsync(self.directory)
        self._pending.clear()

    def discard(self) -> None:
        for temporary in self._pending.values():
            temporary.unlink(missing_ok=True)
        self._pending.clear()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_leftovers(directory: Path) -> None:
    """Delete staged files of processes that died before publishing (killed, out of memory)."""
    for path in directory.glob(".*.tmp"):
        match = LEFTOVER.match(path.name)
        if match and not _alive(int(match.group(1))):
            path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def staged_files(directory: Path) -> Iterator[StagedFiles]:
    """Stage files in `directory`: published when the block ends normally, deleted when it raises."""
    directory.mkdir(parents=True, exist_ok=True)
    remove_leftovers(directory)
    staged = StagedFiles(directory)
    try:
        yield staged
    except BaseException:
        staged.discard()
        raise
    staged.publish()
