"""Checkpoint files: where they live, how they are downloaded safely, and how they are read (no pickle)."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.request
import zipfile
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .configs import CHECKPOINT_URLS, CONFIGS, canonical_name

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: a failed download, a corrupt file, or keys that do not fit the model."""


def weights_dir() -> Path:
    """The weights cache: $SAM2_WEIGHTS_DIR, else ~/.cache/sam2-service."""
    return Path(os.environ.get("SAM2_WEIGHTS_DIR") or Path.home() / ".cache" / "sam2-service")


def download(url: str, dest: Path, sha256: str | None = None, progress: bool = True, timeout: float = 60.0) -> Path:
    """Download url to dest atomically: a temp file in the same folder, checked, then renamed.

    Refuses (and deletes) a download that is shorter than its Content-Length, whose sha256 differs
    from `sha256` when given, or that is not an intact torch zip archive.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        received = 0
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            expected = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=expected, unit="B", unit_scale=True, desc=dest.name, disable=not progress) as bar:
                while chunk := resp.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        if expected is not None and received != expected:
            raise CheckpointError(f"truncated download of {url}: {received} of {expected} bytes")
        if sha256 and digest.hexdigest() != sha256.lower():
            raise CheckpointError(f"sha256 mismatch for {url}: got {digest.hexdigest()}, expected {sha256}")
        _check_archive(tmp)
        os.replace(tmp, dest)
        log.info("downloaded %s (%d bytes) to %s", url, received, dest)
        return dest
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, (CheckpointError, KeyboardInterrupt)):
            raise
        raise CheckpointError(f"download of {url} failed: {exc}") from exc


def _check_archive(path: Path) -> None:
    """torch.save writes a zip; a corrupt or cut file fails its central directory or a member's CRC."""
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except zipfile.BadZipFile as exc:
        raise CheckpointError(f"{path.name} is not a torch checkpoint archive: {exc}") from exc
    if bad is not None:
        raise CheckpointError(f"{path.name} is corrupt (bad CRC in {bad})")


def resolve_checkpoint(name: str, url: str | None = None, sha256: str | None = None, progress: bool = True) -> Path:
    """The local file for a model: <weights_dir>/<meta name>.pt, downloaded from Meta's URL on first use."""
    canonical = canonical_name(name)
    path = weights_dir() / f"{canonical}.pt"
    if path.is_file():
        return path
    url = url or os.environ.get("SAM2_WEIGHTS_URL") or CHECKPOINT_URLS[canonical]
    log.info("%s not in %s; downloading %s", canonical, path.parent, url)
    return download(url, path, sha256=sha256, progress=progress)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint in Meta's layout ({"model": sd}), Ultralytics' (same, fp16) or a bare state dict."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for unreadable or unsafe files
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} holds no state dict (expected a dict of tensors, or one under 'model')")
    sd = {}
    for key, value in obj.items():
        for prefix in ("module.", "model."):
            key = key.removeprefix(prefix)
        sd[key] = value.float() if value.is_floating_point() else value
    return sd


def _expected_shapes(name: str) -> dict[str, tuple[int, ...]]:
    from .modeling.sam2_model import SAM2Model

    with torch.device("meta"):
        model = SAM2Model(CONFIGS[name])
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def closest_model(sd: dict[str, torch.Tensor]) -> str:
    """The released model whose parameter names and shapes best match a state dict."""
    have = {(k, tuple(v.shape)) for k, v in sd.items()}

    def score(name: str) -> int:
        want = set(_expected_shapes(name).items())
        return len(have & want) - len(have ^ want)

    return max(CONFIGS, key=score)


def load_into(model: torch.nn.Module, sd: dict[str, torch.Tensor]) -> None:
    """load_state_dict(strict=True), with an error that names the offending keys and the likely model."""
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(want) - set(sd))
    unexpected = sorted(set(sd) - set(want))
    wrong = sorted(k for k in set(want) & set(sd) if tuple(sd[k].shape) != want[k])
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if keys:
                parts.append(f"{len(keys)} {label} keys (e.g. {', '.join(keys[:5])})")
        this = getattr(getattr(model, "cfg", None), "name", type(model).__name__)
        raise CheckpointError(
            f"checkpoint does not fit {this}: " + "; ".join(parts) + f". It looks like {closest_model(sd)}."
        )
    model.load_state_dict(sd, strict=True)
