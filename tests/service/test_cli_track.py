"""`sam2-service track`: a video or frame folder in, masks (JSON lines) and an overlay mp4 out; bad input exits 2."""

from __future__ import annotations

import json
import sys

import cv2
import numpy as np
import pytest

from model_core.mask_lines import read_mask_lines
from model_core.mask_ops import decode_rle
from model_core.video_tracker import VideoTracker
from service.cli import main
from tests.fixtures import synthetic_clip
from tests.model_core.video_fixtures import file_model_inputs, tracking_model

H, W, N = 96, 160, 6
RANDOM = ["--weights", "random", "--image-size", "128", "--no-progress"]


@pytest.fixture(scope="module")
def clip():
    return synthetic_clip(N, H, W)


@pytest.fixture
def mp4(clip, tmp_path):
    path = tmp_path / "clip.mp4"
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (W, H))
    for f in clip:
        out.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    out.release()
    return path


def decode_all(path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while (read := cap.read())[0]:
        frames.append(cv2.cvtColor(read[1], cv2.COLOR_BGR2RGB))
    return frames


def test_track_a_video_file_to_masks_and_an_overlay(mp4, tmp_path, capsys, monkeypatch):
    """The masks written are VideoTracker's for the same prompts on the same frames, read as the reference reads
    a video file (scaled in the decoder)."""
    model = tracking_model()  # random weights whose objects read as present: non-empty masks to compare
    monkeypatch.setattr("model_core.build_model", lambda *a, **k: model)
    out = tmp_path / "out"
    rc = main(["track", str(mp4), "--point", "40,48", "--point", "60,40,0", "--obj-id", "3", "-o", str(out), *RANDOM])
    assert rc == 0
    assert capsys.readouterr().out.strip() == (
        f"{N} frames, objects [3] -> {out / 'clip_masks.jsonl'}, {out / 'clip_overlay.mp4'} (h264, pyav)")

    tracker = VideoTracker(model)
    state = tracker.new_state(H, W, num_frames=N)
    tracker.add_prompt(state, 3, points=[[40, 48], [60, 40]], labels=[1, 0])
    records = list(read_mask_lines(out / "clip_masks.jsonl"))
    assert [r["frame"] for r in records] == list(range(N))
    for record, frame in zip(records, file_model_inputs(mp4, model.image_size)):
        (obj,) = record["objects"]
        want = tracker.track(state, frame).objects[0]
        assert obj["obj_id"] == 3 and want.mask.any()
        np.testing.assert_array_equal(decode_rle(obj["segmentation"]), want.mask)
    overlay = decode_all(out / "clip_overlay.mp4")
    assert len(overlay) == N and overlay[0].shape == (H, W, 3)


def test_prompts_file_adds_a_second_object_on_a_later_frame(clip, tmp_path, capsys):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(clip):
        cv2.imwrite(str(folder / f"{i:05d}.jpg"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps([{"frame": 2, "obj_id": 7, "box": [90, 20, 130, 60]}]))
    rc = main(["track", str(folder), "--point", "40,48", "--prompts", str(prompts), "--writer", "opencv",
               "-o", str(tmp_path), *RANDOM])
    assert rc == 0
    assert capsys.readouterr().out.strip().endswith("frames_overlay.mp4 (mp4v, opencv)")
    records = list(read_mask_lines(tmp_path / "frames_masks.jsonl"))
    assert [[o["obj_id"] for o in r["objects"]] for r in records] == [[1], [1]] + [[1, 7]] * (N - 2)
    assert len(decode_all(tmp_path / "frames_overlay.mp4")) == N


def test_everything_tracks_one_object_per_automatic_mask(mp4, tmp_path, capsys):
    rc = main(["track", str(mp4), "--everything", "--points-per-side", "4", "--pred-iou-thresh", "0",
               "--stability-score-thresh", "0", "--box-nms-thresh", "1", "--max-objects", "2", "--max-frames", "3",
               "--no-overlay", "-o", str(tmp_path), *RANDOM])
    assert rc == 0
    assert capsys.readouterr().out.strip() == f"3 frames, objects [1, 2] -> {tmp_path / 'clip_masks.jsonl'}"
    records = list(read_mask_lines(tmp_path / "clip_masks.jsonl"))
    assert [[o["obj_id"] for o in r["objects"]] for r in records] == [[1, 2]] * 3
    assert not (tmp_path / "clip_overlay.mp4").exists()


@pytest.mark.parametrize("args, message", [
    (["missing.mp4", "--point", "1,1"], "error: no such video file, frame folder, camera or URL: missing.mp4"),
    (["{mp4}"], "error: nothing to track: give --point"),
    (["{mp4}", "--point", "400,48"], "error: prompt for object 1 on frame 0: (400, 48) is outside the 160x96 frame"),
    (["{mp4}", "--prompts", "{tmp}/none.json"], "error: no such prompts file"),
    (["{mp4}", "--box", "50,40,10,10"], "error: --point/--box: box must have x0 < x1 and y0 < y1"),
    (["{mp4}", "--obj-id", "2"], "error: --frame and --obj-id go with --point or --box"),
    (["{mp4}", "--point", "1,1", "--model", "sam3"], "error: unknown model name 'sam3'"),
    (["{mp4}", "--point", "1,1", "--dtype", "fp8"], "error: unknown dtype 'fp8'"),
    (["http://127.0.0.1:9/video.mjpg", "--point", "1,1"], "error: cannot open stream http://127.0.0.1:9/video.mjpg"),
])
def test_bad_input_exits_2_with_the_reason_and_writes_nothing(mp4, tmp_path, capsys, args, message):
    args = [a.format(mp4=mp4, tmp=tmp_path) for a in args]
    out = tmp_path / "out"
    assert main(["track", *args, "-o", str(out), *RANDOM]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert not out.exists()


def test_ctrl_c_leaves_complete_outputs_up_to_the_last_frame(mp4, tmp_path, capsys, monkeypatch):
    """A camera runs until Ctrl-C: the masks and the overlay then hold every frame tracked so far."""
    track = VideoTracker.track

    def interrupted_at_frame_3(self, state, frame):
        if state.frame_idx == 3:
            raise KeyboardInterrupt
        return track(self, state, frame)

    monkeypatch.setattr(VideoTracker, "track", interrupted_at_frame_3)
    assert main(["track", str(mp4), "--point", "40,48", "-o", str(tmp_path), *RANDOM]) == 130
    captured = capsys.readouterr()
    assert "interrupted: the outputs hold frames 0..2" in captured.err and captured.out.startswith("3 frames")
    assert [r["frame"] for r in read_mask_lines(tmp_path / "clip_masks.jsonl")] == [0, 1, 2]
    assert len(decode_all(tmp_path / "clip_overlay.mp4")) == 3


@pytest.mark.parametrize("point", ["40", "40,48,2", "a,b"])
def test_malformed_points_are_usage_errors(mp4, point, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["track", str(mp4), "--point", point])
    assert exit_info.value.code == 2 and "X,Y" in capsys.readouterr().err


def test_a_prompt_past_the_end_of_a_video_file_is_an_error_after_the_frames_it_has(mp4, tmp_path, capsys,
                                                                                    monkeypatch):
    """Without PyAV a container's frame count is only a claim, so the check comes at the end; the outputs hold
    every frame."""
    monkeypatch.setitem(sys.modules, "av", None)  # OpenCV reads the file
    rc = main(["track", str(mp4), "--point", "40,48", "--prompts", str(_write(tmp_path / "p.json", [
        {"frame": 9, "obj_id": 2, "points": [[40, 48]]}])), "-o", str(tmp_path), *RANDOM])
    assert rc == 2
    assert "error: the video ended after 6 frames, before the prompts on frame(s) [9]" in capsys.readouterr().err
    assert len(list(read_mask_lines(tmp_path / "clip_masks.jsonl"))) == N


def test_a_prompt_past_the_end_of_a_video_file_is_refused_before_tracking_with_pyav(mp4, tmp_path, capsys):
    """PyAV indexes the file's frames, so the length is known and nothing is tracked in vain."""
    pytest.importorskip("av")
    rc = main(["track", str(mp4), "--point", "40,48", "--prompts", str(_write(tmp_path / "p.json", [
        {"frame": 9, "obj_id": 2, "points": [[40, 48]]}])), "-o", str(tmp_path), *RANDOM])
    assert rc == 2
    assert "error: prompt for object 2 on frame 9: the video has 6 frames (0..5)" in capsys.readouterr().err
    assert not (tmp_path / "clip_masks.jsonl").exists()


def _write(path, data):
    path.write_text(json.dumps(data))
    return path
