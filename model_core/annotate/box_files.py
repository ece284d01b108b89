"""Boxes a team already has, as a box source: a COCO instances JSON, or a folder of YOLO label files."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path, PurePosixPath

import numpy as np

from .detections import Detections


def open_box_file(path: str | Path, data: str | Path | None = None):
    """A box source for `path`: a COCO JSON file, or a folder of YOLO `.txt` label files."""
    path = Path(path)
    if path.is_dir():
        return YoloLabelBoxes(path)
    if path.is_file():
        return CocoBoxes(path, data)
    raise FileNotFoundError(f"boxes: no such file or folder: {path}")


class CocoBoxes:
    """Boxes from a COCO instances JSON (`images`, `annotations` with xywh `bbox`, `categories`).

    Images are matched by `file_name`: its path relative to the data folder, else its base name.
    Class ids are the JSON's category ids, unchanged.
    """

    def __init__(self, path: str | Path, data: str | Path | None = None) -> None:
        self.path = Path(path)
        self.data = Path(data) if data is not None else None
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{self.path}: not a readable JSON file: {exc}") from exc
        if not isinstance(doc, dict) or not isinstance(doc.get("images"), list) \
                or not isinstance(doc.get("annotations"), list):
            raise ValueError(f"{self.path}: expected a COCO instances JSON object with 'images' and 'annotations' "
                             "lists (a detection results list has no file names to match images by)")
        self.names: dict[int, str] = {}
        for cat in doc.get("categories") or []:
            if not isinstance(cat, dict) or not isinstance(cat.get("id"), int):
                raise ValueError(f"{self.path}: every category needs an integer 'id', got {cat!r}")
            self.names[cat["id"]] = str(cat.get("name", cat["id"]))
        file_names: dict[int, str] = {}
        for img in doc["images"]:
            if not isinstance(img, dict) or "id" not in img or not isinstance(img.get("file_name"), str):
                raise ValueError(f"{self.path}: every image needs an 'id' and a 'file_name', got {img!r}")
            file_names[img["id"]] = PurePosixPath(img["file_name"].replace("\\", "/")).as_posix()
        per_image: dict[str, list[tuple[list[float], int, float | None]]] = {n: [] for n in file_names.values()}
        for i, ann in enumerate(doc["annotations"]):
            where = f"{self.path}: annotation {ann.get('id', i) if isinstance(ann, dict) else i}"
            if not isinstance(ann, dict) or ann.get("image_id") not in file_names:
                raise ValueError(f"{where}: its image_id is not among the images")
            bbox = ann.get("bbox")
            if not (isinstance(bbox, list) and len(bbox) == 4 and all(_finite(v) for v in bbox)) \
                    or bbox[2] < 0 or bbox[3] < 0:
                raise ValueError(f"{where}: bbox must be [x, y, width, height] with width, height >= 0, got {bbox!r}")
            if not isinstance(ann.get("category_id"), int):
                raise ValueError(f"{where}: category_id must be an integer, got {ann.get('category_id')!r}")
            x, y, w, h = (float(v) for v in bbox)
            score = ann.get("score")
            per_image[file_names[ann["image_id"]]].append(
                ([x, y, x + w, y + h], ann["category_id"], float(score) if _finite(score) else None))
        self._by_path = per_image
        base_counts = Counter(PurePosixPath(n).name for n in per_image)  # a base name used twice matches neither
        self._by_base = {PurePosixPath(n).name: n for n in per_image if base_counts[PurePosixPath(n).name] == 1}

    def __call__(self, path: Path, image_bgr: np.ndarray) -> Detections:
        key = None
        if self.data is not None and self.data.is_dir():
            try:
                key = Path(path).relative_to(self.data).as_posix()
            except ValueError:
                key = None
        name = key if key in self._by_path else self._by_base.get(Path(path).name)
        rows = self._by_path.get(name, []) if name is not None else []
        if not rows:
            return Detections.empty()
        boxes, class_ids, scores = zip(*rows)
        return Detections(np.array(boxes), np.array(class_ids),
                          None if any(s is None for s in scores) else np.array(scores))


class YoloLabelBoxes:
    """Boxes from YOLO label files `<image stem>.txt`: `class cx cy w h [conf]` normalised to [0, 1].

    Segment rows (`class x1 y1 x2 y2 ...`) give their polygon's box. Class names come from a `classes.txt`
    in the folder (one name a line) when there is one.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        listing = self.folder / "classes.txt"
        names = listing.read_text(encoding="utf-8").splitlines() if listing.is_file() else []
        self.names = {i: n.strip() for i, n in enumerate(names) if n.strip()}

    def __call__(self, path: Path, image_bgr: np.ndarray) -> Detections:
        label = self.folder / f"{Path(path).stem}.txt"
        if not label.is_file():
            return Detections.empty()
        h, w = image_bgr.shape[:2]
        boxes, class_ids, scores = [], [], []
        for n, line in enumerate(label.read_text(encoding="utf-8-sig").splitlines(), 1):
            if not line.strip():
                continue
            box, class_id, score = _parse_label_row(line, f"{label}:{n}")
            boxes.append(box * np.array([w, h, w, h], dtype=np.float32))
            class_ids.append(class_id)
            scores.append(score)
        if not boxes:
            return Detections.empty()
        self.names.update({c: str(c) for c in class_ids if c not in self.names})
        return Detections(np.stack(boxes), np.array(class_ids),
                          None if any(s is None for s in scores) else np.array(scores))


def _parse_label_row(line: str, where: str) -> tuple[np.ndarray, int, float | None]:
    """One YOLO label row -> (normalised xyxy box, class id, confidence or None)."""
    try:
        values = [float(v) for v in line.split()]
    except ValueError:
        raise ValueError(f"{where}: expected numbers, got {line.strip()!r}") from None
    if len(values) < 5 or not values[0].is_integer() or values[0] < 0 or not all(map(math.isfinite, values)):
        raise ValueError(f"{where}: expected 'class cx cy w h [conf]' or 'class x1 y1 x2 y2 ...', got {line.strip()!r}")
    class_id, coords, score = int(values[0]), np.array(values[1:], dtype=np.float32), None
    if len(coords) in (4, 5):
        if len(coords) == 5:
            coords, score = coords[:4], float(coords[4])
        cx, cy, bw, bh = coords
        box = np.array([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], dtype=np.float32)
    elif len(coords) % 2 == 0:
        xy = coords.reshape(-1, 2)
        box = np.concatenate([xy.min(0), xy.max(0)])
    else:
        raise ValueError(f"{where}: a segment row needs x y pairs, got {len(coords)} numbers")
    if coords.min() < -0.01 or coords.max() > 1.01:  # 1% slack, as Ultralytics' own reader allows
        raise ValueError(f"{where}: coordinates must be normalised to [0, 1], got {line.strip()!r}")
    return box.clip(0.0, 1.0), class_id, score


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
