"""Video sources for VideoPredictor.init_state: mp4 files, JPEG folders and arrays, read lazily."""

import sys

import cv2
import numpy as np
import pytest

from model_core.av_frames import AVFileFrames
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


def write_h264(frames, path, fps=10, gop=4, container=None, rotation=0):
    """An H.264 video with B-frames (display order differs from decode order), written with PyAV; `rotation`:
    degrees counter-clockwise in its display matrix, as phones store portrait video."""
    import av

    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream("libx264", rate=fps, options={"bf": "2", "g": str(gop)})
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        if rotation:
            stream.set_display_rotation(rotation)
        for f in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(stream.encode())
    return path


def test_mp4_frames_are_decoded_on_demand_with_opencv_without_pyav(clip, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # the video extra not installed
    src = open_video(str(write_mp4(clip, tmp_path / "clip.mp4")))
    assert isinstance(src, VideoFileFrames) and len(src) == 6 and src.hw == (64, 96)
    assert src._next == 1  # only the first frame was read (for its size)
    for i in (3, 1, 5):  # random access seeks
        assert np.abs(src[i].astype(int) - clip[i]).mean() < 20  # lossy codec, same picture
    assert src.model_input(0, 32) is None  # the caller resizes


@pytest.mark.parametrize("name, container", [("clip.mp4", None), ("clip.ts", "mpegts"), ("clip.avi", "avi"),
                                             ("clip.h264", "h264")])
def test_pyav_reads_any_frame_in_any_order_exactly(tmp_path, name, container):
    """H.264 with B-frames, whose decode order is not display order, in four containers: mp4 (frames found by
    their timestamps), MPEG-TS (seeks coarsely: to its first frame nothing comes back, so the reader decodes from
    the start), AVI and a raw stream (no real timestamps: frames numbered in the order they decode)."""
    pytest.importorskip("av")
    clip = synthetic_clip(12, 64, 96)
    path = write_h264(clip, tmp_path / name, container=container)
    src = open_video(path)
    assert isinstance(src, AVFileFrames) and len(src) == 12 and src.hw == (64, 96)
    in_order = [src[i] for i in range(12)]
    assert all(np.abs(f.astype(int) - c).mean() < 20 for f, c in zip(in_order, clip))  # lossy, same pictures
    for i in (11, 3, 0, 7, 6, 2, 9):  # backwards and forwards: each seek lands on exactly that frame
        assert np.array_equal(src[i], in_order[i]), i
    with pytest.raises(IndexError):
        src[12]


def test_a_video_trimmed_without_reencoding_starts_at_its_first_shown_frame(tmp_path):
    """`ffmpeg -ss ... -c copy` keeps the frames before the cut for the decoder but marks them not to be shown
    (an mp4 edit list): they are not frames of the video."""
    av = pytest.importorskip("av")
    clip = synthetic_clip(20, 64, 96)
    source = write_h264(clip, tmp_path / "source.mp4", gop=20)
    with av.open(str(source)) as inp, av.open(str(tmp_path / "trim.mp4"), "w") as out:
        stream = inp.streams.video[0]
        copy = out.add_stream_from_template(stream)
        shift = round(5 / (10 * stream.time_base))  # 5 frames at 10 frames/s
        for packet in inp.demux(stream):
            if packet.dts is not None:
                packet.pts, packet.dts, packet.stream = packet.pts - shift, packet.dts - shift, copy
                out.mux(packet)
    with av.open(str(tmp_path / "trim.mp4")) as c:
        assert sum(p.is_discard for p in c.demux(video=0)) == 5
    src = open_video(tmp_path / "trim.mp4")
    assert len(src) == 15
    first, last = src[0], src[14]
    assert np.abs(first.astype(int) - clip[5]).mean() < np.abs(first.astype(int) - clip[4]).mean()
    assert np.array_equal(src[14], last) and np.array_equal(src[0], first)


def test_pyav_reads_backwards_without_a_seek_per_frame(tmp_path):
    """Reverse propagation reads frames last to first: decoded frames are kept, so a long GOP is decoded once
    per 16 frames rather than once per frame."""
    pytest.importorskip("av")
    clip = synthetic_clip(40, 32, 48)
    path = write_h264(clip, tmp_path / "clip.mp4", gop=40)  # one keyframe: every backward read decodes from 0
    forward = AVFileFrames(path)
    expected = [forward[i] for i in range(40)]
    assert forward.seeks == 1
    backward = AVFileFrames(path)
    assert all(np.array_equal(backward[i], expected[i]) for i in reversed(range(40)))
    assert backward.seeks == 3  # frames 39, 23 and 7: each decodes from the keyframe and keeps the 16 before


def test_mpeg_ts_read_backwards_seeks_earlier_instead_of_decoding_from_the_start(tmp_path):
    """MPEG-TS seeks by byte position and lands a keyframe or so past the frame asked for: the reader seeks
    earlier again rather than decoding the whole file from its start, once per 16 frames of a reverse read."""
    pytest.importorskip("av")
    clip = synthetic_clip(120, 32, 48)
    path = write_h264(clip, tmp_path / "clip.ts", fps=30, gop=10, container="mpegts")
    forward = AVFileFrames(path)
    expected = [forward[i] for i in range(120)]
    backward = AVFileFrames(path)
    assert all(np.array_equal(backward[i], expected[i]) for i in reversed(range(120)))
    assert backward.rewinds <= 4  # only near the start, where no earlier seek target is left (was 8: one per 16)


@pytest.mark.parametrize("writer", [write_mp4, write_h264], ids=["mp4v", "h264"])
def test_pyav_scales_frames_as_the_reference_reader_does(clip, tmp_path, writer):
    decord = pytest.importorskip("decord", reason="the reference's mp4 reader (the test extra installs it)")
    pytest.importorskip("av")
    decord.bridge.set_bridge("native")  # numpy arrays (the reference's loader switches it to torch)
    path = str(writer(clip, tmp_path / "clip.mp4"))
    src = open_video(path)
    for size in (32, 128):  # down and up
        expected = decord.VideoReader(path, width=size, height=size).get_batch(range(6)).asnumpy()
        got = np.stack([src.model_input(i, size) for i in (0, 1, 2, 3, 4, 5)])
        assert got.shape == (6, size, size, 3) and got.dtype == np.uint8
        assert np.array_equal(got, expected)  # pixel for pixel
    assert np.array_equal(src.model_input(2, 128), expected[2])  # asked for out of order: the same pixels


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_a_turned_phone_video_is_read_upright_as_the_reference_and_opencv_read_it(clip, tmp_path, rotation):
    decord = pytest.importorskip("decord", reason="the reference's mp4 reader (the test extra installs it)")
    pytest.importorskip("av")
    decord.bridge.set_bridge("native")
    path = str(write_h264(clip, tmp_path / "phone.mp4", rotation=rotation))
    src = open_video(path)
    turns = rotation // 90
    assert src.hw == ((96, 64) if turns % 2 else (64, 96))
    upright = cv2.cvtColor(cv2.VideoCapture(path).read()[1], cv2.COLOR_BGR2RGB)  # OpenCV turns it too
    assert src[0].shape == upright.shape and np.abs(src[0].astype(int) - upright).mean() < 3
    assert np.abs(src[0].astype(int) - np.rot90(clip[0], turns)).mean() < 20  # the picture, turned
    assert np.array_equal(src[3], decord.VideoReader(path)[3].asnumpy())
    for size in (32, 128):  # (decord itself fails on turned videos at some sizes, 48 for one)
        expected = decord.VideoReader(path, width=size, height=size).get_batch(range(6)).asnumpy()
        assert np.array_equal(np.stack([src.model_input(i, size) for i in range(6)]), expected)


def test_files_that_are_not_video_are_refused_clearly(tmp_path):
    pytest.importorskip("av")
    (tmp_path / "notes.mp4").write_text("not a video")
    (tmp_path / "empty.mp4").write_bytes(b"")
    for name in ("notes.mp4", "empty.mp4"):
        with pytest.raises(ValueError, match="cannot open video"):
            AVFileFrames(tmp_path / name)
        with pytest.raises(ValueError, match="cannot open video"):  # nor does OpenCV, the fallback
            open_video(tmp_path / name)


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
