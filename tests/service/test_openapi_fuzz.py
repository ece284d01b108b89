"""Schemathesis against the OpenAPI document, in-process: no generated request may cause a 500."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from model_core import build_model
from service.app import create_app
from service.engine import Engine

from .conftest import make_settings

_engine = Engine(make_settings(max_image_pixels=256 * 256), model=build_model("sam2.1_t", weights="random",
                                                                             image_size=64))
app = create_app(_engine.settings, _engine)
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.fixture(scope="module", autouse=True)
def running():
    _engine.start()
    assert _engine.wait_ready(60)
    yield
    _engine.stop()


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case):
    case.call_and_validate(checks=[not_a_server_error])
