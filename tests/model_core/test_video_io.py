"""Video sources for VideoPredictor.init_state: mp4 files, JPEG folders and arrays, read lazily."""

import cv2
import numpy as np
import pytest

from model_core.video_io import FolderFrames, VideoFileFrames, open_video
from model_core.video_predictor import VideoPredictor
from tests.model_core.video_fixtures import tracking_model
from tests.fixtures import synthetic_clip


@pytest.fixture(scope="module")
def clip():
    return synthetic_clip(6, 64, 96)


def write_mp4(frames, path):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (96, 64))
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def test_mp4_frames_are_decoded_in_order_and_on_demand(clip, tmp_path):
    src = open_video(str(write_mp4(clip, tmp_path / "clip.mp4")))
    assert isinstance(src, VideoFileFrames) and len(src) == 6 and src.hw == (64, 96)
    assert src._next == 1  # only the first frame was read (for its size)
    for i in (3, 1, 5):  # random access seeks
        assert np.abs(src[i].astype(int) - clip[i]).mean() < 20  # lossy codec, same picture


def test_jpeg_folder_is_ordered_by_frame_number(clip, tmp_path):
    for i, f in enumerate(clip):
        cv2.imwrite(str(tmp_path / f"{i}.jpg"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    src = open_video(tmp_path)
    assert isinstance(src, FolderFrames)
    assert [p.name for p in src.files] == [f"{i}.jpg" for i in range(6)]  # 10.jpg would follow 9.jpg


def test_bad_videos_are_refused(tmp_path):
    with pytest.raises(ValueError, match="no such video"):
        open_video(tmp_path / "missing.mp4")
    with pytest.raises(ValueError, match="no image frames"):
        open_video(tmp_path)
    with pytest.raises(ValueError, match="no frames"):
        open_video([])


def test_predictor_runs_on_an_mp4(clip, tmp_path):
    predictor = VideoPredictor(tracking_model(), progress=False)
    state = predictor.init_state(str(write_mp4(clip, tmp_path / "clip.mp4")))
    frame_idx, obj_ids, masks = predictor.add_new_points_or_box(state, 0, obj_id=1, points=[[20, 30]], labels=[1])
    assert (frame_idx, obj_ids, masks.shape) == (0, [1], (1, 1, 64, 96))
    frames = [f for f, _, _ in predictor.propagate_in_video(state)]
    assert frames == list(range(6))
    with pytest.raises(IndexError):
        predictor.add_new_points_or_box(state, 6, obj_id=1, points=[[1, 1]], labels=[1])
