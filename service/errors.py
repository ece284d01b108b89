"""RFC 9457 problem details: one exception type for every client mistake, and the handlers that render them."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .engine_errors import EngineError, NotReady, Overloaded, QueueTimeout

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:sam2-service:problem:"


class Problem(Exception):
    """A request that cannot be served, as an RFC 9457 problem: `kind` names it (the `type` URN and the metric)."""

    def __init__(
        self,
        status: int,
        kind: str,
        title: str,
        detail: str,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.status, self.kind, self.title, self.detail = status, kind, title, detail
        self.headers = headers or {}
        self.extensions = extensions

    def body(self, instance: str | None = None) -> dict[str, Any]:
        out = {"type": TYPE_PREFIX + self.kind, "title": self.title, "status": self.status, "detail": self.detail}
        if instance:
            out["instance"] = instance
        out.update(self.extensions)
        return out

    def response(self, instance: str | None = None) -> JSONResponse:
        return JSONResponse(self.body(instance), self.status, headers=self.headers, media_type=PROBLEM_MEDIA_TYPE)


# ---- the problems of this service, one constructor each -------------------------------------------------


def bad_image(detail: str) -> Problem:
    return Problem(400, "image-undecodable", "Image cannot be decoded", detail)


def bad_request(detail: str) -> Problem:
    return Problem(400, "bad-request", "Malformed request", detail)


def unauthorized(detail: str) -> Problem:
    return Problem(401, "unauthorized", "Missing or invalid API key", detail, headers={"WWW-Authenticate": "Bearer"})


def image_not_found(image_id: str) -> Problem:
    return Problem(
        404, "image-id-unknown", "Unknown image_id",
        f"no cached embedding for image_id {image_id!r} (never sent, or evicted): send the image again",
    )


def too_large(detail: str) -> Problem:
    return Problem(413, "image-too-large", "Image too large", detail)


def too_complex(detail: str) -> Problem:
    return Problem(413, "too-complex", "Request too complex", detail)


def unsupported_media(detail: str) -> Problem:
    return Problem(415, "unsupported-media-type", "Unsupported media type", detail)


def invalid_prompt(detail: str) -> Problem:
    return Problem(422, "invalid-prompt", "Invalid prompt", detail)


def overloaded(detail: str, retry_after: int) -> Problem:
    return Problem(503, "overloaded", "Service overloaded", detail, headers={"Retry-After": str(retry_after)})


def queue_timeout(detail: str, retry_after: int) -> Problem:
    return Problem(503, "queue-timeout", "Timed out waiting for the model", detail,
                   headers={"Retry-After": str(retry_after)})


def not_ready(detail: str, retry_after: int) -> Problem:
    return Problem(503, "not-ready", "Model not ready", detail, headers={"Retry-After": str(retry_after)})


def engine_problem(exc: EngineError) -> Problem:
    """The problem+json form of an engine's refusal."""
    make = {NotReady: not_ready, Overloaded: overloaded, QueueTimeout: queue_timeout}.get(type(exc))
    if make is None:
        return Problem(503, exc.kind, "Model unavailable", exc.detail, headers={"Retry-After": str(exc.retry_after)})
    return make(exc.detail, exc.retry_after)


# ---- rendering -------------------------------------------------------------------------------------------


def _loc(loc: tuple) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
    return ".".join(parts) or "body"


def validation_problem(errors: list[dict]) -> Problem:
    """Pydantic's errors as one 422 problem: a readable `detail` and the raw list under `errors`."""
    msgs = []
    for err in errors[:10]:
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        msgs.append(f"{_loc(tuple(err.get('loc', ())))}: {msg}")
    more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
    clean = [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
             for e in errors]
    return Problem(422, "validation", "Request validation failed", "; ".join(msgs) + more, errors=clean)


class CrashGuardMiddleware:
    """Answers an exception that escaped every handler with a 500 problem and keeps it inside the app, so the
    server does not reset the keep-alive connection (Starlette's outer handler re-raises)."""

    def __init__(self, app, count_error=lambda kind: None) -> None:
        self.app, self.count_error = app, count_error

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:  # noqa: BLE001 - ours to log; the client gets a plain 500
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            self.count_error("internal")
            if not started:
                problem = Problem(500, "internal", "Internal server error", "the server failed; see its log")
                await problem.response(scope.get("path"))(scope, receive, send)


def install_error_handlers(app: FastAPI, count_error) -> None:
    """Render Problems, validation errors, HTTP errors and crashes as problem+json; `count_error(kind)` counts them."""

    def answer(request: Request, problem: Problem) -> JSONResponse:
        """A client's mistake (or our refusal): one INFO line, no traceback; ERROR is kept for our own failures."""
        count_error(problem.kind)
        log.info("%s %s -> %d %s: %s", request.method, request.url.path, problem.status, problem.kind,
                 problem.detail[:200])
        return problem.response(request.url.path)

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return answer(request, exc)

    @app.exception_handler(EngineError)
    async def _engine(request: Request, exc: EngineError) -> JSONResponse:
        return answer(request, engine_problem(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return answer(request, validation_problem(list(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, f"http-{exc.status_code}")
        title = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, "HTTP error")
        problem = Problem(exc.status_code, kind, title, str(exc.detail), headers=dict(exc.headers or {}))
        count_error(kind)
        return problem.response(request.url.path)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        count_error("internal")
        return Problem(500, "internal", "Internal server error", "the server failed; see its log").response(
            request.url.path
        )
