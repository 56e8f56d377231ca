// A run's history as a timeline: one line per event (version, type, time, what it says),
// its payload and hash on demand; in the audit view, "state here" for each version.

import { h, time, json } from "./dom.js";

export function timeline(events, onVersion = null) {
  return h("ol", { className: "timeline", id: "timeline" }, events.map((e) =>
    h("li", { className: `event ${e.type}`, dataset: { version: e.version, type: e.type } },
      h("span", { className: "v" }, `v${e.version}`),
      h("span", { className: "type" }, e.type),
      time(e.timestamp),
      h("span", { className: "what" }, summary(e)),
      onVersion ? h("button", { type: "button", className: "link", name: `at-${e.version}`,
                                onclick: () => onVersion(e.version) }, "state here") : null,
      h("details", {}, h("summary", {}, "payload"),
        h("pre", {}, json(e.payload)),
        e.hash ? h("p", { className: "hash" }, "hash ", h("code", {}, e.hash)) : null))));
}

export function summary(e) {
  const p = e.payload ?? {};
  switch (e.type) {
    case "RunStarted": return `${p.user_id ?? "anonymous"} asked ${p.agent_name ?? p.agent_id}`;
    case "ModelResponded":
      return (p.tool_calls ?? []).length
        ? `model proposes ${p.tool_calls.map((t) => t.name).join(", ")}`
        : "model answered";
    case "ToolCallRequested":
      return `${p.tool_name}(${JSON.stringify(p.tool_args)})${p.requires ? `, needs ${p.requires}` : ""}`;
    case "RunPaused": return `paused, waiting for ${(p.waiting_for ?? []).length} call(s)`;
    case "ToolConfirmed":
      return `approved by ${p.decided_by}${p.approved_args ? ` with ${JSON.stringify(p.approved_args)}` : ""}${p.note ? `: “${p.note}”` : ""}`;
    case "ToolRejected": return `rejected by ${p.decided_by}${p.reason ? `: “${p.reason}”` : ""}`;
    case "ExternalResultProvided": return `result from ${p.decided_by}`;
    case "UserInputProvided": return `input from ${p.decided_by}`;
    case "RunContinued": return "continued";
    case "ToolExecutionStarted": return `tool started (attempt ${p.attempt})`;
    case "ToolExecuted": return `tool returned ${JSON.stringify(p.result)}`;
    case "ToolFailed": return `tool failed: ${p.error}`;
    case "ToolCallInDoubt": return "in doubt: the tool's outcome was never recorded";
    case "RunCompleted": return "completed";
    case "RunFailed": return `failed: ${p.error}`;
    case "RunCancelled": return `cancelled by ${p.cancelled_by}${p.reason ? `: “${p.reason}”` : ""}`;
    default: return "";
  }
}
