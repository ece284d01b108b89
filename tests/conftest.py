"""Settings every test process needs before any test module imports a library that reads them."""

import os
import sys
import tempfile

import cv2
import numpy as np
import pytest

# Ultralytics (the `annotate` extra) checks for internet at import time unless told it is offline, and keeps its
# settings file in the user's config folder: neither belongs in a test run.
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_CONFIG_DIR", os.path.join(tempfile.gettempdir(), "sam2-service-tests-ultralytics"))


@pytest.fixture(autouse=True)
def _process_settings_unchanged():
    """Importing Ultralytics turns OpenCV's threads off and sets numpy's print format for the whole process:
    undo that after the test that imported it, so the tests after it run as they would alone."""
    threads, print_options = cv2.getNumThreads(), np.get_printoptions()
    yield
    cv2.setNumThreads(threads)
    np.set_printoptions(**print_options)


def _autograd_modes_changed() -> str | None:
    """torch's autograd modes that differ from the defaults, in words; None if none does (or torch is not imported,
    so nothing can have changed them: this never imports it)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    changed = []
    if not torch.is_grad_enabled():
        changed.append("grad mode disabled (torch.is_grad_enabled() is False)")
    if torch.is_inference_mode_enabled():
        changed.append("inference mode enabled (torch.is_inference_mode_enabled() is True)")
    return " and ".join(changed) or None


@pytest.fixture(autouse=True)
def _autograd_modes_unchanged():
    """Grad and inference mode are global to the thread: one set at import time, by a wider-scoped fixture or left
    by a test makes the tests after it depend on the order. Set them inside a test (`with torch.no_grad():`) or in
    a function-scoped fixture. Grad mode is turned back on after a failure, so that only the culprit fails."""
    before = _autograd_modes_changed()
    if before is not None:
        sys.modules["torch"].set_grad_enabled(True)
        pytest.fail(f"torch {before} before this test started: set at import time or by a module- or "
                    "session-scoped fixture", pytrace=False)
    yield
    after = _autograd_modes_changed()
    if after is not None:
        sys.modules["torch"].set_grad_enabled(True)
        pytest.fail(f"this test left torch {after}", pytrace=False)
