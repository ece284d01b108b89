// The page: two modes (Image, Live video), the API key, the model line and the keyboard shortcuts.

import { ApiError, apiKey, call, explain, setApiKey } from "./api.js";
import { ImageMode } from "./image_mode.js";
import { LiveMode } from "./live_mode.js";
import { clearMessage, showMessage } from "./messages.js";

const image = new ImageMode();
const live = new LiveMode();
let mode = "image";

function showMode(name) {
  mode = name;
  for (const m of ["image", "live"]) {
    document.getElementById(`${m}-mode`).hidden = m !== name;
    const tab = document.getElementById(`tab-${m}`);
    tab.setAttribute("aria-selected", String(m === name));
  }
  document.body.dataset.mode = name;
  if (name === "live" && live.source) live.sizeCapture();
}

document.getElementById("tab-image").addEventListener("click", () => showMode("image"));
document.getElementById("tab-live").addEventListener("click", () => showMode("live"));

// ---- the model line and the API key -------------------------------------------------------------

async function loadModel() {
  const line = document.getElementById("model-info");
  try {
    const { loaded: m } = await call("v1/models");
    line.textContent = `${m.name} · ${m.image_size} px · ${m.device} ${m.dtype}` +
      (m.random_weights ? " · RANDOM WEIGHTS (masks are meaningless)" : "");
    line.dataset.state = m.random_weights ? "random" : "ok";
    document.getElementById("key-form").dataset.state = apiKey() ? "accepted" : "";
  } catch (err) {
    if (err instanceof ApiError && err.kind === "unauthorized") {
      line.textContent = "API key needed";
      line.dataset.state = "error";
      document.getElementById("key-form").dataset.state = "needed";
      showMessage(explain(err), "error");
      document.getElementById("api-key").focus();
    } else if (err instanceof ApiError && (err.kind === "not-ready" || err.kind === "network")) {
      line.textContent = err.kind === "not-ready" ? "model loading…" : "server unreachable";
      line.dataset.state = "error";
      setTimeout(loadModel, 2000);
    } else {
      line.textContent = "model unknown";
      showMessage(err instanceof ApiError ? explain(err) : String(err), "error");
    }
  }
}

const keyInput = document.getElementById("api-key");
keyInput.value = apiKey();
document.getElementById("key-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  setApiKey(keyInput.value.trim());
  clearMessage();
  loadModel();
});
document.getElementById("key-forget").addEventListener("click", () => {
  keyInput.value = "";
  setApiKey("");
  loadModel();
});

// ---- paste, keyboard ----------------------------------------------------------------------------

document.addEventListener("paste", (ev) => {
  if (mode === "image" && !(ev.target instanceof HTMLInputElement)) image.paste(ev);
});

document.getElementById("message").addEventListener("click", clearMessage);

const IMAGE_KEYS = {
  z: () => image.undo(), n: () => image.newObject(), "]": () => image.selectNext(1), "[": () => image.selectNext(-1),
  h: () => image.toggle(), delete: () => image.remove(), backspace: () => image.remove(), c: () => image.clear(),
  e: () => image.everything(), m: () => image.nextCandidate(), d: () => image.download(),
  x: () => image.toggleExclude(), o: () => document.getElementById("image-file").click(),
  escape: () => { image.pointer.cancel(); image.drag = null; image.render(); },
};
const LIVE_KEYS = {
  " ": () => live.toggleTracking(), n: () => live.newObject(), "]": () => live.selectNext(1),
  "[": () => live.selectNext(-1), h: () => live.toggle(), delete: () => live.remove(), backspace: () => live.remove(),
  c: () => live.reset(), x: () => document.getElementById("live-exclude-mode").click(),
  escape: () => { live.pointer.cancel(); live.drag = null; live.redraw(); },
};

document.addEventListener("keydown", (ev) => {
  const t = ev.target;
  if (t instanceof HTMLInputElement || t instanceof HTMLSelectElement || t instanceof HTMLTextAreaElement) return;
  if (ev.altKey || (ev.metaKey && ev.key.toLowerCase() !== "z")) return;
  const key = ev.key.toLowerCase();
  if (ev.ctrlKey && key !== "z") return;
  if (key === "1" || key === "2") { showMode(key === "1" ? "image" : "live"); ev.preventDefault(); return; }
  if (key === "?") { document.getElementById("help").open = true; document.getElementById("help").scrollIntoView(); return; }
  const action = (mode === "image" ? IMAGE_KEYS : LIVE_KEYS)[key];
  if (action) {
    ev.preventDefault();
    action();
  }
});

showMode(new URLSearchParams(location.search).get("mode") === "live" ? "live" : "image");
loadModel();
