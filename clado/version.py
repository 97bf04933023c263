"""The package version, in one place (read by the package, the stores and the exports)."""

__version__ = "0.1.0"
