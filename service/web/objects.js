// The list of objects beside a picture: colour, name, state; select, hide, delete. Rows have a fixed height.

import { cssColor } from "./overlay.js";

/**
 * Rebuild `ul` from `objects` ([{id, name, color, visible, busy, note}]).
 * handlers: {select(obj), toggle(obj), remove(obj)}; `selected` is the selected object or null.
 */
export function renderObjectList(ul, objects, selected, handlers) {
  ul.replaceChildren();
  for (const obj of objects) {
    const li = document.createElement("li");
    li.className = "object" + (obj === selected ? " selected" : "") + (obj.visible ? "" : " hidden-object");
    li.dataset.objId = String(obj.id);
    li.setAttribute("aria-selected", obj === selected ? "true" : "false");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = cssColor(obj.color);
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = obj.name;
    const note = document.createElement("span");
    note.className = "note";
    note.textContent = obj.busy ? "working…" : obj.note || "";
    const hide = document.createElement("button");
    hide.type = "button";
    hide.className = "small hide";
    hide.textContent = obj.visible ? "Hide" : "Show";
    hide.title = "Hide or show this mask (H)";
    const del = document.createElement("button");
    del.type = "button";
    del.className = "small delete";
    del.textContent = "Delete";
    del.title = "Delete this object (Delete)";
    hide.addEventListener("click", (ev) => { ev.stopPropagation(); handlers.toggle(obj); });
    del.addEventListener("click", (ev) => { ev.stopPropagation(); handlers.remove(obj); });
    li.addEventListener("click", () => handlers.select(obj));
    li.append(swatch, name, note, hide, del);
    ul.append(li);
  }
  if (!objects.length) {
    const li = document.createElement("li");
    li.className = "empty";
    li.textContent = "No objects yet.";
    ul.append(li);
  }
}

/** Size a canvas's box to fit `stage` (keeping the picture's aspect ratio), never past its pixel size x 4. */
export function fitCanvas(canvas, stage) {
  const maxW = stage.clientWidth || canvas.width;
  const maxH = Math.max(200, window.innerHeight * 0.68);
  const s = Math.min(maxW / canvas.width, maxH / canvas.height, 4);
  canvas.style.width = `${Math.floor(canvas.width * s)}px`;
  canvas.style.height = `${Math.floor(canvas.height * s)}px`;
}
