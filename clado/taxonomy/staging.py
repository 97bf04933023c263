"""Export files that appear whole or not at all: written under temporary names beside their real ones, then
renamed onto them (os.replace) once the store has committed the version they describe."""

from __future__ import annotations

import os
import re
import shutil
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
        self._folders: dict[str, Path] = {}
        self._retired: set[str] = set()

    def folder(self, name: str) -> Path:
        """A new, empty folder under `directory/name` for files a staged file refers to: written in place (its name
        is new), it replaces the folders beside it on `publish` and goes on `discard`."""
        if name not in self._folders:
            self._folders[name] = self.directory / name / f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
            self._folders[name].mkdir(parents=True)
        return self._folders[name]

    def path(self, name: str) -> Path:
        """The temporary file standing in for `directory/name` (the same one on every call)."""
        if name not in self._pending:
            self._pending[name] = self.directory / f".{name}.{os.getpid()}-{uuid.uuid4().hex[:12]}.tmp"
        return self._pending[name]

    def retire(self, name: str) -> None:
        """Remove the folder `directory/name` on `publish` (no staged file refers to it any longer)."""
        self._retired.add(name)

    def publish(self) -> None:
        """Flush every staged file to disk, then rename each onto its real name."""
        for folder in self._folders.values():
            for path in folder.iterdir():
                _fsync(path)
            _fsync(folder)
        for temporary in self._pending.values():
            _fsync(temporary)
        for name, temporary in self._pending.items():
            os.replace(temporary, self.directory / name)
        _fsync(self.directory)
        for folder in self._folders.values():
            for older in folder.parent.iterdir():
                if older != folder:
                    shutil.rmtree(older, ignore_errors=True)
        for name in self._retired - set(self._folders):
            shutil.rmtree(self.directory / name, ignore_errors=True)
        self._pending.clear()
        self._folders.clear()
        self._retired.clear()

    def discard(self) -> None:
        for temporary in self._pending.values():
            temporary.unlink(missing_ok=True)
        for folder in self._folders.values():
            shutil.rmtree(folder, ignore_errors=True)
        self._pending.clear()
        self._folders.clear()
        self._retired.clear()


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
