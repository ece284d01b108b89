"""auto_annotate: boxes from a detector (or a file) prompt SAM 2, and each image's masks become labels.

Ultralytics' `auto_annotate` with the same arguments and the same YOLO-segmentation output, on our
ImagePredictor: one encoder run per image, all of its boxes decoded together.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from ..image_predictor import ImagePredictor
from .box_files import open_box_file
from .detections import Detections
from .images import BadImage, list_images, read_image
from .sam_models import image_predictor
from .writers import CocoWriter, Instance, YoloSegWriter
from .yolo_detector import YoloDetector

log = logging.getLogger(__name__)

DEFAULT_DET_MODEL = "yolo11x.pt"
FORMATS = ("yolo", "coco")
# Boxes decoded per decoder call: one image's 300 full-resolution float masks would not fit in memory at once.
BOXES_PER_DECODE = 64


@dataclass
class AnnotateSummary:
    """What a run did: counts per outcome, and the images it could not read (with why)."""

    output: Path
    images: int = 0
    annotated: int = 0
    masks: int = 0
    empty_masks: int = 0
    no_boxes: int = 0
    skipped: int = 0
    bad: list[tuple[Path, str]] = field(default_factory=list)

    def __str__(self) -> str:
        parts = [f"{self.annotated} annotated ({self.masks} masks"
                 + (f", {self.empty_masks} boxes with no mask" if self.empty_masks else "") + ")",
                 f"{self.no_boxes} without boxes"]
        if self.skipped:
            parts.append(f"{self.skipped} already done (skipped)")
        if self.bad:
            parts.append(f"{len(self.bad)} unreadable (skipped)")
        lines = [f"{self.images} images: " + ", ".join(parts) + f" -> {self.output}"]
        lines += [f"  unreadable: {path}: {why}" for path, why in self.bad]
        return "\n".join(lines)


def auto_annotate(
    data,
    det_model=DEFAULT_DET_MODEL,
    sam_model="sam2_b.pt",
    device: str = "",
    conf: float = 0.25,
    iou: float = 0.45,
    imgsz: int = 640,
    max_det: int = 300,
    classes=None,
    output_dir=None,
    *,
    boxes=None,
    format: str = "yolo",
    overwrite: bool = False,
    progress: bool = True,
) -> AnnotateSummary:
    """Label every image of the folder `data` with SAM 2 masks prompted by its detected boxes.

    det_model: an Ultralytics YOLO name or path (`yolo11x.pt`, `yolo11n.yaml`) or a YOLO object; conf, iou,
    imgsz, max_det, classes and device go to it. boxes: instead of a detector, a COCO instances JSON or a folder
    of YOLO label files (taken as they are; `classes` still filters), or any BoxSource. sam_model: a name
    (`sam2_b.pt`, `sam2.1_t`), a checkpoint path, or a built SAM2Model or ImagePredictor (used on its device).
    format "yolo": `<stem>.txt` per image with boxes, rows `class x1 y1 x2 y2 ...` normalised to [0, 1];
    "coco": `instances.json` with RLE masks. output_dir defaults to `<data>_auto_annotate_labels` beside
    `data`. Images already labelled there are skipped unless `overwrite`; unreadable ones are reported and
    skipped. Returns the run's summary.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    if isinstance(classes, int):  # Ultralytics takes classes=0 as well as classes=[0, 2]
        classes = [classes]
    data = Path(data)
    images = list_images(data)
    root = data if data.is_dir() else data.parent
    output_dir = Path(output_dir) if output_dir else data.parent / f"{data.stem}_auto_annotate_labels"
    if format == "yolo":
        _refuse_shared_stems(images)
    source = _box_source(det_model, boxes, root, device, conf, iou, imgsz, max_det, classes)
    predictor = image_predictor(sam_model, device)
    output_dir.mkdir(parents=True, exist_ok=True)
    writer = CocoWriter(output_dir, source.names, overwrite) if format == "coco" else YoloSegWriter(output_dir)
    summary = AnnotateSummary(output=writer.output, images=len(images))
    try:
        with logging_redirect_tqdm():
            for path in tqdm(images, desc="auto-annotate", unit="img", disable=not progress):
                _annotate_one(path, path.relative_to(root).as_posix(), source, predictor, writer, classes,
                              overwrite, summary)
    finally:
        writer.close()
    log.info("auto-annotate: %s", summary)  # each unreadable image was warned about as it came
    return summary


def _annotate_one(path, name, source, predictor, writer, classes, overwrite, summary) -> None:
    if not overwrite and writer.is_done(path, name):
        summary.skipped += 1
        return
    try:
        bgr = read_image(path)
        detections = source(path, bgr).only_classes(classes)
    except (BadImage, ValueError) as exc:  # an undecodable image, or a malformed row in its box file
        summary.bad.append((path, str(exc)))
        log.warning("skipped %s: %s", path, exc)
        return
    hw = bgr.shape[:2]
    if not len(detections):
        summary.no_boxes += 1
        writer.skip(path, name, hw)
        return
    n = writer.write(path, name, hw, segment_boxes(predictor, np.ascontiguousarray(bgr[..., ::-1]), detections))
    summary.annotated += 1
    summary.masks += n
    summary.empty_masks += len(detections) - n


def segment_boxes(predictor: ImagePredictor, image_rgb: np.ndarray, detections: Detections):
    """One encoder run for the image, then one mask per box (single-mask output): yields (class, score, mask)."""
    predictor.set_image(image_rgb)
    for start in range(0, len(detections), BOXES_PER_DECODE):
        part = detections.keep(slice(start, start + BOXES_PER_DECODE))
        masks, _, _ = predictor.predict_torch(0, box=part.boxes, multimask_output=False)  # (B, 1, H, W) bool
        masks = masks[:, 0].cpu().numpy()
        for i, mask in enumerate(masks):
            instance: Instance = (int(part.class_ids[i]), None if part.scores is None else float(part.scores[i]),
                                  mask)
            yield instance


def _box_source(det_model, boxes, root, device, conf, iou, imgsz, max_det, classes):
    if boxes is None:
        if det_model is None:
            raise ValueError("give det_model (a YOLO model) or boxes (a COCO JSON or a YOLO labels folder)")
        return YoloDetector(det_model, device, conf, iou, imgsz, max_det, classes)
    if det_model not in (None, DEFAULT_DET_MODEL):
        raise ValueError("give det_model or boxes, not both")
    if isinstance(boxes, (str, Path)):
        return open_box_file(boxes, root)
    if callable(boxes) and hasattr(boxes, "names"):
        return boxes
    raise TypeError(f"boxes must be a COCO JSON path, a YOLO labels folder or a box source, got {type(boxes).__name__}")


def _refuse_shared_stems(images: list[Path]) -> None:
    """`a.jpg` and `a.png` would both write `a.txt`: refuse before starting rather than lose one."""
    seen: dict[str, Path] = {}
    for p in images:
        if p.stem in seen:
            raise ValueError(f"{seen[p.stem].name} and {p.name} would share the label file {p.stem}.txt; "
                             "rename one, or use format='coco'")
        seen[p.stem] = p
