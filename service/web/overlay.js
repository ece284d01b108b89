// Drawing masks over a picture, and turning pointer gestures on a canvas into clicks and boxes.

export const PALETTE = [
  [30, 144, 255], [255, 99, 71], [50, 205, 50], [255, 215, 0], [186, 85, 211],
  [0, 206, 209], [255, 140, 0], [255, 20, 147], [154, 205, 50], [100, 149, 237],
];

export function colorOf(n) {
  return PALETTE[(n - 1) % PALETTE.length];
}

export function cssColor(c) {
  return `rgb(${c[0]}, ${c[1]}, ${c[2]})`;
}

/**
 * Paint `base` (ImageData at display size) with each layer's mask tinted in its colour, edges stronger.
 * layers: [{mask: {h, w, data}, color: [r, g, b], selected}]; scale: display pixels per image pixel.
 * Only mask pixels change, so what the page shows is exactly the server's mask.
 */
export function paintMasks(ctx, base, layers, scale) {
  const W = base.width, H = base.height;
  const out = new ImageData(new Uint8ClampedArray(base.data), W, H);
  const d = out.data;
  for (const { mask, color, selected } of layers) {
    const { w, h, data } = mask;
    const fill = selected ? 0.55 : 0.42;
    for (let y = 0; y < H; y++) {
      const my = Math.min(h - 1, Math.floor(y / scale));
      for (let x = 0; x < W; x++) {
        const mx = Math.min(w - 1, Math.floor(x / scale));
        const i = my * w + mx;
        if (!data[i]) continue;
        const edge = mx === 0 || my === 0 || mx === w - 1 || my === h - 1 ||
                     !data[i - 1] || !data[i + 1] || !data[i - w] || !data[i + w];
        const a = edge ? 0.9 : fill;
        const o = (y * W + x) * 4;
        d[o] = d[o] * (1 - a) + color[0] * a;
        d[o + 1] = d[o + 1] * (1 - a) + color[1] * a;
        d[o + 2] = d[o + 2] * (1 - a) + color[2] * a;
      }
    }
  }
  ctx.putImageData(out, 0, 0);
}

/** The radius of a click marker on a canvas of this size (display pixels). */
export function markerRadius(canvas) {
  return Math.max(3, Math.round(Math.min(canvas.width, canvas.height) / 90));
}

/** Click markers (green: include, red: exclude) and boxes, in image pixels times `scale`. */
export function paintPrompts(ctx, { points = [], labels = [], box = null, color = [255, 255, 255] }, scale) {
  const r = markerRadius(ctx.canvas);
  if (box) {
    ctx.save();
    ctx.strokeStyle = cssColor(color);
    ctx.lineWidth = Math.max(1, r / 2);
    ctx.setLineDash([r, r / 2]);
    ctx.strokeRect(box[0] * scale, box[1] * scale, (box[2] - box[0]) * scale, (box[3] - box[1]) * scale);
    ctx.restore();
  }
  points.forEach(([x, y], i) => {
    ctx.beginPath();
    ctx.arc((x + 0.5) * scale, (y + 0.5) * scale, r, 0, 2 * Math.PI);
    ctx.fillStyle = labels[i] ? "#16a34a" : "#dc2626";
    ctx.fill();
    ctx.lineWidth = Math.max(1, r / 3);
    ctx.strokeStyle = "#ffffff";
    ctx.stroke();
  });
}

/**
 * Pointer gestures on `canvas` in canvas pixels: a click (left: include; right, shift or the exclude
 * toggle: exclude) calls onPoint({x, y}, negative); a left drag calls onDrag(box) while it moves and
 * onBox(box) at the end (box = [x0, y0, x1, y1]; onDrag(null) when a drag is cancelled).
 */
export function attachPointer(canvas, { onPoint, onBox, onDrag, excludeMode }) {
  let start = null, dragging = false;
  const at = (ev) => {
    const r = canvas.getBoundingClientRect();
    const x = (ev.clientX - r.left) * canvas.width / r.width;
    const y = (ev.clientY - r.top) * canvas.height / r.height;
    return { x: Math.min(Math.max(x, 0), canvas.width - 0.001), y: Math.min(Math.max(y, 0), canvas.height - 0.001) };
  };
  const boxOf = (a, b) => [Math.min(a.x, b.x), Math.min(a.y, b.y), Math.max(a.x, b.x), Math.max(a.y, b.y)];
  canvas.addEventListener("contextmenu", (ev) => ev.preventDefault());
  canvas.addEventListener("pointerdown", (ev) => {
    if (ev.button !== 0 && ev.button !== 2) return;
    ev.preventDefault();
    canvas.setPointerCapture(ev.pointerId);
    start = { ...at(ev), cx: ev.clientX, cy: ev.clientY, button: ev.button,
              negative: ev.button === 2 || ev.shiftKey || excludeMode() };
    dragging = false;
  });
  canvas.addEventListener("pointermove", (ev) => {
    if (!start) return;
    if (!dragging && start.button === 0 && !start.negative && Math.hypot(ev.clientX - start.cx, ev.clientY - start.cy) > 6) {
      dragging = true;
    }
    if (dragging) onDrag(boxOf(start, at(ev)));
  });
  canvas.addEventListener("pointerup", (ev) => {
    if (!start) return;
    const s = start;
    start = null;
    if (dragging) {
      dragging = false;
      onBox(boxOf(s, at(ev)));
    } else {
      onPoint({ x: s.x, y: s.y }, s.negative);
    }
  });
  canvas.addEventListener("pointercancel", () => {
    if (dragging) onDrag(null);
    start = null;
    dragging = false;
  });
  return { cancel() { if (dragging) onDrag(null); start = null; dragging = false; } };
}
