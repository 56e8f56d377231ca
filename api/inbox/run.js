// One run: the user's request, the model's messages, each tool call (arguments,
// confirmation message, decision) with its actions while it waits, and the history.
// mode "review": actions, live updates from GET /runs/{id}/stream.
// mode "audit": the state at any version (?at_version=N) and GET /runs/{id}/verify.

import { get, decide, stream, enc, Problem } from "./api.js";
import { h, clear, time, json, argsTable, short } from "./dom.js";
import { timeline } from "./timeline.js";

const FINAL = new Set(["COMPLETED", "FAILED", "CANCELLED"]);
const ENDS = new Set(["RunCompleted", "RunFailed", "RunCancelled"]);

export function showRun(el, runId, { mode, notify }) {
  let stopLive = null;
  let stopped = false;
  let pendingRender = null;

  async function render() {
    let run, events, agno;
    try {
      run = await get(`/runs/${enc(runId)}`);
      [events, agno] = await Promise.all([
        get(`/runs/${enc(runId)}/events`),
        get(`/agents/${enc(run.agent_id)}/runs/${enc(runId)}`).catch(() => null),
      ]);
    } catch (e) {
      clear(el, h("p", { className: "error" }, `Run ${runId}: ${e.message}`));
      return null;
    }
    if (stopped) return null;
    clear(el, page(run, events, agno, mode, { notify, rerender: render }));
    el.dataset.status = run.status;
    el.dataset.version = run.version;
    return run;
  }

  render().then((run) => {
    if (!run || stopped || mode !== "review" || FINAL.has(run.status)) return;
    // Another reviewer's decision, the tool's result, the run's end: show them as they come.
    stopLive = stream(`/runs/${enc(runId)}/stream`, {
      lastId: String(run.version),
      until: (name) => ENDS.has(name),
      onEvent: () => {
        clearTimeout(pendingRender);
        pendingRender = setTimeout(render, 150);
      },
    });
  });

  return () => {
    stopped = true;
    clearTimeout(pendingRender);
    stopLive?.();
  };
}

function page(run, events, agno, mode, ctx) {
  const started = events[0]?.payload ?? {};
  return h("article", { className: "run", dataset: { runId: run.run_id } },
    h("header", {},
      h("h2", {}, "Run ", h("code", { title: run.run_id }, short(run.run_id)), " ",
        h("span", { className: `status ${run.status.toLowerCase()}`, id: "run-status" },
          run.status)),
      h("dl", { className: "facts" },
        h("dt", {}, "agent"), h("dd", {}, started.agent_name || run.agent_id),
        h("dt", {}, "user"), h("dd", {}, run.user_id ?? "anonymous"),
        h("dt", {}, "session"), h("dd", {}, run.session_id),
        h("dt", {}, "started"), h("dd", {}, time(run.created_at)),
        h("dt", {}, "version"), h("dd", {}, run.version)),
      mode === "review"
        ? h("a", { href: `#history/${enc(run.run_id)}`, className: "aside" },
          "History at any version, verify (auditors) →")
        : h("a", { href: `#run/${enc(run.run_id)}`, className: "aside" }, "Open in the queue →")),
    h("section", { className: "request" }, h("h3", {}, "The user's request"),
      h("blockquote", { id: "request" }, run.input)),
    run.content ? h("section", {}, h("h3", {}, "The answer"), h("blockquote", {}, run.content))
      : null,
    run.error ? h("p", { className: "error" }, run.error) : null,
    h("section", {}, h("h3", {}, "Tool calls"),
      run.tool_calls.length ? run.tool_calls.map((c) => callCard(run, c, mode, ctx))
        : h("p", { className: "empty" }, "The model called no tool.")),
    h("section", {}, h("h3", {}, "The model's messages"), messages(agno, events)),
    history(run, events, mode));
}

function history(run, events, mode) {
  if (mode !== "audit") return h("section", {}, h("h3", {}, "History"), timeline(events));
  const tools = auditTools(run);
  return h("section", {}, h("h3", {}, "History"), tools.el,
    timeline(events, (v) => atVersion(run, v, tools.snapshot)));
}

// The arguments a decision changed (approved args, or the args with the input filled in).
function changedArgs(call) {
  return Object.fromEntries(Object.entries(call.approved_args ?? {})
    .filter(([k, v]) => JSON.stringify(call.tool_args?.[k]) !== JSON.stringify(v)));
}

function messages(agno, events) {
  const list = agno?.messages;
  if (!list) {
    // Without the Agno view: the model's turns from the history.
    const turns = events.filter((e) => e.type === "ModelResponded");
    return h("ol", { className: "messages" }, turns.map((e) => h("li", { className: "assistant" },
      h("span", { className: "role" }, "assistant"), e.payload.content ?? "",
      (e.payload.tool_calls ?? []).map((t) =>
        h("div", {}, h("code", {}, `${t.name}(${JSON.stringify(t.args)})`))))));
  }
  return h("ol", { className: "messages" }, list.map((m) => h("li", { className: m.role },
    h("span", { className: "role" }, m.role === "tool" ? `tool ${m.tool_name ?? ""}` : m.role),
    m.role === "system" ? h("details", {}, h("summary", {}, "instructions"), m.content)
      : h("div", { className: "content" }, typeof m.content === "string" ? m.content
        : m.content === null || m.content === undefined ? "" : JSON.stringify(m.content)),
    (m.tool_calls ?? []).map((t) => h("div", { className: "toolcall" },
      "calls ", h("code", {}, `${t.function?.name}(${t.function?.arguments})`))))));
}

function callCard(run, call, mode, ctx) {
  const waiting = call.state === "pending" || call.state === "in_doubt";
  const approved = changedArgs(call);
  return h("div", { className: `call-card ${call.state}`, dataset: { callId: call.tool_call_id,
                                                                    tool: call.tool_name } },
    h("h4", {}, h("code", {}, call.tool_name), " ",
      h("span", { className: `state ${call.state}` }, call.state.replace("_", " ")),
      call.requires ? h("span", { className: "requires" }, `needs ${call.requires.replace("_", " ")}`)
        : null),
    call.confirmation_message
      ? h("p", { className: "confirmation-message" }, call.confirmation_message) : null,
    waiting && mode === "review" ? null : argsTable(call.tool_args, approved),
    call.decision ? decisionLine(call.decision) : null,
    !call.decision && call.policy ? policyLine(call.policy) : null,
    waiting && (call.expires_at || call.escalated_to) ? h("p", { className: "expires" },
      call.escalated_to ? `Escalated to ${call.escalated_to}. ` : "",
      call.expires_at ? ["Expires ", time(call.expires_at),
        ` (then: ${call.on_timeout ?? "reject"})`] : "") : null,
    call.result !== null && call.result !== undefined
      ? h("p", { className: "result" }, "Result: ", h("code", {}, String(call.result))) : null,
    call.error ? h("p", { className: "error" }, call.error) : null,
    waiting && mode === "review" ? actions(run, call, ctx) : null);
}

function decisionLine(d) {
  const what = { confirmed: "Approved", rejected: "Rejected", external_result: "Result entered",
                 user_input: "Input given", expired: "Expired", cancelled: "Cancelled" }[d.kind]
    ?? d.kind;
  const why = d.reason ?? d.note;
  return h("p", { className: `decision ${d.kind}` }, what, " by ", h("strong", {}, d.decided_by),
    " ", time(d.decided_at), why ? h("span", { className: "why" }, ` — “${why}”`) : null,
    d.values ? h("span", {}, " ", h("code", {}, JSON.stringify(d.values))) : null,
    d.approved_args ? h("span", { className: "approved-args" }, " with ",
      h("code", {}, JSON.stringify(d.approved_args))) : null);
}

function policyLine(p) {
  // Which rule decided whether this call needs a person (agent/tools.py requirement_for).
  const what = p.outcome === "allowed" ? "Allowed without review by " : "Held for review by ";
  return h("p", { className: `decision policy ${p.outcome}` }, what,
    h("strong", {}, `policy:${p.rule}`), p.reason ? h("span", { className: "why" },
      ` — “${p.reason}”`) : null);
}

// ----------------------------------------------------------------- actions

function actions(run, call, ctx) {
  const form = h("form", { className: "decide", onsubmit: (e) => e.preventDefault() });
  const reason = h("textarea", { name: "reason", rows: 2,
                                 placeholder: "Why (sent to the model; required to reject)" });
  const status = h("p", { className: "form-status", role: "status" });
  const kind = call.state === "in_doubt" ? "in_doubt" : call.requires;
  let collect = null; // () => the decision's fields, or throws

  if (kind === "confirmation") {
    if (call.editable_args) {
      const fields = Object.entries(call.tool_args ?? {}).map(([k, v]) => argField(k, v));
      form.append(h("fieldset", { className: "edit-args" },
        h("legend", {}, "Arguments — you may edit them before approving"),
        fields.map((f) => f.label)));
      collect = () => {
        const edited = Object.fromEntries(fields.map((f) => [f.name, f.read()]));
        const changed = JSON.stringify(edited) !== JSON.stringify(call.tool_args);
        return changed ? { confirmed: true, tool_args: edited } : { confirmed: true };
      };
    } else {
      form.append(argsTable(call.tool_args),
        h("p", { className: "hint" }, "This tool's arguments cannot be edited."));
      collect = () => ({ confirmed: true });
    }
    form.append(h("label", { className: "reason" }, "Note or reason", reason),
      h("div", { className: "buttons" },
        button("Approve", "approve", () => submit({ ...collect(), ...note() })),
        button("Reject", "reject", reject)));
  } else if (kind === "external_execution" || kind === "in_doubt") {
    form.append(argsTable(call.tool_args));
    if (kind === "in_doubt") {
      form.append(h("p", { className: "hint" }, "The service stopped while this tool ran: it " +
        "may or may not have run. Enter its result if you know it, run it again, or reject."));
    }
    const result = h("textarea", { name: "result", rows: 3,
                                   placeholder: "The result the external system gave" });
    form.append(h("label", {}, "Result", result), h("label", { className: "reason" },
      "Reason (to reject)", reason), h("div", { className: "buttons" },
      button("Submit result", "result", () => {
        if (!result.value.trim()) throw new Error("Enter the result first.");
        return submit({ result: result.value });
      }),
      kind === "in_doubt" ? button("Run it again", "approve", () => submit({ confirmed: true }))
        : null,
      button("Reject", "reject", reject)));
  } else if (kind === "user_input") {
    form.append(argsTable(call.tool_args));
    const fields = (call.user_input_schema ?? []).map((f) => inputField(f));
    form.append(h("fieldset", {}, h("legend", {}, "Input the tool needs"),
      fields.map((f) => f.label)),
    h("label", { className: "reason" }, "Reason (to reject)", reason),
    h("div", { className: "buttons" },
      button("Submit input", "input", () => submit({
        user_input_schema: (call.user_input_schema ?? []).map((f, i) =>
          ({ ...f, value: fields[i].read() })),
      })),
      button("Reject", "reject", reject)));
  }
  form.append(status);
  return form;

  function note() {
    return reason.value.trim() ? { confirmation_note: reason.value.trim() } : {};
  }

  function reject() {
    if (!reason.value.trim()) {
      reason.focus();
      throw new Error("Give a reason to reject: the model is told why.");
    }
    return submit({ confirmed: false, confirmation_note: reason.value.trim() });
  }

  async function submit(fields) {
    for (const b of form.querySelectorAll("button")) b.disabled = true;
    status.textContent = "Sending…";
    try {
      const out = await decide(run, [{ tool_call_id: call.tool_call_id,
                                       tool_name: call.tool_name, ...fields }]);
      ctx.notify(`${call.tool_name}: decision recorded; the run is ${out.status}.`, "ok");
      await ctx.rerender();
    } catch (e) {
      status.textContent = e instanceof Problem ? `${e.status}: ${e.message}` : e.message;
      status.className = "form-status error";
      for (const b of form.querySelectorAll("button")) b.disabled = false;
    }
  }

  function button(label, name, act) {
    return h("button", { type: "button", name, className: name, onclick: () => {
      try {
        const pending = act();
        if (pending?.catch) pending.catch((e) => { status.textContent = e.message; });
      } catch (e) {
        status.textContent = e.message;
        status.className = "form-status error";
      }
    } }, label);
  }
}

// An argument's input, typed after its current value; read() gives it back typed.
function argField(name, value) {
  let input, read;
  if (typeof value === "boolean") {
    input = h("input", { type: "checkbox", name: `arg-${name}`, checked: value });
    read = () => input.checked;
  } else if (typeof value === "number") {
    input = h("input", { type: "number", step: "any", name: `arg-${name}`, value: String(value) });
    read = () => {
      const n = Number(input.value);
      if (input.value.trim() === "" || !Number.isFinite(n)) throw new Error(`${name}: a number`);
      return n;
    };
  } else if (typeof value === "string") {
    input = h("input", { type: "text", name: `arg-${name}`, value });
    read = () => input.value;
  } else {
    input = h("textarea", { name: `arg-${name}`, rows: 3, value: json(value) });
    read = () => {
      try { return JSON.parse(input.value); } catch { throw new Error(`${name}: not JSON`); }
    };
  }
  const original = h("span", { className: "was" }, `requested: ${JSON.stringify(value)}`);
  return { name, read, label: h("label", {}, h("span", { className: "name" }, name), input,
                                original) };
}

function inputField(field) {
  const type = field.field_type;
  let input, read;
  if (type === "bool") {
    input = h("input", { type: "checkbox", name: `input-${field.name}` });
    read = () => input.checked;
  } else if (type === "int" || type === "float") {
    input = h("input", { type: "number", step: type === "int" ? "1" : "any",
                         name: `input-${field.name}` });
    read = () => {
      if (input.value.trim() === "") throw new Error(`${field.name}: required`);
      return Number(input.value);
    };
  } else {
    input = h("input", { type: "text", name: `input-${field.name}` });
    read = () => {
      if (input.value === "") throw new Error(`${field.name}: required`);
      if (type === "str") return input.value;
      try { return JSON.parse(input.value); } catch { return input.value; }
    };
  }
  return { read, label: h("label", {}, h("span", { className: "name" }, field.name), input,
    h("span", { className: "was" }, [type, field.description].filter(Boolean).join(" — "))) };
}

// ------------------------------------------------------------------- audit

function auditTools(run) {
  const out = h("div", { className: "audit-tools" });
  const verdict = h("div", { id: "verify-result", className: "verify" });
  const snapshot = h("div", { id: "at-version", className: "snapshot" });
  const version = h("input", { type: "number", min: 1, max: run.version, value: run.version,
                               name: "at_version" });
  out.append(
    h("div", { className: "row" },
      h("button", { type: "button", name: "verify", onclick: () => verify(run, verdict) },
        "Verify this run's hash chain"),
      h("label", {}, "State at version ", version),
      h("button", { type: "button", name: "show-version",
                    onclick: () => atVersion(run, Number(version.value), snapshot) }, "Show")),
    verdict, snapshot);
  return { el: out, snapshot };
}

async function verify(run, el) {
  clear(el, "Verifying…");
  try {
    const v = await get(`/runs/${enc(run.run_id)}/verify`);
    el.className = `verify ${v.intact ? "intact" : "broken"}`;
    clear(el, v.intact
      ? h("p", {}, h("strong", {}, "Intact"), `: ${v.events} events, every hash recomputed; `,
        "head ", h("code", { title: v.head?.hash }, `v${v.head?.version} ${v.head?.hash?.slice(0, 16)}…`),
        v.head?.position ? ` at log position ${v.head.position}` : "")
      : h("p", {}, h("strong", {}, "Broken"), ` at version ${v.first_broken?.version} `,
        v.first_broken?.position ? `(log position ${v.first_broken.position}) ` : "",
        `(${v.first_broken?.type}): ${v.first_broken?.problem}`));
  } catch (e) {
    el.className = "verify broken";
    clear(el, `Verify: ${e.message}`);
  }
}

async function atVersion(run, n, el) {
  clear(el, `Loading version ${n}…`);
  try {
    const state = await get(`/runs/${enc(run.run_id)}`, { at_version: n });
    clear(el, h("h4", {}, `As it was at version ${n} of ${run.version}`),
      h("dl", { className: "facts" },
        h("dt", {}, "status"), h("dd", { className: "at-status" }, state.status),
        h("dt", {}, "as of"), h("dd", {}, time(state.updated_at)),
        h("dt", {}, "waiting for"), h("dd", {}, state.pending.map((c) => c.tool_name).join(", ")
          || "nothing")),
      state.tool_calls.map((c) => h("div", { className: "call-card small" },
        h("code", {}, c.tool_name), " ", h("span", { className: `state ${c.state}` }, c.state),
        argsTable(c.tool_args, changedArgs(c)),
        c.decision ? decisionLine(c.decision) : null)));
    el.scrollIntoView({ block: "nearest" });
  } catch (e) {
    clear(el, `Version ${n}: ${e.message}`);
  }
}
