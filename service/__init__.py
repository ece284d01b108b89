"""sam2-service: the HTTP/WebSocket service around model_core (and its command line)."""

import os
import sys
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sam2-service")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without installing
    __version__ = "0.0.0"

DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096


def _limit_decoder_pixels() -> None:
    """OpenCV reads its decode-time pixel limit once, when cv2 loads: set it from SAM2_MAX_IMAGE_PIXELS first,
    so a file whose header lies is still refused by the decoder itself (issue 12)."""
    if "cv2" in sys.modules:
        return
    value = os.environ.get("SAM2_MAX_IMAGE_PIXELS", "").strip()
    os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", value if value.isdigit() else str(DEFAULT_MAX_IMAGE_PIXELS))


_limit_decoder_pixels()
