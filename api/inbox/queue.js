// The queue: paused runs, oldest first, filtered by agent, tool and kind; kept up to date
// by GET /queue/stream. Beside it, the open run (#run/<id>) with its actions.

import { get, stream, enc } from "./api.js";
import { h, clear, ago, short, time } from "./dom.js";
import { showRun } from "./run.js";

const KINDS = {
  confirmation: "confirmation", external_execution: "external result",
  user_input: "user input", in_doubt: "in doubt",
};

export function mount(root, { notify }) {
  const filters = { agent_id: "", tool: "", kind: "" };
  const state = { items: [], live: new Map(), gone: new Set(), total: 0, cursor: null,
                  selected: null, fresh: new Set() };
  const agentSelect = h("select", { name: "agent_id", onchange: refilter },
    h("option", { value: "" }, "any agent"));
  const toolSelect = h("select", { name: "tool", onchange: refilter },
    h("option", { value: "" }, "any tool"));
  const kindSelect = h("select", { name: "kind", onchange: refilter },
    h("option", { value: "" }, "any kind"),
    Object.entries(KINDS).map(([v, label]) => h("option", { value: v }, label)));
  const list = h("ol", { id: "queue", className: "queue" });
  const count = h("span", { className: "count" });
  const more = h("button", { type: "button", hidden: true, onclick: () => load(true) },
    "Load more");
  const detail = h("section", { id: "detail", className: "detail" },
    h("p", { className: "empty" }, "Pick a run from the queue."));
  root.append(h("div", { className: "split" },
    h("section", { className: "list" },
      h("div", { className: "filters" }, agentSelect, toolSelect, kindSelect, count),
      list, more),
    detail));

  let stopRun = null;
  const live = document.getElementById("live");
  const stopQueue = stream("/queue/stream", {
    onState: (s) => {
      live.dataset.state = s.startsWith("error") ? "error" : s;
      live.textContent = s === "open" ? "live" : s;
      live.title = s;
      if (s === "open") load(); // (re)connected: catch up with anything missed
    },
    onEvent: (name, data) => (name === "paused" ? paused(data) : left(data)),
  });
  const ticker = setInterval(() => {
    for (const el of list.querySelectorAll("[data-paused-since]")) {
      el.textContent = ago(el.dataset.pausedSince);
    }
  }, 5000);

  load(); // and again whenever the stream (re)connects: nothing paused in between is missed
  agents();

  async function agents() {
    try {
      for (const a of await get("/agents")) {
        agentSelect.append(h("option", { value: a.id }, a.name || a.id));
        for (const t of a.tools?.tools ?? []) {
          if (!(t.requires_confirmation || t.external_execution || t.requires_user_input)) continue;
          if (!toolSelect.querySelector(`option[value="${CSS.escape(t.name)}"]`)) {
            toolSelect.append(h("option", { value: t.name }, t.name));
          }
        }
      }
    } catch (e) { /* the queue says why (401 / 403) */ }
  }

  function refilter() {
    Object.assign(filters, { agent_id: agentSelect.value, tool: toolSelect.value,
                             kind: kindSelect.value });
    state.live.clear();
    load();
  }

  async function load(next = false) {
    try {
      const page = await get("/queue", { ...filters, limit: 50,
                                         cursor: next ? state.cursor : null });
      state.items = next ? [...state.items, ...page.items] : page.items;
      state.total = page.total;
      state.cursor = page.next_cursor;
      for (const item of page.items) state.live.delete(item.run_id);
      render();
    } catch (e) {
      notify(`Queue: ${e.message}`, "error");
    }
  }

  // A run paused a moment ago: its state comes straight from the event store (the queue's
  // read model may be a few milliseconds behind).
  async function paused(event) {
    state.gone.delete(event.run_id);
    try {
      const run = await get(`/runs/${enc(event.run_id)}`);
      if (run.status !== "PAUSED" || state.gone.has(run.run_id)) return;
      const item = fromRun(run);
      if (!matches(item)) return;
      state.live.set(item.run_id, item);
      state.fresh.add(item.run_id);
      render();
    } catch (e) { /* out of this reviewer's scope, or gone */ }
  }

  function left(event) {
    state.gone.add(event.run_id);
    state.live.delete(event.run_id);
    state.items = state.items.filter((i) => i.run_id !== event.run_id);
    render();
  }

  function matches(item) {
    return (!filters.agent_id || item.agent_id === filters.agent_id)
      && item.waiting_for.some((w) => (!filters.tool || w.tool_name === filters.tool)
                                      && (!filters.kind || w.kind === filters.kind));
  }

  function visible() {
    const byId = new Map(state.items.map((i) => [i.run_id, i]));
    for (const [id, item] of state.live) if (!byId.has(id)) byId.set(id, item);
    return [...byId.values()].filter((i) => !state.gone.has(i.run_id))
      .sort((a, b) => a.paused_since.localeCompare(b.paused_since));
  }

  function render() {
    const items = visible();
    const extra = items.length - state.items.filter((i) => !state.gone.has(i.run_id)).length;
    count.textContent = `${Math.max(items.length, state.total + extra)} waiting`;
    more.hidden = !state.cursor;
    if (!items.length) {
      clear(list, h("li", { className: "empty" }, "Nothing waits for a decision."));
      return;
    }
    clear(list, items.map(row));
  }

  function row(item) {
    const selected = item.run_id === state.selected;
    return h("li", { dataset: { runId: item.run_id },
                     className: [selected ? "selected" : "",
                                 state.fresh.has(item.run_id) ? "fresh" : ""].join(" ") },
      h("a", { href: `#run/${enc(item.run_id)}` },
        h("div", { className: "meta" },
          h("strong", {}, item.agent_id), " · ", item.user_id ?? "anonymous", " · ",
          h("span", { title: item.run_id }, short(item.run_id)),
          h("span", { className: "since" }, "waiting ",
            h("span", { dataset: { pausedSince: item.paused_since } }, ago(item.paused_since)))),
        item.waiting_for.map((w) => h("div", { className: "call" },
          h("span", { className: `kind ${w.kind}` }, KINDS[w.kind] ?? w.kind),
          h("code", {}, w.tool_name),
          h("span", { className: "argsline" }, JSON.stringify(w.tool_args)),
          w.escalated_to ? h("span", { className: "escalated" }, `escalated to ${w.escalated_to}`)
            : null,
          w.expires_at ? h("span", { className: "expires", title: w.expires_at },
            "expires ", time(w.expires_at, "short")) : null,
          w.confirmation_message ? h("div", { className: "message" }, w.confirmation_message)
            : null))));
  }

  function open(runId) {
    state.selected = runId;
    state.fresh.delete(runId);
    render();
    stopRun?.();
    stopRun = showRun(detail, runId, { mode: "review", notify });
  }

  return {
    show(name, arg) {
      if (name === "run" && arg) open(arg);
      else {
        stopRun?.();
        state.selected = null;
        clear(detail, h("p", { className: "empty" }, "Pick a run from the queue."));
        render();
      }
    },
    unmount() {
      stopQueue();
      stopRun?.();
      clearInterval(ticker);
      live.dataset.state = "off";
      live.textContent = "off";
    },
  };
}

function fromRun(run) {
  return {
    run_id: run.run_id, agent_id: run.agent_id, user_id: run.user_id,
    session_id: run.session_id, started_at: run.created_at,
    paused_since: run.paused_at ?? run.updated_at,
    waiting_for: run.pending.map((c) => ({
      tool_call_id: c.tool_call_id, tool_name: c.tool_name, tool_args: c.tool_args,
      kind: c.state === "in_doubt" ? "in_doubt" : c.requires,
      confirmation_message: c.confirmation_message, requested_at: c.requested_at,
      expires_at: c.expires_at ?? null, escalated_to: c.escalated_to ?? null,
    })),
  };
}
