"""GatheRing: a collaborative multi-agent AI framework and server."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("gathering")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"
