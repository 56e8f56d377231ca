// The audit view: search the decisions (GET /audit/decisions, CSV / JSON Lines export),
// and open a run's history at any version and verify it (#history/<id>).

import { get, download, enc } from "./api.js";
import { h, clear, time, duration, short } from "./dom.js";
import { showRun } from "./run.js";

const DECISIONS = ["confirmed", "rejected", "external_result", "user_input", "allowed",
                   "expired", "cancelled"];

export function mount(root, { notify }) {
  const field = (name, label, attrs = {}) =>
    h("label", {}, label, h("input", { name, spellcheck: false, ...attrs }));
  const form = h("form", { className: "search", id: "audit-search" },
    field("run_id", "Run"), field("actor", "Actor"), field("tool", "Tool"),
    h("label", {}, "Decision", h("select", { name: "decision" },
      h("option", { value: "" }, "any"), DECISIONS.map((d) => h("option", { value: d }, d)))),
    field("since", "Since", { type: "datetime-local", step: 1 }),
    field("until", "Until", { type: "datetime-local", step: 1 }),
    h("button", { type: "submit" }, "Search"),
    h("button", { type: "button", onclick: () => exportAs("csv") }, "CSV"),
    h("button", { type: "button", onclick: () => exportAs("jsonl") }, "JSON Lines"));
  const open = h("form", { className: "open-run" },
    h("label", {}, "Open a run's history ", h("input", { name: "run", placeholder: "run id",
                                                          spellcheck: false })),
    h("button", { type: "submit" }, "Open"));
  const results = h("div", { id: "decisions" });
  const detail = h("section", { className: "detail", id: "history" });
  const searchPane = h("section", { className: "audit" }, h("h2", {}, "Decisions"), form,
    results, open);
  root.append(h("div", { className: "audit-layout" }, searchPane, detail));

  let rows = [];
  let cursor = null;
  let stopRun = null;

  form.addEventListener("submit", (e) => { e.preventDefault(); search(); });
  open.addEventListener("submit", (e) => {
    e.preventDefault();
    const id = open.elements.run.value.trim();
    if (id) location.hash = `#history/${enc(id)}`;
  });

  function params() {
    const out = {};
    for (const [k, v] of new FormData(form)) {
      if (!v) continue;
      // A datetime-local has no zone: send it as the reader's local time, with its offset.
      out[k] = k === "since" || k === "until" ? new Date(v).toISOString() : v.trim();
    }
    return out;
  }

  async function search(more = false) {
    try {
      const page = await get("/audit/decisions", { ...params(), limit: 50,
                                                   cursor: more ? cursor : null });
      rows = more ? [...rows, ...page.items] : page.items;
      cursor = page.next_cursor;
      render(page.total, page.total_exact);
    } catch (e) {
      clear(results, h("p", { className: "error" }, `Decisions: ${e.message}`));
    }
  }

  async function exportAs(format) {
    try {
      await download("/audit/decisions", { ...params(), format }, `decisions.${format}`);
    } catch (e) {
      notify(`Export: ${e.message}`, "error");
    }
  }

  function render(total, exact) {
    if (!rows.length) {
      clear(results, h("p", { className: "empty" }, "No decision matches."));
      return;
    }
    clear(results,
      h("p", { className: "count" }, `${rows.length} of ${total}${exact ? "" : "+"} decisions`),
      h("table", { className: "decisions" },
        h("thead", {}, h("tr", {}, ["decided", "tool", "decision", "actor", "reason / note",
          "arguments: requested → approved", "waited", "run"].map((c) => h("th", {}, c)))),
        h("tbody", {}, rows.map((r) => h("tr", { className: r.decision,
                                                  dataset: { runId: r.run_id } },
          h("td", {}, time(r.decided_at, "short")),
          h("td", {}, h("code", {}, r.tool_name)),
          h("td", {}, h("span", { className: `decision-badge ${r.decision}` }, r.decision)),
          h("td", {}, r.actor),
          h("td", {}, r.note ?? ""),
          h("td", {}, h("code", {}, JSON.stringify(r.args_requested)),
            r.args_approved ? [" → ", h("code", { className: "approved" },
              JSON.stringify(r.args_approved))] : null),
          h("td", {}, duration(r.time_to_decision_ms)),
          h("td", {}, h("a", { href: `#history/${enc(r.run_id)}`, title: r.run_id },
            short(r.run_id))))))),
      cursor ? h("button", { type: "button", onclick: () => search(true) }, "Load more") : null);
  }

  search();

  return {
    show(name, arg) {
      stopRun?.();
      stopRun = null;
      if (name === "history" && arg) {
        open.elements.run.value = arg;
        stopRun = showRun(detail, arg, { mode: "audit", notify });
        detail.scrollIntoView({ block: "start" });
      } else {
        clear(detail, h("p", { className: "empty" },
          "Open a run (from a decision, or by its id) to read its history at any version ",
          "and verify its hash chain."));
      }
    },
    unmount() { stopRun?.(); },
  };
}
