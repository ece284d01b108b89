"""POST /v1/segment/everything: the automatic mask generator, masks with SA-1B's annotation fields."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from .. import errors
from ..auth import Tenant
from ..dependencies import EngineDep, SettingsDep
from ..inputs import read_request, resolve_image
from ..mask_encoding import encode_masks
from ..openapi import problem_responses, request_body
from ..schemas import EverythingForm, EverythingRequest, EverythingResponse
from model_core.automatic_mask_generator import crop_boxes
from model_core.mask_ops import decode_rle

router = APIRouter(prefix="/v1", tags=["segment"])


def annotations_payload(records: list[dict], mask_format: str) -> list[dict]:
    """The generator's coco_rle records with the segmentation re-encoded when another format is asked for."""
    if mask_format != "rle":
        for rec in records:
            rec["segmentation"] = encode_masks(decode_rle(rec["segmentation"])[None], mask_format)[0]
    return records


@router.post(
    "/segment/everything",
    response_model=EverythingResponse,
    responses=problem_responses(400, 401, 404, 413, 415, 422, 503),
    openapi_extra=request_body(EverythingRequest, EverythingForm),
    summary="Segment everything in an image",
)
async def everything(request: Request, settings: SettingsDep, engine: EngineDep, tenant: Tenant) -> JSONResponse:
    """Prompts the model with a grid of points and keeps the good, distinct masks (Meta's
    SAM2AutomaticMaskGenerator parameters). With `crop_n_layers` 0 an `image_id` works instead of the image."""
    body, image_bytes = await read_request(request, EverythingRequest, settings)
    if body.points_per_side > settings.max_points_per_side:
        raise errors.invalid_prompt(
            f"points_per_side {body.points_per_side} is over the limit of {settings.max_points_per_side}")
    if body.crop_n_layers > settings.max_crop_layers:
        raise errors.invalid_prompt(
            f"crop_n_layers {body.crop_n_layers} is over the limit of {settings.max_crop_layers}")
    if body.crop_n_layers > 0 and body.image_id is not None:
        raise errors.invalid_prompt("crop_n_layers > 0 encodes crops of the image: send the image, not an image_id")
    image = await resolve_image(engine, settings, tenant, image_bytes, body.image_id, keep_rgb=body.crop_n_layers > 0)
    boxes, _ = crop_boxes(image.orig_hw, body.crop_n_layers, body.crop_overlap_ratio)
    if any(x1 <= x0 or y1 <= y0 for x0, y0, x1, y1 in boxes):
        h, w = image.orig_hw
        raise errors.invalid_prompt(f"a {w}x{h} image is too small for crop_n_layers {body.crop_n_layers}: "
                                    "some crops would be empty")
    records = await engine.everything(image, tenant, body.amg_params())
    h, w = image.orig_hw

    def respond() -> JSONResponse:  # mask encoding and JSON rendering, off the event loop
        return JSONResponse({"image_id": image.image_id, "width": w, "height": h, "model": engine.model.cfg.name,
                             "annotations": annotations_payload(records, body.mask_format)})

    return await run_in_threadpool(respond)
