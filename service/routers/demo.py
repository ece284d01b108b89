"""GET / and /demo: the web page (service/web: plain HTML, CSS and JavaScript modules, no build step, no CDN).

The page is public (it holds nothing secret); the API calls it makes carry the key the user types in.
`SAM2_DEMO=false` leaves these routes out.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response

from .. import errors

router = APIRouter(include_in_schema=False)

_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml", ".jpg": "image/jpeg",
          ".png": "image/png"}
# Everything the page loads comes from this server; frames and masks stay in blob:/data: URLs.
_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
        "media-src 'self' blob: mediastream:; connect-src 'self' ws: wss:; object-src 'none'; base-uri 'self'; "
        "frame-ancestors 'none'")
_HEADERS = {"Cache-Control": "no-cache", "Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer"}


@lru_cache(maxsize=None)
def _asset(name: str) -> tuple[bytes, str] | None:
    """The bytes and media type of a file of the page (read once from the installed package), or None."""
    suffix = name[name.rfind("."):] if "." in name else ""
    if "/" in name or "\\" in name or name.startswith(".") or suffix not in _TYPES:
        return None
    path = resources.files("service").joinpath("web", name)
    if not path.is_file():
        return None
    return path.read_bytes(), _TYPES[suffix]


def _serve(name: str) -> Response:
    found = _asset(name)
    if found is None:
        raise errors.Problem(404, "not-found", "Not found", f"the page has no file {name!r}")
    body, media_type = found
    return Response(body, media_type=media_type, headers=_HEADERS)


@router.get("/")
async def index() -> Response:
    return _serve("index.html")


@router.get("/demo")
async def demo() -> Response:
    return _serve("index.html")


@router.get("/demo/")
async def demo_slash() -> RedirectResponse:
    return RedirectResponse("../demo", status_code=308)


@router.get("/demo/static/{name}")
async def asset(name: str) -> Response:
    return _serve(name)
