"""Streaming tracking sessions: one VideoTracker state per session, hot on this replica, mirrored to a store.

A session runs its steps in order (frames and prompts as they came), on the engine's worker thread, and
writes each step's delta through to the SessionStore. Any replica can resume a session from the store.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from model_core.mask_ops import decode_rle, encode_rle, masks_to_boxes
from model_core.state_codec import delta_parts, state_from_parts, state_parts
from model_core.video_tracker import TrackerState, TrackResult, VideoTracker

from .image_io import decode_image
from .session_store import SessionRecord, SessionStore, StoreUnavailable, VersionConflict, token_hash
from .wire import RAW_HEADER_BYTES, RAW_MAGIC, encode_raw_frame, raw_frame_size

__all__ = ["Session", "TrackError", "TrackSessions", "decode_frame", "encode_raw_frame", "result_message"]

log = logging.getLogger(__name__)


class TrackError(Exception):
    """A client mistake or refusal on /v1/track: sent as {"type": "error", "code", "detail"}."""

    def __init__(self, code: str, detail: str, fatal: bool = False) -> None:
        super().__init__(detail)
        self.code, self.detail, self.fatal = code, detail, fatal

    def message(self) -> dict:
        return {"type": "error", "code": self.code, "detail": self.detail}


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
        boxes = masks_to_boxes(torch.from_numpy(masks)).numpy()
        for o, rle, box in zip(result.objects, encode_rle(masks), boxes):
            objects.append({
                # wire names: "score" is the predicted IoU, "object_score" the presence logit
                "obj_id": o.obj_id, "rle": rle, "bbox": [float(v) for v in box], "score": round(o.iou, 5),
                "object_score": round(o.object_score_logit, 5), "present": bool(o.present),
            })
    return {"type": "masks", "frame_idx": result.frame_idx, "objects": objects, **extra}


@dataclass
class FrameStep:
    """A tracked frame: its result, store notices to send before it, and where the time went."""

    result: TrackResult
    notes: list[dict]
    track_seconds: float
    store_seconds: float


@dataclass
class Session:
    """A live session on this replica."""

    record: SessionRecord
    state: TrackerState
    token: str | None = None  # only known to the replica that created it (sent once to the client)
    deferred: list[dict] = field(default_factory=list)  # "next" prompts sent before the frame size was known
    needs_full_write: bool = False  # a write failed: the next one rewrites everything
    store_down_reported: bool = False
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
        model = msg.get("model")
        cfg = self.engine.model.cfg
        if model not in (None, "") and model not in (self.settings.model, cfg.name):
            from model_core import canonical_name

            try:
                same = canonical_name(model) == cfg.name
            except ValueError:
                same = False
            if not same:
                raise TrackError("bad_message", f"this replica serves {cfg.name}, not {model}")
        if msg.get("image_size") not in (None, cfg.image_size):
            raise TrackError("bad_message", f"this replica runs image_size {cfg.image_size}")
        mode = msg.get("mode", "video")
        if mode not in ("video", "images"):
            raise TrackError("bad_message", "mode must be 'video' or 'images'")
        width, height = msg.get("width"), msg.get("height")
        for name, v in (("width", width), ("height", height)):
            if v is not None and (not isinstance(v, int) or v < 1):
                raise TrackError("bad_message", f"{name} must be a positive integer")
        if (width is None) != (height is None):
            raise TrackError("bad_message", "give both width and height, or neither (taken from the first frame)")
        if width is not None and width * height > s.max_image_pixels:
            raise TrackError("limit", f"frames of {width}x{height} are over {s.max_image_pixels} pixels")
        try:
            owned = await self.store.count_owned(tenant)
        except StoreUnavailable as exc:
            raise TrackError("store_unavailable", str(exc)) from None
        if owned >= s.track_sessions_per_key:
            raise TrackError("limit", f"this API key already has {owned} sessions (limit {s.track_sessions_per_key})")
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
        try:
            stored = await self.store.load(session_id)
        except StoreUnavailable as exc:
            raise TrackError("store_unavailable", str(exc)) from None
        if stored is None:
            raise TrackError("not_found", "no such session (it expired, was closed, or never existed)")
        rec = stored.record
        if rec.owner != tenant or not rec.token_matches(token):
            raise TrackError("forbidden", "this session belongs to another key or the token is wrong")
        cfg = self.engine.model.cfg
        if (rec.model, rec.image_size) != (cfg.name, cfg.image_size):
            raise TrackError("bad_message", f"the session runs {rec.model}@{rec.image_size}, this replica "
                                            f"{cfg.name}@{cfg.image_size}")
        state, _ = await asyncio.to_thread(state_from_parts, stored.header, stored.entries, self.engine.device)
        session = Session(rec, state)
        self.live[session_id] = session
        self.metrics.active_sessions.set(len(self.live))
        self.metrics.session_resumes.inc()
        return session

    def detach(self, session: Session) -> None:
        """The socket went away: the state stays in the store (until its TTL) for a resume."""
        self.live.pop(session.session_id, None)
        self.metrics.active_sessions.set(len(self.live))

    async def close(self, session: Session) -> None:
        """The client ended the session: forget it here and in the store."""
        self.detach(session)
        try:
            await self.store.delete(session.session_id)
        except StoreUnavailable:
            pass  # its keys expire by TTL

    # ---- steps: each runs on the engine, persists its delta and returns what to send ---------------

    async def track_frame(self, session: Session, rgb: np.ndarray) -> FrameStep:
        st = session.state
        if st.height == 0:  # size taken from the first frame; prompts that waited for it apply now
            st.height, st.width = rgb.shape[:2]
            deferred, session.deferred = session.deferred, []
            for msg in deferred:
                await self._apply_prompt(session, msg)
        elif rgb.shape[:2] != (st.height, st.width):
            raise TrackError("bad_frame", f"frame is {rgb.shape[1]}x{rgb.shape[0]}, the session's frames are "
                                          f"{st.width}x{st.height}")
        x = await asyncio.to_thread(self.engine.prepare, rgb, self.tracker.resize)
        t0 = time.perf_counter()
        result = await self.engine.track(self.tracker, st, x)
        t1 = time.perf_counter()
        self.metrics.device_seconds.labels("tracker", self.engine.model.cfg.name).observe(t1 - t0)
        self.metrics.frames_tracked.inc()
        notes = await self._persist_notes(session)
        return FrameStep(result, notes, t1 - t0, time.perf_counter() - t1)

    async def prompt(self, session: Session, msg: dict) -> list[dict]:
        """An ack (prompt for the next frame) or the refined masks (the current frame), after store notices."""
        out = await self._apply_prompt(session, msg)
        notes = await self._persist_notes(session)
        if out is None:
            return notes + [{"type": "ack", "for": "prompt", "obj_id": msg["obj_id"],
                             "frame_idx": session.state.frame_idx}]
        reply = await asyncio.to_thread(result_message, TrackResult(session.state.frame_idx - 1, [out]), refined=True)
        return notes + [reply]

    async def remove_object(self, session: Session, obj_id) -> list[dict]:
        try:
            await self.engine.call(lambda: self.tracker.remove_object(session.state, obj_id))
        except KeyError:
            raise TrackError("unknown_object", f"no object {obj_id} in this session") from None
        return await self._persist_notes(session) + [{"type": "ack", "for": "remove_object", "obj_id": obj_id}]

    async def reset(self, session: Session) -> list[dict]:
        await self.engine.call(lambda: self.tracker.reset(session.state))
        return await self._persist_notes(session) + [{"type": "ack", "for": "reset"}]

    async def _apply_prompt(self, session: Session, msg: dict):
        st = session.state
        frame = msg.get("frame", "next")
        if frame not in ("next", "current"):
            raise TrackError("bad_prompt", "frame must be 'next' or 'current'")
        obj_id = msg.get("obj_id")
        if not isinstance(obj_id, int) or isinstance(obj_id, bool):
            raise TrackError("bad_prompt", "obj_id must be an integer")
        if st.height == 0:
            if frame == "current":
                raise TrackError("bad_prompt", "no frame has been tracked yet: use frame 'next'")
            session.deferred.append(msg)  # coordinates need the frame size: applied with the first frame
            return None
        points, labels, box, mask = msg.get("points"), msg.get("labels"), msg.get("box"), msg.get("mask")
        npts = 0 if points is None else (len(points) if isinstance(points, list) else -1)
        if npts > self.settings.max_points:
            raise TrackError("bad_prompt", f"at most {self.settings.max_points} points per prompt")
        try:
            if mask is not None:
                if not isinstance(mask, dict) or mask.get("size") != [st.height, st.width]:
                    raise TrackError("bad_prompt", f"mask must be a COCO RLE of size [{st.height}, {st.width}]")
                mask = decode_rle(mask)
            for x, y in (np.asarray(points, dtype=np.float64).reshape(-1, 2) if points is not None else []):
                if not (0 <= x <= st.width and 0 <= y <= st.height):
                    raise TrackError("bad_prompt", f"point ({x:g}, {y:g}) is outside the {st.width}x{st.height} frame")
            update = bool(msg.get("update_memory", True))
            return await self.engine.call(lambda: self.tracker.add_prompt(
                st, obj_id, points=points, labels=labels, box=box, mask=mask, frame=frame, update_memory=update))
        except TrackError:
            raise
        except (ValueError, TypeError, KeyError) as exc:
            raise TrackError("bad_prompt", str(exc).strip("'\"")) from None

    async def _persist_notes(self, session: Session) -> list[dict]:
        note = await self.persist(session)
        return [note] if note else []

    # ---- persistence --------------------------------------------------------------------------------

    async def persist(self, session: Session) -> dict | None:
        """Write the step's delta (or everything after a failure); returns a message for the client, if any."""
        ttl = self.settings.track_session_ttl
        extra = {"model": session.record.model}
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
