// Image mode: open / drop / paste an image, upload it once (/v1/embed), then every click, box or
// "segment everything" sends only its image_id. Masks (COCO RLE) are decoded and drawn in the page.

import { ApiError, call, explain } from "./api.js";
import { showMessage } from "./messages.js";
import { fitCanvas, renderObjectList } from "./objects.js";
import { attachPointer, colorOf, paintMasks, paintPrompts } from "./overlay.js";
import { decodeRle, maskStats } from "./rle.js";
import { zipBlob } from "./zip.js";

const MAX_DISPLAY_SIDE = 2048; // larger images are shown scaled down (prompts stay in image pixels)

function say(err) {
  showMessage(err instanceof ApiError ? explain(err) : err.message, "error");
}

export class ImageMode {
  constructor() {
    this.stage = document.getElementById("image-stage");
    this.canvas = document.getElementById("image-canvas");
    this.ctx = this.canvas.getContext("2d", { willReadFrequently: true });
    this.list = document.getElementById("objects");
    this.candidatesBar = document.getElementById("candidates");
    this.status = document.getElementById("image-status");
    this.excludeToggle = document.getElementById("exclude-mode");
    this.image = null;  // {file, name, width, height, imageId, base: ImageData, scale}
    this.embedding = Promise.resolve(false);
    this.objects = [];
    this.selected = null;
    this.nextId = 1;
    this.nextAuto = 1;
    this.drag = null;   // box being drawn, image pixels
    this.pointer = attachPointer(this.canvas, {
      onPoint: (p, negative) => this.addPoint(p, negative),
      onBox: (b) => this.setBox(b),
      onDrag: (b) => { this.drag = b && b.map((v) => v / this.image.scale); this.render(); },
      excludeMode: () => this.excludeToggle.getAttribute("aria-pressed") === "true",
    });
    document.getElementById("image-file").addEventListener("change", (ev) => {
      if (ev.target.files[0]) this.open(ev.target.files[0]);
      ev.target.value = "";
    });
    document.getElementById("example").addEventListener("click", () => this.openExample());
    document.getElementById("everything").addEventListener("click", () => this.everything());
    document.getElementById("download").addEventListener("click", () => this.download());
    document.getElementById("new-object").addEventListener("click", () => this.newObject());
    document.getElementById("undo").addEventListener("click", () => this.undo());
    document.getElementById("clear").addEventListener("click", () => this.clear());
    this.excludeToggle.addEventListener("click", () => this.toggleExclude());
    this.stage.addEventListener("dragover", (ev) => { ev.preventDefault(); this.stage.classList.add("dropping"); });
    this.stage.addEventListener("dragleave", () => this.stage.classList.remove("dropping"));
    this.stage.addEventListener("drop", (ev) => {
      ev.preventDefault();
      this.stage.classList.remove("dropping");
      const file = [...ev.dataTransfer.files].find((f) => f.type.startsWith("image/")) || ev.dataTransfer.files[0];
      if (file) this.open(file);
    });
    window.addEventListener("resize", () => { if (this.image) fitCanvas(this.canvas, this.stage); });
    this.renderList();
  }

  /** A pasted image (the page listens for paste while this mode is shown). */
  paste(ev) {
    const item = [...(ev.clipboardData?.items || [])].find((i) => i.kind === "file" && i.type.startsWith("image/"));
    if (item) {
      ev.preventDefault();
      this.open(item.getAsFile());
    }
  }

  async openExample() {
    const res = await fetch(new URL("demo/static/example.jpg", document.baseURI));
    const blob = await res.blob();
    this.open(new File([blob], "example.jpg", { type: "image/jpeg" }));
  }

  async open(file) {
    let bitmap;
    try {
      bitmap = await createImageBitmap(file);
    } catch {
      showMessage(`This browser cannot show ${file.name || "the pasted file"}: open a PNG, JPEG, WebP, GIF or BMP image.`, "error");
      return;
    }
    const scale = Math.min(1, MAX_DISPLAY_SIDE / Math.max(bitmap.width, bitmap.height));
    this.canvas.width = Math.round(bitmap.width * scale);
    this.canvas.height = Math.round(bitmap.height * scale);
    this.ctx.drawImage(bitmap, 0, 0, this.canvas.width, this.canvas.height);
    const base = this.ctx.getImageData(0, 0, this.canvas.width, this.canvas.height);
    this.image = { file, name: file.name || "pasted.png", width: bitmap.width, height: bitmap.height, imageId: null,
                   base, scale };
    bitmap.close();
    this.stage.classList.add("has-image");
    fitCanvas(this.canvas, this.stage);
    this.objects = [];
    this.selected = null;
    this.nextId = this.nextAuto = 1;
    this.renderList();
    this.embedding = this.embed();
  }

  /** Upload the image once; later calls name its image_id. Resolves true when the server holds it. */
  async embed() {
    const image = this.image;
    this.setStatus("Uploading and encoding the image…", "busy");
    const form = new FormData();
    form.append("image", image.file, image.name);
    try {
      const answer = await call("v1/embed", { form });
      if (image !== this.image) return false;
      image.imageId = answer.image_id;
      if (answer.width !== image.width || answer.height !== image.height) {
        showMessage(`The server reads this image as ${answer.width}x${answer.height}, the browser as ` +
                    `${image.width}x${image.height}: masks may not line up.`, "error");
      }
      this.setStatus(`${image.width}x${image.height} · ready: click on an object`, "ready");
      return true;
    } catch (err) {
      if (image === this.image) {
        say(err);
        this.setStatus("The image was not uploaded.", "error");
      }
      return false;
    }
  }

  /** Run `fn(image_id)`; if the server has forgotten the image (evicted), upload it again and retry once. */
  async withImage(fn) {
    const image = this.image;
    if (!(await this.embedding) || image !== this.image) throw new Error("The image is not on the server: open it again.");
    try {
      return await fn(image.imageId);
    } catch (err) {
      if (!(err instanceof ApiError && err.kind === "image-id-unknown")) throw err;
      showMessage("The server had forgotten the image; sending it again.");
      this.embedding = this.embed();
      if (!(await this.embedding)) throw err;
      return fn(this.image.imageId);
    }
  }

  setStatus(text, state) {
    this.status.textContent = text;
    this.status.dataset.state = state;
  }

  // ---- objects and prompts ------------------------------------------------------------------------

  newObject() {
    if (!this.image) return null;
    const id = this.nextId++;
    const obj = { id, name: `Object ${id}`, color: colorOf(id), visible: true, auto: false, points: [], labels: [],
                  box: null, history: [], candidates: [], chosen: 0, mask: null, rle: null, score: null,
                  ticket: 0, busy: false, note: "" };
    const firstAuto = this.objects.findIndex((o) => o.auto);
    this.objects.splice(firstAuto < 0 ? this.objects.length : firstAuto, 0, obj);
    this.selected = obj;
    this.render();
    this.renderList();
    return obj;
  }

  /** The object clicks go to: the selected one, or a new one (an "everything" mask is not refined). */
  target() {
    return this.selected && !this.selected.auto ? this.selected : this.newObject();
  }

  toPixel(v, limit) {
    return Math.min(limit - 1, Math.max(0, Math.floor(v / this.image.scale)));
  }

  addPoint({ x, y }, negative) {
    if (!this.image) return;
    const obj = this.target();
    obj.points.push([this.toPixel(x, this.image.width), this.toPixel(y, this.image.height)]);
    obj.labels.push(negative ? 0 : 1);
    obj.history.push({ kind: "point" });
    this.requestMasks(obj);
  }

  setBox(b) {
    if (!this.image) return;
    this.drag = null;
    const s = this.image.scale;
    const box = [Math.round(b[0] / s), Math.round(b[1] / s), Math.round(b[2] / s), Math.round(b[3] / s)];
    box[2] = Math.min(box[2], this.image.width);
    box[3] = Math.min(box[3], this.image.height);
    if (box[2] - box[0] < 2 || box[3] - box[1] < 2) { this.render(); return; }
    const obj = this.target();
    obj.history.push({ kind: "box", previous: obj.box });
    obj.box = box;
    this.requestMasks(obj);
  }

  promptOf(obj) {
    const prompt = {};
    if (obj.points.length) { prompt.points = obj.points; prompt.labels = obj.labels; }
    if (obj.box) prompt.box = obj.box;
    return Object.keys(prompt).length ? prompt : null;
  }

  async requestMasks(obj) {
    const prompt = this.promptOf(obj);
    const ticket = ++obj.ticket;
    if (!prompt) {
      Object.assign(obj, { mask: null, rle: null, candidates: [], busy: false, note: "" });
      this.render();
      this.renderList();
      return;
    }
    // One click is ambiguous (a part or the whole?): ask for three candidates and let the person pick.
    const multimask = !prompt.box && prompt.points.length === 1;
    obj.busy = true;
    this.render();
    this.renderList();
    try {
      const answer = await this.withImage((imageId) => call("v1/segment", {
        json: { image_id: imageId, objects: [prompt], multimask_output: multimask } }));
      if (ticket !== obj.ticket) return;
      const res = answer.objects[0];
      obj.candidates = res.masks.map((rle, i) => {
        const mask = decodeRle(rle);
        return { rle, mask, score: res.scores[i], stats: maskStats(mask) };
      });
      this.choose(obj, 0);
    } catch (err) {
      if (ticket === obj.ticket) say(err);
    } finally {
      if (ticket === obj.ticket) {
        obj.busy = false;
        this.render();
        this.renderList();
      }
    }
  }

  choose(obj, i) {
    const c = obj.candidates[i];
    if (!c) return;
    Object.assign(obj, { chosen: i, mask: c.mask, rle: c.rle, score: c.score, stats: c.stats,
                         note: `IoU ${c.score.toFixed(2)} · ${c.stats.area} px` });
    this.render();
    this.renderList();
  }

  nextCandidate() {
    const obj = this.selected;
    if (obj && obj.candidates.length > 1) this.choose(obj, (obj.chosen + 1) % obj.candidates.length);
  }

  undo() {
    const obj = this.selected && !this.selected.auto ? this.selected : [...this.objects].reverse().find((o) => !o.auto && o.history.length);
    if (!obj || !obj.history.length) return;
    const last = obj.history.pop();
    if (last.kind === "point") { obj.points.pop(); obj.labels.pop(); } else obj.box = last.previous;
    this.selected = obj;
    this.requestMasks(obj);
  }

  select(obj) {
    this.selected = obj;
    this.render();
    this.renderList();
  }

  selectNext(step = 1) {
    if (!this.objects.length) return;
    const i = this.objects.indexOf(this.selected);
    this.select(this.objects[(i + step + this.objects.length) % this.objects.length]);
  }

  toggle(obj = this.selected) {
    if (!obj) return;
    obj.visible = !obj.visible;
    this.render();
    this.renderList();
  }

  remove(obj = this.selected) {
    if (!obj) return;
    obj.ticket++;
    this.objects = this.objects.filter((o) => o !== obj);
    if (this.selected === obj) this.selected = null;
    this.render();
    this.renderList();
  }

  clear() {
    for (const o of this.objects) o.ticket++;
    this.objects = [];
    this.selected = null;
    this.nextId = this.nextAuto = 1;
    this.render();
    this.renderList();
  }

  toggleExclude() {
    const on = this.excludeToggle.getAttribute("aria-pressed") !== "true";
    this.excludeToggle.setAttribute("aria-pressed", String(on));
  }

  // ---- segment everything and download ------------------------------------------------------------

  async everything() {
    if (!this.image) { showMessage("Open an image first."); return; }
    const button = document.getElementById("everything");
    const body = {
      points_per_side: Number(document.getElementById("everything-points").value),
      pred_iou_thresh: Number(document.getElementById("everything-iou").value),
      stability_score_thresh: Number(document.getElementById("everything-stability").value),
    };
    button.disabled = true;
    this.setStatus("Segmenting everything…", "busy");
    try {
      const answer = await this.withImage((imageId) => call("v1/segment/everything", { json: { image_id: imageId, ...body } }));
      this.objects = this.objects.filter((o) => !o.auto);
      if (this.selected?.auto) this.selected = null;
      this.nextAuto = 1;
      const anns = [...answer.annotations].sort((a, b) => b.area - a.area);
      for (const ann of anns) {
        const id = this.nextAuto++;
        const mask = decodeRle(ann.segmentation);
        this.objects.push({ id: `auto-${id}`, name: `Everything ${id}`, color: colorOf(id + 3), visible: true, auto: true,
                            points: [], labels: [], box: null, history: [], candidates: [], chosen: 0, mask,
                            rle: ann.segmentation, score: ann.predicted_iou, stats: maskStats(mask), ticket: 0,
                            busy: false, note: `IoU ${ann.predicted_iou.toFixed(2)} · ${ann.area} px` });
      }
      this.setStatus(`Segment everything: ${anns.length} mask${anns.length === 1 ? "" : "s"}` +
                     (anns.length ? "" : " (lower the thresholds under Settings to see more)"), "ready");
    } catch (err) {
      say(err);
      this.setStatus("Segment everything failed.", "error");
    } finally {
      button.disabled = false;
      this.render();
      this.renderList();
    }
  }

  async maskPng(mask) {
    const c = document.createElement("canvas");
    c.width = mask.w;
    c.height = mask.h;
    const ctx = c.getContext("2d");
    const img = ctx.createImageData(mask.w, mask.h);
    for (let i = 0; i < mask.data.length; i++) {
      const v = mask.data[i] ? 255 : 0;
      img.data[4 * i] = img.data[4 * i + 1] = img.data[4 * i + 2] = v;
      img.data[4 * i + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
    const blob = await new Promise((resolve) => c.toBlob(resolve, "image/png"));
    return new Uint8Array(await blob.arrayBuffer());
  }

  /** One ZIP: a PNG per object (white = mask) and a COCO JSON with every mask as RLE. */
  async download() {
    const objs = this.objects.filter((o) => o.mask);
    if (!this.image || !objs.length) { showMessage("Nothing to download yet: click on an object first."); return; }
    const stem = this.image.name.replace(/\.[^.]*$/, "") || "image";
    const slug = (o) => o.name.toLowerCase().replace(/\s+/g, "_");
    const files = [];
    for (const o of objs) files.push({ name: `${stem}_${slug(o)}.png`, data: await this.maskPng(o.mask) });
    const coco = {
      info: { description: "masks from the sam2-service web page", date_created: new Date().toISOString() },
      images: [{ id: 1, file_name: this.image.name, width: this.image.width, height: this.image.height }],
      categories: [{ id: 1, name: "object" }],
      annotations: objs.map((o, i) => ({
        id: i + 1, image_id: 1, category_id: 1, segmentation: o.rle, area: o.stats.area, bbox: o.stats.bbox,
        iscrowd: 0, score: o.score, name: o.name, file_name: `${stem}_${slug(o)}.png`,
      })),
    };
    files.push({ name: `${stem}_coco.json`, data: new TextEncoder().encode(JSON.stringify(coco, null, 1)) });
    const a = document.createElement("a");
    a.href = URL.createObjectURL(zipBlob(files));
    a.download = `${stem}_masks.zip`;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  }

  // ---- drawing -----------------------------------------------------------------------------------

  render() {
    if (!this.image) return;
    const scale = this.image.scale;
    const layers = this.objects.filter((o) => o.visible && o.mask)
      .map((o) => ({ mask: o.mask, color: o.color, selected: o === this.selected }));
    paintMasks(this.ctx, this.image.base, layers, scale);
    for (const o of this.objects) {
      if (o.visible && !o.auto) paintPrompts(this.ctx, o, scale);
    }
    if (this.drag) paintPrompts(this.ctx, { box: this.drag, color: this.selected?.color || [255, 255, 255] }, scale);
    this.renderCandidates();
  }

  renderCandidates() {
    const obj = this.selected;
    const bar = this.candidatesBar;
    const show = obj && obj.candidates.length > 1;
    bar.classList.toggle("invisible", !show);
    const buttons = bar.querySelectorAll("button");
    buttons.forEach((b, i) => {
      const c = show && obj.candidates[i];
      b.disabled = !c;
      b.textContent = c ? `${i + 1} · ${c.score.toFixed(2)}` : `${i + 1}`;
      b.setAttribute("aria-pressed", String(Boolean(c) && obj.chosen === i));
      b.onclick = () => c && this.choose(obj, i);
    });
  }

  renderList() {
    renderObjectList(this.list, this.objects, this.selected, {
      select: (o) => this.select(o), toggle: (o) => this.toggle(o), remove: (o) => this.remove(o),
    });
    document.getElementById("object-count").textContent = String(this.objects.length);
    this.canvas.dataset.pending = String(this.objects.filter((o) => o.busy).length);
  }
}
