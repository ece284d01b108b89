"""The page's routes, in-process (no browser): served at / and /demo, off with SAM2_DEMO=false, packaged."""

from __future__ import annotations

import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings

REPO = Path(__file__).resolve().parents[2]
WEB = REPO / "service" / "web"


class NoEngine:
    """Enough of an Engine for routes that never touch the model."""

    ready = False
    error = None
    metrics = None

    def start(self) -> None:
        pass


@pytest.fixture
def client_for():
    def make(**settings):
        from service.metrics import Metrics

        engine = NoEngine()
        engine.metrics = Metrics()
        return TestClient(create_app(Settings(**settings), engine=engine))
    return make


def test_page_served_at_root_and_demo(client_for):
    with client_for() as c:
        for path in ("/", "/demo"):
            r = c.get(path)
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
            assert '<script type="module" src="demo/static/app.js">' in r.text
            assert "script-src 'self'" in r.headers["content-security-policy"]
        for name in ("app.js", "style.css", "rle.js", "example.jpg"):
            assert c.get(f"/demo/static/{name}").status_code == 200
        assert c.get("/demo/static/app.js").headers["content-type"].startswith("text/javascript")
        assert c.get("/demo/static/nope.js").status_code == 404
        assert c.get("/demo/static/..%2Fapp.py").status_code == 404
        assert "/" not in c.get("/openapi.json").json()["paths"], "the page is not an API route"


def test_demo_false_turns_the_page_off(client_for):
    with client_for(demo=False) as c:
        assert c.get("/").status_code == 404
        assert c.get("/demo").status_code == 404
        assert c.get("/demo/static/app.js").status_code == 404


def test_every_file_of_the_page_is_package_data():
    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["service"]
    for f in WEB.iterdir():
        assert any(fnmatch(f"web/{f.name}", g) for g in globs), f"{f.name} would be missing from the wheel"
