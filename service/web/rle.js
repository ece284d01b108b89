// COCO run-length encoding (the format of SA-1B / pycocotools), decoded in the page.
// A mask is {h, w, data}: data is a row-major Uint8Array of h*w zeros and ones.

/** The run lengths of a compressed COCO RLE string (pycocotools' rleFrString). */
export function countsFromString(s) {
  const counts = [];
  let p = 0;
  while (p < s.length) {
    let x = 0, k = 0, more = 1;
    while (more) {
      const c = s.charCodeAt(p) - 48;
      x |= (c & 0x1f) << (5 * k);
      more = c & 0x20;
      p++; k++;
      if (!more && (c & 0x10)) x |= -1 << (5 * k);
    }
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  return counts;
}

/** {size: [h, w], counts: string | number[]} -> {h, w, data}. Runs are column-major, zeros first. */
export function decodeRle(rle) {
  const [h, w] = rle.size;
  const counts = typeof rle.counts === "string" ? countsFromString(rle.counts) : rle.counts;
  const data = new Uint8Array(h * w);
  let i = 0;
  for (let r = 0; r < counts.length; r++) {
    const n = counts[r];
    if (r & 1) {
      let col = Math.floor(i / h), row = i - col * h;
      for (let k = 0; k < n; k++) {
        data[row * w + col] = 1;
        if (++row === h) { row = 0; col++; }
      }
    }
    i += n;
  }
  return { h, w, data };
}

/** Area (pixels) and tight box [x, y, width, height] of a mask (COCO's bbox convention). */
export function maskStats(mask) {
  const { h, w, data } = mask;
  let area = 0, x0 = w, y0 = h, x1 = -1, y1 = -1;
  for (let y = 0; y < h; y++) {
    const row = y * w;
    for (let x = 0; x < w; x++) {
      if (data[row + x]) {
        area++;
        if (x < x0) x0 = x;
        if (x > x1) x1 = x;
        if (y < y0) y0 = y;
        if (y > y1) y1 = y;
      }
    }
  }
  return area ? { area, bbox: [x0, y0, x1 - x0 + 1, y1 - y0 + 1] } : { area: 0, bbox: [0, 0, 0, 0] };
}
