// The analytics view: how often each kind of call was accepted, and time to decision,
// per tool and per reviewer (GET /analytics/decisions?group_by=tool|actor), drawn as
// inline SVG.

import { get } from "./api.js";
import { h, clear, duration } from "./dom.js";
import { bars, ranges } from "./charts.js";

export function mount(root) {
  const since = h("input", { type: "date", name: "since" });
  const until = h("input", { type: "date", name: "until" });
  const form = h("form", { className: "search" },
    h("label", {}, "Since", since), h("label", {}, "Until (exclusive)", until),
    h("button", { type: "submit" }, "Show"));
  const byTool = h("section", { id: "by-tool", className: "charts" });
  const byActor = h("section", { id: "by-actor", className: "charts" });
  root.append(h("div", { className: "analytics" }, h("h2", {}, "Decisions"), form,
    h("h3", {}, "Per tool"), byTool, h("h3", {}, "Per reviewer"), byActor));
  form.addEventListener("submit", (e) => { e.preventDefault(); load(); });

  async function load() {
    const window_ = {
      since: since.value ? new Date(`${since.value}T00:00`).toISOString() : null,
      until: until.value ? new Date(`${until.value}T00:00`).toISOString() : null,
    };
    await Promise.all([draw(byTool, "tool", window_), draw(byActor, "actor", window_)]);
  }

  load();
  return {};
}

// Per kind of call (what it waits for): its caption, and what to say when no call of
// the kind was decided. A rate is acceptance[kind].rate: accepted / (accepted +
// rejected) of the calls of that kind only (GET /analytics/decisions, `acceptance`).
const KINDS = [
  ["confirmation", "Confirmations accepted: confirmed / (confirmed + rejected), of the calls that wait for a confirmation",
    "No confirmation accepted or rejected yet."],
  ["external_execution", "External results given: results / (results + rejected), of the calls that wait for an external result", null],
  ["user_input", "User input given: input / (input + rejected), of the calls that wait for user input", null],
];

// One bar chart of a kind's acceptance rate; nothing for a kind never decided but the
// confirmation's (it says so).
function acceptance(groups, groupBy, kind, caption, none) {
  const rated = groups.filter((g) => g.acceptance[kind].rate !== null);
  if (!rated.length && !none) return null;
  return h("figure", { className: "chart", dataset: { chart: `acceptance-${kind}-${groupBy}` } },
    h("figcaption", {}, caption),
    rated.length ? bars(rated.map((g) => {
      const a = g.acceptance[kind];
      return { label: g.label, value: a.rate,
               text: `${Math.round(a.rate * 100)} % of ${a.accepted + a.rejected}` };
    }), { max: 1, format: (v) => `${Math.round(v * 100)} %` }) : h("p", { className: "empty" }, none));
}

async function draw(el, groupBy, window_) {
  let body;
  try {
    body = await get("/analytics/decisions", { group_by: groupBy, ...window_ });
  } catch (e) {
    clear(el, h("p", { className: "error" }, `Analytics: ${e.message}`));
    return;
  }
  const groups = body.groups.map((g) => ({ ...g, label: g.group ?? "(none)" }));
  if (!groups.length) {
    clear(el, h("p", { className: "empty" }, "No decision yet."));
    return;
  }
  clear(el,
    ...KINDS.map(([kind, caption, none]) => acceptance(groups, groupBy, kind, caption, none)),
    h("figure", { className: "chart", dataset: { chart: `time-${groupBy}` } },
      h("figcaption", {}, "Time to decision: median (bar), 90th percentile (line)"),
      ranges(groups.filter((g) => g.time_to_decision_p50_ms !== null).map((g) => ({
        label: g.label, value: g.time_to_decision_p50_ms, high: g.time_to_decision_p90_ms,
        text: `${duration(g.time_to_decision_p50_ms)} · p90 ${duration(g.time_to_decision_p90_ms)}`,
      })), { format: duration })),
    h("table", { className: "numbers" },
      h("thead", {}, h("tr", {}, [groupBy === "actor" ? "reviewer" : groupBy,
        ...(groupBy === "actor" ? [] : ["requested"]), "approved", "rejected",
        "results", "input", "by policy", "expired", "cancelled", "p50", "p90", "p99"]
        .map((c) => h("th", {}, c)))),
      h("tbody", {}, groups.map((g) => h("tr", {},
        h("td", {}, h("code", {}, g.label)),
        groupBy === "actor" ? null : h("td", {}, g.requested),
        h("td", {}, g.confirmed), h("td", {}, g.rejected), h("td", {}, g.external_result),
        h("td", {}, g.user_input), h("td", {}, g.allowed), h("td", {}, g.expired),
        h("td", {}, g.cancelled),
        h("td", {}, duration(g.time_to_decision_p50_ms)),
        h("td", {}, duration(g.time_to_decision_p90_ms)),
        h("td", {}, duration(g.time_to_decision_p99_ms)))))));
}
