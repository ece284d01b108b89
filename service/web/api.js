// The service's HTTP API as the page uses it: the API key, problem+json errors, and what they mean to a person.

const KEY_STORAGE = "sam2-service.api_key";

export function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
}

/** A URL of this server relative to the page (so the page also works behind a path prefix). */
export function serverUrl(path) {
  return new URL(path, document.baseURI);
}

/** The /v1/track URL: ws(s) on this host. Browsers cannot set WebSocket headers, so with a key the page asks
 * for a short-lived ?token= (the key stays out of URLs and gateway logs); ?api_key= only if that fails. */
export async function trackUrl() {
  const url = serverUrl("v1/track");
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const key = apiKey();
  if (key) {
    try {
      const { token } = await call("v1/track/token", { method: "POST" });
      url.searchParams.set("token", token);
    } catch {
      url.searchParams.set("api_key", key); // a refused key or an older server: the socket says which
    }
  }
  return url.toString();
}

export class ApiError extends Error {
  constructor(status, kind, title, detail, retryAfter = null, errors = null) {
    super(detail || title);
    Object.assign(this, { status, kind, title, detail, retryAfter, errors });
  }
}

/** POST (or GET without body) to the API; JSON answer, or throws ApiError from the RFC 9457 body. */
export async function call(path, { json = null, form = null, method = null } = {}) {
  const headers = {};
  const key = apiKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  let body = null;
  if (json) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form) {
    body = form;
  }
  let res;
  try {
    res = await fetch(serverUrl(path), { method: method || (body ? "POST" : "GET"), headers, body });
  } catch (err) {
    throw new ApiError(0, "network", "Server unreachable", "the server did not answer (is it running?)");
  }
  if (res.ok) return res.json();
  let problem = {};
  try { problem = await res.json(); } catch { /* not JSON: a proxy's page */ }
  const kind = (problem.type || "").replace("urn:sam2-service:problem:", "") || `http-${res.status}`;
  throw new ApiError(res.status, kind, problem.title || res.statusText, problem.detail || "",
                     res.headers.get("Retry-After"), problem.errors || null);
}

/** A sentence for a person for every problem the server can answer with. */
export function explain(err) {
  const detail = err.detail ? `: ${err.detail}` : "";
  const retry = err.retryAfter ? ` Try again in ${err.retryAfter} s.` : " Try again in a moment.";
  switch (err.kind) {
    case "unauthorized": return "This server needs an API key: type it in the API key field at the top." +
                                (apiKey() ? " (The key given was refused.)" : "");
    case "image-undecodable": return `The image could not be read${detail}.`;
    case "image-too-large": return `The image is too large for this server${detail}.`;
    case "unsupported-media-type": return `This kind of file is not supported${detail}. Use PNG, JPEG, WebP, BMP, GIF or TIFF.`;
    case "image-id-unknown": return "The server no longer holds this image; open it again.";
    case "validation": {
      const first = err.errors && err.errors[0];
      return `The server refused the request${first ? `: ${first.msg} (${(first.loc || []).join(".")})` : detail}.`;
    }
    case "invalid-prompt": return `The server refused the prompt${detail}.`;
    case "overloaded": return "The server is overloaded." + retry;
    case "queue-timeout": return "The server is too busy to answer in time." + retry;
    case "not-ready": return "The model is still loading." + retry;
    case "load-failed": return `The server could not load its model${detail}.`;
    case "bad-request": return `The server could not read the request${detail}.`;
    case "network": return "The server cannot be reached (is it running?).";
    default: return `The server answered ${err.status} ${err.title || ""}${detail}.`;
  }
}

/** A sentence for each error code of the /v1/track protocol (docs/protocol.md). */
export function explainTrack(code, detail) {
  const d = detail ? `: ${detail}` : "";
  return {
    bad_message: `The server did not understand a message${d}.`,
    bad_frame: `The server could not use a frame${d}.`,
    bad_prompt: `The server refused the click${d}.`,
    unknown_object: `No such object in this session${d}.`,
    not_started: "The session has not started yet.",
    limit: `A limit of the server was reached${d}.`,
    not_found: "The session has expired or was closed; start a new one.",
    forbidden: "This session belongs to another API key (or its token is wrong); start a new one.",
    store_unavailable: `The session store cannot be reached${d}.`,
    store_recovered: "The session store is back; the session is saved again.",
    session_moved: "This session was resumed on another connection (another tab?); this page stopped.",
    idle_timeout: "The server closed the idle connection; the session can be resumed.",
    unauthorized: "This server needs an API key: type it in the API key field at the top.",
    not_ready: "The model is still loading; try again in a moment.",
    internal: "The server hit an internal error; resuming the session.",
  }[code] || `Tracking error ${code}${d}.`;
}
