"""The package version, importable without importing the package's API (no cycles)."""

__version__ = "0.1.0"
