"""clado: a Clio-style taxonomy builder."""

__version__ = "0.1.0"


def build(*args, **kwargs):
    """Build a taxonomy (see clado.pipeline.build.build)."""
    from clado.pipeline.build import build as _build

    return _build(*args, **kwargs)
