"""Streaming tracking sessions: one VideoTracker state per session, hot on this replica, mirrored to a store.

A session runs its steps in order (frames and prompts as they came), on the engine's worker thread, and
writes each step's delta through to the SessionStore. Any replica can resume a session from the store.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from model_core.mask_ops import decode_rle, encode_rle, masks_to_boxes
from model_core.state_codec import (
    StateFormatError, UnsupportedStateVersion, check_version, delta_parts, state_from_parts, state_parts,
)
from model_core.video_tracker import TrackerState, TrackResult, VideoTracker

from pydantic import BaseModel, ValidationError

from . import errors
from .image_io import decode_image
from .prompts import check_inside
from .schemas import TrackPrompt, TrackRemove, TrackStart
from .session_store import (
    IncompleteSession, SessionRecord, SessionStore, StoreUnavailable, VersionConflict, token_hash,
)
from .wire import RAW_HEADER_BYTES, RAW_MAGIC, encode_raw_frame, raw_frame_size

__all__ = ["FrameInput", "Session", "TrackError", "TrackSessions", "decode_frame", "encode_raw_frame",
           "result_message"]

log = logging.getLogger(__name__)


class TrackError(Exception):
    """A client mistake or refusal on /v1/track: sent as {"type": "error", "code", "detail"}."""

    def __init__(self, code: str, detail: str, fatal: bool = False) -> None:
        super().__init__(detail)
        self.code, self.detail, self.fatal = code, detail, fatal

    def message(self) -> dict:
        return {"type": "error", "code": self.code, "detail": self.detail}


def parse_message(model: type[BaseModel], msg: dict, code: str):
    """A /v1/track message checked by its schema; a TrackError naming the bad fields otherwise."""
    try:
        return model.model_validate(msg)
    except ValidationError as exc:
        detail = errors.validation_problem(exc.errors(include_url=False, include_context=False)).detail
        raise TrackError(code, detail) from None


def _finite(value: float) -> float | None:
    """A score as JSON can carry it: NaN and infinities (invalid JSON for browsers) become null."""
    return round(value, 5) if math.isfinite(value) else None


def decode_frame(data: bytes, max_bytes: int, max_pixels: int) -> np.ndarray:
    """A binary frame message -> HWC RGB uint8: JPEG/PNG/... (header-checked) or the raw RGB8 layout."""
    if data[:4] == RAW_MAGIC:
        if len(data) < RAW_HEADER_BYTES:
            raise TrackError("bad_frame", "raw frame header is 12 bytes: b'RGB8', u32 width, u32 height")
        w, h = raw_frame_size(data)
        if w < 1 or h < 1 or w * h > max_pixels:
            raise TrackError("bad_frame", f"raw frame of {w}x{h} is empty or over {max_pixels} pixels")
        if len(data) != 12 + w * h * 3:
            raise TrackError("bad_frame", f"raw {w}x{h} frame needs {w * h * 3} pixel bytes, got {len(data) - 12}")
        return np.frombuffer(data, np.uint8, offset=RAW_HEADER_BYTES).reshape(h, w, 3)
    try:
        return decode_image(data, max_bytes, max_pixels)
    except Exception as exc:  # the image module raises problem+json errors; restate them for the socket
        raise TrackError("bad_frame", getattr(exc, "detail", None) or str(exc)) from None


def result_message(result: TrackResult, **extra) -> dict:
    """Per-object RLE masks, boxes (xyxy) and scores of one frame."""
    objects = []
    if result.objects:
        masks = np.stack([o.mask for o in result.objects])
        boxes = masks_to_boxes(masks)  # NumPy: this runs in a helper thread
        for o, rle, box in zip(result.objects, encode_rle(masks), boxes):
            objects.append({
                # wire names: "score" is the predicted IoU, "object_score" the presence logit
                "obj_id": o.obj_id, "rle": rle, "bbox": [float(v) for v in box], "score": _finite(o.iou),
                "object_score": _finite(o.object_score_logit), "present": bool(o.present),
            })
    return {"type": "masks", "frame_idx": result.frame_idx, "objects": objects, **extra}


def _pending_record(p: TrackPrompt) -> dict:
    """A prompt waiting for its frame as JSON the store keeps and `TrackPrompt` reads back (the mask by its alias)."""
    record = p.model_dump(exclude_none=True)
    if "mask_input" in record:
        record["mask"] = record.pop("mask_input")
    return record


@dataclass
class FrameInput:
    """A binary frame decoded and made the encoder's input: ready ahead of its turn (nothing of a session in it)."""

    hw: tuple[int, int]  # the frame's own size
    x: torch.Tensor | np.ndarray  # (3, S, S) on the device, or on the CPU the image (`Engine.encoder_input`)
    decode_seconds: float
    prepare_seconds: float


@dataclass
class FrameStep:
    """A tracked frame: its masks message, store notices to send before it, and where the time went."""

    message: dict
    notes: list[dict]
    track_seconds: float
    store_seconds: float


@dataclass
class Session:
    """A live session on this replica."""

    record: SessionRecord
    state: TrackerState
    token: str | None = None  # only known to the replica that created it (sent once to the client)
    pending: list[dict] = field(default_factory=list)  # checked "next" prompts waiting for their frame's size
    notes: list[dict] = field(default_factory=list)  # messages for the client from a step not answered yet
    needs_full_write: bool = False  # a write failed: the next one rewrites everything
    store_down_reported: bool = False
    moved: bool = False  # resumed on another connection of this replica: this one may not step any more
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def session_id(self) -> str:
        return self.record.session_id


class TrackSessions:
    """Creates, resumes, steps and persists sessions; one per process, shared by all WebSockets."""

    def __init__(self, engine, store: SessionStore, settings, metrics) -> None:
        self.engine, self.store, self.settings, self.metrics = engine, store, settings, metrics
        self._tracker: VideoTracker | None = None
        self.live: dict[str, Session] = {}

    @property
    def tracker(self) -> VideoTracker:
        if self._tracker is None:
            self._tracker = VideoTracker(self.engine.model, dtype=self.engine.dtype)
        return self._tracker

    # ---- open ---------------------------------------------------------------------------------------

    async def start(self, tenant: str, msg: dict) -> Session:
        s = self.settings
        m = parse_message(TrackStart, msg, "bad_message")
        model = m.model
        cfg = self.engine.model.cfg
        if model not in (None, "") and model not in (self.settings.model, cfg.name):
            from model_core import canonical_name

            try:
                same = canonical_name(model) == cfg.name
            except ValueError:
                same = False
            if not same:
                raise TrackError("bad_message", f"this replica serves {cfg.name}, not {model}")
        if m.image_size not in (None, cfg.image_size):
            raise TrackError("bad_message", f"this replica runs image_size {cfg.image_size}")
        mode, width, height = m.mode, m.width, m.height
        if (width is None) != (height is None):
            raise TrackError("bad_message", "give both width and height, or neither (taken from the first frame)")
        if width is not None and width * height > s.max_image_pixels:
            raise TrackError("limit", f"frames of {width}x{height} are over {s.max_image_pixels} pixels")
        live = self.live_count(tenant)
        if live >= s.track_sessions_per_key:
            raise TrackError("limit", f"this API key already has {live} live sessions here "
                                      f"(limit {s.track_sessions_per_key})")
        try:
            owned = await self.store.count_owned(tenant)
        except StoreUnavailable as exc:
            raise TrackError("store_unavailable", str(exc)) from None
        if owned >= s.track_stored_sessions_per_key:
            raise TrackError("limit", f"this API key already has {owned} stored sessions (limit "
                                      f"{s.track_stored_sessions_per_key}): close sessions, or let them expire")
        sid, token = secrets.token_urlsafe(16), secrets.token_urlsafe(16)  # 128 bits each
        # a size of 0 is taken from the first frame
        state = self.tracker.new_state(height or 0, width or 0, mode=mode, max_obj_num=s.track_max_objects)
        record = SessionRecord(sid, tenant, token_hash(token), cfg.name, cfg.image_size, time.time())
        session = Session(record, state, token)
        header, entries = state_parts(state, extra={"model": cfg.name})
        try:
            await self.store.create(record, header, entries, s.track_session_ttl)
        except StoreUnavailable as exc:
            raise TrackError("store_unavailable", str(exc)) from None
        self.live[sid] = session
        self.metrics.active_sessions.set(len(self.live))
        return session

    async def resume(self, tenant: str, session_id: str, token: str) -> Session:
        if not isinstance(session_id, str) or not isinstance(token, str):
            raise TrackError("bad_message", "resume needs session_id and resume_token strings")
        for _ in range(3):  # a write may land between load and claim: load again
            stored = await self._load(session_id)
            rec = stored.record
            if rec.owner != tenant or not rec.token_matches(token):
                raise TrackError("forbidden", "this session belongs to another key or the token is wrong")
            cfg = self.engine.model.cfg
            if (rec.model, rec.image_size) != (cfg.name, cfg.image_size):
                raise TrackError("bad_message", f"the session runs {rec.model}@{rec.image_size}, this replica "
                                                f"{cfg.name}@{cfg.image_size}")
            live = self.live_count(tenant) - (session_id in self.live)
            if live >= self.settings.track_sessions_per_key:
                raise TrackError("limit", f"this API key already has {live} live sessions here")
            self._check_readable(session_id, stored.header)  # before the claim: an unreadable one stays as it is
            try:  # from now on every earlier connection's write is refused: it is told session_moved
                rec.version = await self.store.claim(session_id, rec.version)
                break
            except VersionConflict:
                continue
            except KeyError:
                raise TrackError("not_found", "no such session (it expired, was closed, or never existed)") from None
            except StoreUnavailable as exc:
                raise TrackError("store_unavailable", str(exc)) from None
        else:
            raise TrackError("busy", "the session is being written by another connection; resume again")
        try:
            state, extra = await asyncio.to_thread(state_from_parts, stored.header, stored.entries,
                                                   self.engine.device)
        except UnsupportedStateVersion as exc:  # a memory-entry part of another release's format
            raise self._unsupported(session_id, exc) from None
        except (ValueError, KeyError) as exc:
            raise self._incomplete(session_id, exc) from None
        session = Session(rec, state, pending=list(extra.get("pending_prompts", [])))
        old = self.live.get(session_id)
        if old is not None:
            old.moved = True
        self.live[session_id] = session
        self.metrics.active_sessions.set(len(self.live))
        self.metrics.session_resumes.inc()
        return session

    async def _load(self, session_id: str):
        try:
            stored = await self.store.load(session_id)
        except StoreUnavailable as exc:
            raise TrackError("store_unavailable", str(exc)) from None
        except IncompleteSession as exc:
            raise self._incomplete(session_id, exc) from None
        if stored is None:
            raise TrackError("not_found", "no such session (it expired, was closed, or never existed)")
        return stored

    def _check_readable(self, session_id: str, header: bytes) -> None:
        """Refuse a session whose state this replica cannot read, before taking it over: a state written by
        another release (during a rolling upgrade or downgrade) stays untouched for a replica that reads it."""
        try:
            check_version(header)
        except UnsupportedStateVersion as exc:
            raise self._unsupported(session_id, exc) from None
        except StateFormatError as exc:
            raise self._incomplete(session_id, exc) from None

    def _unsupported(self, session_id: str, exc: UnsupportedStateVersion) -> TrackError:
        """A session stored in a state format version this replica does not read: counted, and said so."""
        readable = ", ".join(map(str, exc.readable))
        log.warning("session %s is stored as state version %r, this replica reads %s: refused", session_id,
                    exc.version, readable)
        self.metrics.errors.labels("state_version_unsupported").inc()
        return TrackError("state_version_unsupported",
                          f"the session's stored state is format version {exc.version!r}, this replica reads "
                          f"versions {readable}: it was written by another release of the service (a rolling "
                          "upgrade or downgrade?). It is kept as it is: resume it on a replica that reads that "
                          "version, or start a new session")

    def _incomplete(self, session_id: str, exc: Exception) -> TrackError:
        """A session missing some of its keys (evicted): counted, and answered like one that does not exist."""
        log.warning("session %s is incomplete in the store (%r): refused", session_id, exc)
        self.metrics.errors.labels("session_incomplete").inc()
        return TrackError("not_found", "the session's stored state is incomplete (part of it was evicted from the "
                                       "store): it cannot be resumed; start a new one")

    def live_count(self, tenant: str) -> int:
        """Sessions with an open socket on this replica for this tenant."""
        return sum(1 for x in self.live.values() if x.record.owner == tenant)

    def detach(self, session: Session) -> None:
        """The socket went away: the state stays in the store (until its TTL) for a resume."""
        if self.live.get(session.session_id) is session:  # not the connection that took it over
            del self.live[session.session_id]
        self.metrics.active_sessions.set(len(self.live))

    async def close(self, session: Session) -> None:
        """The client ended the session: forget it here and in the store."""
        self.detach(session)
        try:
            await self.store.delete(session.session_id)
        except StoreUnavailable:
            pass  # its keys expire by TTL

    # ---- steps: each runs on the engine, persists its delta and returns what to send ---------------

    def read_frame(self, data: bytes) -> FrameInput:
        """Decode a binary frame and, on CUDA, prepare it on the device (in a handler's thread: a socket reads one
        frame ahead, so this overlaps the frame before it being tracked)."""
        s = self.settings
        t0 = time.perf_counter()
        rgb = decode_frame(data, s.max_image_bytes, s.max_image_pixels)
        t1 = time.perf_counter()
        x = self.engine.encoder_input(rgb, self.tracker.resize)
        return FrameInput(rgb.shape[:2], x, t1 - t0, time.perf_counter() - t1)

    async def track_frame(self, session: Session, frame: FrameInput) -> FrameStep:
        """Track one frame, then encode its masks while the step's delta is written (acknowledged means stored:
        the message is returned once both are done)."""
        st = session.state
        hw = frame.hw
        waiting: list[tuple[TrackPrompt, np.ndarray | None]] = []
        sizes_session = st.height == 0 or st.mode == "images"  # this frame's size is the session's from now on
        if sizes_session:  # prompts that waited for this frame's size are checked against it and apply with it
            for raw in session.pending:
                prompt = TrackPrompt.model_validate(raw)
                try:
                    check_inside(prompt.obj_id, prompt, hw)
                    mask = None if prompt.mask_input is None else decode_rle(prompt.mask_input.model_dump())
                except errors.Problem as exc:
                    session.notes.append(self._dropped(exc.detail))
                    continue
                except (ValueError, TypeError, KeyError, OverflowError) as exc:  # an RLE that does not decode
                    session.notes.append(self._dropped(f"object {prompt.obj_id}: mask is not valid RLE: {exc}"))
                    continue
                waiting.append((prompt, mask))
            session.pending = [_pending_record(p) for p, _ in waiting]
        elif hw != (st.height, st.width):
            raise TrackError("bad_frame", f"frame is {hw[1]}x{hw[0]}, the session's frames are "
                                          f"{st.width}x{st.height} (a video's frames keep one size; start the session "
                                          "with mode 'images' for images of different sizes)")
        refused: list[str] = []

        def take_size() -> None:  # on the worker, in the tracking step itself: a full queue or a deadline
            st.height, st.width = hw  # leaves the state and the waiting prompts untouched
            for prompt, mask in waiting:
                try:
                    self._add_prompt(st, prompt, "next", mask)
                except (ValueError, TypeError, KeyError, OverflowError) as exc:  # e.g. too many objects
                    refused.append(str(exc).strip("'\""))

        t0 = time.perf_counter()
        result = await self.engine.track(self.tracker, st, frame.x, before=take_size if sizes_session else None)
        t1 = time.perf_counter()
        session.pending = []
        session.notes.extend(self._dropped(detail) for detail in refused)
        self.metrics.device_seconds.labels("tracker", self.engine.model.cfg.name).observe(t1 - t0)
        self.metrics.frames_tracked.inc()
        notes, session.notes = session.notes, []

        async def stored() -> float:
            notes.extend(await self._persist_notes(session))
            return time.perf_counter() - t1

        message, store_seconds = await asyncio.gather(asyncio.to_thread(result_message, result), stored())
        return FrameStep(message, notes, t1 - t0, store_seconds)

    @staticmethod
    def _dropped(detail: str) -> dict:
        return TrackError("bad_prompt", f"a prompt sent before its frame, not applied: {detail}").message()

    def _add_prompt(self, st: TrackerState, p: TrackPrompt, frame: str, mask: np.ndarray | None = None):
        return self.tracker.add_prompt(st, p.obj_id, points=p.points, labels=p.labels, box=p.box, mask=mask,
                                       frame=frame, update_memory=p.update_memory)

    async def prompt(self, session: Session, msg: dict) -> list[dict]:
        """An ack (prompt for the next frame, or kept until the first frame) or the refined masks (the current
        frame), after store notices."""
        p = parse_message(TrackPrompt, msg, "bad_prompt")
        out = await self._apply_prompt(session, p)
        notes = await self._persist_notes(session)  # early prompts too: acknowledged means stored
        if out is None:
            return notes + [{"type": "ack", "for": "prompt", "obj_id": p.obj_id, "frame_idx": session.state.frame_idx}]
        reply = await asyncio.to_thread(result_message, TrackResult(session.state.frame_idx - 1, [out]), refined=True)
        return notes + [reply]

    async def remove_object(self, session: Session, obj_id) -> list[dict]:
        obj_id = parse_message(TrackRemove, {"obj_id": obj_id}, "bad_message").obj_id
        kept = [p for p in session.pending if p["obj_id"] != obj_id]  # prompts not applied yet go too
        try:
            await self.engine.call(lambda: self.tracker.remove_object(session.state, obj_id))
        except KeyError:
            if len(kept) == len(session.pending):
                raise TrackError("unknown_object", f"no object {obj_id} in this session") from None
        session.pending = kept
        return await self._persist_notes(session) + [{"type": "ack", "for": "remove_object", "obj_id": obj_id}]

    async def reset(self, session: Session) -> list[dict]:
        await self.engine.call(lambda: self.tracker.reset(session.state))
        session.pending = []
        return await self._persist_notes(session) + [{"type": "ack", "for": "reset"}]

    async def _apply_prompt(self, session: Session, p: TrackPrompt):
        """Check a prompt (REST's checks) and apply it, or keep it until its frame gives the size (the first
        frame; in images mode every image, each of its own size)."""
        st, s = session.state, self.settings
        if len(p.points or []) > s.max_points:
            raise TrackError("bad_prompt", f"at most {s.max_points} points per prompt")
        waits = st.height == 0 or (st.mode == "images" and p.frame == "next")  # the frame's size is not known yet
        if waits:
            if p.frame == "current":
                raise TrackError("bad_prompt", "no frame has been tracked yet: use frame 'next'")
            if p.mask_input is not None and st.mode != "images":
                raise TrackError("bad_prompt", "a mask needs the frame size: give width and height in start, or "
                                               "send it after the first frame")
            if len(session.pending) >= s.track_max_pending_prompts:
                raise TrackError("limit", f"{len(session.pending)} prompts already wait for the next frame "
                                          f"(limit {s.track_max_pending_prompts})")
            session.pending.append(_pending_record(p))  # written to the store with this step
            return None
        try:
            check_inside(p.obj_id, p, (st.height, st.width))
            mask = None if p.mask_input is None else decode_rle(p.mask_input.model_dump())
            return await self.engine.call(lambda: self._add_prompt(st, p, p.frame, mask))
        except errors.Problem as exc:
            raise TrackError("bad_prompt", exc.detail) from None
        except (ValueError, TypeError, KeyError, OverflowError) as exc:
            raise TrackError("bad_prompt", str(exc).strip("'\"")) from None

    async def _persist_notes(self, session: Session) -> list[dict]:
        note = await self.persist(session)
        return [note] if note else []

    # ---- persistence --------------------------------------------------------------------------------

    async def persist(self, session: Session) -> dict | None:
        """Write the step's delta (or everything after a failure); returns a message for the client, if any."""
        ttl = self.settings.track_session_ttl
        extra = {"model": session.record.model, "pending_prompts": session.pending}
        t0 = time.perf_counter()
        try:
            if session.needs_full_write:
                header, puts = await asyncio.to_thread(state_parts, session.state, extra)
                deletes, replace = [], True
            else:
                header, puts, deletes = await asyncio.to_thread(delta_parts, session.state, extra)
                replace = False
            try:
                session.record.version = await self.store.write(
                    session.session_id, session.record.version, header, puts, deletes, ttl, replace=replace)
            except KeyError:  # the store lost it (restart without persistence, or TTL): write it afresh
                if not replace:
                    header, puts = await asyncio.to_thread(state_parts, session.state, extra)
                session.record.version = 0
                await self.store.create(session.record, header, puts, ttl)
            await self.store.touch_owner(session.record.owner, session.session_id, ttl)
        except StoreUnavailable as exc:
            session.needs_full_write = True
            self.metrics.store_errors.inc()
            if not session.store_down_reported:
                session.store_down_reported = True
                return {"type": "error", "code": "store_unavailable",
                        "detail": f"{exc}; tracking continues here, the session cannot be resumed elsewhere "
                                  "until the store is back"}
            return None
        except VersionConflict:
            raise TrackError("session_moved", "this session was resumed on another connection", fatal=True)
        self.metrics.store_write_seconds.observe(time.perf_counter() - t0)
        self.metrics.store_write_bytes.observe(len(header) + sum(len(v) for v in puts.values()))
        recovered = session.needs_full_write and session.store_down_reported
        session.needs_full_write = False
        session.store_down_reported = False
        return {"type": "store_recovered"} if recovered else None
