"""`sam2-service` command line: `serve` runs the HTTP service; `segment` (one image), `annotate` (a folder of
images) and `track` (a video, folder, camera or stream) run without a server."""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from pathlib import Path

import cv2
import numpy as np


def _pair(text: str) -> tuple[float, float]:
    try:
        x, y = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected X,Y, got {text!r}") from None
    return x, y


def _box(text: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError:
        vals = ()
    if len(vals) != 4:
        raise argparse.ArgumentTypeError(f"expected X0,Y0,X1,Y1, got {text!r}")
    return vals


def _click(text: str) -> tuple[float, float, int]:
    """X,Y or X,Y,LABEL (1 object, the default; 0 background)."""
    parts = text.split(",")
    try:
        if len(parts) not in (2, 3):
            raise ValueError
        x, y = float(parts[0]), float(parts[1])
        label = int(parts[2]) if len(parts) == 3 else 1
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected X,Y or X,Y,LABEL, got {text!r}") from None
    if label not in (0, 1):
        raise argparse.ArgumentTypeError(f"LABEL must be 1 (object) or 0 (background), got {text!r}")
    return x, y, label


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def overlay(image: np.ndarray, mask: np.ndarray, color=(30, 144, 255), alpha: float = 0.5) -> np.ndarray:
    """RGB image with the mask tinted and its outline drawn."""
    from model_core.mask_overlay import overlay_masks

    return overlay_masks(image, [mask], [color], alpha)


def use_service_attention(device) -> None:
    """On CUDA, the attention kernels `serve` uses (SAM2_CUDNN_ATTENTION, default off: PyTorch's flash and
    memory-efficient kernels, whose lower per-call CPU cost gave 1.7x tracking frames/s on an H200). Process-wide,
    so only for commands that own their process."""
    import os

    import torch
    from pydantic import TypeAdapter, ValidationError

    if torch.device(device).type == "cuda":
        value = os.environ.get("SAM2_CUDNN_ATTENTION", "false")
        try:
            torch.backends.cuda.enable_cudnn_sdp(TypeAdapter(bool).validate_python(value))
        except ValidationError:
            raise SystemExit(f"error: SAM2_CUDNN_ATTENTION={value!r} is neither true nor false") from None


def cmd_segment(args: argparse.Namespace) -> int:
    from model_core import build_model
    from model_core.image_predictor import ImagePredictor
    from model_core.precision import parse_dtype

    bgr = cv2.imread(str(args.image), cv2.IMREAD_COLOR)
    if bgr is None:
        print(f"error: cannot read image {args.image}", file=sys.stderr)
        return 2
    if not args.point and not args.box:
        print("error: give at least one --point X,Y or a --box X0,Y0,X1,Y1", file=sys.stderr)
        return 2
    image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    if args.weights == "random":
        print("WARNING: --weights random builds an UNTRAINED model; the mask is meaningless "
              "(a smoke run only).", file=sys.stderr)
    model = build_model(args.model, weights=args.weights, device=args.device, image_size=args.image_size)
    use_service_attention(model.device)
    predictor = ImagePredictor(model, dtype=parse_dtype(args.dtype))
    predictor.set_image(image)
    labels = args.label or [1] * len(args.point)
    if len(labels) != len(args.point):
        print("error: give one --label per --point (or none for all foreground)", file=sys.stderr)
        return 2
    masks, scores, _ = predictor.predict(
        point_coords=np.array(args.point) if args.point else None,
        point_labels=np.array(labels) if args.point else None,
        box=np.array(args.box) if args.box else None,
        multimask_output=len(args.point) <= 1 and not args.box,
    )
    best = int(np.argmax(scores))
    mask = masks[best] > 0
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(args.image).stem
    mask_path, overlay_path = out_dir / f"{stem}_mask.png", out_dir / f"{stem}_overlay.png"
    cv2.imwrite(str(mask_path), mask.astype(np.uint8) * 255)
    cv2.imwrite(str(overlay_path), cv2.cvtColor(overlay(image, mask), cv2.COLOR_RGB2BGR))
    print(f"score {scores[best]:.3f}, area {int(mask.sum())} px -> {mask_path}, {overlay_path}")
    return 0


def _track_prompts(args: argparse.Namespace) -> list:
    """`track`'s prompts: those of --prompts FILE, then --point/--box for --obj-id on --frame."""
    from model_core.track_prompts import PromptError, load_prompts, parse_prompt

    prompts = load_prompts(args.prompts) if args.prompts else []
    if args.point or args.box:
        entry = {"frame": args.frame or 0, "obj_id": 1 if args.obj_id is None else args.obj_id,
                 "points": [[x, y] for x, y, _ in args.point], "labels": [lab for _, _, lab in args.point]}
        if args.box:
            entry["box"] = list(args.box)
        prompts.append(parse_prompt(entry, "--point/--box"))
    elif args.frame is not None or args.obj_id is not None:
        raise PromptError("--frame and --obj-id go with --point or --box")
    if not prompts and not args.everything:
        raise PromptError("nothing to track: give --point X,Y[,LABEL] and/or --box X0,Y0,X1,Y1, "
                          "--prompts FILE.json, or --everything")
    return prompts


def cmd_track(args: argparse.Namespace) -> int:
    from contextlib import ExitStack

    from tqdm import tqdm

    from model_core import VideoTracker, build_model, get_config
    from model_core.mask_lines import MaskLinesWriter
    from model_core.mask_overlay import draw_tracks
    from model_core.precision import parse_dtype
    from model_core.track_prompts import PromptError
    from model_core.track_video import EverythingParams, track_video
    from model_core.video_io import VideoSourceError, open_stream
    from model_core.video_writers import Mp4Writer, pyav_h264_encoder
    from model_core.weights import CheckpointError

    try:  # everything that can be checked before the model loads
        prompts = _track_prompts(args)
        dtype = parse_dtype(args.dtype)
        get_config(args.model, args.image_size)
        if args.writer == "pyav" and not args.no_overlay and pyav_h264_encoder() is None:
            raise ValueError("--writer pyav: PyAV with an H.264 encoder is not installed "
                             "(pip install 'sam2-service[video]')")
        stream = open_stream(args.source)
    except ValueError as exc:  # PromptError and VideoSourceError among them
        print(f"error: {exc}", file=sys.stderr)
        return 2
    everything = None
    if args.everything:
        everything = EverythingParams(args.points_per_side, args.pred_iou_thresh, args.stability_score_thresh,
                                      args.box_nms_thresh, max_objects=args.max_objects)
    if args.weights == "random":
        print("WARNING: --weights random builds an UNTRAINED model; the masks are meaningless "
              "(a smoke run only).", file=sys.stderr)
    try:
        model = build_model(args.model, weights=args.weights, device=args.device, image_size=args.image_size)
    except CheckpointError as exc:
        stream.close()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    use_service_attention(model.device)
    tracker = VideoTracker(model, dtype=dtype)

    out_dir = Path(args.out_dir)
    masks_path = out_dir / f"{stream.name}_masks.jsonl"
    video_path = None if args.no_overlay else out_dir / f"{stream.name}_overlay.mp4"
    total = stream.num_frames if args.max_frames is None else min(stream.num_frames or args.max_frames, args.max_frames)
    frames, obj_ids, video, rc = 0, set(), None, 0
    with stream, ExitStack() as outputs:
        try:
            for tracked in tqdm(track_video(tracker, stream, prompts, everything, args.max_frames), total=total,
                                unit="frame", desc=stream.name, disable=args.no_progress):
                if frames == 0:  # outputs are created once the first frame is tracked (bad prompts leave none)
                    out_dir.mkdir(parents=True, exist_ok=True)
                    lines = outputs.enter_context(MaskLinesWriter(masks_path))
                    if video_path is not None:
                        video = outputs.enter_context(Mp4Writer(video_path, args.fps or stream.fps or 30.0,
                                                                args.writer))
                lines.write(tracked.result)
                if video is not None:
                    video.write(draw_tracks(tracked.image, tracked.result))
                frames += 1
                obj_ids.update(o.obj_id for o in tracked.result.objects)
        except (PromptError, VideoSourceError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            rc = 2
        except KeyboardInterrupt:
            print(f"interrupted: the outputs hold frames 0..{frames - 1}", file=sys.stderr)
            rc = 130
    if frames:
        written = f"{masks_path}" + (f", {video_path} ({video.codec}, {video.backend})" if video else "")
        print(f"{frames} frames, objects {sorted(obj_ids)} -> {written}")
    return rc


def _class_ids(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected class ids like 0,2, got {text!r}") from None


def cmd_annotate(args: argparse.Namespace) -> int:
    """Label a folder: detector (or box file) boxes prompt SAM 2; YOLO-seg label files or a COCO JSON."""
    from model_core.annotate import auto_annotate
    from model_core.annotate.images import list_images
    from model_core.annotate.sam_models import image_predictor
    from model_core.precision import parse_dtype
    from model_core.weights import CheckpointError

    if args.weights == "random":
        print("WARNING: --weights random builds an UNTRAINED SAM 2; its masks are meaningless "
              "(a smoke run only).", file=sys.stderr)
    # the summary is printed below; the library's own summary line would repeat it (its warnings still show)
    logging.getLogger("model_core.annotate").setLevel(logging.WARNING)
    try:
        list_images(args.data)  # a wrong folder fails now, not after loading (or downloading) the models
        if args.boxes and not Path(args.boxes).exists():
            raise FileNotFoundError(f"--boxes: no such file or folder: {args.boxes}")
        predictor = image_predictor(args.sam_model, args.device, weights=args.weights, image_size=args.image_size,
                                    dtype=parse_dtype(args.dtype))
        use_service_attention(predictor.device)
        summary = auto_annotate(
            args.data, det_model=None if args.boxes else args.det_model, sam_model=predictor, device=args.device,
            conf=args.conf, iou=args.iou, imgsz=args.imgsz, max_det=args.max_det, classes=args.classes,
            output_dir=args.output_dir, boxes=args.boxes, format=args.format, overwrite=args.overwrite,
            progress=not args.no_progress)
    except (ValueError, TypeError, FileNotFoundError, ImportError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary)
    return 0


def uvicorn_options(settings) -> dict:
    """uvicorn's limits from the settings: slow clients, connection cap, WebSocket message size and deflate."""
    from .slow_clients import header_timeout_protocol

    return dict(host=settings.host, port=settings.port, timeout_graceful_shutdown=10,
                http=header_timeout_protocol(settings.header_timeout), limit_concurrency=settings.max_connections,
                ws_max_size=settings.max_ws_message_bytes, ws_per_message_deflate=settings.ws_deflate)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn
    from pydantic import ValidationError

    from .app import create_app
    from .settings import Settings

    overrides = {k: v for k, v in vars(args).items()
                 if k in Settings.model_fields and v is not None}
    try:
        settings = Settings(**overrides)  # SAM2_* variables fill in what the flags leave out
    except ValidationError as exc:
        print(f"error: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    if settings.weights == "random":
        print("WARNING: --weights random serves an UNTRAINED model; its masks are meaningless "
              "(tests and smoke runs only).", file=sys.stderr)
    app = create_app(settings)
    engine = app.state.engine
    server = uvicorn.Server(uvicorn.Config(app, **uvicorn_options(settings), log_level=args.log_level))

    def exit_if_loading_fails() -> None:
        # A process that cannot load its model should not wait for a probe to notice: exit, and let the
        # orchestrator restart it (CrashLoopBackOff with the reason in the last log line).
        if not engine.wait_ready() and engine.error is not None:
            server.should_exit = True

    threading.Thread(target=exit_if_loading_fails, name="sam2-load-watch", daemon=True).start()
    server.run()
    if engine.error is not None:
        reason = (str(engine.error).strip().splitlines() or [""])[0]
        print(f"error: the model failed to load: {type(engine.error).__name__}: {reason}", file=sys.stderr)
        return 1
    return 0


def cmd_fetch_weights(args: argparse.Namespace) -> int:
    """Put the checkpoint of SAM2_MODEL into SAM2_WEIGHTS_DIR (from SAM2_WEIGHTS_URL or Meta's URL), checked
    against SAM2_WEIGHTS_SHA256 when set; a file already there is checked too. The chart's seeding init container."""
    import hashlib

    from pydantic import ValidationError

    from model_core.weights import CheckpointError, resolve_checkpoint

    from .settings import Settings

    try:
        settings = Settings(**({"model": args.model} if args.model else {}))
    except ValidationError as exc:
        print(f"error: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    try:
        path = resolve_checkpoint(settings.model, sha256=settings.weights_sha256, progress=False)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if settings.weights_sha256:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        if digest.hexdigest() != settings.weights_sha256:
            print(f"error: {path} has sha256 {digest.hexdigest()}, not SAM2_WEIGHTS_SHA256 {settings.weights_sha256}; "
                  "delete it to download again", file=sys.stderr)
            return 1
    print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sam2-service", description="SAM 2 / SAM 2.1 inference service")
    sub = parser.add_subparsers(dest="command", required=True)
    seg = sub.add_parser("segment", help="segment one image from points and/or a box; writes mask + overlay PNGs")
    seg.add_argument("image", help="image file (JPEG, PNG, ...)")
    seg.add_argument("--point", type=_pair, action="append", default=[], metavar="X,Y", help="a click, in pixels")
    seg.add_argument("--label", type=int, action="append", choices=[0, 1], help="1 foreground, 0 background")
    seg.add_argument("--box", type=_box, metavar="X0,Y0,X1,Y1", help="a box, in pixels")
    seg.add_argument("--model", default="sam2.1_t", help="sam2.1_t|s|b|l, sam2_t|s|b|l or Meta's names")
    seg.add_argument("--weights", default=None,
                     help="checkpoint path, or 'random' (untrained, offline smoke runs); default: official, cached")
    seg.add_argument("--device", default="cpu")
    seg.add_argument("--dtype", default="fp32", help="fp32, bf16 or fp16 autocast")
    seg.add_argument("--image-size", type=int, default=None, help="model input size (multiple of 32; default 1024)")
    seg.add_argument("--out-dir", default=".", help="where to write <name>_mask.png and <name>_overlay.png")
    seg.set_defaults(func=cmd_segment)

    trk = sub.add_parser("track", help="track objects through a video file, frame folder, camera or stream URL; "
                                       "writes masks (COCO RLE, JSON lines) and an overlay mp4")
    trk.add_argument("source",
                     help="video file, folder of JPEG frames, camera index (0, 1, ...) or URL (rtsp://, http://)")
    trk.add_argument("--point", type=_click, action="append", default=[], metavar="X,Y[,LABEL]",
                     help="a click in pixels; LABEL 1 object (default), 0 background; repeat for more clicks")
    trk.add_argument("--box", type=_box, metavar="X0,Y0,X1,Y1", help="a box in pixels")
    trk.add_argument("--obj-id", type=int, help="object id of --point/--box (default 1)")
    trk.add_argument("--frame", type=int, help="frame of --point/--box (default 0)")
    trk.add_argument("--prompts", metavar="FILE.json", help='more objects and frames: [{"frame": 0, "obj_id": 1, '
                     '"points": [[x, y]], "labels": [1]}, {"frame": 10, "obj_id": 2, "box": [x0, y0, x1, y1]}]')
    trk.add_argument("--everything", action="store_true",
                     help="one object per automatic mask of the first frame (segment everything)")
    trk.add_argument("--points-per-side", type=_positive_int, default=32, help="--everything's point grid")
    trk.add_argument("--pred-iou-thresh", type=float, default=0.8, help="--everything keeps masks above this")
    trk.add_argument("--stability-score-thresh", type=float, default=0.95, help="--everything keeps masks above this")
    trk.add_argument("--box-nms-thresh", type=float, default=0.7, help="--everything's overlap limit between masks")
    trk.add_argument("--max-objects", type=_positive_int, help="--everything keeps the best N masks")
    trk.add_argument("-o", "--out-dir", default=".", help="where to write <name>_masks.jsonl and <name>_overlay.mp4")
    trk.add_argument("--no-overlay", action="store_true", help="write the masks only")
    trk.add_argument("--writer", default="auto", choices=["auto", "pyav", "opencv"],
                     help="overlay encoder: H.264 through PyAV (pip install 'sam2-service[video]'), or OpenCV's mp4v")
    trk.add_argument("--fps", type=float, help="overlay frame rate (default: the source's, else 30)")
    trk.add_argument("--max-frames", type=_positive_int, help="stop after N frames (a camera runs until Ctrl-C)")
    trk.add_argument("--no-progress", action="store_true", help="no progress bar")
    trk.add_argument("--model", default="sam2.1_t", help="sam2.1_t|s|b|l, sam2_t|s|b|l or Meta's names")
    trk.add_argument("--weights", default=None,
                     help="checkpoint path, or 'random' (untrained, offline smoke runs); default: official, cached")
    trk.add_argument("--device", default="cpu")
    trk.add_argument("--dtype", default="fp32", help="fp32, bf16 or fp16 autocast")
    trk.add_argument("--image-size", type=int, default=None, help="model input size (multiple of 32; default 1024)")
    trk.set_defaults(func=cmd_track)

    ann = sub.add_parser("annotate", help="label a folder of images: detected (or given) boxes prompt SAM 2; "
                                          "writes YOLO-segmentation labels or a COCO JSON",
                         description="Ultralytics' auto_annotate: one label file per image with boxes, rows "
                                     "'class x1 y1 x2 y2 ...' normalised to [0, 1] (or --format coco: one "
                                     "instances.json with RLE masks). Images already labelled are skipped.")
    ann.add_argument("data", help="folder of images (or one image)")
    source = ann.add_mutually_exclusive_group()
    source.add_argument("--det-model", default="yolo11x.pt",
                        help="Ultralytics YOLO name or path (needs the annotate extra; default yolo11x.pt)")
    source.add_argument("--boxes", help="boxes you already have: a COCO instances JSON or a folder of YOLO labels")
    ann.add_argument("--sam-model", default="sam2.1_b",
                     help="sam2.1_t|s|b|l, sam2_t|s|b|l (.pt or not), Meta's names, or a checkpoint path")
    ann.add_argument("--weights", default=None,
                     help="checkpoint path, or 'random' (untrained, offline smoke runs); default: official, cached")
    ann.add_argument("--image-size", type=int, default=None, help="SAM 2 input size (multiple of 32; default 1024)")
    ann.add_argument("--dtype", default="fp32", help="fp32, bf16 or fp16 autocast for SAM 2")
    ann.add_argument("--format", choices=["yolo", "coco"], default="yolo", help="label files or one COCO JSON")
    ann.add_argument("-o", "--output-dir", default=None,
                     help="where labels go (default: <data>_auto_annotate_labels beside DATA)")
    ann.add_argument("--conf", type=float, default=0.25, help="detector confidence threshold")
    ann.add_argument("--iou", type=float, default=0.45, help="detector NMS IoU threshold")
    ann.add_argument("--imgsz", type=int, default=640, help="detector input size")
    ann.add_argument("--max-det", type=int, default=300, help="detections per image at most")
    ann.add_argument("--classes", type=_class_ids, default=None, metavar="ID[,ID...]",
                     help="keep only these class ids (detector or box file)")
    ann.add_argument("--device", default="", help="'' (CUDA if available), cpu, 0, cuda:1, ...")
    ann.add_argument("--overwrite", action="store_true", help="redo images that already have labels")
    ann.add_argument("--no-progress", action="store_true", help="no progress bar")
    ann.set_defaults(func=cmd_annotate)

    srv = sub.add_parser("serve", help="run the HTTP API (settings from flags, then SAM2_* variables)")
    srv.add_argument("--model", help="sam2.1_t|s|b|l, sam2_t|s|b|l or Meta's names (default sam2.1_t)")
    srv.add_argument("--weights", help="checkpoint path, or 'random' (untrained, offline smoke runs); "
                                       "default: official, cached")
    srv.add_argument("--device", help="cpu, cuda, cuda:1, 0 (a GPU index), ... (default: cuda if available)")
    srv.add_argument("--dtype", help="fp32, bf16 or fp16 (default: fp16 on CUDA, bf16 on CPUs with it, else fp32)")
    srv.add_argument("--image-size", type=int, help="model input size (multiple of 32; default 1024)")
    srv.add_argument("--host", help="address to bind (default 127.0.0.1)")
    srv.add_argument("--port", type=int, help="port (default 8000)")
    srv.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    srv.set_defaults(func=cmd_serve)

    fetch = sub.add_parser("fetch-weights", help="download and check the model's checkpoint into SAM2_WEIGHTS_DIR, "
                                                 "then exit (settings from SAM2_* variables)")
    fetch.add_argument("--model", help="default: SAM2_MODEL")
    fetch.set_defaults(func=cmd_fetch_weights)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    if args.func in (cmd_segment, cmd_track, cmd_annotate):  # `serve` follows SAM2_HOST_MALLOC instead
        from model_core.host_memory import keep_freed_memory

        keep_freed_memory()  # the same passes run again and again: keep their memory (README, CPU efficiency)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
