"""WS /v1/track: streaming video sessions (protocol in docs/protocol.md).

Two tasks per socket: a reader that parses messages, answers pings and applies the frame back-pressure
policy, and a worker that runs the session's steps in arrival order and sends results in frame order. With
CUDA the next waiting frame is decoded and prepared while the one before it is tracked (one frame ahead at most).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from dataclasses import dataclass

from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect

from .. import ws_tokens
from ..auth import Tenant, presented_key, tenant_of
from ..engine_errors import NotReady, Overloaded, QueueTimeout
from ..track_sessions import FrameInput, Session, TrackError, TrackSessions

log = logging.getLogger(__name__)
router = APIRouter(tags=["tracking"])


def _tenant(ws: WebSocket) -> str | None:
    """The caller's tenant (Bearer / X-API-Key header, ?token= from POST /v1/track/token, or ?api_key=);
    None if refused."""
    token = ws.query_params.get("token")
    if token is not None:
        return ws_tokens.verify(ws.app.state.ws_token_secret, token)
    return tenant_of(presented_key(ws.headers, ws.query_params), ws.app.state.settings.api_keys)


@router.post("/v1/track/token", summary="A short-lived token for opening /v1/track from a browser")
async def track_token(request: Request, tenant: Tenant) -> dict:
    """Open the WebSocket with `?token=` instead of `?api_key=`: the token names the caller's API key without
    showing it, and expires after `SAM2_WS_TOKEN_TTL` seconds (it is checked when the socket opens)."""
    ttl = request.app.state.settings.ws_token_ttl
    return {"token": ws_tokens.mint(request.app.state.ws_token_secret, tenant, ttl), "expires_in": ttl}


@dataclass
class _Frame:
    """A binary frame waiting its turn; `ready` decodes and prepares it ahead of time (see `read_ahead`)."""

    seq: int
    data: bytes
    received: float
    ready: asyncio.Task | None = None


class _Connection:
    """One socket: its session (once started), the ordered event queue and the send lock."""

    def __init__(self, ws: WebSocket, sessions: TrackSessions, tenant: str) -> None:
        self.ws, self.sessions, self.tenant = ws, sessions, tenant
        s = sessions.settings
        self.max_queued, self.policy = s.track_queue_frames, s.track_backpressure
        self.reads_ahead = s.track_read_ahead == "on" or (s.track_read_ahead == "auto"
                                                          and sessions.engine.device.type != "cpu")
        self.events: deque = deque()
        self.wakeup = asyncio.Event()
        self.frames_queued = 0
        self.abandoned_reads = 0  # reads of dropped frames still running in their thread
        self.seq = 0  # receipt number of binary frames
        self.session: Session | None = None
        self.send_lock = asyncio.Lock()
        self.closing = False

    async def send(self, msg: dict) -> None:
        async with self.send_lock:
            await self.ws.send_text(json.dumps(msg))

    async def error(self, exc: TrackError) -> None:
        await self.send(exc.message())

    # ---- reader -----------------------------------------------------------------------------------

    async def read(self) -> None:
        idle = self.sessions.settings.track_idle_seconds
        while not self.closing:
            try:
                msg = await asyncio.wait_for(self.ws.receive(), timeout=idle)
            except TimeoutError:
                await self.error(TrackError("idle_timeout", f"no message for {idle:g} s; the session can be "
                                                            "resumed with its token"))
                self.push(("stop", None))
                return
            if msg["type"] == "websocket.disconnect":
                self.push(("stop", None))
                return
            if msg.get("bytes") is not None:
                self.on_frame(msg["bytes"])
            elif msg.get("text") is not None:
                await self.on_text(msg["text"])

    def reader_done(self, task: asyncio.Task) -> None:
        """Whatever ended the reader ends the worker too: a socket never hangs on a reader that died."""
        if not task.cancelled() and task.exception() is not None:
            log.error("tracking socket reader failed", exc_info=task.exception())
        self.push(("stop", None))

    def push(self, event) -> None:
        self.events.append(event)
        self.wakeup.set()

    def on_frame(self, data: bytes) -> None:
        seq, self.seq = self.seq, self.seq + 1
        if self.frames_queued >= self.max_queued:
            if self.policy == "reject":
                asyncio.ensure_future(self.send({"type": "busy", "seq": seq, "detail":
                                                 f"{self.frames_queued} frames are waiting; this one was not taken"}))
                self.sessions.metrics.dropped_frames.inc()
                return
            for i, (kind, payload) in enumerate(self.events):  # drop_oldest
                if kind == "frame":
                    del self.events[i]
                    self.drop(payload)
                    self.frames_queued -= 1
                    self.sessions.metrics.dropped_frames.inc()
                    asyncio.ensure_future(self.send({"type": "dropped", "seq": [payload.seq]}))
                    break
        self.frames_queued += 1
        self.push(("frame", _Frame(seq, data, time.perf_counter())))
        self.read_ahead()

    def read_ahead(self) -> None:
        """Start decoding and preparing the first waiting frame, if it is not started yet: it overlaps the step
        running now (`SAM2_TRACK_READ_AHEAD`). Only once a session exists (a frame before `start` is refused
        unread)."""
        if self.session is None or not self.reads_ahead or self.closing or self.abandoned_reads:
            return
        for kind, payload in self.events:
            if kind == "frame":
                self.start_reading(payload)
                return

    def start_reading(self, frame: _Frame) -> None:
        if frame.ready is None:
            frame.ready = asyncio.ensure_future(asyncio.to_thread(self.sessions.read_frame, frame.data))

    def drop(self, frame: _Frame) -> None:
        """A frame not wanted any more. A read already started runs to its end in its thread (a thread cannot be
        stopped): until it ends no other frame is read ahead, and its error, if any, is taken so none is logged."""
        if frame.ready is None:
            return
        if frame.ready.done():
            _take_error(frame.ready)
            return
        self.abandoned_reads += 1

        def ended(task: asyncio.Task) -> None:
            _take_error(task)
            self.abandoned_reads -= 1
            self.read_ahead()

        frame.ready.add_done_callback(ended)

    def drop_waiting(self) -> None:
        """The socket is done: frames being read ahead are not wanted (nor their errors)."""
        for kind, payload in self.events:
            if kind == "frame":
                self.drop(payload)

    async def on_text(self, text: str) -> None:
        limit = self.sessions.settings.track_max_text_bytes
        if len(text) > limit:
            await self.error(TrackError("limit", f"JSON messages are at most {limit} bytes"))
            return
        try:
            msg = json.loads(text)
        except (ValueError, RecursionError):  # not JSON, or nested too deeply for the parser
            await self.error(TrackError("bad_message", "messages are JSON objects (frames are binary)"))
            return
        if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
            await self.error(TrackError("bad_message", 'a message is a JSON object with a "type"'))
            return
        if msg["type"] == "ping":
            await self.send({"type": "pong"})
            return
        self.push(("control", msg))

    # ---- worker -----------------------------------------------------------------------------------

    async def work(self) -> None:
        while True:
            while not self.events:
                self.wakeup.clear()
                await self.wakeup.wait()
            kind, payload = self.events.popleft()
            if kind == "stop":
                return
            try:
                if kind == "frame":
                    self.frames_queued -= 1
                    await self.on_frame_event(payload)
                else:
                    await self.on_control(payload)
            except TrackError as exc:
                await self.error(exc)
                if exc.fatal:
                    return
            except (Overloaded, QueueTimeout) as exc:  # the engine's queue is full or timed out: back-pressure
                await self.error(TrackError("busy", exc.detail))
            except NotReady as exc:  # shutting down, or the device failed: nothing ran
                await self.error(TrackError("not_ready", exc.detail))
            if self.closing:
                return

    async def on_frame_event(self, frame: _Frame) -> None:
        try:
            session = self.require_session()
        except TrackError:
            self.drop(frame)
            raise
        t0 = time.perf_counter()
        self.start_reading(frame)
        self.read_ahead()  # the next frame, while this one is tracked
        read: FrameInput = await frame.ready
        try:
            step = await self.sessions.track_frame(session, read)
        except (Overloaded, QueueTimeout) as exc:  # back-pressure: the session and its prompts stay as they were
            self.sessions.metrics.dropped_frames.inc()
            await self.send_notes(session)
            await self.send({"type": "busy", "seq": frame.seq, "detail": exc.detail})
            return
        msg = {**step.message, "seq": frame.seq}
        done = time.perf_counter()
        # decode_ms and prepare_ms may have overlapped the frame before; track_ms includes waiting for the engine;
        # the masks are encoded during store_ms, beside the write
        msg["timings"] = {"queue_ms": round((t0 - frame.received) * 1e3, 2),
                          "decode_ms": round(read.decode_seconds * 1e3, 2),
                          "prepare_ms": round(read.prepare_seconds * 1e3, 2),
                          "track_ms": round(step.track_seconds * 1e3, 2),
                          "store_ms": round(step.store_seconds * 1e3, 2),
                          "total_ms": round((done - frame.received) * 1e3, 2)}
        self.sessions.metrics.frame_latency.observe(done - frame.received)
        for note in step.notes:  # store news first, so a client reading this frame's masks has seen it
            await self.send(note)
        await self.send(msg)

    async def send_notes(self, session: Session) -> None:
        notes, session.notes = session.notes, []
        for note in notes:
            await self.send(note)

    def require_session(self) -> Session:
        if self.session is None:
            raise TrackError("not_started", 'send {"type": "start"} or {"type": "resume"} first')
        if self.session.moved:
            raise TrackError("session_moved", "this session was resumed on another connection", fatal=True)
        return self.session

    async def on_control(self, msg: dict) -> None:
        kind = msg["type"]
        if kind in ("start", "resume"):
            if self.session is not None:
                raise TrackError("bad_message", "this connection already has a session")
            if kind == "start":
                self.session = await self.sessions.start(self.tenant, msg)
            else:
                self.session = await self.sessions.resume(self.tenant, msg.get("session_id"), msg.get("resume_token"))
            st = self.session.state
            reply = {"type": "session", "session_id": self.session.session_id, "frame_idx": st.frame_idx,
                     "model": self.session.record.model, "image_size": self.session.record.image_size,
                     "objects": st.obj_ids, "resumed": kind == "resume"}
            if self.session.token:
                reply["resume_token"] = self.session.token
            await self.send(reply)
            return
        session = self.require_session()
        if kind in ("prompt", "remove_object", "reset"):
            if kind == "prompt":
                replies = await self.sessions.prompt(session, msg)
            elif kind == "remove_object":
                replies = await self.sessions.remove_object(session, msg.get("obj_id"))
            else:
                replies = await self.sessions.reset(session)
            for reply in replies:
                await self.send(reply)
        elif kind == "close":
            await self.sessions.close(session)
            self.session = None
            self.closing = True
            await self.send({"type": "closed"})
        else:
            raise TrackError("bad_message", f"unknown message type {kind!r}")


def _take_error(task: asyncio.Task) -> None:
    """Retrieve a finished task's exception, so that asyncio does not log it as never retrieved."""
    if not task.cancelled():
        task.exception()


@router.websocket("/v1/track")
async def track(ws: WebSocket) -> None:
    sessions: TrackSessions = ws.app.state.track_sessions
    tenant = _tenant(ws)
    await ws.accept()
    if tenant is None:
        await ws.send_text(json.dumps(TrackError("unauthorized", "send a valid API key (Authorization: Bearer, "
                                                                 "X-API-Key or ?api_key=)").message()))
        await ws.close(code=1008)
        return
    if not sessions.engine.ready:
        await ws.send_text(json.dumps(TrackError("not_ready", sessions.engine.status_detail()).message()))
        await ws.close(code=1013)
        return
    conn = _Connection(ws, sessions, tenant)
    reader = asyncio.create_task(conn.read())
    reader.add_done_callback(conn.reader_done)
    try:
        await conn.work()
    except WebSocketDisconnect:
        pass
    except Exception:  # noqa: BLE001 - a bug must not leave the socket hanging
        log.exception("tracking session failed")
        try:
            await conn.send({"type": "error", "code": "internal", "detail": "internal error; resume the session"})
        except Exception:  # noqa: BLE001
            pass
    finally:
        conn.closing = True
        reader.cancel()
        conn.drop_waiting()
        if conn.session is not None:
            sessions.detach(conn.session)
        try:
            await ws.close()
        except Exception:  # noqa: BLE001 - already closed
            pass
