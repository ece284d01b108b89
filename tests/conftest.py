"""Settings every test process needs before any test module imports a library that reads them."""

import os
import tempfile

# Ultralytics (the `annotate` extra) checks for internet at import time unless told it is offline, and keeps its
# settings file in the user's config folder: neither belongs in a test run.
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_CONFIG_DIR", os.path.join(tempfile.gettempdir(), "sam2-service-tests-ultralytics"))
