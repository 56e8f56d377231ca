// Small helpers: build elements (text only, never HTML strings), format times and values.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k in el && k !== "list") el[k] = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const SVG = "http://www.w3.org/2000/svg";

export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== null && v !== undefined) el.setAttribute(k, v);
  }
  append(el, children);
  return el;
}

export function clear(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

export function time(value, style = "medium") {
  if (!value) return "";
  const d = new Date(value);
  return h("time", { dateTime: d.toISOString(), title: d.toISOString() },
    d.toLocaleString(undefined, { dateStyle: style, timeStyle: "medium" }));
}

export function ago(value, now = Date.now()) {
  const seconds = Math.max(0, Math.round((now - new Date(value).getTime()) / 1000));
  if (seconds < 60) return `${seconds} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours} h ${minutes % 60} min`;
  return `${Math.floor(hours / 24)} days`;
}

export function duration(ms) {
  if (ms === null || ms === undefined) return "–";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  if (ms < 3_600_000) return `${(ms / 60_000).toFixed(1)} min`;
  return `${(ms / 3_600_000).toFixed(1)} h`;
}

export function json(value) {
  return JSON.stringify(value, null, 2);
}

// An object's arguments as a two-column table.
export function argsTable(args, highlight = {}) {
  const rows = Object.entries(args ?? {}).map(([k, v]) =>
    h("tr", { className: k in highlight ? "changed" : "" },
      h("th", {}, k),
      h("td", {}, h("code", {}, JSON.stringify(v))),
      k in highlight ? h("td", { className: "approved" }, "→ ",
        h("code", {}, JSON.stringify(highlight[k]))) : null));
  return h("table", { className: "args" }, h("tbody", {}, rows));
}

export function short(id) {
  return id && id.length > 13 ? `${id.slice(0, 8)}…` : id;
}
