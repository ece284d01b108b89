"""track_video: a video file, frame folder or stream tracked end to end, its masks as JSON lines and an overlay mp4."""

import functools
import http.server
import threading

import cv2
import numpy as np
import pytest

from model_core.automatic_mask_generator import AutomaticMaskGenerator
from model_core.mask_lines import MaskLinesWriter, read_mask_lines
from model_core.mask_ops import decode_rle
from model_core.mask_overlay import draw_tracks
from model_core.track_prompts import PromptError, load_prompts, merge_by_frame, parse_prompt
from model_core.track_video import EverythingParams, track_video
from model_core.video_io import VideoSourceError, open_stream
from model_core.video_predictor import VideoPredictor
from model_core.video_tracker import VideoTracker
from model_core.video_writers import Mp4Writer
from tests.fixtures import synthetic_clip
from tests.model_core.video_fixtures import file_model_inputs, tracking_model

H, W, N = 96, 160, 8
DISC = {"frame": 0, "obj_id": 1, "points": [[40, 48]], "labels": [1]}
SQUARE_LATER = {"frame": 3, "obj_id": 2, "box": [90, 20, 130, 60]}


@pytest.fixture(scope="module")
def tracker():
    return VideoTracker(tracking_model())


@pytest.fixture(scope="module")
def clip():
    return synthetic_clip(N, H, W)


def write_mp4(frames, path):
    """A source video written with OpenCV (mp4v), independent of the writers under test."""
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (frames[0].shape[1], frames[0].shape[0]))
    for f in frames:
        out.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    out.release()
    return path


def write_folder(frames, folder):
    folder.mkdir()
    for i, f in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:05d}.jpg"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    return folder


def decode_all(path) -> list[np.ndarray]:
    """Every frame of a video, RGB, as OpenCV decodes it."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            return frames
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def track_directly(tracker, frames, prompts):
    """The same prompts given to VideoTracker by hand, frame by frame."""
    state = tracker.new_state(H, W, num_frames=len(frames))
    results = []
    for i, frame in enumerate(frames):
        for p in prompts:
            if p["frame"] == i:
                tracker.add_prompt(state, p["obj_id"], **{k: v for k, v in p.items() if k not in ("frame", "obj_id")})
        results.append(tracker.track(state, frame))
    return results


def test_mp4_masks_as_json_lines_equal_the_tracker_run_by_hand(tracker, clip, tmp_path):
    video = write_mp4(clip, tmp_path / "clip.mp4")
    with MaskLinesWriter(tmp_path / "masks.jsonl") as lines:
        for tracked in track_video(tracker, str(video), [DISC, SQUARE_LATER]):
            lines.write(tracked.result)
    records = list(read_mask_lines(tmp_path / "masks.jsonl"))

    expected = track_directly(tracker, file_model_inputs(video, tracker.cfg.image_size), [DISC, SQUARE_LATER])
    assert [r["frame"] for r in records] == list(range(N))
    for record, result in zip(records, expected):
        assert [o["obj_id"] for o in record["objects"]] == ([1, 2] if record["frame"] >= 3 else [1])
        for obj, want in zip(record["objects"], result.objects):
            np.testing.assert_array_equal(decode_rle(obj["segmentation"]), want.mask)
            assert (obj["iou"], obj["present"]) == (pytest.approx(want.iou), want.present)
    areas = [decode_rle(o["segmentation"]).sum() for r in records for o in r["objects"]]
    assert min(areas) > 0  # real masks, not a vacuous comparison of empty ones


def test_an_mp4_is_tracked_as_the_offline_predictor_reads_it(tracker, clip, tmp_path):
    """Streaming and offline read a video file the same way (scaled in the decoder, as Meta's reader), so
    `sam2-service track clip.mp4` gives the VideoPredictor's masks on the same file."""
    pytest.importorskip("av")
    video = str(write_mp4(clip, tmp_path / "clip.mp4"))
    offline = VideoPredictor(tracker.model, progress=False)
    state = offline.init_state(video)
    offline.add_new_points_or_box(state, 0, 1, points=DISC["points"], labels=DISC["labels"])
    expected = {f: m for f, _, m in offline.propagate_in_video(state)}
    tracked = list(track_video(tracker, video, [DISC]))
    assert [t.frame_idx for t in tracked] == sorted(expected) == list(range(N))
    for t in tracked:
        np.testing.assert_array_equal(t.result.objects[0].mask, (expected[t.frame_idx][0, 0] > 0).numpy())
    assert min(t.result.objects[0].mask.sum() for t in tracked) > 0


@pytest.mark.parametrize("backend, codec", [("pyav", "h264"), ("opencv", "mpeg4")])
def test_overlay_video_of_a_jpeg_folder_has_every_frame_at_its_size(tracker, clip, tmp_path, backend, codec):
    import av

    folder = write_folder(clip, tmp_path / "frames")
    drawn = []
    with Mp4Writer(tmp_path / "overlay.mp4", fps=10, backend=backend) as writer:
        for tracked in track_video(tracker, folder, [DISC]):
            drawn.append(draw_tracks(tracked.image, tracked.result))
            writer.write(drawn[-1])
    back = decode_all(tmp_path / "overlay.mp4")
    assert len(back) == N and all(f.shape == (H, W, 3) for f in back)
    with av.open(str(tmp_path / "overlay.mp4")) as container:
        assert container.streams.video[0].codec_context.name == codec
    # the masks are drawn: each frame read back is nearer its overlay than the plain frame
    for got, overlay, plain in zip(back, drawn, clip):
        assert np.abs(got.astype(int) - overlay).mean() < np.abs(got.astype(int) - plain).mean()


@pytest.mark.parametrize("backend", ["pyav", "opencv"])
def test_writers_pad_odd_sizes_to_even_instead_of_cropping(tmp_path, backend):
    frames = synthetic_clip(3, 65, 97)
    with Mp4Writer(tmp_path / "odd.mp4", fps=5, backend=backend) as writer:
        for f in frames:
            writer.write(f)
    back = decode_all(tmp_path / "odd.mp4")
    assert len(back) == 3 and back[0].shape == (66, 98, 3)
    assert np.abs(back[1][:65, :97].astype(int) - frames[1]).mean() < 10


def test_without_pyav_the_writer_falls_back_to_opencv(tmp_path, monkeypatch):
    monkeypatch.setattr("model_core.video_writers.pyav_h264_encoder", lambda: None)
    with Mp4Writer(tmp_path / "a.mp4", fps=5) as writer:
        writer.write(np.zeros((64, 96, 3), np.uint8))
    assert (writer.backend, writer.codec, len(decode_all(tmp_path / "a.mp4"))) == ("opencv", "mp4v", 1)
    with pytest.raises(RuntimeError, match=r"pip install 'sam2-service\[video\]'"):
        Mp4Writer(tmp_path / "b.mp4", backend="pyav")


def test_frames_are_read_one_at_a_time(tracker, clip):
    """Any iterable of frames works, with no length; nothing is read ahead of the frame being tracked."""
    pulled = []

    def camera():
        for i, frame in enumerate(clip):
            pulled.append(i)
            yield frame

    for tracked in track_video(tracker, camera(), [DISC]):
        assert len(pulled) == tracked.frame_idx + 1
    assert len(pulled) == N
    pulled.clear()
    assert len(list(track_video(tracker, camera(), [DISC], max_frames=3))) == 3 and len(pulled) == 3


def test_everything_seeds_one_object_per_automatic_mask(tracker, clip):
    params = EverythingParams(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0,
                              max_objects=3)
    got = list(track_video(tracker, clip[:3], [DISC], everything=params))

    records = AutomaticMaskGenerator(tracker.model, points_per_side=4, pred_iou_thresh=0.0,
                                     stability_score_thresh=0.0, box_nms_thresh=1.0).generate(clip[0])
    best = sorted(records, key=lambda r: -r["predicted_iou"])[:3]
    assert len(best) == 3
    prompts = [DISC] + [{"frame": 0, "obj_id": 2 + i, "mask": r["segmentation"]} for i, r in enumerate(best)]
    expected = track_directly(tracker, clip[:3], prompts)
    for tracked, want in zip(got, expected):
        assert [o.obj_id for o in tracked.result.objects] == [1, 2, 3, 4]
        for o, w in zip(tracked.result.objects, want.objects):
            np.testing.assert_array_equal(o.mask, w.mask)


@pytest.fixture
def mjpeg_camera(clip):
    """An IP camera on 127.0.0.1: an endless-looking multipart JPEG stream (no length), here of the clip's frames."""
    jpegs = [cv2.imencode(".jpg", cv2.cvtColor(f, cv2.COLOR_RGB2BGR))[1].tobytes() for f in clip]

    class Camera(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            for jpg in jpegs:
                self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%b\r\n"
                                 % (len(jpg), jpg))

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Camera)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/video.mjpg", jpegs
    server.shutdown()


def test_a_camera_stream_without_length_is_tracked_frame_by_frame(tracker, mjpeg_camera):
    url, jpegs = mjpeg_camera
    with open_stream(url) as stream:
        assert stream.num_frames is None and stream.name == "video"
        got = list(track_video(tracker, stream, [DISC]))
    assert [t.frame_idx for t in got] == list(range(N))
    sent = [cv2.cvtColor(cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB) for j in jpegs]
    for tracked in got:  # each frame tracked is the one sent at its index (FFmpeg's JPEG decoder, not libjpeg's)
        nearest = np.argmin([np.abs(tracked.image.astype(int) - s).mean() for s in sent])
        assert nearest == tracked.frame_idx and tracked.result.objects[0].mask.any()


def test_an_mp4_by_url_reads_as_the_file_does(clip, tmp_path):
    video = write_mp4(clip, tmp_path / "clip.mp4")
    class Files(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Files, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with open_stream(f"http://127.0.0.1:{server.server_address[1]}/clip.mp4") as stream:
            assert (stream.name, stream.num_frames, stream.fps) == ("clip", N, 10)
            frames = list(stream)
    finally:
        server.shutdown()
    assert len(frames) == N and all(np.array_equal(a, b) for a, b in zip(frames, decode_all(video)))


def test_prompts_file_of_two_objects(tmp_path):
    path = tmp_path / "prompts.json"
    path.write_text('[{"frame": 0, "obj_id": 1, "points": [[40, 48], [60, 40]], "labels": [1, 0]},'
                    ' {"frame": 3, "obj_id": 2, "box": [90, 20, 130, 60]}, {"points": [[10, 10]]}]')
    first, second, default = load_prompts(path)
    assert (first.frame, first.obj_id, first.points, first.labels) == (0, 1, ((40, 48), (60, 40)), (1, 0))
    assert (second.frame, second.obj_id, second.box, second.points) == (3, 2, (90, 20, 130, 60), ())
    assert (default.frame, default.obj_id, default.labels) == (0, 1, (1,))


def test_entries_for_one_object_and_frame_merge_into_one_prompt():
    prompts = [parse_prompt(e) for e in (
        {"frame": 0, "obj_id": 1, "points": [[40, 48]]}, {"frame": 0, "obj_id": 2, "box": [90, 20, 130, 60]},
        {"frame": 0, "obj_id": 1, "points": [[60, 40]], "labels": [0], "box": [10, 10, 80, 80]},
        {"frame": 4, "obj_id": 1, "points": [[50, 50]]})]
    plan = merge_by_frame(prompts)
    assert sorted(plan) == [0, 4] and [p.obj_id for p in plan[0]] == [1, 2]
    assert plan[0][0].tracker_kwargs() == {"points": [[40, 48], [60, 40]], "labels": [1, 0], "box": [10, 10, 80, 80]}
    with pytest.raises(PromptError, match="one box per object and frame"):
        merge_by_frame(prompts + [parse_prompt({"frame": 0, "obj_id": 2, "box": [1, 1, 5, 5]})])


@pytest.mark.parametrize("text, message", [
    ("[{\"frame\": 0, \"points\": [[1, 2]], \"labels\": [1, 1]}", "not a JSON prompts file"),
    ("{\"frame\": 0}", "non-empty JSON list"),
    ("[{\"frame\": 0, \"points\": [[1, 2]], \"labels\": [1, 1]}]", "one label per point"),
    ("[{\"frame\": 0, \"points\": [[1, 2]], \"labels\": [2]}]", "1 (object) or 0 (background)"),
    ("[{\"frame\": -1, \"points\": [[1, 2]]}]", "frame must be an integer >= 0"),
    ("[{\"frame\": 0, \"box\": [50, 5, 10, 40]}]", "x0 < x1 and y0 < y1"),
    ("[{\"frame\": 0, \"point\": [1, 2]}]", "unknown field(s) ['point']"),
    ("[{\"frame\": 0, \"obj_id\": 3}]", "give points (with labels) and/or a box"),
])
def test_bad_prompts_files_are_refused_with_the_reason(tmp_path, text, message):
    path = tmp_path / "prompts.json"
    path.write_text(text)
    with pytest.raises(PromptError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        load_prompts(path)


def test_prompts_outside_the_video_are_refused_before_tracking(tracker, clip, tmp_path):
    folder = write_folder(clip, tmp_path / "frames")
    with pytest.raises(PromptError, match=r"\(200, 48\) is outside the 160x96 frame"):
        next(track_video(tracker, folder, [{"frame": 0, "points": [[200, 48]]}]))
    with pytest.raises(PromptError, match=r"the video has 8 frames \(0..7\)"):
        next(track_video(tracker, folder, [DISC, {"frame": 8, "obj_id": 2, "points": [[40, 48]]}]))
    # a stream's length is known only at its end: there, prompts never reached are an error
    stream = iter(clip[:3])
    run = track_video(tracker, stream, [DISC, {"frame": 5, "obj_id": 2, "points": [[40, 48]]}])
    with pytest.raises(PromptError, match=r"ended after 3 frames, before the prompts on frame\(s\) \[5\]"):
        list(run)


def test_bad_sources_are_refused(tmp_path, tracker):
    with pytest.raises(VideoSourceError, match="no such video file, frame folder, camera or URL"):
        open_stream(tmp_path / "missing.mp4")
    with pytest.raises(VideoSourceError, match="no image frames"):
        open_stream(tmp_path)
    with pytest.raises(VideoSourceError, match="cannot open camera 99"):
        open_stream("99")
    (tmp_path / "junk.mp4").write_bytes(b"not a video")
    with pytest.raises(VideoSourceError, match="cannot open video"):
        open_stream(tmp_path / "junk.mp4")
    with pytest.raises(PromptError, match="nothing to track"):
        next(track_video(tracker, [np.zeros((H, W, 3), np.uint8)], []))
