"""clado: a Clio-style taxonomy builder."""

from clado.version import __version__

__all__ = ["__version__", "build"]


def build(*args, **kwargs):
    """Build a taxonomy (see clado.pipeline.build.build)."""
    from clado.pipeline.build import build as _build

    return _build(*args, **kwargs)
