"""POST /v1/segment: an image and prompts for one or more objects in, masks out."""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from .. import prompts
from ..auth import Tenant
from ..dependencies import EngineDep, SettingsDep
from ..engine import ObjectMasks
from ..inputs import read_request, resolve_image
from ..mask_encoding import encode_masks
from ..openapi import problem_responses, request_body
from ..schemas import SegmentForm, SegmentRequest, SegmentResponse

router = APIRouter(prefix="/v1", tags=["segment"])


def object_payload(result: ObjectMasks, mask_format: str) -> dict:
    """One object's masks, best score first, in the requested format."""
    order = np.argsort(-result.ious, kind="stable")
    return {
        "masks": encode_masks(result.masks[order], mask_format),
        "scores": [float(v) for v in result.ious[order]],  # the wire name of the predicted IoU
        "boxes": [[float(v) for v in b] for b in result.boxes[order]],
    }


@router.post(
    "/segment",
    response_model=SegmentResponse,
    responses=problem_responses(400, 401, 404, 413, 415, 422, 503),
    openapi_extra=request_body(SegmentRequest, SegmentForm),
    summary="Segment objects from points, boxes or masks",
)
async def segment(request: Request, settings: SettingsDep, engine: EngineDep, tenant: Tenant) -> JSONResponse:
    """Masks for each object's prompts. Send the image as JSON base64 or a multipart file, or the `image_id` of an
    earlier call (its embedding is reused: no encoder run). Objects with the same prompt shape share a decoder
    call. The response's `image_id` names the cached embedding for follow-up clicks."""
    body, image_bytes = await read_request(request, SegmentRequest, settings, json_fields=("objects",))
    prompts.check_limits(body.objects, settings)
    image = await resolve_image(engine, settings, tenant, image_bytes, body.image_id)
    groups = await run_in_threadpool(prompts.build_groups, body.objects, image.orig_hw, engine.mask_input_size)
    results = await engine.segment(image, tenant, groups, body.multimask_output)
    h, w = image.orig_hw

    def respond() -> JSONResponse:  # mask encoding and JSON rendering, off the event loop
        objects = [object_payload(r, body.mask_format) for r in results]
        return JSONResponse({"image_id": image.image_id, "width": w, "height": h, "model": engine.model.cfg.name,
                             "objects": objects})

    return await run_in_threadpool(respond)
