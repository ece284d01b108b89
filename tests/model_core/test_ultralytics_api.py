"""The Ultralytics-style API: Ultralytics' prompt conventions and Results, the same masks as our own predictors."""

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model_core import (
    AutomaticMaskGenerator, ImagePredictor, SAM, SAM2DynamicInteractivePredictor, SAM2VideoPredictor, VideoTracker,
)
from model_core.ultralytics_api import NoObjectsError
from model_core.ultralytics_api.loading import at_image_size
from model_core.ultralytics_api.prompts import object_prompts
from model_core.ultralytics_api.tracked_results import exclusive_masks
from tests.fixtures import synthetic_clip
from tests.model_core.video_fixtures import tracking_model

H, W = 96, 160
BOX = [20, 20, 70, 80]
P1, P2 = [40, 48], [110, 30]


@pytest.fixture(scope="module")
def model():
    return tracking_model(128)


@pytest.fixture(scope="module")
def sam(model):
    return SAM(model)


@pytest.fixture(scope="module")
def rgb():
    return synthetic_clip(1, H, W, seed=3)[0]


@pytest.fixture(scope="module")
def bgr(rgb):
    return np.ascontiguousarray(rgb[:, :, ::-1])  # what Ultralytics users pass: cv2.imread's channel order


@pytest.fixture(scope="module")
def ours(model, rgb):
    pred = ImagePredictor(model)
    pred.set_image(rgb)

    def predict(**kw):
        masks, ious, _ = pred.predict(multimask_output=False, **kw)
        return masks.reshape(-1, H, W) > 0, ious.reshape(-1)

    return predict


def write_video(path, frames, fps=5):
    """An mp4 of RGB frames (OpenCV's mp4v), read back as OpenCV decodes it (the codec is lossy)."""
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    cap, decoded = cv2.VideoCapture(str(path)), []
    while (ok_frame := cap.read())[0]:
        decoded.append(cv2.cvtColor(ok_frame[1], cv2.COLOR_BGR2RGB))
    assert len(decoded) == len(frames)
    return decoded


# ---- SAM: prompts ----------------------------------------------------------------------------------------------


def test_a_box_gives_the_image_predictors_mask(sam, bgr, ours):
    (res,) = sam(bgr, bboxes=BOX, conf=0)
    masks, ious = ours(box=BOX)
    assert torch.equal(res.masks.data, torch.from_numpy(masks))
    assert res.boxes.cls.tolist() == [0] and res.boxes.conf.tolist() == pytest.approx(ious.tolist(), abs=1e-6)


def test_flat_points_are_one_object_each(sam, bgr, ours):
    (res,) = sam(bgr, points=[P1, P2], labels=[1, 1], conf=0)
    assert res.masks.data.shape == (2, H, W) and res.boxes.cls.tolist() == [0, 1]
    for i, p in enumerate((P1, P2)):
        assert torch.equal(res.masks.data[i], torch.from_numpy(ours(point_coords=[p], point_labels=[1])[0][0]))


def test_a_nested_list_is_one_object_of_several_points(sam, bgr, ours):
    (res,) = sam(bgr, points=[[P1, P2]], labels=[[1, 1]], conf=0)
    assert res.masks.data.shape == (1, H, W)
    expected = ours(point_coords=[P1, P2], point_labels=[1, 1])[0]
    assert torch.equal(res.masks.data, torch.from_numpy(expected))


def test_labels_default_to_foreground(sam, bgr):
    for points, labels in (([P1, P2], [1, 1]), ([[P1, P2]], [[1, 1]]), (P1, [1])):
        given = sam(bgr, points=points, labels=labels, conf=0)[0]
        default = sam(bgr, points=points, conf=0)[0]
        assert torch.equal(given.masks.data, default.masks.data)


def test_a_negative_point(sam, bgr, ours):
    (res,) = sam(bgr, points=[[P1, P2]], labels=[[1, 0]], conf=0)
    assert torch.equal(res.masks.data, torch.from_numpy(ours(point_coords=[P1, P2], point_labels=[1, 0])[0]))
    assert not torch.equal(res.masks.data, sam(bgr, points=[[P1, P2]], labels=[[1, 1]], conf=0)[0].masks.data)


def test_boxes_and_points_of_the_same_object_go_together(sam, bgr, ours):
    (res,) = sam(bgr, bboxes=[BOX], points=[P1], labels=[0], conf=0)
    expected = ours(box=BOX, point_coords=[P1], point_labels=[0])[0]
    assert torch.equal(res.masks.data, torch.from_numpy(expected))


def test_conf_drops_masks_whose_predicted_iou_is_not_above_it(sam, bgr):
    (all_,) = sam(bgr, points=[P1, P2], conf=0)
    low = float(all_.boxes.conf.min())
    (kept,) = sam(bgr, points=[P1, P2], conf=low)
    assert len(kept) == 1 and kept.boxes.conf.item() > low
    assert kept.boxes.cls.tolist() == [int(all_.boxes.cls[all_.boxes.conf.argmax()])]  # cls keeps the prompt index


def test_prompts_are_handled_as_ultralytics_handles_them():
    """Our shaping against Ultralytics' own (its SAM2Predictor._prepare_prompts needs no weights)."""
    predict = pytest.importorskip("ultralytics.models.sam.predict")
    theirs = object.__new__(predict.SAM2Predictor)
    theirs.segment_all, theirs.torch_dtype, theirs.device = False, torch.float32, torch.device("cpu")
    cases = [
        dict(points=[P1, P2], labels=[1, 0]),
        dict(points=[[P1, P2]], labels=[[1, 0]]),
        dict(points=P1, labels=[1]),
        dict(points=[P1, P2]),
        dict(bboxes=BOX),
        dict(bboxes=[BOX, [0, 0, 10, 10]], points=[P1, P2], labels=[1, 1]),
    ]
    for case in cases:
        coords, labels, _ = theirs._prepare_prompts((H, H), (H, H), **case)  # same size: no rescaling
        mine = object_prompts(**case)
        ours_coords, ours_labels = [], []
        for i in range(len(mine)):
            one = mine.one(i)
            pts = [] if "box" not in one else [one["box"][:2], one["box"][2:]]
            labs = [] if "box" not in one else [2, 3]
            if "points" in one:
                pts, labs = pts + list(one["points"]), labs + list(one["labels"])
            ours_coords.append(pts)
            ours_labels.append(labs)
        np.testing.assert_allclose(coords.numpy(), np.array(ours_coords, np.float32), err_msg=str(case))
        np.testing.assert_array_equal(labels.numpy(), np.array(ours_labels), err_msg=str(case))


@pytest.mark.parametrize("kwargs, text", [
    (dict(points=[[1, 2, 3]]), "points must be"),
    (dict(points=[P1, P2], labels=[1]), "1 labels for 2 points"),
    (dict(points=[P1], labels=[2]), "labels must be 1"),
    (dict(labels=[1]), "without points"),
    (dict(bboxes=[1, 2, 3]), "bboxes must be"),
    (dict(bboxes=[50, 50, 10, 10]), "x1 <= x2"),
    (dict(bboxes=[BOX, BOX], points=[P1]), "2 bboxes"),
    (dict(points=[P1], conf=2), "conf must be"),
    (dict(points=[P1], imgsz=[64, 32]), "square"),
    (dict(points=[P1], colour="red"), "unknown argument 'colour'"),
])
def test_bad_prompts_and_arguments_are_refused_clearly(sam, bgr, kwargs, text):
    with pytest.raises(ValueError, match=text):
        sam(bgr, **kwargs)


# ---- SAM: sources, results, models ---------------------------------------------------------------------------


def test_sources_paths_bgr_arrays_pil_and_lists_agree(sam, rgb, bgr, tmp_path):
    from PIL import Image

    path = tmp_path / "image.png"
    cv2.imwrite(str(path), bgr)
    runs = [sam(source, points=[P1], conf=0) for source in (str(path), path, bgr, Image.fromarray(rgb))]
    for results in runs:
        assert len(results) == 1 and torch.equal(results[0].masks.data, runs[0][0].masks.data)
        np.testing.assert_array_equal(results[0].orig_img, bgr)
    assert runs[0][0].path == str(path) and runs[2][0].path == "image0.jpg"
    both = sam([bgr, str(path)], points=[P1], conf=0)
    assert [r.path for r in both] == ["image0.jpg", str(path)]
    streamed = sam(bgr, points=[P1], conf=0, stream=True)
    assert not isinstance(streamed, list) and len(list(streamed)) == 1
    with pytest.raises(ValueError, match="no such file"):
        sam(str(tmp_path / "missing.jpg"), points=[P1])


def test_results_masks_boxes_plot_and_save(sam, bgr, tmp_path):
    (res,) = sam(bgr, points=[P1, P2], conf=0)
    assert res.orig_shape == (H, W) and len(res) == 2
    assert res.masks.data.shape == (2, H, W) and res.masks.data.dtype == torch.bool
    for mask, xy, xyn in zip(res.masks.data.numpy(), res.masks.xy, res.masks.xyn):
        assert xy.dtype == np.float32 and xy.shape[1] == 2 and len(xy) >= 3
        assert (xy >= 0).all() and (xy[:, 0] <= W - 1).all() and (xy[:, 1] <= H - 1).all()
        np.testing.assert_allclose(xyn, xy / [W, H], rtol=1e-6)
        assert (xyn >= 0).all() and (xyn <= 1).all()
        ys, xs = np.nonzero(mask)
        assert xy[:, 0].min() == xs.min() and xy[:, 1].max() == ys.max()  # the outline touches the mask's extent
    for mask, row in zip(res.masks.data.numpy(), res.boxes.data.numpy()):
        ys, xs = np.nonzero(mask)
        np.testing.assert_array_equal(row[:4], [xs.min(), ys.min(), xs.max(), ys.max()])
    assert res.boxes.xyxy.shape == (2, 4) and res.boxes.id is None
    np.testing.assert_allclose(res.boxes.xywhn[:, 2].numpy(), ((res.boxes.xyxy[:, 2] - res.boxes.xyxy[:, 0]) / W))
    assert res[1].boxes.cls.tolist() == [1] and res.numpy().masks.data.shape == (2, H, W)
    plotted = res.plot()
    assert plotted.shape == (H, W, 3) and plotted.dtype == np.uint8 and not np.array_equal(plotted, bgr)
    assert np.array_equal(res.plot(masks=False, boxes=False), bgr)
    saved = res.save(str(tmp_path / "overlay.png"))
    np.testing.assert_array_equal(cv2.imread(saved), plotted)
    assert [d["class"] for d in res.summary()] == [0, 1] and "segments" in res.summary()[0]


def test_an_outline_of_several_regions_is_one_polygon():
    from model_core.ultralytics_api.results import Masks

    mask = np.zeros((40, 60), bool)
    mask[5:15, 5:15] = mask[20:35, 30:55] = True
    (poly,) = Masks(torch.from_numpy(mask), (40, 60)).xy
    drawn = cv2.fillPoly(np.zeros((40, 60), np.uint8), [poly.astype(np.int32)], 1)
    assert drawn[10, 10] and drawn[27, 40]
    assert len(Masks(torch.zeros(1, 4, 4, dtype=torch.bool), (4, 4)).xy[0]) == 0


def test_imgsz_runs_the_same_weights_at_another_input_size(sam, model, bgr, rgb):
    (res,) = sam(bgr, bboxes=BOX, imgsz=64, conf=0)
    pred = ImagePredictor(at_image_size(model, 64))
    pred.set_image(rgb)
    masks, _, _ = pred.predict(box=BOX, multimask_output=False)
    assert torch.equal(res.masks.data, torch.from_numpy(masks > 0)) and model.cfg.image_size == 128


def test_models_by_name_by_path_and_info(model, tmp_path, monkeypatch, capsys):
    sd = {k: v.half() for k, v in model.state_dict().items()}  # as Ultralytics ships them: fp16, under "model"
    monkeypatch.setenv("SAM2_WEIGHTS_DIR", str(tmp_path))
    torch.save({"model": sd}, tmp_path / "sam2.1_hiera_tiny.pt")
    torch.save({"model": sd}, tmp_path / "my_finetune.pt")
    by_name = SAM("sam2.1_t.pt", device="cpu")
    by_path = SAM(str(tmp_path / "my_finetune.pt"), device="cpu")
    for loaded in (by_name, by_path):
        assert loaded.model.cfg.name == "sam2.1_hiera_tiny" and loaded.model.cfg.image_size == 1024
        assert torch.equal(loaded.model.state_dict()["maskmem_tpos_enc"], sd["maskmem_tpos_enc"].float())
    layers, params, _, _ = by_name.info()
    assert params == sum(p.numel() for p in model.parameters()) and f"{params:,} parameters" in capsys.readouterr().out
    with pytest.raises(ValueError, match="no checkpoint file"):
        SAM(str(tmp_path / "nothing" / "sam2.1_t.pt"))
    with pytest.raises(ValueError, match="neither a checkpoint file nor a known model"):
        SAM("yolo11n.pt")


# ---- SAM: segment everything on a video ------------------------------------------------------------------------


def test_no_prompts_segment_everything_on_every_frame(sam, model, tmp_path, monkeypatch):
    frames = write_video(tmp_path / "clip.mp4", synthetic_clip(3, H, W))
    everything = dict(points_stride=4, conf_thres=0.0, stability_score_thresh=0.0)
    results = sam(str(tmp_path / "clip.mp4"), conf=0, **everything)
    assert len(results) == 3 and all(r.path == str(tmp_path / "clip.mp4") for r in results)
    gen = AutomaticMaskGenerator(model, points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                                 stability_score_offset=0.95, box_nms_thresh=0.7)
    for res, frame in zip(results, frames):
        expected = gen.generate(frame)
        assert len(expected) > 0 and len(res) == len(expected)
        np.testing.assert_array_equal(res.masks.data.numpy(), np.stack([r["segmentation"] for r in expected]))
    monkeypatch.chdir(tmp_path)
    assert results[0].save() == "results_clip.jpg" and cv2.imread("results_clip.jpg").shape == (H, W, 3)


# ---- the video predictor ---------------------------------------------------------------------------------------


def test_the_video_predictor_tracks_each_prompt_as_one_object(model, tmp_path):
    frames = write_video(tmp_path / "test.mp4", synthetic_clip(5, H, W))
    predictor = SAM2VideoPredictor(overrides=dict(conf=0.25, model=model))
    results = predictor(source=str(tmp_path / "test.mp4"), points=[P1, [120, 40]], labels=[1, 1])
    assert len(results) == len(frames)

    tracker = VideoTracker(model)
    state = tracker.new_state(H, W, num_frames=len(frames))
    tracker.add_prompt(state, 0, points=[P1], labels=[1])
    tracker.add_prompt(state, 1, points=[[120, 40]], labels=[1])
    for res, frame in zip(results, frames):
        objects = tracker.track(state, frame).objects
        logits = F.interpolate(torch.stack([o.logits for o in objects]), size=(H, W), mode="bilinear")[:, 0]
        masks = exclusive_masks(logits)  # each pixel to one object, as Ultralytics' video predictor
        kept = [i for i in range(2) if masks[i].any()]  # score 1 for a non-empty mask, 0 (dropped) otherwise
        assert res.boxes.cls.tolist() == kept and res.boxes.conf.tolist() == [1.0] * len(kept)
        assert torch.equal(res.masks.data, masks[kept])
        assert not (res.masks.data.sum(0) > 1).any()
    assert any(len(r) == 2 for r in results)


def test_the_video_predictor_needs_prompts_and_a_video(model, rgb):
    predictor = SAM2VideoPredictor(overrides=dict(model=model))
    with pytest.raises(ValueError, match="give the objects to track"):
        predictor(source=[rgb, rgb])
    with pytest.raises(ValueError, match="not a video file"):
        predictor(source="image.jpg", points=[P1])
    with pytest.raises(ValueError, match="unknown argument"):
        SAM2VideoPredictor(overrides=dict(model=model, colour=1))


# ---- the dynamic interactive predictor --------------------------------------------------------------------------


def test_the_dynamic_predictor_finds_a_remembered_object_in_an_image_of_another_size(model):
    first = synthetic_clip(1, H, W, seed=5)[0]
    second = synthetic_clip(1, 60, 100, seed=6)[0]  # smaller, another aspect ratio
    predictor = SAM2DynamicInteractivePredictor(overrides=dict(model=model, conf=0.0), max_obj_num=3)
    with pytest.raises(NoObjectsError, match="no objects in memory"):
        predictor(source=first[:, :, ::-1])
    predictor(source=first[:, :, ::-1], bboxes=[BOX], obj_ids=[0], update_memory=True)
    (found,) = predictor(source=second[:, :, ::-1])

    tracker = VideoTracker(model)
    state = tracker.new_state(0, 0, mode="images")
    tracker.add_prompt(state, 0, box=BOX)
    tracker.track(state, first)
    (expected,) = tracker.track(state, second).objects
    assert expected.present and found.orig_shape == (60, 100)
    assert found.boxes.cls.tolist() == [0] and found.masks.data.shape == (1, 60, 100)
    assert torch.equal(found.masks.data[0], torch.from_numpy(expected.mask))
    assert found.boxes.conf.item() == pytest.approx(max(expected.object_score_logit / 32, 0), abs=1e-6)
    assert predictor.obj_ids == [0]


def test_the_dynamic_predictor_adds_objects_and_keeps_one_off_prompts_out_of_memory(model):
    a, b, c = (synthetic_clip(1, h, w, seed=s)[0][:, :, ::-1] for h, w, s in ((H, W, 5), (60, 100, 6), (80, 80, 7)))
    predictor = SAM2DynamicInteractivePredictor(overrides=dict(model=model, conf=0.0))
    predictor(source=a, bboxes=[BOX], obj_ids=0, update_memory=True)
    (added,) = predictor(source=b, points=[[50, 30]], labels=[1], obj_ids=[1], update_memory=True)
    assert sorted(added.boxes.cls.tolist()) == [0, 1] and predictor.obj_ids == [0, 1]
    predictor(source=c, points=[[20, 20]], obj_ids=[2])  # update_memory defaults to False: this image only
    assert predictor.obj_ids == [0, 1]
    assert sorted(predictor(source=c)[0].boxes.cls.tolist()) == [0, 1]


def test_the_dynamic_predictor_enforces_max_obj_num_and_its_arguments(model, bgr):
    predictor = SAM2DynamicInteractivePredictor(overrides=dict(model=model), max_obj_num=2)
    with pytest.raises(ValueError, match=r"obj_id 2 is out of range: ids are 0 to 1 \(max_obj_num=2\)"):
        predictor(source=bgr, points=[P1], obj_ids=[2], update_memory=True)
    with pytest.raises(ValueError, match="2 obj_ids for 1 prompted objects"):
        predictor(source=bgr, points=[P1], obj_ids=[0, 1], update_memory=True)
    with pytest.raises(ValueError, match="give obj_ids"):
        predictor(source=bgr, points=[P1], update_memory=True)
    with pytest.raises(ValueError, match="needs prompts"):
        predictor(source=bgr, update_memory=True)
    with pytest.raises(ValueError, match="max_obj_num must be a positive int"):
        SAM2DynamicInteractivePredictor(overrides=dict(model=model), max_obj_num=0)
