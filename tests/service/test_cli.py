"""`sam2-service serve`: flags become settings; bad ones stop it before anything starts."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import threading

import pytest
import torch

from service.cli import build_parser, main


def test_serve_flags_parse():
    args = build_parser().parse_args(["serve", "--model", "sam2.1_s", "--weights", "random", "--device", "cpu",
                                      "--dtype", "bf16", "--host", "0.0.0.0", "--port", "9000", "--image-size", "512"])
    assert (args.model, args.weights, args.device, args.dtype, args.host, args.port, args.image_size) == (
        "sam2.1_s", "random", "cpu", "bf16", "0.0.0.0", 9000, 512)


def test_serve_refuses_invalid_settings(capsys, monkeypatch):
    monkeypatch.setattr("uvicorn.run", lambda *a, **k: (_ for _ in ()).throw(AssertionError("server started")))
    assert main(["serve", "--weights", "random", "--dtype", "fp8"]) == 2
    assert "unknown dtype" in capsys.readouterr().err


def test_segment_still_works_without_a_server(tmp_path):
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "docs" / "example.jpg"
    rc = main(["segment", str(example), "--point", "330,170", "--weights", "random", "--image-size", "128",
               "--out-dir", str(tmp_path)])
    assert rc == 0
    assert (tmp_path / "example_mask.png").stat().st_size > 0 and (tmp_path / "example_overlay.png").exists()


# ---- fetch-weights: the chart's seeding init container ------------------------------------------------

@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A checkpoint mirror on 127.0.0.1 serving one small torch archive; SAM2_WEIGHTS_* point at it and tmp_path."""
    body = io.BytesIO()
    torch.save({"model": {"w": torch.zeros(4)}}, body)
    data = body.getvalue()

    class Files(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Files)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    for name in [n for n in os.environ if n.startswith("SAM2_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("SAM2_WEIGHTS_URL", f"http://127.0.0.1:{httpd.server_address[1]}/sam2.1_hiera_tiny.pt")
    monkeypatch.setenv("SAM2_WEIGHTS_DIR", str(tmp_path / "weights"))
    yield data, tmp_path / "weights" / "sam2.1_hiera_tiny.pt"
    httpd.shutdown()


def test_fetch_weights_downloads_the_checkpoint_with_its_pinned_sha256(mirror, monkeypatch, capsys):
    data, dest = mirror
    monkeypatch.setenv("SAM2_WEIGHTS_SHA256", hashlib.sha256(data).hexdigest().upper())
    assert main(["fetch-weights", "--model", "sam2.1_t"]) == 0
    assert dest.read_bytes() == data and capsys.readouterr().out.strip() == str(dest)


def test_fetch_weights_refuses_a_mirror_serving_another_file(mirror, monkeypatch, capsys):
    _, dest = mirror
    monkeypatch.setenv("SAM2_WEIGHTS_SHA256", "0" * 64)
    assert main(["fetch-weights", "--model", "sam2.1_t"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: sha256 mismatch") and err.count("\n") == 1 and not dest.exists()


def test_fetch_weights_checks_a_file_already_in_place(mirror, monkeypatch, capsys):
    data, dest = mirror
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"not the checkpoint")
    monkeypatch.setenv("SAM2_WEIGHTS_SHA256", hashlib.sha256(data).hexdigest())
    assert main(["fetch-weights", "--model", "sam2.1_t"]) == 1
    assert "delete it to download again" in capsys.readouterr().err


def test_the_service_download_is_checked_against_the_sha256_setting(mirror, monkeypatch):
    """SAM2_WEIGHTS_SHA256 reaches build_model: a mirror serving another file is refused before loading."""
    from service.engine import Engine
    from service.settings import Settings

    monkeypatch.setenv("SAM2_WEIGHTS_SHA256", "0" * 64)
    engine = Engine(Settings(model="sam2.1_t", device="cpu", image_size=128)).start()
    try:
        assert not engine.wait_ready(60)
        assert "sha256 mismatch" in str(engine.error)
    finally:
        engine.stop()


def test_weights_sha256_setting_must_be_a_digest():
    from pydantic import ValidationError

    from service.settings import Settings

    with pytest.raises(ValidationError, match="SAM2_WEIGHTS_SHA256"):
        Settings(weights_sha256="sam2.1_hiera_large.pt")
    assert Settings(weights_sha256="").weights_sha256 is None


def test_cli_commands_on_cuda_use_the_services_attention_kernels(monkeypatch):
    """segment / track / annotate own their process, as serve does: on CUDA they leave cuDNN's attention out
    (SAM2_CUDNN_ATTENTION, default off), and on a CPU they change nothing. (Only the flag: no GPU here.)"""
    import torch

    from service.cli import use_service_attention

    before = torch.backends.cuda.cudnn_sdp_enabled()
    try:
        torch.backends.cuda.enable_cudnn_sdp(True)
        use_service_attention("cpu")
        assert torch.backends.cuda.cudnn_sdp_enabled()
        use_service_attention("cuda:0")
        assert not torch.backends.cuda.cudnn_sdp_enabled()
        monkeypatch.setenv("SAM2_CUDNN_ATTENTION", "true")
        use_service_attention(torch.device("cuda"))
        assert torch.backends.cuda.cudnn_sdp_enabled()
        monkeypatch.setenv("SAM2_CUDNN_ATTENTION", "maybe")
        with pytest.raises(SystemExit, match="neither true nor false"):
            use_service_attention("cuda")
    finally:
        torch.backends.cuda.enable_cudnn_sdp(before)
