"""sam2-service: the HTTP/WebSocket service around model_core (and its command line)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sam2-service")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without installing
    __version__ = "0.0.0"
