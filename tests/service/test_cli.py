"""`sam2-service serve`: flags become settings; bad ones stop it before anything starts."""

from __future__ import annotations

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
