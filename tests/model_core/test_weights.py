"""Downloading official checkpoints, exercised against an HTTP server on 127.0.0.1."""

import hashlib
import http.server
import threading

import pytest
import torch

from model_core import build_model
from model_core.weights import CheckpointError, resolve_checkpoint
from tests.reference import build_reference


class _Files(http.server.BaseHTTPRequestHandler):
    """Serves bytes from `files`; `lie_about_length` announces more bytes than it sends (a cut connection)."""

    files: dict[str, bytes] = {}
    lie_about_length: set[str] = set()

    def do_GET(self):
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        extra = 1000 if self.path in self.lie_about_length else 0
        self.send_header("Content-Length", str(len(body) + extra))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", _Files
    httpd.shutdown()


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp("src") / "sam2.1_hiera_tiny.pt"
    torch.save({"model": build_reference("sam2.1_hiera_tiny", image_size=256).state_dict()}, path)
    return path.read_bytes()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SAM2_WEIGHTS_DIR", str(tmp_path / "weights"))
    return tmp_path / "weights"


def test_first_use_downloads_verifies_and_caches(server, checkpoint_bytes, cache):
    base, files = server
    files.files["/ok.pt"] = checkpoint_bytes
    sha = hashlib.sha256(checkpoint_bytes).hexdigest()
    path = resolve_checkpoint("sam2.1_t", url=base + "/ok.pt", sha256=sha, progress=False)
    assert path == cache / "sam2.1_hiera_tiny.pt"
    assert path.read_bytes() == checkpoint_bytes
    # second use: served from the cache, the URL is not asked again
    del files.files["/ok.pt"]
    assert resolve_checkpoint("sam2.1_t", url=base + "/ok.pt", progress=False) == path
    model = build_model("sam2.1_t", image_size=256)  # weights=None resolves through the same cache
    assert not model.random_weights


def test_sha256_mismatch_is_refused_and_leaves_nothing(server, checkpoint_bytes, cache):
    base, files = server
    files.files["/tampered.pt"] = checkpoint_bytes
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        resolve_checkpoint("sam2.1_t", url=base + "/tampered.pt", sha256="0" * 64, progress=False)
    assert list(cache.iterdir()) == []


def test_truncated_download_is_refused_and_leaves_nothing(server, checkpoint_bytes, cache):
    base, files = server
    files.files["/cut.pt"] = checkpoint_bytes[: len(checkpoint_bytes) // 2]
    files.lie_about_length.add("/cut.pt")
    with pytest.raises(CheckpointError):
        resolve_checkpoint("sam2.1_t", url=base + "/cut.pt", progress=False)
    assert list(cache.iterdir()) == []


def test_corrupt_archive_is_refused_without_a_hash(server, checkpoint_bytes, cache):
    base, files = server
    corrupt = bytearray(checkpoint_bytes)
    corrupt[len(corrupt) // 2 : len(corrupt) // 2 + 64] = b"\x00" * 64  # damage a tensor record
    files.files["/corrupt.pt"] = bytes(corrupt)
    with pytest.raises(CheckpointError, match="corrupt"):
        resolve_checkpoint("sam2.1_t", url=base + "/corrupt.pt", progress=False)
    assert list(cache.iterdir()) == []


def test_missing_file_on_the_server_is_a_clear_error(server, cache):
    base, _ = server
    with pytest.raises(CheckpointError, match="404"):
        resolve_checkpoint("sam2.1_t", url=base + "/nope.pt", progress=False)
    assert list(cache.iterdir()) == []


def test_random_weights_are_seeded_and_labelled(caplog):
    a = build_model("sam2.1_t", weights="random", image_size=256)
    b = build_model("sam2.1_t", weights="random", image_size=256)
    assert a.random_weights
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert "RANDOM, UNTRAINED" in caplog.text
