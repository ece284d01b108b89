"""Where the masks go: one YOLO-segmentation label file per image, or one COCO instances JSON with RLE masks.

Files are written whole (a temp file in the same folder, then os.replace), so a stopped run never leaves a
half-written label: an image either has its complete file or none, and a rerun picks up where it stopped.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from pycocotools import mask as coco_mask

from .polygons import mask_to_polygon, normalise

# one object of an image: (class id, detector score or None, (H, W) bool mask)
Instance = tuple[int, "float | None", np.ndarray]


def atomic_write_text(path: Path, text: str) -> None:
    """Write text to path so that readers see the old file or the whole new one, never a part."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")  # opened with the umask's mode, unlike mkstemp
    try:
        with open(tmp, "x", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class YoloSegWriter:
    """`<output_dir>/<image stem>.txt`, one `class x1 y1 x2 y2 ...` row per mask, coordinates in [0, 1]."""

    def __init__(self, output_dir: Path) -> None:
        self.output_dir = output_dir

    @property
    def output(self) -> Path:
        return self.output_dir

    def label_path(self, image: Path) -> Path:
        return self.output_dir / f"{image.stem}.txt"

    def is_done(self, image: Path, name: str) -> bool:
        return self.label_path(image).exists()

    def write(self, image: Path, name: str, hw: tuple[int, int], instances: Iterable[Instance]) -> int:
        """Write the image's label file; returns the number of rows (masks with a polygon of 3+ points)."""
        h, w = hw
        rows = []
        for class_id, _, mask in instances:
            points = mask_to_polygon(mask)
            if len(points) >= 3:  # fewer points is no polygon, and YOLO's readers reject the row
                rows.append(f"{class_id} " + " ".join(f"{v:.6f}" for v in normalise(points, w, h).reshape(-1)))
        atomic_write_text(self.label_path(image), "".join(r + "\n" for r in rows))
        return len(rows)

    def skip(self, image: Path, name: str, hw: tuple[int, int]) -> None:
        """An image without boxes gets no label file (Ultralytics' convention)."""

    def close(self) -> None:
        pass


class CocoWriter:
    """`<output_dir>/instances.json`: images, annotations with RLE `segmentation`, categories from the box source.

    Rewritten whole at most every `flush_seconds` (a large file is not rewritten per image) and at the end,
    also when the run is stopped; a rerun reads it back and skips its images.
    """

    FILE_NAME = "instances.json"

    def __init__(self, output_dir: Path, names: dict[int, str], overwrite: bool = False,
                 flush_seconds: float = 30.0) -> None:
        self.path = output_dir / self.FILE_NAME
        self.names = names  # the box source's own dict: a labels folder adds the ids it meets
        self.flush_seconds = flush_seconds
        self.doc = {"images": [], "annotations": [], "categories": []}
        if self.path.exists() and not overwrite:
            try:
                self.doc = json.loads(self.path.read_text(encoding="utf-8"))
                self._done = {img["file_name"] for img in self.doc["images"]}
                self._next_image = max((img["id"] for img in self.doc["images"]), default=0) + 1
                self._next_ann = max((a["id"] for a in self.doc["annotations"]), default=0) + 1
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{self.path} exists but is not an instances JSON this run can resume "
                                 f"({exc!r}); pass overwrite=True to start again") from exc
        else:
            self._done, self._next_image, self._next_ann = set(), 1, 1
        self._last_flush = time.monotonic()

    @property
    def output(self) -> Path:
        return self.path

    def is_done(self, image: Path, name: str) -> bool:
        return name in self._done

    def _add_image(self, name: str, hw: tuple[int, int]) -> int:
        image_id = self._next_image
        self._next_image += 1
        self.doc["images"].append({"id": image_id, "file_name": name, "height": int(hw[0]), "width": int(hw[1])})
        self._done.add(name)
        return image_id

    def write(self, image: Path, name: str, hw: tuple[int, int], instances: Iterable[Instance]) -> int:
        """Add the image and one annotation per non-empty mask (all or nothing); returns how many."""
        anns = []
        for class_id, score, mask in instances:
            if not mask.any():
                continue
            rle = coco_mask.encode(np.asfortranarray(mask, dtype=np.uint8))
            ann = {"category_id": int(class_id),
                   "segmentation": {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")},
                   "area": int(coco_mask.area(rle)), "bbox": [float(v) for v in coco_mask.toBbox(rle)], "iscrowd": 0}
            if score is not None:
                ann["score"] = round(float(score), 5)
            anns.append(ann)
        image_id = self._add_image(name, hw)
        for ann in anns:
            self.doc["annotations"].append({"id": self._next_ann, "image_id": image_id, **ann})
            self._next_ann += 1
        self._tick()
        return len(anns)

    def skip(self, image: Path, name: str, hw: tuple[int, int]) -> None:
        """An image without boxes is listed with no annotations (a negative example, and done for a rerun)."""
        self._add_image(name, hw)
        self._tick()

    def _tick(self) -> None:
        if time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        self.doc["categories"] = self._categories()
        atomic_write_text(self.path, json.dumps(self.doc))
        self._last_flush = time.monotonic()

    def close(self) -> None:
        self.flush()

    def _categories(self) -> list[dict]:
        known = {c["id"]: c["name"] for c in self.doc["categories"]}
        known.update({int(k): str(v) for k, v in self.names.items()})
        known.update({a["category_id"]: str(a["category_id"]) for a in self.doc["annotations"]
                      if a["category_id"] not in known})
        return [{"id": k, "name": known[k], "supercategory": ""} for k in sorted(known)]
