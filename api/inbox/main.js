// The inbox's shell: the key field, the notice line, and the views behind the URL's hash:
// #queue, #run/<id> (the queue with one run open), #audit, #history/<id>, #analytics.

import { session } from "./api.js";
import { clear } from "./dom.js";
import * as queue from "./queue.js";
import * as audit from "./audit.js";
import * as analytics from "./analytics.js";

const view = document.getElementById("view");
const keyInput = document.getElementById("key");
const nameInput = document.getElementById("name");
let current = null; // { name, unmount }

export function notify(message, kind = "info") {
  const el = document.getElementById("notice");
  el.textContent = message;
  el.className = kind;
  el.hidden = !message;
}

function route() {
  const [name, ...rest] = (location.hash.slice(1) || "queue").split("/");
  const arg = rest.length ? decodeURIComponent(rest.join("/")) : null;
  const want = { queue: "queue", run: "queue", audit: "audit", history: "audit",
                 analytics: "analytics" }[name] || "queue";
  for (const a of document.querySelectorAll("nav a")) {
    a.classList.toggle("active", a.dataset.view === want);
  }
  const modules = { queue, audit, analytics };
  if (current?.name === want && current.show) {
    current.show(name, arg);
    return;
  }
  current?.unmount?.();
  clear(view);
  notify("");
  const mounted = modules[want].mount(view, { notify });
  current = { name: want, ...mounted };
  current.show?.(name, arg);
}

function remount() {
  current?.unmount?.();
  current = null;
  route();
}

document.getElementById("who").addEventListener("submit", (e) => {
  e.preventDefault();
  session.key = keyInput.value;
  session.name = nameInput.value;
  remount();
});
document.getElementById("forget").addEventListener("click", () => {
  session.key = "";
  keyInput.value = "";
  remount();
});

keyInput.value = session.key;
nameInput.value = session.name;
window.addEventListener("hashchange", route);
route();
