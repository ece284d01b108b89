"""Reading a request: JSON or multipart body -> validated model and image bytes; then the image to work on.

Everything heavy (base64, hashing, decoding, resizing) runs in the thread pool, never on the event loop.
"""

from __future__ import annotations

import asyncio
import json
from typing import TypeVar

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from . import errors, image_io
from .engine import Engine, ImageInput
from .settings import Settings

M = TypeVar("M", bound=BaseModel)

JSON_TYPES = ("application/json",)
FORM_TYPE = "multipart/form-data"


def parse_json(raw: bytes | str, settings: Settings, what: str = "the body"):
    """JSON text -> Python data, its size of structure bounded before parsing: 413 for too many objects and arrays,
    400 for nesting too deep for the parser."""
    text = raw.encode("utf-8", "replace") if isinstance(raw, str) else raw
    containers = text.count(b"{") + text.count(b"[")  # an upper bound (brackets inside strings count too)
    if containers > settings.max_json_containers:
        raise errors.too_complex(f"{what} holds up to {containers} JSON objects and arrays, over the limit of "
                                 f"{settings.max_json_containers} (SAM2_MAX_JSON_CONTAINERS)")
    try:
        return json.loads(raw)
    except RecursionError:
        raise errors.bad_request(f"{what} is JSON nested too deeply") from None


def _validate(model: type[M], data: dict, strict: bool = False) -> M:
    """`strict` for JSON bodies (true is not 1, "8" is not 8); multipart fields are text, so they convert."""
    try:
        return model.model_validate(data, strict=strict)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False, include_context=False)) from None


async def read_request(
    request: Request, model: type[M], settings: Settings, json_fields: tuple[str, ...] = ()
) -> tuple[M, bytes | None]:
    """The body as `model` plus the image bytes if an image was sent (base64 in JSON, or a file part).

    In multipart bodies the fields named in `json_fields` hold JSON text (e.g. `objects`).
    """
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype in JSON_TYPES or ctype.endswith("+json"):
        raw = await request.body()

        def parse() -> tuple[M, bytes | None]:  # megabytes of JSON and base64: off the event loop
            try:
                data = parse_json(raw, settings)
            except (ValueError, UnicodeDecodeError):
                raise errors.bad_request("the body is not valid JSON") from None
            if not isinstance(data, dict):
                raise errors.bad_request("the JSON body must be an object")
            body = _validate(model, data, strict=True)
            image = getattr(body, "image", None)
            return body, (None if image is None else image_io.decode_base64(image, settings.max_image_bytes))

        return await run_in_threadpool(parse)
    if ctype == FORM_TYPE:
        return await _read_form(request, model, settings, json_fields)
    raise errors.unsupported_media(
        f"send the request as application/json or multipart/form-data, not {ctype or 'no content type'}"
    )


async def _read_form(
    request: Request, model: type[M], settings: Settings, json_fields: tuple[str, ...]
) -> tuple[M, bytes | None]:
    try:
        form = await request.form(max_files=1 + len(json_fields), max_fields=32,
                                  max_part_size=settings.max_request_bytes)
    except HTTPException as exc:
        raise errors.bad_request(f"malformed multipart body: {exc.detail}") from None
    data: dict = {}
    image: bytes | None = None
    try:
        for name, value in form.multi_items():
            if name in data or (name == "image" and image is not None):
                raise errors.bad_request(f"field {name!r} is given more than once")
            if name == "image":
                if not isinstance(value, UploadFile):
                    raise errors.bad_request("`image` must be a file part (curl -F image=@photo.jpg)")
                image = await value.read()
                continue
            if isinstance(value, UploadFile):
                value = (await value.read()).decode("utf-8", errors="replace")
            if name in json_fields:
                try:
                    value = parse_json(value, settings, f"field {name!r}")
                except ValueError:
                    raise errors.bad_request(f"field {name!r} must hold JSON") from None
            data[name] = value
    finally:
        await form.close()
    if not data and image is None:
        raise errors.bad_request("malformed multipart body: no parts found (is the boundary right?)")
    return _validate(model, data), image


def checked_content_id(image_bytes: bytes, settings: Settings) -> str:
    """The limits checked from the header (no decoding), then the image_id of the bytes."""
    image_io.check_limits(image_bytes, settings.max_image_bytes, settings.max_image_pixels)
    return image_io.content_id(image_bytes)


async def resolve_image(
    engine: Engine,
    settings: Settings,
    tenant: str,
    image_bytes: bytes | None,
    image_id: str | None,
    keep_rgb: bool = False,
) -> ImageInput:
    """The image of a request: its cached features if any (uploaded bytes are looked up by content hash), else
    its decoded, preprocessed pixels. `keep_rgb` also keeps the pixels (for crops). 404 for an unknown image_id."""
    if (image_bytes is None) == (image_id is None):
        raise RequestValidationError(
            [{"loc": ("body", "image"), "msg": "give exactly one of `image` (the file) or `image_id`",
              "type": "value_error"}]
        )
    if image_id is not None:
        entry = engine.lookup(tenant, image_id)
        if entry is None:
            raise errors.image_not_found(image_id)
        return ImageInput(image_id, entry.orig_hw, cached=entry)
    sha = await run_in_threadpool(checked_content_id, image_bytes, settings)
    entry = engine.lookup(tenant, sha)
    if entry is not None and not keep_rgb:
        return ImageInput(sha, entry.orig_hw, cached=entry, content_id=sha)

    def decode():
        rgb = image_io.decode_image(image_bytes, settings.max_image_bytes, settings.max_image_pixels)
        return rgb, (engine.encoder_input(rgb) if entry is None else None)

    rgb, pixels = await run_in_threadpool(decode)
    return ImageInput(sha, rgb.shape[:2], cached=entry, pixels=pixels, rgb=rgb if keep_rgb else None, content_id=sha)


class BodyLimitMiddleware:
    """413 for bodies over `max_bytes`: from Content-Length before reading, or while streaming without one."""

    def __init__(self, app: ASGIApp, max_bytes: int, count_error=lambda kind: None,
                 read_timeout: float | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.count_error = count_error
        self.read_timeout = read_timeout  # a body that pauses longer between reads is answered 408

    def _problem(self) -> errors.Problem:
        return errors.too_large(
            f"the request body is over the limit of {self.max_bytes} bytes (an image of at most "
            f"SAM2_MAX_IMAGE_BYTES, base64 or form-encoded)"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = 0
                if length > self.max_bytes:
                    problem = self._problem()
                    self.count_error(problem.kind)
                    await problem.response(scope.get("path"))(scope, receive, send)
                    return
        seen, done = 0, False

        async def limited_receive():
            nonlocal seen, done
            if done:  # the body is complete: waiting for a disconnect is not a slow body
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.read_timeout)
            except TimeoutError:
                raise errors.Problem(408, "body-timeout", "Request body too slow",
                                     f"no body data for {self.read_timeout:g} s (SAM2_BODY_TIMEOUT)",
                                     headers={"Connection": "close"}) from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                done = not message.get("more_body", False)
                if seen > self.max_bytes:
                    raise self._problem()
            return message

        await self.app(scope, limited_receive, send)
