"""POST /v1/embed: encode an image once and cache its embedding under an image_id."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool

from .. import image_io
from ..auth import Tenant
from ..dependencies import EngineDep, SettingsDep
from ..engine import ImageInput
from ..inputs import checked_content_id, read_request
from ..openapi import problem_responses, request_body
from ..schemas import EmbedForm, EmbedRequest, EmbedResponse

router = APIRouter(prefix="/v1", tags=["embed"])


@router.post(
    "/embed",
    response_model=EmbedResponse,
    responses=problem_responses(400, 401, 413, 415, 422, 503),
    openapi_extra=request_body(EmbedRequest, EmbedForm),
    summary="Compute and cache an image's embedding",
)
async def embed(request: Request, settings: SettingsDep, engine: EngineDep, tenant: Tenant) -> EmbedResponse:
    """Runs the image encoder (unless this image is cached already) and returns the `image_id` that later
    /v1/segment and /v1/segment/everything calls can send instead of the image. The id is the sha256 of the
    file's bytes, or the `image_id` you give."""
    body, image_bytes = await read_request(request, EmbedRequest, settings)
    if image_bytes is None:
        raise RequestValidationError([{"loc": ("body", "image"), "msg": "/v1/embed needs the image",
                                       "type": "missing"}])
    sha = await run_in_threadpool(checked_content_id, image_bytes, settings)
    name = body.image_id or sha
    entry = engine.lookup(tenant, sha)
    cached = entry is not None
    if entry is None:
        def decode():
            rgb = image_io.decode_image(image_bytes, settings.max_image_bytes, settings.max_image_pixels)
            return rgb.shape[:2], engine.encoder_input(rgb)

        hw, pixels = await run_in_threadpool(decode)
        entry = await engine.embed(ImageInput(name, hw, pixels=pixels, content_id=sha), tenant)
    elif name != sha:
        engine.remember(tenant, name, entry)
    h, w = entry.orig_hw
    return EmbedResponse(image_id=name, width=w, height=h, model=engine.model.cfg.name, cached=cached,
                         embedding_bytes=entry.nbytes)
