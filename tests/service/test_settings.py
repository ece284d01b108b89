"""Settings come from SAM2_* environment variables (pydantic-settings), with the documented defaults."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from service.metrics import Metrics
from service.model_work import ModelWork
from service.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_defaults_serve_locally_without_auth(monkeypatch):
    for name in list(__import__("os").environ):
        if name.startswith("SAM2_"):
            monkeypatch.delenv(name)
    s = Settings()
    assert (s.model, s.host, s.port, s.api_keys, s.max_batch) == ("sam2.1_t", "127.0.0.1", 8000, [], None)


def test_environment_overrides(monkeypatch):
    monkeypatch.setenv("SAM2_MAX_BATCH", "4")
    monkeypatch.setenv("SAM2_WEIGHTS", "random")
    monkeypatch.setenv("SAM2_DEVICE", "")
    s = Settings()
    assert (s.max_batch, s.weights, s.device) == (4, "random", None)


def test_invalid_values_are_refused(monkeypatch):
    monkeypatch.setenv("SAM2_MAX_BATCH", "0")
    with pytest.raises(ValidationError):
        Settings()


def test_every_setting_is_in_the_readme_table():
    text = README.read_text()
    for name in Settings.model_fields:
        assert re.search(rf"^\| `SAM2_{name.upper()}` \|", text, re.M), f"SAM2_{name.upper()} missing from README"


@pytest.mark.parametrize("name, value, message", [
    ("SAM2_MODEL", "sam3_t", "unknown model name"),
    ("SAM2_DTYPE", "fp8", "unknown dtype"),
    ("SAM2_DEVICE", "gpu0", "not a torch device"),
    ("SAM2_IMAGE_SIZE", "500", "multiple of 32"),
])
def test_model_settings_are_checked_at_start_up(monkeypatch, name, value, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=message):
        Settings()


@pytest.mark.parametrize("value, device", [("cpu", "cpu"), (" CPU ", "cpu"), ("cuda:1", "cuda:1"), ("0", "cuda:0")])
def test_the_device_setting_is_read_as_model_core_reads_devices(value, device):
    """SAM2_DEVICE takes what every model_core entry point takes (Ultralytics' GPU index too), and the engine's
    model goes where model_core puts it."""
    work = ModelWork(Settings(weights="random", dtype="fp32", device=value), None, Metrics())
    assert work.device == torch.device(device)
