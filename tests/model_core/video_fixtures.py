"""Synthetic clips and the reference video predictor, shared by the video tests."""

from __future__ import annotations


import cv2
import numpy as np
import torch

from tests.reference import REF_CONFIG_FILES, randomize_


class _Fp32Torch:
    """Stands in for `torch` inside sam2.sam2_video_predictor so its bf16 memory cast stays fp32."""

    bfloat16 = torch.float32

    def __getattr__(self, name):
        return getattr(torch, name)


def reference_video_predictor(name: str, image_size: int, seed: int = 0):
    """Meta's SAM2VideoPredictor with seeded random weights, fill_hole_area=0 and its memory kept in fp32.

    sam2 casts stored memory features to bf16 even in fp32 runs (and then fails on CPU with a dtype
    mismatch once a prompt arrives after tracking began, its issues #308/#577); for parity we keep it fp32.
    """
    import sam2.sam2_video_predictor as svp
    from sam2.build_sam import build_sam2_video_predictor

    svp.torch = _Fp32Torch()
    torch.manual_seed(seed)
    overrides = ["++model.fill_hole_area=0", f"++model.image_size={image_size}"]
    pred = build_sam2_video_predictor(REF_CONFIG_FILES[name], ckpt_path=None, device="cpu",
                                      hydra_overrides_extra=overrides)
    return randomize_(pred, seed).eval().requires_grad_(False)


def reference_state(ref, frames, tensors, tmp_path):
    """Reference inference state over JPEGs of `frames`, then fed exactly our preprocessed `tensors`."""
    folder = tmp_path / "clip"
    folder.mkdir(exist_ok=True)
    for i, f in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:05d}.jpg"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    state = ref.init_state(str(folder))
    state["images"] = torch.stack(tensors)
    state["cached_features"] = {}
    return state


def restore_torch():
    import sam2.sam2_video_predictor as svp

    svp.torch = torch




def tracking_model(image_size: int = 128, presence_shift: float = 0.5):
    """A seeded random tiny model whose object-score head is shifted so that objects read as present.

    Untrained weights put presence logits slightly below 0, which would blank every mask to NO_OBJ_SCORE
    and make mask comparisons vacuous.
    """
    from model_core import build_model

    model = build_model("sam2.1_t", weights="random", image_size=image_size)
    with torch.no_grad():
        model.sam_mask_decoder.pred_obj_score_head.layers[2].bias.add_(presence_shift)
    return model


def file_model_inputs(path, image_size: int) -> list:
    """What the trackers take for each frame of a video file: scaled in the decoder as Meta's reader does
    (PyAV, (3, S, S) tensors), or, without PyAV, the RGB frames as OpenCV decodes them."""
    from model_core.av_frames import AVFileFrames
    from model_core.transforms import preprocess

    if not AVFileFrames.available():
        cap, frames = cv2.VideoCapture(str(path)), []
        while (read := cap.read())[0]:
            frames.append(cv2.cvtColor(read[1], cv2.COLOR_BGR2RGB))
        return frames
    frames = AVFileFrames(path)
    return [preprocess(frames.model_input(i, image_size), image_size) for i in range(len(frames))]
