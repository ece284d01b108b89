"""`sam2-service annotate`: auto_annotate from the command line, with a random-weights SAM 2 (--weights random)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model_core import ImagePredictor, build_model
from service.cli import main
from tests.fixtures import no_internet
from tests.model_core.annotate_fixtures import (
    BOXES, SIZES, assert_label_is, needs_ultralytics, predictor_masks, write_coco_boxes, write_images,
)

TINY = ["--sam-model", "sam2.1_t", "--weights", "random", "--image-size", "128", "--device", "cpu", "--no-progress"]


def test_annotate_a_folder_from_a_coco_json_of_boxes(tmp_path, capsys):
    images, out = write_images(tmp_path / "images"), tmp_path / "labels"
    rc = main(["annotate", str(images), "--boxes", str(write_coco_boxes(tmp_path / "boxes.json")), "-o", str(out),
               *TINY])
    assert rc == 0
    assert capsys.readouterr().out.strip() == f"3 images: 2 annotated (3 masks), 1 without boxes -> {out}"
    same_model = ImagePredictor(build_model("sam2.1_t", weights="random", image_size=128))  # same seed, same weights
    for name, rows in BOXES.items():
        masks = predictor_masks(same_model, images / name, [b for _, b in rows])
        assert_label_is(out / f"{Path(name).stem}.txt", SIZES[name], [c for c, _ in rows], masks)


def test_annotate_with_a_yolo_model_yaml_to_coco_offline(tmp_path, capsys):
    needs_ultralytics()
    from pycocotools.coco import COCO

    images = write_images(tmp_path / "images")
    with no_internet() as refused, torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # an untrained YOLO11n from its YAML, seeded: a tiny conf still gives class-0 boxes
        rc = main(["annotate", str(images), "--det-model", "yolo11n.yaml", "--conf", "0.00001", "--imgsz", "128",
                   "--max-det", "2", "--classes", "0", "--format", "coco", *TINY])
    assert rc == 0 and refused == []
    out = tmp_path / "images_auto_annotate_labels" / "instances.json"
    assert f"-> {out}" in capsys.readouterr().out
    coco = COCO(str(out))
    assert len(coco.getImgIds()) == 3 and 0 < len(coco.getAnnIds()) <= 6
    assert {coco.anns[i]["category_id"] for i in coco.getAnnIds()} == {0}


def test_annotate_reports_bad_input_before_loading_anything(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("model_core.model_loading.build_model", lambda *a, **k: pytest.fail("model loaded"))
    assert main(["annotate", str(tmp_path / "nowhere"), *TINY]) == 2
    assert "no such image folder" in capsys.readouterr().err
    images = write_images(tmp_path / "images")
    assert main(["annotate", str(images), "--boxes", str(tmp_path / "missing.json"), *TINY]) == 2
    assert "--boxes: no such file or folder" in capsys.readouterr().err


def test_annotate_takes_a_detector_or_boxes_not_both(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["annotate", str(tmp_path), "--det-model", "yolo11n.pt", "--boxes", "b.json"])
    assert exc.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
