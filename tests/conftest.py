"""Settings every test process needs before any test module imports a library that reads them."""

import os
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
