"""The images of a dataset folder, and reading one without letting a bad file stop the run."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = frozenset({".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp"})


def list_images(data: str | Path) -> list[Path]:
    """The image files of a folder (not its subfolders), sorted by name; or [data] for a single image file."""
    data = Path(data)
    if data.is_file():
        if data.suffix.lower() not in IMAGE_SUFFIXES:
            raise ValueError(f"{data} is not an image file ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return [data]
    if not data.is_dir():
        raise FileNotFoundError(f"no such image folder: {data}")
    return sorted(p for p in data.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


class BadImage(ValueError):
    """An image file OpenCV cannot decode (corrupt, truncated, not an image)."""


def read_image(path: Path) -> np.ndarray:
    """HWC uint8 BGR, as OpenCV decodes it; raises BadImage when it cannot."""
    data = np.fromfile(str(path), dtype=np.uint8)  # via numpy: non-ASCII paths work on every platform
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None or image.size == 0:
        raise BadImage(f"cannot decode {path.name} ({data.size} bytes)")
    return image
