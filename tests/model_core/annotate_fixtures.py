"""A tiny labelling job the auto-annotation tests share: three images, their boxes as a COCO JSON and as YOLO
labels, and how to read back what was written next to what ImagePredictor gives for the same boxes."""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from model_core.annotate import mask_to_polygon, polygon_to_mask
from tests.fixtures import make_image

SIZES = {"street.png": (96, 144), "field.jpg": (120, 90), "empty.png": (96, 144)}  # file -> (H, W)
BOXES = {  # file -> [(class id, xyxy pixel box)]; empty.png has none
    "street.png": [(3, [10, 10, 80, 70]), (7, [60, 20, 140, 90])],
    "field.jpg": [(3, [5, 30, 60, 110])],
}
NAMES = {3: "car", 7: "person"}


def needs_ultralytics(module: str = "ultralytics"):
    """Import an Ultralytics module: skip the test without the annotate extra, or fail it in CI (SAM2_CI=1),
    where the test extra installs it and the YOLO route must be tested."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        msg = f"{module} is not installed (pip install -e '.[annotate]'): {exc}"
        if os.environ.get("SAM2_CI"):
            pytest.fail(msg + " -- in CI (SAM2_CI=1) the YOLO route must be tested", pytrace=False)
        pytest.skip(msg)


def write_images(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for i, (name, (h, w)) in enumerate(SIZES.items()):
        cv2.imwrite(str(folder / name), cv2.cvtColor(make_image(h, w, seed=i), cv2.COLOR_RGB2BGR))
    return folder


def write_coco_boxes(path: Path) -> Path:
    """The boxes as a COCO instances JSON, the way a team's own detector would export them."""
    images = [{"id": i, "file_name": name, "height": h, "width": w} for i, (name, (h, w)) in enumerate(SIZES.items())]
    ids = {img["file_name"]: img["id"] for img in images}
    anns = []
    for name, rows in BOXES.items():
        for c, (x0, y0, x1, y1) in rows:
            anns.append({"id": len(anns) + 1, "image_id": ids[name], "category_id": c,
                         "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
    path.write_text(json.dumps({"images": images, "annotations": anns,
                                "categories": [{"id": k, "name": v} for k, v in NAMES.items()]}))
    return path


def write_yolo_boxes(folder: Path) -> Path:
    """The boxes as a folder of YOLO detection labels (`class cx cy w h`, normalised)."""
    folder.mkdir(parents=True)
    for name, rows in BOXES.items():
        h, w = SIZES[name]
        lines = [f"{c} {(x0 + x1) / 2 / w!r} {(y0 + y1) / 2 / h!r} {(x1 - x0) / w!r} {(y1 - y0) / h!r}"
                 for c, (x0, y0, x1, y1) in rows]
        (folder / f"{Path(name).stem}.txt").write_text("\n".join(lines) + "\n")
    return folder


def predictor_masks(predictor, image_path: Path, boxes) -> np.ndarray:
    """What ImagePredictor gives for these boxes on this image, all at once: (N, H, W) bool."""
    rgb = cv2.cvtColor(cv2.imread(str(image_path)), cv2.COLOR_BGR2RGB)
    predictor.set_image(rgb)
    masks, _, _ = predictor.predict(box=np.asarray(boxes, dtype=np.float32), multimask_output=False)
    return masks.reshape(-1, *rgb.shape[:2]) > 0


def read_label(path: Path, hw) -> list[tuple[int, np.ndarray]]:
    """A YOLO-seg label file -> [(class id, (K, 2) pixel points)]."""
    h, w = hw
    rows = []
    for line in path.read_text().splitlines():
        values = line.split()
        rows.append((int(values[0]), np.array(values[1:], dtype=np.float64).reshape(-1, 2) * [w, h]))
    return rows


def assert_label_is(path: Path, hw, class_ids, masks) -> None:
    """Row i is class_ids[i] and the polygon of masks[i]: to the 6 written decimals, and covering every mask pixel."""
    rows = read_label(path, hw)
    assert [c for c, _ in rows] == list(class_ids)
    for (_, points), mask in zip(rows, masks):
        expected = mask_to_polygon(mask)
        assert points.shape == expected.shape
        assert np.abs(points - expected).max() <= 1e-6 * max(hw)
        assert not (mask & ~polygon_to_mask(points, *hw)).any()
