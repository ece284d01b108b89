"""Ultralytics' `source` argument: image and video paths, folders, globs, arrays (BGR, as OpenCV reads them),
PIL images, tensors, and lists of these, read lazily one image or frame at a time."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from ..transforms import as_rgb_uint8
from ..video_io import IMAGE_SUFFIXES, FolderFrames, VideoFileFrames

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".gif", ".ts"}


@dataclass
class SourceImage:
    """One image to predict on: RGB pixels, where it came from, and its frame index within a video."""

    rgb: np.ndarray  # (H, W, 3) uint8
    path: str
    frame: int | None = None  # index within its video (None: a still image)
    num_frames: int | None = None  # its video's length


def iter_source(source) -> Iterator[SourceImage]:
    """Every image of a source, in order; videos frame by frame."""
    if source is None:
        raise ValueError("give a source: an image or video path, a folder, an array, a PIL image or a list of them")
    items = list(source) if isinstance(source, (list, tuple)) else [source]
    if not items:
        raise ValueError("the source is an empty list")
    for i, item in enumerate(items):
        if isinstance(item, (str, os.PathLike)):
            yield from _from_path(str(item))
        else:
            yield from _from_object(item, i)


def _from_path(text: str) -> Iterator[SourceImage]:
    if "://" in text:
        raise ValueError(f"{text}: URLs are not read here; download the file, or open streams with `track`")
    path = Path(text)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES)
        if not files:
            raise ValueError(f"no images or videos in {path}")
    elif any(ch in text for ch in "*?["):
        files = [Path(p) for p in sorted(glob.glob(text))]
        if not files:
            raise ValueError(f"no files match {text}")
    elif path.is_file():
        files = [path]
    else:
        raise ValueError(f"no such file or folder: {text}")
    for file in files:
        suffix = file.suffix.lower()
        if suffix in VIDEO_SUFFIXES:
            yield from video_frames(file)
        elif suffix in IMAGE_SUFFIXES:
            yield SourceImage(read_image(file), str(file))
        else:
            raise ValueError(f"{file}: not an image ({', '.join(sorted(IMAGE_SUFFIXES))}) or a video "
                             f"({', '.join(sorted(VIDEO_SUFFIXES))})")


def read_image(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot decode image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def video_frames(path: Path) -> Iterator[SourceImage]:
    """A video file read sequentially, one RGB frame at a time."""
    frames = VideoFileFrames(path)
    for idx in range(len(frames)):
        try:
            rgb = frames[idx]
        except ValueError:  # containers often announce a frame or two more than they hold
            if idx == 0:
                raise
            return
        yield SourceImage(rgb, str(path), idx, len(frames))


def _from_object(item, index: int) -> Iterator[SourceImage]:
    name = f"image{index}.jpg"  # Ultralytics' name for in-memory images
    if isinstance(item, np.ndarray):
        yield SourceImage(bgr_to_rgb(item), name)
    elif isinstance(item, torch.Tensor):
        yield from (SourceImage(rgb, f"image{index + j}.jpg") for j, rgb in enumerate(tensor_images(item)))
    elif hasattr(item, "convert"):  # a PIL image (RGB already)
        yield SourceImage(as_rgb_uint8(item), getattr(item, "filename", "") or name)
    else:
        raise ValueError(f"unsupported source item {type(item).__name__}: use a path, a numpy array (BGR), "
                         "a PIL image or a tensor")


def bgr_to_rgb(image: np.ndarray) -> np.ndarray:
    """An array as Ultralytics takes it (OpenCV's BGR or BGRA, or grayscale) -> RGB uint8."""
    if image.ndim == 3 and image.shape[2] in (3, 4):
        image = image[:, :, 2::-1]
    return as_rgb_uint8(image)


def tensor_images(x: torch.Tensor) -> list[np.ndarray]:
    """A (B, 3, H, W) or (3, H, W) RGB float tensor in [0, 1] (Ultralytics' tensor source) -> RGB uint8 arrays."""
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[1] != 3 or not x.is_floating_point():
        raise ValueError(f"a tensor source must be (B, 3, H, W) float RGB in [0, 1], got {tuple(x.shape)} {x.dtype}")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError("a tensor source must hold values in [0, 1]")
    return [np.ascontiguousarray(a) for a in (x * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()]


def iter_video(source) -> Iterator[SourceImage]:
    """The frames of one video: a video file, a folder of frame images (numeric names in order), or a list /
    (N, H, W, 3) array of BGR frames; each frame carries its index and the video's length."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
            yield from video_frames(path)
            return
        if path.is_dir():
            frames = FolderFrames(path)
            for idx in range(len(frames)):
                yield SourceImage(frames[idx], str(frames.files[idx]), idx, len(frames))
            return
        raise ValueError(f"{source}: not a video file ({', '.join(sorted(VIDEO_SUFFIXES))}) or a folder of frames")
    if isinstance(source, (list, tuple)) or (isinstance(source, np.ndarray) and source.ndim == 4):
        if len(source) == 0:
            raise ValueError("the video has no frames")
        for idx, frame in enumerate(source):
            if not isinstance(frame, np.ndarray):
                raise ValueError(f"frame {idx} is a {type(frame).__name__}: a video as a list takes BGR arrays")
            yield SourceImage(bgr_to_rgb(frame), f"frame{idx}.jpg", idx, len(source))
        return
    raise ValueError("a video source is a video file, a folder of frames, or a list of BGR frames")
