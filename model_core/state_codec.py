"""TrackerState <-> bytes, exactly and without pickle: a JSON header plus raw little-endian tensor buffers.

Layout of every blob: MAGIC (8 bytes) | header length (u32 LE) | header JSON | tensor bytes | CRC32 (u32 LE).
A whole state is one blob; for stores that write only what changed, a state also splits into a header
part and one part per memory-entry field (`state_parts`, `delta_parts`), which `state_from_parts` joins
again: a step then writes its new entry and deletes what it evicted, never rewriting old tensors.

Versions: 2 marks a state whose frames have sizes of their own (images mode; prompts waiting, in pixels,
for a frame of unknown size), which a reader of version 1 alone would misread: it refuses it instead.
Every other state (a video's) is still written as version 1, so that older replicas read it during a
rolling upgrade. Field parts hold only tensors and stay version 1. This reads both.
"""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import torch

from .memory_bank import MemoryEntry, ObjectTrack
from .video_tracker import COND, NON_COND, Prompt, StepDelta, TrackerState

MAGIC = b"SAM2TRK\x00"
FORMAT = "sam2-tracker-state"
VERSION = 1  # video states, and field parts
SIZED_FRAMES_VERSION = 2  # states whose frames have sizes of their own
READ_VERSIONS = (VERSION, SIZED_FRAMES_VERSION)

_BUFFER_LAYOUTS = {  # torch dtype -> little-endian numpy layout of its buffer; named on the wire as torch names it
    torch.float32: "<f4",
    torch.float16: "<f2",
    torch.bfloat16: "<i2",  # raw bits, reinterpreted on load
    torch.int64: "<i8",
}
_DTYPES = {dt: (str(dt).removeprefix("torch."), np_dt) for dt, np_dt in _BUFFER_LAYOUTS.items()}
_BY_NAME = {name: (dt, np_dt) for dt, (name, np_dt) in _DTYPES.items()}
# short names on the wire (format version 1), named once: entry kinds and memory-entry fields
_KIND_KEYS = {COND: "c", NON_COND: "n"}
_KIND_OF_KEY = {v: k for k, v in _KIND_KEYS.items()}
_FIELD_KEYS = {"maskmem": "maskmem", "obj_ptr": "obj_ptr", "object_score_logit": "score", "low_res": "low_res"}
_ENTRY_FIELDS = tuple(_FIELD_KEYS.values())


class StateFormatError(ValueError):
    """Bytes that are not a tracker state of a version we read (truncated, corrupted or foreign)."""


class UnsupportedStateVersion(StateFormatError):
    """A sound tracker state of a format version this release does not read (written by another release):
    kept apart from corruption so that a rolling upgrade or downgrade can say so."""

    def __init__(self, version, readable: tuple[int, ...]) -> None:
        self.version, self.readable = version, readable
        super().__init__(f"tracker state version {version!r} is not supported (this reads versions "
                         f"{', '.join(map(str, readable))}): written by a newer release?")


def pack(header: dict, tensors: dict[str, torch.Tensor], version: int = VERSION) -> bytes:
    """One self-checking blob of a JSON-able header and named tensors."""
    index, chunks, offset = {}, [], 0
    for name, t in tensors.items():
        dname, np_dt = _DTYPES[t.dtype]
        raw = t.detach().cpu().contiguous()
        if t.dtype == torch.bfloat16:
            raw = raw.view(torch.int16)
        data = raw.numpy().astype(np_dt, copy=False).tobytes()
        index[name] = {"dtype": dname, "shape": list(t.shape), "offset": offset, "nbytes": len(data)}
        chunks.append(data)
        offset += len(data)
    head = json.dumps({"format": FORMAT, "version": version, **header, "tensors": index},
                      separators=(",", ":")).encode()
    body = MAGIC + struct.pack("<I", len(head)) + head + b"".join(chunks)
    return body + struct.pack("<I", zlib.crc32(body))


def _header(blob: bytes) -> tuple[dict, int]:
    """A blob's checked JSON header and its length; StateFormatError (UnsupportedStateVersion for a version
    this release does not read) otherwise."""
    if len(blob) < len(MAGIC) + 8 or not blob.startswith(MAGIC):
        raise StateFormatError("not a tracker state (bad magic or too short)")
    (crc,) = struct.unpack("<I", blob[-4:])
    if zlib.crc32(blob[:-4]) != crc:
        raise StateFormatError("tracker state is corrupted or truncated (checksum mismatch)")
    (hlen,) = struct.unpack("<I", blob[8:12])
    try:
        header = json.loads(blob[12 : 12 + hlen])
    except ValueError as exc:
        raise StateFormatError(f"tracker state header is not JSON: {exc}") from exc
    if header.get("format") != FORMAT:
        raise StateFormatError(f"not a tracker state (format {header.get('format')!r})")
    if header.get("version") not in READ_VERSIONS:
        raise UnsupportedStateVersion(header.get("version"), READ_VERSIONS)
    return header, hlen


def check_version(blob: bytes) -> int:
    """The format version of a blob this release reads, without decoding its tensors (e.g. to refuse a state
    before taking it over); raises like `unpack`."""
    return _header(bytes(blob))[0]["version"]


def unpack(blob: bytes, device: str | torch.device = "cpu") -> tuple[dict, dict[str, torch.Tensor]]:
    """Inverse of `pack`; raises StateFormatError with the reason on anything malformed."""
    blob = bytes(blob)
    header, hlen = _header(blob)
    data = memoryview(blob)[12 + hlen : -4]
    tensors = {}
    for name, spec in header.pop("tensors").items():
        dt, np_dt = _BY_NAME[spec["dtype"]]
        start, n = spec["offset"], spec["nbytes"]
        if start + n > len(data):
            raise StateFormatError(f"tensor {name} runs past the end of the state")
        arr = np.frombuffer(data[start : start + n], dtype=np_dt).reshape(spec["shape"])
        t = torch.from_numpy(arr.copy())
        tensors[name] = (t.view(torch.bfloat16) if dt == torch.bfloat16 else t).to(device)
    return header, tensors


def entry_key(obj_id: int, kind: str, frame: int) -> str:
    """The name of one memory entry (kind COND or NON_COND) on the wire, e.g. "3:c:17"."""
    return f"{obj_id}:{_KIND_KEYS[kind]}:{frame}"


def _entries_of(track: ObjectTrack):
    """(kind, frame, entry) of an object's conditioning, then non-conditioning memory entries."""
    for kind, d in ((COND, track.cond), (NON_COND, track.non_cond)):
        for frame, e in d.items():
            yield kind, frame, e


def _header_entries(obj: dict):
    """(kind, frame) of an object's entries as a header lists them."""
    return [(_KIND_OF_KEY[k], frame) for k, frame in obj["entries"]]


def _entry_tensors(e: MemoryEntry, prefix: str = "") -> dict[str, torch.Tensor]:
    return {prefix + key: getattr(e, attr) for attr, key in _FIELD_KEYS.items() if getattr(e, attr) is not None}


def _entry_from(tensors: dict[str, torch.Tensor], prefix: str = "") -> MemoryEntry:
    return MemoryEntry(**{attr: tensors.get(prefix + key) for attr, key in _FIELD_KEYS.items()})


def format_version(state: TrackerState) -> int:
    """The version a state is written as: 2 where its frames have sizes of their own, else 1 (see above)."""
    sized = state.mode == "images" or any(p.pixels for p in state.pending.values())
    return SIZED_FRAMES_VERSION if sized else VERSION


def _meta(state: TrackerState) -> tuple[dict, dict[str, torch.Tensor]]:
    """Everything but the memory entries: scalars in JSON, prompt tensors by name."""
    tensors: dict[str, torch.Tensor] = {}
    pending = []
    for obj_id, p in state.pending.items():
        for f in ("coords", "labels", "mask"):
            if getattr(p, f) is not None:
                tensors[f"pending/{obj_id}/{f}"] = getattr(p, f)
        pending.append({"obj_id": obj_id, "update_memory": p.update_memory, "pixels": p.pixels})
    points = []
    for obj_id, (frame, coords, labels) in state.frame_points.items():
        tensors[f"points/{obj_id}/coords"], tensors[f"points/{obj_id}/labels"] = coords, labels
        points.append({"obj_id": obj_id, "frame": frame})
    header = {
        "height": state.height, "width": state.width, "num_frames": state.num_frames, "mode": state.mode,
        "max_obj_num": state.max_obj_num, "frame_idx": state.frame_idx, "pending": pending, "points": points,
        "objects": [
            {"obj_id": t.obj_id, "entries": [[_KIND_KEYS[k], f] for k, f, _ in _entries_of(t)]}
            for t in state.objects.values()
        ],
    }
    return header, tensors


def _state_from(header: dict, tensors: dict[str, torch.Tensor], entries: dict[str, MemoryEntry]) -> TrackerState:
    state = TrackerState(header["height"], header["width"], header["num_frames"], header["mode"],
                         header["max_obj_num"], header["frame_idx"])
    for obj in header["objects"]:
        track = ObjectTrack(obj["obj_id"])
        for kind, frame in _header_entries(obj):
            key = entry_key(obj["obj_id"], kind, frame)
            if key not in entries:
                raise StateFormatError(f"tracker state lacks memory entry {key}")
            (track.cond if kind == COND else track.non_cond)[frame] = entries[key]
        state.objects[track.obj_id] = track
    for p in header["pending"]:
        pre = f"pending/{p['obj_id']}/"
        state.pending[p["obj_id"]] = Prompt(tensors.get(pre + "coords"), tensors.get(pre + "labels"),
                                            tensors.get(pre + "mask"), p["update_memory"], p.get("pixels", False))
    for p in header["points"]:
        pre = f"points/{p['obj_id']}/"
        state.frame_points[p["obj_id"]] = (p["frame"], tensors[pre + "coords"], tensors[pre + "labels"])
    return state


def state_to_bytes(state: TrackerState, extra: dict | None = None) -> bytes:
    """The whole state as one blob (`extra`: JSON-able fields for the caller, e.g. the model name)."""
    header, tensors = _meta(state)
    for track in state.objects.values():
        for kind, frame, e in _entries_of(track):
            tensors.update(_entry_tensors(e, f"entry/{entry_key(track.obj_id, kind, frame)}/"))
    return pack({**header, "extra": extra or {}}, tensors, format_version(state))


def state_from_bytes(blob: bytes, device: str | torch.device = "cpu") -> tuple[TrackerState, dict]:
    """Inverse of `state_to_bytes` -> (state, extra)."""
    header, tensors = unpack(blob, device)
    entries = {}
    for obj in header["objects"]:
        for kind, frame in _header_entries(obj):
            key = entry_key(obj["obj_id"], kind, frame)
            entries[key] = _entry_from(tensors, f"entry/{key}/")
    return _state_from(header, tensors, entries), header.get("extra", {})


def header_part(state: TrackerState, extra: dict | None = None) -> bytes:
    """Everything but the memory entries, at the state's version (its field parts, tensors only, stay at 1)."""
    header, tensors = _meta(state)
    return pack({**header, "extra": extra or {}}, tensors, format_version(state))


def _field_parts(key: str, entry: MemoryEntry) -> dict[str, bytes]:
    return {f"{key}/{f}": pack({}, {f: getattr(entry, attr)}) for attr, f in _FIELD_KEYS.items()
            if getattr(entry, attr) is not None}


def _entry_of(state: TrackerState, obj_id: int, kind: str, frame: int) -> MemoryEntry | None:
    track = state.objects.get(obj_id)
    return None if track is None else (track.cond if kind == COND else track.non_cond).get(frame)


def state_parts(state: TrackerState, extra: dict | None = None) -> tuple[bytes, dict[str, bytes]]:
    """The state as a header part and one part per memory-entry field ("<entry_key>/<field>")."""
    parts: dict[str, bytes] = {}
    for t in state.objects.values():
        for kind, frame, e in _entries_of(t):
            parts.update(_field_parts(entry_key(t.obj_id, kind, frame), e))
    return header_part(state, extra), parts


def delta_parts(state: TrackerState, extra: dict | None = None) -> tuple[bytes, dict[str, bytes], list[str]]:
    """What changed since the delta was last taken: the new header part, parts written, part keys deleted."""
    d = state.last_delta
    puts: dict[str, bytes] = {}
    deletes: set[str] = set()
    for obj_id, kind, frame in dict.fromkeys(d.put):
        entry = _entry_of(state, obj_id, kind, frame)
        key = entry_key(obj_id, kind, frame)
        if entry is not None:
            fields = _field_parts(key, entry)
            puts.update(fields)
            deletes.update(f"{key}/{f}" for f in _ENTRY_FIELDS if f"{key}/{f}" not in fields)
    for obj_id, kind, frame in d.delete:
        key = entry_key(obj_id, kind, frame)
        deletes.update(f"{key}/{f}" for f in _ENTRY_FIELDS)
    for obj_id, kind, frame, attr in d.drop:
        deletes.add(f"{entry_key(obj_id, kind, frame)}/{_FIELD_KEYS[attr]}")
    state.last_delta = StepDelta()  # taken: the next delta starts empty
    return header_part(state, extra), puts, sorted(deletes - set(puts))


def state_from_parts(header_blob: bytes, parts: dict[str, bytes], device: str | torch.device = "cpu") -> tuple[TrackerState, dict]:
    """Join a header part and field parts back into a state -> (state, extra)."""
    header, tensors = unpack(header_blob, device)
    fields: dict[str, dict[str, torch.Tensor]] = {}
    for name, blob in parts.items():
        key, _, field = name.rpartition("/")
        if field not in _ENTRY_FIELDS:
            raise StateFormatError(f"unknown state part {name!r}")
        fields.setdefault(key, {}).update(unpack(blob, device)[1])
    entries = {k: _entry_from(v) for k, v in fields.items()}
    return _state_from(header, tensors, entries), header.get("extra", {})
