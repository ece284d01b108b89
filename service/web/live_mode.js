// Live video: the camera (getUserMedia) or a local video file plays in the page; frames are captured
// to a canvas and sent over /v1/track as JPEG; clicks add objects (frame "next") or correct the
// latest tracked frame (frame "current"); masks are drawn as they arrive. The session id and resume
// token are kept (session storage too), so a dropped connection, or a reload, resumes the session.

import { explainTrack, trackUrl } from "./api.js";
import { showMessage } from "./messages.js";
import { fitCanvas, renderObjectList } from "./objects.js";
import { attachPointer, colorOf, paintMasks, paintPrompts } from "./overlay.js";
import { decodeRle } from "./rle.js";

const SESSION_STORAGE = "sam2-service.track_session";
const MAX_IN_FLIGHT = 2;                     // frames sent and not yet answered (the server queues a few)
const RECONNECT_DELAYS_MS = [200, 500, 1000, 2000, 4000, 8000];
const FATAL = new Set(["session_moved", "unauthorized", "not_found", "forbidden"]);

export class LiveMode {
  constructor() {
    this.video = document.getElementById("live-video");
    this.stage = document.getElementById("live-stage");
    this.canvas = document.getElementById("live-canvas");
    this.ctx = this.canvas.getContext("2d", { willReadFrequently: true });
    this.capture = document.createElement("canvas");
    this.captureCtx = this.capture.getContext("2d", { willReadFrequently: true });
    this.list = document.getElementById("live-objects");
    this.sizeSelect = document.getElementById("capture-size");
    this.excludeToggle = document.getElementById("live-exclude-mode");
    this.stream = null;
    this.source = null;          // "camera" | "file"
    this.ws = null;
    this.state = "idle";         // idle | connecting | tracking | reconnecting | paused | ended
    this.session = JSON.parse(sessionStorage.getItem(SESSION_STORAGE) || "null"); // {id, token, width, height}
    this.objects = [];           // [{id, name, color, visible, firstFrame, note}]
    this.selected = null;
    this.addingNew = false;
    this.inFlight = new Map();   // seq -> {sentAt, frame: ImageData}
    this.seq = 0;                // binary messages sent on this connection (the server numbers them alike)
    this.lastFrame = null;       // {frameIdx, image: ImageData}
    this.masks = new Map();      // obj_id -> {mask, present}
    this.reconnects = 0;
    this.resumes = 0;
    this.capturing = false;
    this.freshFrame = true;
    this.stats = { sent: 0, answered: 0, masked: 0, busy: 0, dropped: 0, times: [], latency: null, server: null };
    this.pointer = attachPointer(this.canvas, {
      onPoint: (p, negative) => this.click({ points: [[Math.floor(p.x), Math.floor(p.y)]], labels: [negative ? 0 : 1] }),
      onBox: (b) => this.click({ box: b.map(Math.round) }),
      onDrag: (b) => { this.drag = b; this.redraw(); },
      excludeMode: () => this.excludeToggle.getAttribute("aria-pressed") === "true",
    });
    document.getElementById("camera").addEventListener("click", () => this.useCamera());
    document.getElementById("video-file").addEventListener("change", (ev) => {
      if (ev.target.files[0]) this.useFile(ev.target.files[0]);
      ev.target.value = "";
    });
    document.getElementById("track-start").addEventListener("click", () => this.startOrResume());
    document.getElementById("track-stop").addEventListener("click", () => this.stop());
    document.getElementById("track-end").addEventListener("click", () => this.end());
    document.getElementById("live-new-object").addEventListener("click", () => this.newObject());
    document.getElementById("live-reset").addEventListener("click", () => this.reset());
    this.excludeToggle.addEventListener("click", () => {
      const on = this.excludeToggle.getAttribute("aria-pressed") !== "true";
      this.excludeToggle.setAttribute("aria-pressed", String(on));
    });
    window.addEventListener("resize", () => fitCanvas(this.canvas, this.stage));
    setInterval(() => this.renderStats(), 250);
    this.renderList();
    this.renderStats();
  }

  // ---- sources ------------------------------------------------------------------------------------

  async useCamera() {
    if (!navigator.mediaDevices?.getUserMedia) {
      showMessage("This browser gives no camera here (a camera needs https or localhost).", "error");
      return;
    }
    try {
      const stream = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 1280 } }, audio: false });
      this.stopSource();
      this.stream = stream;
      this.video.srcObject = stream;
      this.source = "camera";
      await this.video.play();
      this.onSourceReady();
    } catch (err) {
      showMessage(`No camera: ${err.message || err.name}.`, "error");
    }
  }

  async useFile(file) {
    this.stopSource();
    this.video.srcObject = null;
    this.video.src = URL.createObjectURL(file);
    this.video.loop = true;
    this.source = "file";
    try {
      await this.video.play();
      this.onSourceReady();
    } catch (err) {
      showMessage(`This browser cannot play ${file.name}: ${err.message || err.name}.`, "error");
    }
  }

  stopSource() {
    if (this.stream) for (const t of this.stream.getTracks()) t.stop();
    this.stream = null;
    if (this.video.src) URL.revokeObjectURL(this.video.src);
    this.video.removeAttribute("src");
  }

  onSourceReady() {
    this.sizeCapture();
    this.stage.classList.add("has-image");
    const onFrame = () => {
      this.freshFrame = true;
      if (this.state !== "tracking") this.preview();
      else this.pump();
      if (this.video.requestVideoFrameCallback) this.video.requestVideoFrameCallback(onFrame);
    };
    if (this.video.requestVideoFrameCallback) this.video.requestVideoFrameCallback(onFrame);
    else setInterval(onFrame, 66);
    document.getElementById("live-source").textContent =
      `${this.source === "camera" ? "camera" : "video file"} ${this.video.videoWidth}x${this.video.videoHeight}`;
    showMessage("Press Start tracking, then click on an object.");
  }

  /** The frame size sent: the video scaled so its longer side is the chosen size (kept for the session). */
  sizeCapture() {
    let w, h;
    if (this.session && this.session.width) {
      ({ width: w, height: h } = this.session);
    } else {
      const side = Number(this.sizeSelect.value);
      const vw = this.video.videoWidth, vh = this.video.videoHeight;
      const s = Math.min(1, side / Math.max(vw, vh));
      w = Math.max(2, Math.round(vw * s / 2) * 2);
      h = Math.max(2, Math.round(vh * s / 2) * 2);
    }
    if (this.capture.width !== w || this.capture.height !== h) {
      this.capture.width = this.canvas.width = w;
      this.capture.height = this.canvas.height = h;
    }
    fitCanvas(this.canvas, this.stage);
  }

  preview() {
    if (!this.video.videoWidth) return;
    this.captureCtx.drawImage(this.video, 0, 0, this.capture.width, this.capture.height);
    this.lastFrame = { frameIdx: null, image: this.captureCtx.getImageData(0, 0, this.capture.width, this.capture.height) };
    this.redraw();
  }

  // ---- the session --------------------------------------------------------------------------------

  startOrResume() {
    if (!this.source) { showMessage("Choose the camera or a video file first."); return; }
    if (this.state === "tracking" || this.state === "connecting" || this.state === "reconnecting") return;
    this.connect(this.session ? "resume" : "start");
  }

  async connect(kind) {
    if (this.draining) { // a paused connection still has frames running: resume once they are answered
      this.draining.then = () => this.connect(kind);
      this.setState("reconnecting");
      return;
    }
    this.sizeSelect.disabled = true;
    this.setState(kind === "start" ? "connecting" : "reconnecting");
    const ws = new WebSocket(await trackUrl());
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    this.inFlight.clear();
    this.seq = 0;
    ws.onopen = () => {
      if (kind === "start") {
        ws.send(JSON.stringify({ type: "start", width: this.capture.width, height: this.capture.height }));
      } else {
        ws.send(JSON.stringify({ type: "resume", session_id: this.session.id, resume_token: this.session.token }));
      }
    };
    ws.onmessage = (ev) => this.onMessage(ws, JSON.parse(ev.data));
    ws.onclose = () => this.onClose(ws);
  }

  onClose(ws) {
    if (ws !== this.ws) return;
    this.ws = null;
    this.inFlight.clear();
    if (this.state === "tracking" || this.state === "reconnecting" || this.state === "connecting") {
      if (!this.session) { this.setState("idle"); return; }
      const delay = RECONNECT_DELAYS_MS[Math.min(this.reconnects, RECONNECT_DELAYS_MS.length - 1)];
      this.reconnects++;
      this.lastDrop = performance.now();
      this.setState("reconnecting");
      showMessage(`Connection lost; resuming the session (try ${this.reconnects})…`);
      clearTimeout(this.reconnectTimer);
      this.reconnectTimer = setTimeout(() => {
        if (this.state === "reconnecting" && !this.ws) this.connect("resume");
      }, delay);
    }
  }

  onMessage(ws, msg) {
    if (this.draining && ws === this.draining.ws) {
      if (msg.type === "masks" && !msg.refined) this.onMasks(msg, false);
      else if (msg.type === "busy") this.inFlight.delete(msg.seq);
      else if (msg.type === "dropped") for (const s of msg.seq) this.inFlight.delete(s);
      if (!this.inFlight.size) this.drained();
      return;
    }
    if (ws !== this.ws) return;
    switch (msg.type) {
      case "session": {
        const resumed = msg.resumed;
        this.session = { id: msg.session_id, token: msg.resume_token || this.session?.token,
                         width: this.capture.width, height: this.capture.height };
        sessionStorage.setItem(SESSION_STORAGE, JSON.stringify(this.session));
        if (resumed) {
          this.resumes++;
          const known = new Set(this.objects.map((o) => o.id));
          for (const id of msg.objects) if (!known.has(id)) this.objects.push(this.makeObject(id));
          this.objects = this.objects.filter((o) => msg.objects.includes(o.id) || o.firstFrame === null);
          if (this.reconnects) showMessage(`Resumed session ${msg.session_id.slice(0, 8)}… at frame ${msg.frame_idx}.`);
        }
        this.reconnects = 0;
        this.frameIdx = msg.frame_idx;
        this.setState("tracking");
        this.renderList();
        this.pump();
        break;
      }
      case "masks":
        this.onMasks(msg);
        break;
      case "ack":
        if (msg.for === "prompt") {
          const obj = this.objects.find((o) => o.id === msg.obj_id);
          if (obj && obj.firstFrame === null) obj.firstFrame = msg.frame_idx;
        }
        break;
      case "busy":
        this.inFlight.delete(msg.seq);
        this.stats.busy++;
        this.pressure = "server busy: a frame was refused";
        this.pump();
        break;
      case "dropped":
        for (const s of msg.seq) this.inFlight.delete(s);
        this.stats.dropped += msg.seq.length;
        this.pressure = "server dropped older frames";
        break;
      case "store_recovered":
        showMessage(explainTrack("store_recovered"));
        break;
      case "closed":
        this.forgetSession();
        this.setState("ended");
        break;
      case "error":
        this.onError(msg);
        break;
      default:
        break;
    }
  }

  onError(msg) {
    // Our own dropped connection may still be finishing its last frames on the server; if it writes after
    // our resume, this connection is told "session_moved". Right after a drop that is us: resume again.
    if (msg.code === "session_moved" && this.lastDrop && performance.now() - this.lastDrop < 20000 &&
        (this.movedRetries || 0) < 3) {
      this.movedRetries = (this.movedRetries || 0) + 1;
      const ws = this.ws;
      this.ws = null;
      ws?.close();
      this.setState("reconnecting");
      clearTimeout(this.reconnectTimer);
      this.reconnectTimer = setTimeout(() => {
        if (this.state === "reconnecting" && !this.ws) this.connect("resume");
      }, 1000);
      return;
    }
    showMessage(explainTrack(msg.code, msg.detail), "error");
    if (FATAL.has(msg.code)) {
      if (msg.code === "not_found" || msg.code === "forbidden") this.forgetSession();
      this.setState(msg.code === "session_moved" ? "ended" : "idle");
      this.ws?.close();
      this.ws = null;
    } else if (msg.code === "bad_prompt" || msg.code === "unknown_object") {
      this.objects = this.objects.filter((o) => o.firstFrame !== null || o !== this.selected);
      this.renderList();
    }
  }

  forgetSession() {
    this.session = null;
    sessionStorage.removeItem(SESSION_STORAGE);
    this.sizeSelect.disabled = false;
    this.objects = [];
    this.selected = null;
    this.masks.clear();
    this.renderList();
  }

  /** Pause: stop sending frames, let the frames in flight be answered, then close the socket; the session
   *  stays resumable on the server (closing with frames in flight would leave them running there while a
   *  resume starts elsewhere). */
  stop() {
    if (!this.ws && this.state !== "reconnecting") return;
    clearTimeout(this.reconnectTimer);
    const ws = this.ws;
    this.ws = null;
    this.setState("paused");
    if (!ws) return;
    const close = () => { clearTimeout(timer); if (ws.readyState <= WebSocket.OPEN) ws.close(1000, "paused"); };
    const timer = setTimeout(() => this.drained(), 3000);
    this.draining = { ws, close, then: null };
    if (!this.inFlight.size) this.drained();
    showMessage("Paused. Start tracking resumes the same session.");
  }

  drained() {
    const d = this.draining;
    if (!d) return;
    this.draining = null;
    d.close();
    this.inFlight.clear();
    if (d.then) d.then();
  }

  /** End the session on the server (it is deleted from the store). */
  end() {
    clearTimeout(this.reconnectTimer);
    if (this.ws && this.state === "tracking") {
      this.setState("ending");
      this.ws.send(JSON.stringify({ type: "close" }));
    } else {
      this.forgetSession();
      this.setState("ended");
    }
  }

  setState(state) {
    this.state = state;
    document.getElementById("track-start").textContent =
      this.session && state !== "tracking" ? "Resume tracking" : "Start tracking";
    if (state !== "tracking") this.pressure = null;
    this.renderStats();
  }

  // ---- frames -------------------------------------------------------------------------------------

  /** Send the current video frame if the server has room (at most MAX_IN_FLIGHT unanswered). */
  async pump() {
    if (this.state !== "tracking" || !this.ws || this.ws.readyState !== WebSocket.OPEN) return;
    if (this.capturing || !this.freshFrame || !this.video.videoWidth) return;
    if (this.inFlight.size >= MAX_IN_FLIGHT) { this.pressure = `waiting: ${this.inFlight.size} frames in flight`; return; }
    this.capturing = true;
    this.freshFrame = false;
    try {
      const ws = this.ws;
      this.captureCtx.drawImage(this.video, 0, 0, this.capture.width, this.capture.height);
      const image = this.captureCtx.getImageData(0, 0, this.capture.width, this.capture.height);
      const blob = await new Promise((resolve) => this.capture.toBlob(resolve, "image/jpeg", 0.85));
      const bytes = await blob.arrayBuffer();
      if (ws !== this.ws || ws.readyState !== WebSocket.OPEN) return;
      this.inFlight.set(this.seq++, { sentAt: performance.now(), image });
      ws.send(bytes);
      this.stats.sent++;
      if (this.inFlight.size < MAX_IN_FLIGHT) this.pressure = null;
    } finally {
      this.capturing = false;
    }
  }

  onMasks(msg, live = true) {
    if (msg.refined) {
      for (const o of msg.objects) this.masks.set(o.obj_id, { mask: decodeRle(o.rle), present: o.present });
      this.redraw();
      return;
    }
    if (live) this.movedRetries = 0;
    const sent = this.inFlight.get(msg.seq);
    this.inFlight.delete(msg.seq);
    const now = performance.now();
    this.stats.answered++;
    this.stats.times.push(now);
    while (this.stats.times.length && now - this.stats.times[0] > 3000) this.stats.times.shift();
    if (sent) {
      this.stats.latency = now - sent.sentAt;
      this.lastFrame = { frameIdx: msg.frame_idx, image: sent.image };
    }
    this.stats.server = msg.timings?.total_ms ?? null;
    this.frameIdx = msg.frame_idx + 1;
    this.masks.clear();
    for (const o of msg.objects) this.masks.set(o.obj_id, { mask: decodeRle(o.rle), present: o.present });
    for (const o of msg.objects) {
      if (!this.objects.some((x) => x.id === o.obj_id)) this.objects.push(this.makeObject(o.obj_id));
      const obj = this.objects.find((x) => x.id === o.obj_id);
      if (obj.firstFrame === null) obj.firstFrame = msg.frame_idx;
      obj.note = o.present ? `IoU ${o.score.toFixed(2)}` : "not visible";
    }
    if (msg.objects.some((o) => o.present)) this.stats.masked++;
    document.getElementById("live-frame").textContent = String(msg.frame_idx);
    this.redraw();
    this.renderList();
    if (live) this.pump();
  }

  // ---- objects and clicks -------------------------------------------------------------------------

  makeObject(id) {
    return { id, name: `Object ${id}`, color: colorOf(id), visible: true, firstFrame: null, note: "" };
  }

  newObject() {
    this.addingNew = true;
    this.selected = null;
    this.renderList();
    showMessage("Click on the new object.");
  }

  /** A click or box: a new object (applied to the next frame) or a correction of the latest tracked frame. */
  click(prompt) {
    this.drag = null;
    if (this.state !== "tracking" || !this.ws) {
      showMessage("Start tracking first, then click on an object.");
      this.redraw();
      return;
    }
    let obj = this.addingNew || !this.selected ? null : this.selected;
    let frame = "current";
    if (!obj) {
      const id = Math.max(0, ...this.objects.map((o) => o.id)) + 1;
      obj = this.makeObject(id);
      this.objects.push(obj);
      this.selected = obj;
      this.addingNew = false;
      frame = "next";
    } else if (obj.firstFrame === null || this.frameIdx === undefined || this.frameIdx <= obj.firstFrame) {
      frame = "next"; // not tracked yet: the clicks gather on the frame it starts on
    }
    this.ws.send(JSON.stringify({ type: "prompt", obj_id: obj.id, frame, ...prompt }));
    this.renderList();
  }

  remove(obj = this.selected) {
    if (!obj) return;
    if (this.ws && this.state === "tracking") this.ws.send(JSON.stringify({ type: "remove_object", obj_id: obj.id }));
    this.objects = this.objects.filter((o) => o !== obj);
    this.masks.delete(obj.id);
    if (this.selected === obj) this.selected = null;
    this.redraw();
    this.renderList();
  }

  reset() {
    if (this.ws && this.state === "tracking") this.ws.send(JSON.stringify({ type: "reset" }));
    this.objects = [];
    this.selected = null;
    this.masks.clear();
    this.redraw();
    this.renderList();
  }

  toggle(obj = this.selected) {
    if (!obj) return;
    obj.visible = !obj.visible;
    this.redraw();
    this.renderList();
  }

  select(obj) {
    this.selected = obj;
    this.addingNew = false;
    this.redraw();
    this.renderList();
  }

  selectNext(step = 1) {
    if (!this.objects.length) return;
    const i = this.objects.indexOf(this.selected);
    this.select(this.objects[(i + step + this.objects.length) % this.objects.length]);
  }

  toggleTracking() {
    if (this.state === "tracking") this.stop();
    else this.startOrResume();
  }

  // ---- drawing ------------------------------------------------------------------------------------

  redraw() {
    if (!this.lastFrame) return;
    const layers = [];
    for (const obj of this.objects) {
      const m = this.masks.get(obj.id);
      if (obj.visible && m && m.present && m.mask.w === this.lastFrame.image.width && m.mask.h === this.lastFrame.image.height) {
        layers.push({ mask: m.mask, color: obj.color, selected: obj === this.selected });
      }
    }
    paintMasks(this.ctx, this.lastFrame.image, layers, 1);
    if (this.drag) paintPrompts(this.ctx, { box: this.drag, color: this.selected?.color || [255, 255, 255] }, 1);
  }

  renderList() {
    renderObjectList(this.list, this.objects, this.selected, {
      select: (o) => this.select(o), toggle: (o) => this.toggle(o), remove: (o) => this.remove(o),
    });
  }

  renderStats() {
    const s = this.stats;
    const fps = s.times.length > 1 ? (s.times.length - 1) / ((s.times[s.times.length - 1] - s.times[0]) / 1000) : 0;
    const set = (id, text) => { document.getElementById(id).textContent = text; };
    const stateText = { idle: "not connected", connecting: "connecting…", tracking: "tracking",
                        reconnecting: `resuming… (try ${this.reconnects || 1})`, paused: "paused", ending: "ending…",
                        ended: "session ended" }[this.state] || this.state;
    set("stat-state", stateText);
    document.getElementById("stat-state").dataset.state = this.state;
    set("stat-session", this.session ? `${this.session.id.slice(0, 10)}…` : "–");
    set("stat-fps", this.state === "tracking" ? fps.toFixed(1) : "–");
    set("stat-latency", s.latency === null ? "–" : `${Math.round(s.latency)} ms` +
        (s.server === null ? "" : ` (server ${Math.round(s.server)} ms)`));
    set("stat-pressure", this.state !== "tracking" ? "–" : this.pressure || `ok (${this.inFlight.size} in flight)`);
    set("stat-frames", `${s.sent} sent · ${s.answered} answered · ${s.masked} with masks`);
    set("stat-refused", `${s.busy} refused · ${s.dropped} dropped`);
    set("stat-resumes", String(this.resumes));
    document.getElementById("live-masked").textContent = String(s.masked);
  }
}
