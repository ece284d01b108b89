"""auto_annotate: boxes from a YOLO detector, a COCO JSON or a YOLO labels folder prompt SAM 2; masks become labels.

Every check compares what was written with ImagePredictor's masks for the same boxes, read back the way
Ultralytics (YOLO-seg labels) and pycocotools (COCO JSON) read them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from model_core import ImagePredictor, build_model
from model_core.annotate import auto_annotate, mask_to_polygon, polygon_to_mask
from tests.fixtures import no_internet

from tests.model_core.annotate_fixtures import (
    BOXES, NAMES, SIZES, assert_label_is, needs_ultralytics, predictor_masks, read_label, write_coco_boxes,
    write_images, write_yolo_boxes,
)


@pytest.fixture(scope="module")
def predictor():
    """SAM 2.1 tiny with seeded random weights at 128 px: the masks are meaningless but deterministic."""
    return ImagePredictor(build_model("sam2.1_t", weights="random", image_size=128))


@pytest.fixture
def images(tmp_path):
    """A folder of three images of two sizes (one will have no boxes)."""
    return write_images(tmp_path / "images")


@pytest.fixture
def coco_boxes(tmp_path):
    return write_coco_boxes(tmp_path / "detections.json")


@pytest.fixture
def yolo_boxes(tmp_path):
    return write_yolo_boxes(tmp_path / "det_labels")


# ---- YOLO-segmentation labels from boxes the user already has ----------------------------------------------------

def test_coco_json_boxes_give_the_predictor_masks_as_yolo_polygons(images, coco_boxes, predictor, tmp_path):
    summary = auto_annotate(images, sam_model=predictor, boxes=coco_boxes, output_dir=tmp_path / "labels")
    assert (summary.images, summary.annotated, summary.no_boxes, summary.masks) == (3, 2, 1, 3)
    assert sorted(p.name for p in (tmp_path / "labels").iterdir()) == ["field.txt", "street.txt"]  # none for empty
    (tmp_path / "labels" / "plain").touch()
    assert (tmp_path / "labels" / "street.txt").stat().st_mode == (tmp_path / "labels" / "plain").stat().st_mode
    for name, rows in BOXES.items():
        masks = predictor_masks(predictor, images / name, [b for _, b in rows])
        assert_label_is(tmp_path / "labels" / f"{Path(name).stem}.txt", SIZES[name], [c for c, _ in rows], masks)


def test_a_yolo_labels_folder_of_boxes_gives_the_predictor_masks(images, yolo_boxes, predictor, tmp_path):
    summary = auto_annotate(images, sam_model=predictor, boxes=yolo_boxes, output_dir=tmp_path / "labels")
    assert (summary.annotated, summary.no_boxes, summary.masks) == (2, 1, 3)
    for name, rows in BOXES.items():
        hw = SIZES[name]
        written = read_label(tmp_path / "labels" / f"{Path(name).stem}.txt", hw)
        masks = predictor_masks(predictor, images / name, [b for _, b in rows])
        assert [c for c, _ in written] == [c for c, _ in rows]
        for (_, points), mask in zip(written, masks):  # boxes read back from normalised floats: a pixel or so apart
            ours, theirs = polygon_to_mask(points, *hw), polygon_to_mask(mask_to_polygon(mask), *hw)
            assert (ours & theirs).sum() / (ours | theirs).sum() >= 0.98


def test_coco_file_names_with_a_folder_match_by_base_name(images, coco_boxes, predictor, tmp_path):
    doc = json.loads(coco_boxes.read_text())
    for img in doc["images"]:
        img["file_name"] = f"val2017/{img['file_name']}"  # as exported from another machine's layout
    coco_boxes.write_text(json.dumps(doc))
    summary = auto_annotate(images, sam_model=predictor, boxes=coco_boxes, output_dir=tmp_path / "l")
    assert (summary.annotated, summary.masks) == (2, 3)


def test_a_labels_folder_names_its_classes_in_classes_txt(images, yolo_boxes, predictor, tmp_path):
    (yolo_boxes / "classes.txt").write_text("".join(f"thing{i}\n" for i in range(8)))
    summary = auto_annotate(images, sam_model=predictor, boxes=yolo_boxes, format="coco", output_dir=tmp_path / "c")
    categories = json.loads(summary.output.read_text())["categories"]
    assert {c["id"]: c["name"] for c in categories} == {i: f"thing{i}" for i in range(8)}


def test_ultralytics_own_reader_accepts_our_labels(images, coco_boxes, predictor, tmp_path):
    verify_image_label = needs_ultralytics("ultralytics.data.utils").verify_image_label
    auto_annotate(images, sam_model=predictor, boxes=coco_boxes, output_dir=tmp_path / "labels")
    for name, rows in BOXES.items():
        label = tmp_path / "labels" / f"{Path(name).stem}.txt"
        _, lb, shape, segments, _, missing, found, empty, corrupt, msg = verify_image_label(
            (str(images / name), str(label), "", False, 80, 0, 0, False))
        assert (missing, found, empty, corrupt) == (0, 1, 0, 0), msg
        assert tuple(shape) == SIZES[name] and len(segments) == len(rows)
        assert lb[:, 0].astype(int).tolist() == [c for c, _ in rows]


def test_default_output_is_a_sibling_folder_named_like_ultralytics(images, coco_boxes, predictor):
    summary = auto_annotate(images, sam_model=predictor, boxes=coco_boxes, progress=False)
    assert summary.output == images.parent / "images_auto_annotate_labels"
    assert (summary.output / "street.txt").is_file()


def test_classes_keeps_only_those_class_ids(images, coco_boxes, predictor, tmp_path):
    summary = auto_annotate(images, sam_model=predictor, boxes=coco_boxes, classes=[7], output_dir=tmp_path / "l")
    assert [p.name for p in (tmp_path / "l").iterdir()] == ["street.txt"]  # field.jpg has only a class-3 box
    masks = predictor_masks(predictor, images / "street.png", [BOXES["street.png"][1][1]])
    assert_label_is(tmp_path / "l" / "street.txt", SIZES["street.png"], [7], masks)
    assert (summary.annotated, summary.no_boxes) == (1, 2)


# ---- COCO output --------------------------------------------------------------------------------------------------

def test_coco_output_loads_in_pycocotools_and_decodes_to_the_predictor_masks(images, coco_boxes, predictor, tmp_path):
    from pycocotools.coco import COCO

    summary = auto_annotate(images, sam_model=predictor, boxes=coco_boxes, format="coco", output_dir=tmp_path / "c")
    assert summary.output == tmp_path / "c" / "instances.json"
    coco = COCO(str(summary.output))
    assert {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())} == NAMES
    by_name = {img["file_name"]: img for img in coco.loadImgs(coco.getImgIds())}
    assert set(by_name) == set(SIZES)  # the image without boxes is listed, with no annotations
    assert coco.getAnnIds(imgIds=[by_name["empty.png"]["id"]]) == []
    for name, rows in BOXES.items():
        img = by_name[name]
        assert (img["height"], img["width"]) == SIZES[name]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]]))
        masks = predictor_masks(predictor, images / name, [b for _, b in rows])
        assert [a["category_id"] for a in anns] == [c for c, _ in rows]
        for ann, mask in zip(anns, masks):
            assert np.array_equal(coco.annToMask(ann).astype(bool), mask)
            assert ann["area"] == mask.sum()


# ---- a real Ultralytics YOLO as the detector ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def yolo():
    """YOLO11n built from its model YAML (no weights file, nothing downloaded), seeded random weights. Its class
    biases are raised so that it "sees" class 2 at the finest scale and class 5 at the coarsest at conf 0.25."""
    needs_ultralytics()
    with no_internet() as refused:
        from ultralytics import YOLO

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = YOLO("yolo11n.yaml")
    assert refused == []
    head = model.model.model[-1]
    with torch.no_grad():
        head.cv3[0][-1].bias[2] += 12.0
        head.cv3[-1][-1].bias[5] += 12.0
    model.model.names = {i: f"kind{i}" for i in range(len(model.names))}
    return model


YOLO_ARGS = dict(conf=0.25, iou=0.45, imgsz=128, max_det=6, device="cpu")


def yolo_boxes_for(yolo, image_path: Path, classes=None):
    """What the detector finds in the image with the arguments auto_annotate hands it: (class ids, xyxy boxes)."""
    r = yolo.predict(cv2.imread(str(image_path)), classes=classes, verbose=False, **YOLO_ARGS)[0]
    return r.boxes.cls.int().tolist(), r.boxes.xyxy.cpu().numpy()


def test_a_yolo_detector_boxes_prompt_sam_and_nothing_goes_online(images, yolo, predictor, tmp_path):
    with no_internet() as refused:
        summary = auto_annotate(images, det_model=yolo, sam_model=predictor, output_dir=tmp_path / "l", **YOLO_ARGS)
    assert refused == []
    assert summary.annotated == 3 and summary.masks > 3
    for name, hw in SIZES.items():
        class_ids, boxes = yolo_boxes_for(yolo, images / name)
        assert set(class_ids) == {2, 5}
        assert_label_is(tmp_path / "l" / f"{Path(name).stem}.txt", hw, class_ids,
                        predictor_masks(predictor, images / name, boxes))


def test_a_yolo_detector_names_the_coco_categories(images, yolo, predictor, tmp_path):
    summary = auto_annotate(images, det_model=yolo, sam_model=predictor, format="coco", output_dir=tmp_path / "c",
                            **YOLO_ARGS)
    doc = json.loads(summary.output.read_text())
    assert {c["id"]: c["name"] for c in doc["categories"]} == dict(yolo.names)
    assert {a["category_id"] for a in doc["annotations"]} == {2, 5}


def test_classes_goes_to_the_detector(images, yolo, predictor, tmp_path):
    auto_annotate(images, det_model=yolo, sam_model=predictor, classes=[5], output_dir=tmp_path / "l", **YOLO_ARGS)
    for name, hw in SIZES.items():
        class_ids, boxes = yolo_boxes_for(yolo, images / name, classes=[5])
        assert class_ids and set(class_ids) == {5}
        assert_label_is(tmp_path / "l" / f"{Path(name).stem}.txt", hw, class_ids,
                        predictor_masks(predictor, images / name, boxes))


def test_a_det_model_by_yaml_name_is_built_offline_and_said_to_be_untrained(images, predictor, tmp_path, caplog):
    needs_ultralytics()
    with no_internet() as refused:
        summary = auto_annotate(images, det_model="yolo11n.yaml", sam_model=predictor, output_dir=tmp_path / "l",
                                **{**YOLO_ARGS, "conf": 0.9})  # untrained: nothing this confident
    assert refused == [] and summary.no_boxes == 3
    assert "UNTRAINED" in caplog.text


# ---- long runs: resume, bad images, never a half-written file -----------------------------------------------------

def test_a_rerun_skips_labelled_images_unless_overwrite(images, coco_boxes, predictor, tmp_path):
    out = tmp_path / "labels"
    auto_annotate(images, sam_model=predictor, boxes=coco_boxes, output_dir=out)
    (out / "street.txt").write_text("kept\n")
    again = auto_annotate(images, sam_model=predictor, boxes=coco_boxes, output_dir=out)
    assert (again.skipped, again.annotated) == (2, 0) and (out / "street.txt").read_text() == "kept\n"
    forced = auto_annotate(images, sam_model=predictor, boxes=coco_boxes, output_dir=out, overwrite=True)
    assert (forced.skipped, forced.annotated) == (0, 2) and (out / "street.txt").read_text() != "kept\n"


def test_a_coco_rerun_adds_only_new_images(images, coco_boxes, predictor, tmp_path):
    out = tmp_path / "c"
    (images / "field.jpg").rename(tmp_path / "field.jpg")
    first = auto_annotate(images, sam_model=predictor, boxes=coco_boxes, format="coco", output_dir=out)
    (tmp_path / "field.jpg").rename(images / "field.jpg")
    second = auto_annotate(images, sam_model=predictor, boxes=coco_boxes, format="coco", output_dir=out)
    assert (first.annotated, second.skipped, second.annotated) == (1, 2, 1)
    doc = json.loads(second.output.read_text())
    assert sorted(img["file_name"] for img in doc["images"]) == sorted(SIZES)
    assert len(doc["annotations"]) == 3 and len({a["id"] for a in doc["annotations"]}) == 3


def test_a_corrupt_image_is_reported_and_skipped(images, coco_boxes, predictor, tmp_path, caplog):
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    summary = auto_annotate(images, sam_model=predictor, boxes=coco_boxes, output_dir=tmp_path / "l")
    assert [p.name for p, _ in summary.bad] == ["broken.jpg"] and "cannot decode" in summary.bad[0][1]
    assert summary.annotated == 2 and not (tmp_path / "l" / "broken.txt").exists()
    assert "broken.jpg" in str(summary) and "1 unreadable" in str(summary)
    assert "skipped" in caplog.text and "broken.jpg" in caplog.text  # warned as it came, not only at the end


def test_a_failure_mid_image_leaves_no_label_file(images, coco_boxes, predictor, tmp_path, monkeypatch):
    import model_core.annotate.writers as writers

    calls = []

    def polygon_then_fail(mask):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the user stops the run between the first and second mask of street.png
        return mask_to_polygon(mask)

    monkeypatch.setattr(writers, "mask_to_polygon", polygon_then_fail)
    with pytest.raises(KeyboardInterrupt):
        auto_annotate(images, sam_model=predictor, boxes=coco_boxes, output_dir=tmp_path / "l")
    assert sorted(p.name for p in (tmp_path / "l").iterdir()) == ["field.txt"]  # no street.txt, no temp file


def test_a_stopped_coco_run_keeps_whole_images_and_a_rerun_finishes(images, coco_boxes, predictor, tmp_path,
                                                                    monkeypatch):
    import model_core.annotate.annotator as pipeline

    decode, calls = predictor.predict_torch, []

    def decode_then_stop(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # stopped between street.png's two boxes (field.jpg was call 1)
        return decode(*args, **kwargs)

    monkeypatch.setattr(pipeline, "BOXES_PER_DECODE", 1)
    monkeypatch.setattr(predictor, "predict_torch", decode_then_stop)
    with pytest.raises(KeyboardInterrupt):
        auto_annotate(images, sam_model=predictor, boxes=coco_boxes, format="coco", output_dir=tmp_path / "c")
    doc = json.loads((tmp_path / "c" / "instances.json").read_text())  # written on the way out
    assert sorted(img["file_name"] for img in doc["images"]) == ["empty.png", "field.jpg"]
    assert len(doc["annotations"]) == 1
    monkeypatch.setattr(predictor, "predict_torch", decode)
    rerun = auto_annotate(images, sam_model=predictor, boxes=coco_boxes, format="coco", output_dir=tmp_path / "c")
    assert (rerun.skipped, rerun.annotated, rerun.masks) == (2, 1, 2)


# ---- bad arguments ------------------------------------------------------------------------------------------------

def test_bad_arguments_get_clear_errors(images, coco_boxes, predictor, tmp_path):
    with pytest.raises(ValueError, match="det_model or boxes, not both"):
        auto_annotate(images, det_model="yolo11n.pt", boxes=coco_boxes, sam_model=predictor)
    with pytest.raises(ValueError, match="format must be one of yolo, coco"):
        auto_annotate(images, boxes=coco_boxes, sam_model=predictor, format="voc")
    with pytest.raises(FileNotFoundError, match="no such image folder"):
        auto_annotate(tmp_path / "nowhere", boxes=coco_boxes, sam_model=predictor)
    (tmp_path / "results.json").write_text(json.dumps([{"image_id": 1, "bbox": [0, 0, 1, 1], "score": 0.9}]))
    with pytest.raises(ValueError, match="COCO instances JSON"):
        auto_annotate(images, boxes=tmp_path / "results.json", sam_model=predictor)
    with pytest.raises(ValueError, match="unknown model name"):
        auto_annotate(images, boxes=coco_boxes, sam_model="sam3_b.pt")


def test_without_ultralytics_boxes_still_work_and_a_detector_says_how_to_get_it(images, coco_boxes, predictor,
                                                                                tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ultralytics", None)  # as if the annotate extra were absent
    with pytest.raises(ImportError, match=r"pip install 'sam2-service\[annotate\]'"):
        auto_annotate(images, det_model="yolo11n.pt", sam_model=predictor)
    assert auto_annotate(images, boxes=coco_boxes, sam_model=predictor, output_dir=tmp_path / "l").annotated == 2


def test_a_malformed_label_row_skips_that_image_and_says_where(images, yolo_boxes, predictor, tmp_path):
    (yolo_boxes / "field.txt").write_text("3 0.5 0.5 1.7 0.2\n")
    summary = auto_annotate(images, sam_model=predictor, boxes=yolo_boxes, output_dir=tmp_path / "l")
    assert [(p.name, why) for p, why in summary.bad] == [
        ("field.jpg", f"{yolo_boxes / 'field.txt'}:1: coordinates must be normalised to [0, 1], "
                      "got '3 0.5 0.5 1.7 0.2'")]
    assert summary.annotated == 1


# ---- mask -> polygon ----------------------------------------------------------------------------------------------

def test_a_one_piece_mask_round_trips_through_its_polygon():
    mask = np.zeros((60, 90), np.uint8)
    cv2.ellipse(mask, (40, 30), (25, 15), 30, 0, 360, 1, -1)
    points = mask_to_polygon(mask.astype(bool))
    assert np.array_equal(polygon_to_mask(points, 60, 90), mask.astype(bool))


def test_a_mask_in_several_pieces_is_one_polygon_covering_all_of_them():
    mask = np.zeros((60, 90), np.uint8)
    cv2.circle(mask, (20, 30), 12, 1, -1)
    cv2.rectangle(mask, (50, 10), (80, 25), 1, -1)
    mask[50, 70] = 1
    points = mask_to_polygon(mask.astype(bool))
    filled = polygon_to_mask(points, 60, 90)
    assert not (mask.astype(bool) & ~filled).any()  # every piece is inside the one path
    assert (filled & ~mask.astype(bool)).sum() < 0.1 * mask.sum()  # plus the zero-width bridges' pixels
    assert mask_to_polygon(np.zeros((5, 5), bool)).shape == (0, 2)
