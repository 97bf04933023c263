"""Every prompt is a Jinja file in this folder, rendered once with StrictUndefined."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, StrictUndefined

PROMPTS_DIR = Path(__file__).parent
_override_dir: Path | None = None


def set_override_dir(path: Path | str | None) -> None:
    """Look for `NAME.j2` in `path` before the built-in prompts (None restores the built-ins)."""
    global _override_dir
    if path is not None and not Path(path).is_dir():
        raise FileNotFoundError(f"prompt override directory not found: {path}")
    _override_dir = Path(path) if path is not None else None
    _environment.cache_clear()


@lru_cache(maxsize=1)
def _environment() -> Environment:
    loaders = [FileSystemLoader(str(_override_dir))] if _override_dir else []
    loaders.append(FileSystemLoader(str(PROMPTS_DIR)))
    return Environment(
        loader=ChoiceLoader(loaders),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        autoescape=False,
    )


def has_template(name: str, override_dir: Path | str | None = None) -> bool:
    """Whether `NAME.j2` is in `override_dir` or among the built-in prompts."""
    dirs = [Path(override_dir)] if override_dir is not None else []
    return any((d / f"{name}.j2").is_file() for d in [*dirs, PROMPTS_DIR])


def render(name: str, *, strip: bool = True, **variables: object) -> str:
    """Render prompt `name` (without .j2); a missing variable raises. `strip=False` keeps exact whitespace."""
    text = _environment().get_template(f"{name}.j2").render(**variables)
    return text.strip() if strip else text


def template_hash(name: str) -> str:
    """sha256 of the template source actually used (override or built-in)."""
    env = _environment()
    assert env.loader is not None, "_environment() always has a loader"
    source, _, _ = env.loader.get_source(env, f"{name}.j2")
    return hashlib.sha256(source.encode("utf-8")).hexdigest()
