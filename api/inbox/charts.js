// Horizontal bar charts in inline SVG: one row per group, a label, a bar, its value.

import { s } from "./dom.js";

const WIDTH = 640, ROW = 30, LABEL = 170, TEXT = 150, TOP = 8;
const AREA = WIDTH - LABEL - TEXT;

function frame(rows, title) {
  const height = TOP * 2 + rows * ROW + 14;
  return s("svg", { viewBox: `0 0 ${WIDTH} ${height}`, width: WIDTH, height, role: "img",
                    "aria-label": title, class: "bars" });
}

function label(svg, i, text) {
  const y = TOP + i * ROW + ROW / 2;
  svg.append(s("text", { x: LABEL - 8, y, "text-anchor": "end", "dominant-baseline": "middle",
                         class: "label" }, text.length > 24 ? `${text.slice(0, 23)}…` : text));
  return y;
}

// Lines at 0, ¼, ½, ¾ and all of `top`, labelled under the last row.
function grid(svg, rows, top, format) {
  for (const f of [0, 0.25, 0.5, 0.75, 1]) {
    const x = LABEL + f * AREA;
    svg.append(s("line", { x1: x, x2: x, y1: TOP - 4, y2: TOP + rows * ROW + 4,
                           class: f === 0 ? "axis" : "grid" }));
    if (f * 2 === Math.round(f * 2)) {
      svg.append(s("text", { x, y: TOP + rows * ROW + 16, "text-anchor": "middle",
                             class: "tick" }, format(f * top)));
    }
  }
}

// values in [0, max]: e.g. approval rates (max 1).
export function bars(items, { max = null, format = String } = {}) {
  const top = max ?? Math.max(...items.map((d) => d.value), 1);
  const svg = frame(items.length, "bar chart");
  grid(svg, items.length, top, format);
  items.forEach((d, i) => {
    const y = label(svg, i, d.label);
    const w = Math.max(1, (d.value / top) * AREA);
    svg.append(
      s("rect", { x: LABEL, y: y - 9, width: w, height: 18, rx: 2, class: "bar",
                  "data-label": d.label, "data-value": d.value },
        s("title", {}, `${d.label}: ${d.text}`)),
      s("text", { x: LABEL + AREA + 8, y, "dominant-baseline": "middle", class: "value" },
        d.text));
  });
  return svg;
}

// A bar to `value` and a line on to `high`: e.g. median and 90th percentile.
export function ranges(items, { format = String } = {}) {
  const top = niceCeiling(Math.max(...items.map((d) => d.high ?? d.value), 1));
  const svg = frame(items.length, "range chart");
  grid(svg, items.length, top, format);
  items.forEach((d, i) => {
    const y = label(svg, i, d.label);
    const x = (v) => LABEL + (v / top) * AREA;
    svg.append(s("rect", { x: LABEL, y: y - 9, width: Math.max(1, x(d.value) - LABEL), height: 18,
                           rx: 2, class: "bar time", "data-label": d.label,
                           "data-value": d.value }, s("title", {}, `${d.label}: ${d.text}`)));
    if (d.high !== null && d.high !== undefined && d.high > d.value) {
      svg.append(s("line", { x1: x(d.value), x2: x(d.high), y1: y, y2: y, class: "whisker" }),
        s("line", { x1: x(d.high), x2: x(d.high), y1: y - 6, y2: y + 6, class: "whisker" }));
    }
    svg.append(s("text", { x: LABEL + AREA + 8, y, "dominant-baseline": "middle",
                           class: "value" }, d.text));
  });
  return svg;
}

function niceCeiling(v) {
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}
