"""The measurements of bench/gpu_check.sh, one part per call, each appending records to OUT/results.jsonl.

    python bench/gpu_measure.py PART --out DIR [--smoke]       PART: image | compile | refcompile | amg | video |
                                                                   service | profile
    python bench/gpu_measure.py report --out DIR                 -> DIR/results.md (one table per part)

Ours and Meta's reference run with the same seeded random weights on the same device in the same process;
the reference with its own best settings (bf16 autocast; `compile` part: its image encoder compiled the way
`compile_image_encoder` does). Times are CUDA-synchronised medians. --smoke: CPU, tiny model, small size.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import as_meta_builds_it, test_image
from video_tracking import clip, object_prompts, ours_fps

MODELS = {"t": "sam2.1_hiera_tiny", "s": "sam2.1_hiera_small", "b+": "sam2.1_hiera_base_plus",
          "l": "sam2.1_hiera_large"}


class Run:
    """Device, sizes and output of one measurement run."""

    def __init__(self, args) -> None:
        self.smoke = args.smoke
        self.device = "cpu" if args.smoke else "cuda"
        self.size = 128 if args.smoke else 1024
        self.ours_dtype = torch.float32 if args.smoke else torch.float16
        self.compile_backend = "eager" if args.smoke else "inductor"  # smoke: trace only, generate no code
        self.ref_dtype = torch.float32 if args.smoke else torch.bfloat16
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.card = torch.cuda.get_device_name() if torch.cuda.is_available() and not args.smoke else "cpu"

    def models(self, keys: str) -> list[str]:
        return ["t"] if self.smoke else keys.split(",")

    def record(self, part: str, what: str, ours: float | None, ref: float | None = None, unit: str = "ms",
               **extra) -> None:
        """One figure, ours beside the reference's; ratio = reference / ours for times (>1: we are faster)."""
        what += ", no cuDNN attention" if not torch.backends.cuda.cudnn_sdp_enabled() else ""
        rec = {"part": part, "what": what, "ours": ours, "ref": ref, "unit": unit, "device": self.card,
               "date": time.strftime("%Y-%m-%d"), **extra}
        if ours and ref:
            rec["ratio"] = ref / ours if unit in ("ms", "s") else ours / ref
        with open(self.out / "results.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        print(json.dumps(rec), flush=True)

    def sync(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()

    def timed_ms(self, fn, repeat: int = 10, warmup: int = 2) -> float:
        if self.smoke:  # checks that the part runs; its figures mean nothing
            repeat, warmup = 1, min(warmup, 1)
        for _ in range(warmup):
            fn()
        self.sync()
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            fn()
            self.sync()
            times.append((time.perf_counter() - t) * 1e3)
        return statistics.median(times)

    def autocast(self, dtype):
        if dtype == torch.float32:
            return torch.autocast(self.device, enabled=False)
        return torch.autocast(self.device, dtype=dtype)

    def pair(self, name: str):
        """(reference, ours) on the device, same seeded random weights (built on the CPU, then moved)."""
        from tests.reference import build_reference, ours_from_reference

        ref = build_reference(name, self.size)
        ours = ours_from_reference(ref, name, self.size)
        return as_meta_builds_it(ref).to(self.device), ours.to(self.device)


def part_image(run: Run, args) -> None:
    """Encoder (set_image of a 1024x768 photo) and a click on the cached image, per model."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    from model_core import ImagePredictor
    from tests.reference import fit_to_image_size

    image = test_image(768, 1024)
    click = dict(point_coords=np.array([[500, 380]]), point_labels=np.array([1]))
    for key in run.models(args.models):
        ref, ours = run.pair(MODELS[key])
        theirs = fit_to_image_size(SAM2ImagePredictor(ref), run.size)
        mine = ImagePredictor(ours, dtype=run.ours_dtype)
        with run.autocast(run.ref_dtype):
            ref_enc = run.timed_ms(lambda: theirs.set_image(image))
            ref_click = run.timed_ms(lambda: theirs.predict(**click), repeat=30)
        our_enc = run.timed_ms(lambda: mine.set_image(image))
        our_click = run.timed_ms(lambda: mine.predict(**click), repeat=30)
        run.record("image", f"set_image 1024x768, {key}", our_enc, ref_enc)
        run.record("image", f"click on cached image, {key}", our_click, ref_click)
        if run.device == "cuda":
            mine_bf16 = ImagePredictor(ours, dtype=torch.bfloat16)
            run.record("image", f"set_image 1024x768, {key}, ours bf16", run.timed_ms(lambda: mine_bf16.set_image(image)),
                       ref_enc)
            for b in (1, 8):
                x = torch.randn(b, 3, run.size, run.size, device=run.device)
                with run.autocast(run.ours_dtype):
                    enc = run.timed_ms(lambda: ours.image_encoder(x))
                with run.autocast(run.ref_dtype):
                    renc = run.timed_ms(lambda: ref.image_encoder(x))
                run.record("image", f"image encoder alone, batch {b}, {key}", enc / b, renc / b, per="image")
            torch.cuda.empty_cache()
            before = torch.cuda.memory_allocated()
            held = ImagePredictor(ours, dtype=run.ours_dtype)
            held.set_image(image)
            torch.cuda.synchronize()
            run.record("image", f"GPU memory per cached embedding, {key}", (torch.cuda.memory_allocated() - before) / 2**20,
                       unit="MiB")
            del held
        del ref, ours, theirs, mine
        if run.device == "cuda":
            torch.cuda.empty_cache()


def part_compile(run: Run, args) -> None:
    """torch.compile (default mode, static shapes) of the image encoder, ours and the reference's."""
    x = torch.randn(1, 3, run.size, run.size, device=run.device)
    for key in run.models(args.compile_models):
        ref, ours = run.pair(MODELS[key])
        rows = {}
        for who, model, dtype in (("ours", ours, run.ours_dtype), ("ref", ref, run.ref_dtype)):
            enc = model.image_encoder
            eager = run.timed_ms(lambda: _run(run, enc, x, dtype))
            enc.forward = torch.compile(enc.forward, dynamic=False, backend=run.compile_backend)
            t = time.perf_counter()
            _run(run, enc, x, dtype)
            run.sync()
            rows[who] = (eager, run.timed_ms(lambda: _run(run, enc, x, dtype)), time.perf_counter() - t)
        run.record("compile", f"image encoder eager, {key}", rows["ours"][0], rows["ref"][0])
        run.record("compile", f"image encoder compiled, {key}", rows["ours"][1], rows["ref"][1])
        run.record("compile", f"compile time (first call), {key}", rows["ours"][2], rows["ref"][2], unit="s")
        del ref, ours
        torch._dynamo.reset()
    for key in run.models(args.compile_models):
        _compiled_tracking(run, key)


def _compiled_tracking(run: Run, key: str) -> None:
    """SAM2_COMPILE's compile_model: tracking frames/s (1 and 8 objects, from frame 10 on) per mode vs eager,
    and how long the service's warm-up takes to build the graphs."""
    import copy

    from service.metrics import Metrics
    from service.model_work import ModelWork
    from service.settings import Settings

    _, base = run.pair(MODELS[key])
    frames = clip(30)
    if run.smoke:  # the service's own compile_model, traced with the eager backend (inductor takes minutes here)
        import functools

        import service.model_work
        from model_core.compiled import CompileConfig

        service.model_work.CompileConfig = functools.partial(CompileConfig, backend=run.compile_backend)
    for mode in ("off", "default", "reduce-overhead"):
        model = base if mode == "off" else copy.deepcopy(base)
        t0 = time.perf_counter()
        if mode != "off":
            work = ModelWork(Settings(weights="random", device=run.device, image_size=run.size, compile=mode,
                                      dtype="fp32" if run.smoke else "fp16"),
                             model, Metrics())
            work.load()  # compiles as the service does, and its warm-up builds the graphs
            run.record("compile", f"SAM2_COMPILE={mode} warm-up, {key}", time.perf_counter() - t0, unit="s")
        for k in (1, 8):
            run.record("compile", f"tracking fps, {k} object(s), SAM2_COMPILE={mode}, {key}",
                       ours_fps(model, frames, k, run.ours_dtype, warm=10, sync=run.sync), unit="fps")
        del model
        torch._dynamo.reset()
        if run.device == "cuda":
            torch.cuda.empty_cache()


def _run(run: Run, encoder, x, dtype):
    with run.autocast(dtype):
        return encoder(x)


def part_amg(run: Run, args) -> None:
    """Segment-everything (32x32 points) of a 1024x768 photo."""
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    from tests.reference import fit_to_image_size

    from model_core.automatic_mask_generator import AutomaticMaskGenerator

    image = test_image(768, 1024)
    key = "t" if run.smoke else args.amg_model
    ref, ours = run.pair(MODELS[key])
    pps = 8 if run.smoke else 32
    mine = AutomaticMaskGenerator(ours, points_per_side=pps, dtype=run.ours_dtype)
    theirs = SAM2AutomaticMaskGenerator(ref, points_per_side=pps)
    fit_to_image_size(theirs.predictor, run.size)
    repeat = 1 if run.smoke else 3
    ours_ms = run.timed_ms(lambda: mine.generate(image), repeat=repeat, warmup=1)
    with run.autocast(run.ref_dtype):
        ref_ms = run.timed_ms(lambda: theirs.generate(image), repeat=repeat, warmup=1)
    run.record("amg", f"segment everything {pps}x{pps} points, {key}", ours_ms, ref_ms,
               masks=len(mine.generate(image)))
    wide = AutomaticMaskGenerator(ours, points_per_side=pps, points_per_batch=256, dtype=run.ours_dtype)
    run.record("amg", f"segment everything {pps}x{pps} points, {key}, ours 256 points per batch",
               run.timed_ms(lambda: wide.generate(image), repeat=repeat, warmup=1), ref_ms)


def part_video(run: Run, args) -> None:
    """Tracking frames/s from frame 8 on (memory bank full), ours (VideoTracker) vs SAM2VideoPredictor."""
    from sam2.build_sam import build_sam2_video_predictor

    from model_core.modeling.autocast_weights import kept
    from model_core.video_tracker import VideoTracker
    from tests.reference import REF_CONFIG_FILES, randomize_

    warm, n = 8, (12 if run.smoke else 28)
    frames = clip(n)
    for key in run.models(args.video_models):
        name = MODELS[key]
        torch.manual_seed(0)
        ref = build_sam2_video_predictor(REF_CONFIG_FILES[name], ckpt_path=None, device="cpu",
                                         hydra_overrides_extra=["++model.fill_hole_area=0",
                                                                f"++model.image_size={run.size}"])
        ref = as_meta_builds_it(randomize_(ref, 0).eval()).to(run.device)
        from tests.reference import ours_from_reference

        ours = ours_from_reference(ref, name, run.size).to(run.device)
        for k in ((1, 2) if run.smoke else (1, 8)):
            our_fps = ours_fps(ours, frames, k, run.ours_dtype, warm, sync=run.sync)
            if k == 1 and not run.smoke:  # what keeping autocast's weight copies gains (bench/step_overhead.py)
                with kept(False):
                    cast_fps = ours_fps(ours, frames, k, run.ours_dtype, warm, sync=run.sync)
                run.record("video", f"tracking frames/s, {key}, 1 object, ours casting weights on every call",
                           cast_fps, our_fps, unit="fps")
            run.record("video", f"tracking frames/s, {key}, {k} object(s)", our_fps,
                       _reference_fps(run, ref, frames, k, warm), unit="fps")
        if run.device == "cuda":
            torch.cuda.empty_cache()
            tracker = VideoTracker(ours, dtype=run.ours_dtype)
            before = torch.cuda.memory_allocated()
            states = []
            for _ in range(4):
                st = tracker.new_state(480, 640)
                tracker.add_prompt(st, 1, points=[list(object_prompts(1)[0])], labels=[1])
                for f in frames[:12]:
                    tracker.track(st, f)
                states.append(st)
            torch.cuda.synchronize()
            run.record("video", f"GPU memory per tracking session (1 object, {run.size} px, steady), {key}",
                       (torch.cuda.memory_allocated() - before) / 4 / 2**20, unit="MiB")
            del states, tracker
        del ref, ours
        if run.device == "cuda":
            torch.cuda.empty_cache()


def _reference_fps(run: Run, ref, frames, k: int, warm: int) -> float:
    """Meta's SAM2VideoPredictor propagating k clicked objects through `frames`: frames/s from frame `warm` on."""
    from model_core.transforms import preprocess
    from tests.model_core.video_fixtures import reference_state

    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode(), run.autocast(run.ref_dtype):
        rstate = reference_state(ref, frames, [preprocess(f, run.size) for f in frames], Path(tmp))
        for i, (x, y) in enumerate(object_prompts(k)):
            ref.add_new_points_or_box(rstate, 0, i + 1, points=[[x, y]], labels=[1])
        times, t = [], time.perf_counter()
        for _ in ref.propagate_in_video(rstate):
            run.sync()
            now = time.perf_counter()
            times.append(now - t)
            t = now
    return len(times[warm:]) / sum(times[warm:])


def part_refcompile(run: Run, args) -> None:
    """Meta's compiled tracking, the per-stream target: build_sam2_video_predictor(vos_optimized=True) compiles
    its image encoder, memory encoder, memory attention and SAM heads with max-autotune. Its warm-up (first
    propagation, compiling) and frames/s beside ours (eager; `compile` has ours compiled). Long: run it alone."""
    import contextlib
    from unittest import mock

    from sam2.build_sam import build_sam2_video_predictor

    from tests.reference import REF_CONFIG_FILES, ours_from_reference, randomize_

    warm, frames = 8, clip(12 if run.smoke else 28)
    compiling = contextlib.nullcontext()
    if run.smoke:  # trace only, as `compile` does: max-autotune code generation takes many minutes on a CPU
        real = torch.compile
        compiling = mock.patch.object(torch, "compile", lambda fn, mode=None, **kw: real(fn, backend="eager", **kw))
    for key in run.models(args.compile_models):
        name = MODELS[key]
        torch.manual_seed(0)
        with compiling:
            ref = build_sam2_video_predictor(REF_CONFIG_FILES[name], ckpt_path=None, device="cpu", vos_optimized=True,
                                             hydra_overrides_extra=["++model.fill_hole_area=0",
                                                                    f"++model.image_size={run.size}"])
            ref = as_meta_builds_it(randomize_(ref, 0).eval()).to(run.device)
            ours = ours_from_reference(ref, name, run.size).to(run.device)
            t0 = time.perf_counter()
            _reference_fps(run, ref, frames, 1, warm)
            run.record("refcompile", f"reference vos_optimized warm-up (first propagation), {key}", None,
                       time.perf_counter() - t0, unit="s")
            for k in ((1, 2) if run.smoke else (1, 8)):
                run.record("refcompile", f"tracking frames/s, {key}, {k} object(s), ours eager vs reference compiled",
                           ours_fps(ours, frames, k, run.ours_dtype, warm, sync=run.sync),
                           _reference_fps(run, ref, frames, k, warm), unit="fps")
        del ref, ours
        torch._dynamo.reset()
        if run.device == "cuda":
            torch.cuda.empty_cache()


def part_service(run: Run, args) -> None:
    """The real server on the device: /v1/segment cold and cached, /v1/track sessions, over 127.0.0.1."""
    import httpx
    from segment_load import Server, click, jpeg_variants, load
    from track_sessions import run_sessions, serve

    image = test_image(768, 1024)
    levels = [1, 2] if run.smoke else [1, 8, 32]
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "w.pt"
        from model_core import build_model

        torch.save({"model": build_model(args.service_model, weights="random", image_size=run.size).state_dict()},
                   ckpt)
        dtype = "fp32" if run.smoke else "fp16"
        sargs = argparse.Namespace(model=args.service_model, dtype=dtype, device=run.device, image_size=run.size,
                                   max_batch=8, max_wait_ms=5)
        server = Server(ckpt, sargs)
        try:
            server.wait_ready()
            asyncio.run(load(server.base, [{"files": {"image": ("w.jpg", b, "image/jpeg")},
                                            "data": {"objects": json.dumps(click(0, 1024, 768))}}
                                           for b in jpeg_variants(image, 10_000, 2)], 2))
            offset = 0
            for clients in levels:
                n = max(2 * clients, 4 if run.smoke else 16)
                reqs = [{"files": {"image": ("i.jpg", b, "image/jpeg")},
                         "data": {"objects": json.dumps(click(i, 1024, 768))}}
                        for i, b in enumerate(jpeg_variants(image, offset, n))]
                offset += n
                lat, wall = asyncio.run(load(server.base, reqs, clients))
                run.record("service", f"/v1/segment cold, {clients} clients: req/s", n / wall, unit="req/s",
                           p50_ms=statistics.median(lat) * 1e3, p99_ms=float(np.percentile(lat, 99)) * 1e3)
            image_id = httpx.post(f"{server.base}/v1/embed", timeout=600,
                                  files={"image": ("c.jpg", jpeg_variants(image, 20_000, 1)[0], "image/jpeg")}
                                  ).json()["image_id"]
            for clients in levels:
                n = max(4 * clients, 16 if run.smoke else 64)
                reqs = [{"json": {"image_id": image_id, "objects": click(i, 1024, 768)}} for i in range(n)]
                lat, wall = asyncio.run(load(server.base, reqs, clients))
                run.record("service", f"/v1/segment cached click, {clients} clients: req/s", n / wall, unit="req/s",
                           p50_ms=statistics.median(lat) * 1e3, p99_ms=float(np.percentile(lat, 99)) * 1e3)
        finally:
            server.stop()
        frames = clip(6 if run.smoke else 24)
        tracking = serve(run.size, None, Path(tmp) / "track.log", device=run.device, dtype=dtype,
                         model=args.service_model)
        try:
            for n, in_flight in [(n, 1) for n in levels] + [(1, 3)]:
                r = run_sessions(tracking.port, n, frames, in_flight=in_flight)
                name = f"/v1/track {n} sessions" + (f", {in_flight} frames in flight each" if in_flight > 1 else "")
                run.record("service", f"{name}: aggregate frames/s", r["fps"], unit="fps", p50_ms=r["p50"],
                           p99_ms=r["p99"], server_ms=r["server_ms"])
        finally:
            tracking.stop()
        # read ahead is on with CUDA (auto): the same pipelined session with it off
        tracking = serve(run.size, None, Path(tmp) / "track-off.log", device=run.device, dtype=dtype,
                         model=args.service_model, read_ahead="off")
        try:
            r = run_sessions(tracking.port, 1, frames, in_flight=3)
            run.record("service", "/v1/track 1 sessions, 3 frames in flight each, read ahead off: aggregate frames/s",
                       r["fps"], unit="fps", p50_ms=r["p50"], p99_ms=r["p99"], server_ms=r["server_ms"])
        finally:
            tracking.stop()


def part_profile(run: Run, args) -> None:
    """Where a steady tracking step (t, 1 object), a set_image and a segment-everything (--amg-model) spend their
    time: OUT/profile.txt."""
    from torch.profiler import ProfilerActivity, profile

    from model_core import ImagePredictor
    from model_core.automatic_mask_generator import AutomaticMaskGenerator
    from model_core.video_tracker import VideoTracker

    _, ours = run.pair(MODELS["t"])
    _, amg_model = run.pair(MODELS["t" if run.smoke else args.amg_model])
    amg = AutomaticMaskGenerator(amg_model, points_per_side=8 if run.smoke else 32, dtype=run.ours_dtype)
    frames = clip(14)
    tracker = VideoTracker(ours, dtype=run.ours_dtype)
    state = tracker.new_state(480, 640)
    tracker.add_prompt(state, 1, points=[list(object_prompts(1)[0])], labels=[1])
    for f in frames[:9]:
        tracker.track(state, f)
    predictor = ImagePredictor(ours, dtype=run.ours_dtype)
    image = test_image(768, 1024)
    predictor.set_image(image)
    amg.generate(image)
    run.sync()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if run.device == "cuda" else [])
    sort = "self_cuda_time_total" if run.device == "cuda" else "self_cpu_time_total"
    text = []
    for label, fn in (("5 tracking steps", lambda: [tracker.track(state, f) for f in frames[9:]]),
                      ("3 set_image 1024x768", lambda: [predictor.set_image(image) for _ in range(3)]),
                      ("1 segment-everything 1024x768", lambda: amg.generate(image))):
        with profile(activities=activities) as prof:
            fn()
            run.sync()
        for key in (sort, "cpu_time_total"):
            text.append(f"## {label}, by {key}\n{prof.key_averages().table(sort_by=key, row_limit=22)}")
    (run.out / "profile.txt").write_text("\n\n".join(text))
    print("\n\n".join(text)[:6000])


def report(out: Path) -> None:
    """results.jsonl -> results.md: one table per part."""
    recs = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]
    lines = []
    for part in dict.fromkeys(r["part"] for r in recs):
        lines += [f"\n### {part}\n", "| measurement | ours | reference | ratio | unit | notes |", "|---|---|---|---|---|---|"]
        for r in (r for r in recs if r["part"] == part):
            notes = ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items()
                              if k not in ("part", "what", "ours", "ref", "unit", "ratio", "device", "date"))
            fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
            lines.append(f"| {r['what']} | {fmt(r['ours'])} | {fmt(r['ref'])} | "
                         f"{fmt(r.get('ratio'))} | {r['unit']} | {notes} |")
    head = f"Device: {recs[0]['device']}, {recs[0]['date']}. Ratio: > 1 means ours is faster (or higher).\n" if recs else ""
    (out / "results.md").write_text(head + "\n".join(lines) + "\n")
    print(head + "\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=["image", "compile", "refcompile", "amg", "video", "service", "profile", "report"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny, 256 px: checks that every part runs")
    ap.add_argument("--models", default="t,s,b+,l")
    ap.add_argument("--compile-models", default="t,b+")
    ap.add_argument("--video-models", default="t,b+")
    ap.add_argument("--amg-model", default="l")
    ap.add_argument("--service-model", default="sam2.1_t")
    ap.add_argument("--no-cudnn-attention", action="store_true",
                    help="A/B: leave cuDNN out of scaled_dot_product_attention's backends")
    args = ap.parse_args()
    if args.part == "report":
        return report(Path(args.out))
    torch.set_grad_enabled(False)
    if args.no_cudnn_attention:
        torch.backends.cuda.enable_cudnn_sdp(False)
    run = Run(args)
    globals()[f"part_{args.part}"](run, args)


if __name__ == "__main__":
    sys.exit(main())
