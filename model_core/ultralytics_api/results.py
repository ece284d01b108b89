"""Results as Ultralytics hands them back: per image, `.masks` (`.data`, `.xy`, `.xyn`), `.boxes` (xyxy, conf,
cls), `.orig_img` (BGR, as OpenCV), `.orig_shape`, `.plot()`, `.save()`; our own code, Ultralytics' names."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import cv2
import numpy as np
import torch

from ..annotate.polygons import mask_to_polygon
from ..mask_ops import masks_to_boxes
from ..video_io import IMAGE_SUFFIXES
from .plotting import draw_results


class _Tensor:
    """Data of one image's detections (a tensor or an array) with the image's (height, width)."""

    def __init__(self, data, orig_shape: tuple[int, int]) -> None:
        self.data = data
        self.orig_shape = tuple(int(v) for v in orig_shape)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, idx):
        return type(self)(self.data[idx], self.orig_shape)

    def cpu(self):
        return self if isinstance(self.data, np.ndarray) else type(self)(self.data.cpu(), self.orig_shape)

    def numpy(self):
        return self if isinstance(self.data, np.ndarray) else type(self)(self.data.cpu().numpy(), self.orig_shape)

    def to(self, *args, **kwargs):
        return type(self)(torch.as_tensor(self.data).to(*args, **kwargs), self.orig_shape)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(data={self.data!r}, orig_shape={self.orig_shape})"


class Masks(_Tensor):
    """(N, H, W) bool masks at the image's resolution."""

    def __init__(self, data, orig_shape: tuple[int, int]) -> None:
        super().__init__(data[None] if data.ndim == 2 else data, orig_shape)

    def _bool_arrays(self) -> np.ndarray:
        data = self.data if isinstance(self.data, np.ndarray) else self.data.cpu().numpy()
        return data > 0

    @cached_property
    def xy(self) -> list[np.ndarray]:
        """Each mask's outline as one (K, 2) float32 polygon in image pixels ((0, 2) for an empty mask)."""
        masks = self._bool_arrays()
        h, w = masks.shape[1:]
        scale = np.array([self.orig_shape[1] / w, self.orig_shape[0] / h], np.float32)
        return [mask_to_polygon(m) * scale for m in masks]

    @cached_property
    def xyn(self) -> list[np.ndarray]:
        """`xy` divided by the image's width and height: coordinates in [0, 1]."""
        size = np.array([self.orig_shape[1], self.orig_shape[0]], np.float32)
        return [p / size for p in self.xy]


class Boxes(_Tensor):
    """(N, 6) rows [x1, y1, x2, y2, conf, cls] (or (N, 7) with a track id before conf), in image pixels."""

    def __init__(self, data, orig_shape: tuple[int, int]) -> None:
        data = data[None] if data.ndim == 1 else data
        if data.shape[-1] not in (6, 7):
            raise ValueError(f"boxes need 6 or 7 columns (xyxy, [id], conf, cls), got {data.shape[-1]}")
        super().__init__(data, orig_shape)

    @property
    def is_track(self) -> bool:
        return self.data.shape[-1] == 7

    @property
    def xyxy(self):
        return self.data[:, :4]

    @property
    def conf(self):
        return self.data[:, -2]

    @property
    def cls(self):
        return self.data[:, -1]

    @property
    def id(self):
        return self.data[:, -3] if self.is_track else None

    @property
    def xywh(self):
        xyxy = self.xyxy
        out = xyxy.clone() if isinstance(xyxy, torch.Tensor) else xyxy.copy()
        out[:, 0] = (xyxy[:, 0] + xyxy[:, 2]) / 2
        out[:, 1] = (xyxy[:, 1] + xyxy[:, 3]) / 2
        out[:, 2] = xyxy[:, 2] - xyxy[:, 0]
        out[:, 3] = xyxy[:, 3] - xyxy[:, 1]
        return out

    def _normalised(self, boxes):
        h, w = self.orig_shape
        scale = [w, h, w, h]
        return boxes / (torch.tensor(scale, dtype=boxes.dtype, device=boxes.device)
                        if isinstance(boxes, torch.Tensor) else np.asarray(scale, boxes.dtype))

    @property
    def xyxyn(self):
        return self._normalised(self.xyxy)

    @property
    def xywhn(self):
        return self._normalised(self.xywh)


class Results:
    """One image's (or video frame's) predictions."""

    def __init__(self, orig_img: np.ndarray, path: str, names: dict[int, str], masks=None, boxes=None,
                 speed: dict | None = None) -> None:
        self.orig_img = orig_img  # (H, W, 3) uint8 BGR
        self.orig_shape = tuple(orig_img.shape[:2])
        self.path = path
        self.names = names
        self.masks = None if masks is None else Masks(masks, self.orig_shape)
        self.boxes = None if boxes is None else Boxes(boxes, self.orig_shape)
        self.speed = speed or {"preprocess": None, "inference": None, "postprocess": None}
        # what Ultralytics' Results also carry, always empty for SAM
        self.probs = self.keypoints = self.obb = None

    def __len__(self) -> int:
        for part in (self.boxes, self.masks):
            if part is not None:
                return len(part)
        return 0

    def __getitem__(self, idx) -> "Results":
        return self._new(lambda part: part[idx])

    def _new(self, fn) -> "Results":
        out = Results(self.orig_img, self.path, self.names, speed=self.speed)
        out.masks = None if self.masks is None else fn(self.masks)
        out.boxes = None if self.boxes is None else fn(self.boxes)
        return out

    def cpu(self) -> "Results":
        return self._new(lambda part: part.cpu())

    def numpy(self) -> "Results":
        return self._new(lambda part: part.numpy())

    def to(self, *args, **kwargs) -> "Results":
        return self._new(lambda part: part.to(*args, **kwargs))

    def plot(self, conf: bool = True, labels: bool = True, boxes: bool = True, masks: bool = True,
             line_width: int | None = None, img: np.ndarray | None = None) -> np.ndarray:
        """The image (BGR, or `img`) with masks, boxes and labels drawn: (H, W, 3) uint8 BGR, as Ultralytics."""
        base = self.orig_img if img is None else img
        mask_arrays = None if self.masks is None or not masks else self.masks.numpy().data > 0
        box_rows = None if self.boxes is None else self.boxes.numpy().data
        return draw_results(base, mask_arrays, box_rows if boxes else None, self.names,
                            show_conf=conf, show_labels=labels, line_width=line_width,
                            row_classes=None if box_rows is None else box_rows[:, -1])

    def save(self, filename: str | Path | None = None, **plot_args) -> str:
        """Write `plot()` to an image file (default results_<source name>); returns the file name."""
        if filename is None:
            source = Path(self.path or "image.jpg")  # a video's frames are saved as images
            filename = f"results_{source.name if source.suffix.lower() in IMAGE_SUFFIXES else source.stem + '.jpg'}"
        filename = str(filename)
        if not cv2.imwrite(filename, self.plot(**plot_args)):
            raise ValueError(f"cannot write {filename} (is its extension an image format OpenCV writes?)")
        return filename

    def summary(self, normalize: bool = False, decimals: int = 5) -> list[dict]:
        """One dict per detection: name, class, confidence, box and mask outline (Ultralytics' layout)."""
        out = []
        if self.boxes is None:
            return out
        rows = self.boxes.numpy().data
        h, w = self.orig_shape if normalize else (1, 1)
        polygons = None if self.masks is None else (self.masks.xyn if normalize else self.masks.xy)
        for i, row in enumerate(rows):
            cls = int(row[-1])
            item = {"name": self.names.get(cls, str(cls)), "class": cls, "confidence": round(float(row[-2]), decimals),
                    "box": {k: round(float(v) / s, decimals)
                            for k, v, s in zip(("x1", "y1", "x2", "y2"), row[:4], (w, h, w, h))}}
            if self.boxes.is_track:
                item["track_id"] = int(row[-3])
            if polygons is not None:
                item["segments"] = {"x": polygons[i][:, 0].round(decimals).tolist(),
                                    "y": polygons[i][:, 1].round(decimals).tolist()}
            out.append(item)
        return out

    def verbose(self) -> str:
        """A one-line count of detections, e.g. "2 masks" or "(no detections)"."""
        n = len(self)
        return f"{n} mask{'s' if n != 1 else ''}" if n else "(no detections)"

    def __repr__(self) -> str:
        return f"Results(path={self.path!r}, orig_shape={self.orig_shape}, {self.verbose()})"


def make_results(rgb: np.ndarray, path: str, masks: torch.Tensor, scores: torch.Tensor, cls: torch.Tensor,
                 conf: float, num_names: int) -> Results:
    """Results of masks (N, H, W) bool with scores (N,) and class ids (N,): scores <= conf dropped, boxes from masks."""
    keep = scores > conf
    masks, scores, cls = masks[keep].cpu(), scores[keep].float().cpu(), cls[keep].cpu()
    boxes = torch.cat([masks_to_boxes(masks), scores[:, None], cls[:, None].float()], dim=1)  # (N, 6)
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    names = {i: str(i) for i in range(num_names)}
    return Results(bgr, path, names, masks=masks if num_names else None, boxes=boxes)
