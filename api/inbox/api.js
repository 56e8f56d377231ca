// The API, as the page uses it: the caller's key (sessionStorage), JSON requests whose
// errors are RFC 9457 problems, and server-sent events read with fetch() so that the key
// travels in the Authorization header, never in a URL.

const KEY = "signoff.key";
const NAME = "signoff.name";

export const session = {
  get key() { return sessionStorage.getItem(KEY) || ""; },
  set key(v) { v ? sessionStorage.setItem(KEY, v.trim()) : sessionStorage.removeItem(KEY); },
  // Without keys (a service with authentication off) decisions are recorded under this name.
  get name() { return sessionStorage.getItem(NAME) || ""; },
  set name(v) { v ? sessionStorage.setItem(NAME, v.trim()) : sessionStorage.removeItem(NAME); },
};

export class Problem extends Error {
  constructor(status, body) {
    super(body?.detail || body?.title || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

function headers(extra = {}) {
  const out = { Accept: "application/json", ...extra };
  if (session.key) out.Authorization = `Bearer ${session.key}`;
  return out;
}

export async function get(path, params = {}) {
  const query = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== null && v !== undefined && v !== "") query.set(k, v);
  }
  const url = query.toString() ? `${path}?${query}` : path;
  return answer(await fetch(url, { headers: headers() }));
}

export async function download(path, params, filename) {
  const query = new URLSearchParams(Object.entries(params).filter(([, v]) => v));
  const r = await fetch(`${path}?${query}`, { headers: headers({ Accept: "*/*" }) });
  if (!r.ok) return answer(r);
  const url = URL.createObjectURL(await r.blob());
  const a = Object.assign(document.createElement("a"), { href: url, download: filename });
  a.click();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

// Continue a paused run with some of its calls decided (Agno's form: `tools` as JSON).
export async function decide(run, tools) {
  const form = new FormData();
  form.set("tools", JSON.stringify(tools));
  form.set("stream", "false");
  if (!session.key && session.name) form.set("user_id", session.name);
  const r = await fetch(`/agents/${enc(run.agent_id)}/runs/${enc(run.run_id)}/continue`, {
    method: "POST", headers: headers(), body: form,
  });
  return answer(r);
}

export function enc(part) {
  return encodeURIComponent(part);
}

async function answer(r) {
  const type = r.headers.get("content-type") || "";
  const body = type.includes("json") ? await r.json().catch(() => null) : await r.text();
  if (!r.ok) throw new Problem(r.status, typeof body === "object" ? body : { detail: body });
  return body;
}

// Server-sent events over fetch(): calls onEvent(name, data, id) for each message,
// reconnects with Last-Event-ID after a drop (backing off), and reports its state
// ("connecting", "open", "closed", "error: ...") through onState. Returns stop().
export function stream(path, { onEvent, onState = () => {}, lastId = null, until = null }) {
  const controller = new AbortController();
  let stopped = false;
  let delay = 500;

  async function connect() {
    while (!stopped) {
      onState("connecting");
      try {
        const extra = { Accept: "text/event-stream" };
        if (lastId !== null) extra["Last-Event-ID"] = lastId;
        const r = await fetch(path, { headers: headers(extra), signal: controller.signal });
        if (!r.ok) {
          const problem = await answer(r).catch((e) => e);
          onState(`error: ${problem.message}`);
          if (r.status === 401 || r.status === 403 || r.status === 404) return;
        } else {
          onState("open");
          delay = 500;
          const ended = await read(r.body.getReader());
          if (ended) { onState("closed"); return; }
        }
      } catch (e) {
        if (stopped) return;
        onState(`error: ${e.message}`);
      }
      await new Promise((ok) => setTimeout(ok, delay));
      delay = Math.min(delay * 2, 10_000);
    }
  }

  // Returns true when the stream reached its natural end (`until` says which event).
  async function read(reader) {
    const decoder = new TextDecoder();
    let buffer = "";
    let name = "", data = [], id = null;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return false;
      buffer += decoder.decode(value, { stream: true });
      const lines = buffer.split(/\r\n|\r|\n/);
      buffer = lines.pop();
      for (const line of lines) {
        if (line === "") {
          if (data.length) {
            if (id !== null) lastId = id;
            const payload = JSON.parse(data.join("\n"));
            onEvent(name || "message", payload, id);
            if (until && until(name, payload)) return true;
          }
          name = ""; data = []; id = null;
          continue;
        }
        if (line.startsWith(":")) continue;
        const i = line.indexOf(":");
        const field = i < 0 ? line : line.slice(0, i);
        const value_ = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
        if (field === "event") name = value_;
        else if (field === "data") data.push(value_);
        else if (field === "id") id = value_;
      }
    }
  }

  connect();
  return () => { stopped = true; controller.abort(); };
}
