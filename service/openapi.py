"""OpenAPI helpers: routes that take JSON or multipart on one path, and RFC 9457 error responses."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from .errors import PROBLEM_MEDIA_TYPE

REF = "#/components/schemas/{model}"


def request_body(json_model: type[BaseModel], form_model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` for a route that reads its body itself, as JSON or as multipart/form-data."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": REF.format(model=json_model.__name__)}},
                "multipart/form-data": {"schema": {"$ref": REF.format(model=form_model.__name__)}},
            },
        }
    }


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """Error responses documented as problem+json."""
    return {
        s: {"description": DESCRIPTIONS.get(s, "error"),
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": REF.format(model="ProblemDetails")}}}}
        for s in statuses
    }


DESCRIPTIONS = {
    400: "undecodable image, bad base64 or malformed body",
    401: "missing or invalid API key",
    404: "unknown image_id",
    413: "image over the byte or pixel limit",
    415: "unsupported body or image format",
    422: "invalid prompt or parameters",
    503: "overloaded, timed out in the queue, or not ready (see Retry-After)",
}


def install_openapi(app: FastAPI, models: list[type[BaseModel]]) -> None:
    """Add the schemas of `models` (bodies that routes parse themselves) to the generated document."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes,
        )
        _, defs = models_json_schema([(m, "validation") for m in models], ref_template=REF)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for name, definition in defs.get("$defs", {}).items():
            components.setdefault(name, definition)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi
