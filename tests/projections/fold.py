"""The read models, computed again by a plain fold over the event log.

Written from the issue's description of each read model, independently of
``projections/*.py`` (nothing here imports them): the property tests compare what the
projections' tables answer with what this fold says they should answer, for the same
``(position, event)`` pairs (``RunService.log()``).

- ``expected_queue``: the paused runs, oldest pause first (ties by run id), each with the
  calls it waits for: calls that need a decision (confirmation, an external result, user
  input) and have none yet, and calls that went in doubt after a crash (kind
  ``in_doubt``, asked again when they went in doubt) with neither a decision nor a late
  outcome since, ordered by when they were asked; with the deadline of each
  (``expires_at``) and the group an escalated one waits for (``escalated_to``).
- ``expected_running``: the runs that are running (started or continued, and neither
  paused nor ended since), each with when its current step began (its start, its
  continuation, the start of its running tool, or that tool's outcome) and the running
  tool's deadline (none before the first tool starts, after a tool's outcome, or after
  a continuation); ``expected_stale``: of those, the ones past their tool's deadline at
  ``now``, or with no deadline and a step begun before ``idle_before``, oldest first (by
  the deadline, else the step's start; ties by run id).
- ``expected_decisions``: one row per decision, in log order (an expiry is one: by
  ``system``, its action as the note; an escalated call waits on and may get more); a
  cancelled run gives a ``cancelled`` row (actor and reason of the cancel) for each call
  still undecided; a call a policy let run without a person gives an ``allowed`` row
  when it is requested (actor ``policy:RULE``, the rule's reason as the note, the policy
  in ``details``, no time to decision).
- ``expected_analytics``: per tool, agent, actor or day (or several of them), the calls
  that needed a decision (not per actor, and only on the clock of requests), the
  decisions of each kind, the acceptance of each kind of call (confirmed, given its
  result, given its input, over that plus rejected; the approval rate is the
  confirmations') and the nearest-rank p50/p90/p99 of the time to decision (decisions no
  person took left out: cancels, policies' allowances, expiries). A call a policy let
  through counts as requested (a policy decided it). A call that went in doubt after a
  crash is in no acceptance: what it was decided on is no longer one need. One clock
  places everything in the window and in a day (in a time zone): when the call was asked
  (or went in doubt), or when the decision was made.
- ``expected_queue_age``: per tool, agent, kind or escalation group (or several), the
  calls the queue shows waiting, the oldest one's request time, and the ages at a time
  of the oldest, and nearest-rank p50 and p90.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

DECISION_KINDS = ("confirmed", "rejected", "external_result", "user_input", "allowed",
                  "expired", "cancelled")
BY_NO_PERSON = ("allowed", "expired", "cancelled")
_DECIDED_BY = {"ToolConfirmed": "confirmed", "ToolRejected": "rejected",
               "ExternalResultProvided": "external_result",
               "UserInputProvided": "user_input"}


@dataclass
class _Call:
    run_id: str
    tool_call_id: str
    tool_name: str
    tool_args: dict[str, Any]
    kind: str  # what it needs: a requirement, "in_doubt", "policy" (allowed), or "none"
    confirmation_message: str | None
    asked_at: datetime  # when it was (last) asked for a decision
    open: bool  # waiting for a decision now
    expires_at: datetime | None = None  # its deadline, while it waits
    escalated_to: str | None = None  # the group it waits for, once escalated


@dataclass
class _Run:
    run_id: str
    agent_id: str
    user_id: str | None
    session_id: str
    started_at: datetime
    paused_since: datetime | None = None
    ended: bool = False
    running: bool = True  # neither paused nor ended since it started or continued
    step_since: datetime | None = None  # when its current step began, while it runs
    tool_deadline: datetime | None = None  # the running tool's, while it runs
    calls: dict[str, _Call] = field(default_factory=dict)


@dataclass
class Fold:
    """Everything the read models need, folded from the log."""

    runs: dict[str, _Run] = field(default_factory=dict)
    decisions: list[dict[str, Any]] = field(default_factory=list)

    def apply(self, position: int, event: Any) -> None:
        name = type(event).__name__
        run_id = str(event.originator_id)
        at = event.timestamp
        if name == "RunStarted":
            self.runs[run_id] = _Run(run_id, event.agent_id, event.user_id, event.session_id,
                                     at, step_since=at)
            return
        run = self.runs[run_id]
        if name == "ToolCallRequested":
            policy = getattr(event, "policy", None)
            allowed = bool(policy) and policy["outcome"] == "allowed"
            call = run.calls[event.tool_call_id] = _Call(
                run_id, event.tool_call_id, event.tool_name, event.tool_args,
                "policy" if allowed else event.requires if event.requires is not None
                else "none", event.confirmation_message, at, event.requires is not None,
                getattr(event, "expires_at", None))
            if allowed:
                self._decide(position, run, call, "allowed", "policy:" + policy["rule"], at,
                             policy["reason"], None, {"policy": policy})
        elif name == "ToolCallInDoubt":
            call = run.calls[event.tool_call_id]
            call.kind, call.asked_at, call.open = "in_doubt", at, True
        elif name in ("ToolExecuted", "ToolFailed"):
            # An outcome (a late one, of a call in doubt, too) settles the call: the run
            # no longer waits for it, and a cancel does not decide it.
            run.calls[event.tool_call_id].open = False
            if run.running:  # the next step begins (a late outcome changes no other run)
                run.step_since, run.tool_deadline = at, None
        elif name == "ToolExecutionStarted":
            if run.running:
                run.step_since, run.tool_deadline = at, event.deadline
        elif name == "RunPaused":
            run.paused_since = at
            run.running, run.step_since, run.tool_deadline = False, None, None
        elif name == "RunContinued":
            run.paused_since = None
            run.running, run.step_since, run.tool_deadline = True, at, None
        elif name in _DECIDED_BY:
            call = run.calls[event.tool_call_id]
            note = event.note if name == "ToolConfirmed" else getattr(event, "reason", None)
            details = ({"result": event.result} if name == "ExternalResultProvided"
                       else {"values": event.values} if name == "UserInputProvided" else None)
            # The arguments the tool runs with when they differ from the requested ones:
            # a reviewer's edit, or the requested ones completed by the user's input.
            approved = ({**call.tool_args, **event.values} if name == "UserInputProvided"
                        else getattr(event, "approved_args", None))
            self._decide(position, run, call, _DECIDED_BY[name], event.decided_by, at, note,
                         approved, details)
        elif name == "DecisionExpired":
            # Decided by the system; an escalation leaves the call waiting, for a group,
            # until a new deadline (and a later decision on it has a row of its own).
            call = run.calls[event.tool_call_id]
            escalated = event.action == "escalate"
            self._decide(position, run, call, "expired", event.decided_by, at,
                         f"escalate to {event.escalated_to}" if escalated else event.action,
                         None, {"action": event.action,
                                "expired_at": event.expired_at.isoformat(),
                                "escalated_to": event.escalated_to,
                                "expires_at": event.expires_at.isoformat()
                                if event.expires_at else None})
            if escalated:
                call.open, call.expires_at = True, event.expires_at
                call.escalated_to = event.escalated_to
        elif name == "RunCancelled":
            still_open = sorted((c for c in run.calls.values() if c.open),
                                key=lambda c: (c.asked_at, c.tool_call_id))
            for call in still_open:
                self._decide(position, run, call, "cancelled", event.cancelled_by, at,
                             event.reason, None, None)
            run.ended, run.paused_since = True, None
            run.running, run.step_since, run.tool_deadline = False, None, None
        elif name in ("RunCompleted", "RunFailed"):
            run.ended, run.paused_since = True, None
            run.running, run.step_since, run.tool_deadline = False, None, None

    def _decide(self, position: int, run: _Run, call: _Call, decision: str, actor: str,
                at: datetime, note: str | None, approved: Any, details: Any) -> None:
        self.decisions.append({
            "position": position, "run_id": run.run_id, "tool_call_id": call.tool_call_id,
            "agent_id": run.agent_id, "user_id": run.user_id, "session_id": run.session_id,
            "tool_name": call.tool_name, "args_requested": call.tool_args,
            "args_approved": approved, "decision": decision, "actor": actor, "note": note,
            "details": details, "requested_at": call.asked_at, "decided_at": at,
            "time_to_decision_ms": (at - call.asked_at) / timedelta(milliseconds=1),
        })
        call.open, call.expires_at = False, None


def fold(log: Iterable[tuple[int, Any]]) -> Fold:
    f = Fold()
    for position, event in log:
        f.apply(position, event)
    return f


# ------------------------------------------------------------------ the queue

def expected_queue(f: Fold, *, agent_id: str | None = None, user_id: str | None = None,
                   tool_name: str | None = None, kind: str | None = None,
                   group: str | None = None) -> list[dict[str, Any]]:
    """The queue's items, every page, in order (``list_queue``'s item shape); ``group``:
    the runs with a waiting call escalated to it."""
    items = []
    for run in f.runs.values():
        if run.ended or run.paused_since is None:
            continue
        waiting = sorted((c for c in run.calls.values() if c.open),
                         key=lambda c: (c.asked_at, c.tool_call_id))
        if agent_id is not None and run.agent_id != agent_id:
            continue
        if user_id is not None and run.user_id != user_id:
            continue
        if (tool_name is not None or kind is not None) and not any(
                (tool_name is None or c.tool_name == tool_name)
                and (kind is None or c.kind == kind) for c in waiting):
            continue
        if group is not None and not any(c.escalated_to == group for c in waiting):
            continue
        items.append({
            "run_id": run.run_id, "agent_id": run.agent_id, "user_id": run.user_id,
            "session_id": run.session_id, "started_at": run.started_at,
            "paused_since": run.paused_since,
            "waiting_for": [{"tool_call_id": c.tool_call_id, "tool_name": c.tool_name,
                             "tool_args": c.tool_args, "kind": c.kind,
                             "confirmation_message": c.confirmation_message,
                             "requested_at": c.asked_at, "expires_at": c.expires_at,
                             "escalated_to": c.escalated_to} for c in waiting],
        })
    return sorted(items, key=lambda i: (i["paused_since"], i["run_id"]))


# --------------------------------------------------------------- the running runs

def expected_running(f: Fold) -> list[dict[str, Any]]:
    """The running runs' rows, by run id: ``run_id``, ``since``, ``deadline``."""
    return sorted(({"run_id": r.run_id, "since": r.step_since, "deadline": r.tool_deadline}
                   for r in f.runs.values() if r.running), key=lambda r: r["run_id"])


def expected_stale(f: Fold, now: datetime, idle_before: datetime,
                   limit: int = 100) -> list[str]:
    """The running runs past their tool's deadline at ``now``, or with no tool running
    and a step begun before ``idle_before``: the oldest first, at most ``limit``."""
    stale = [(r["deadline"] if r["deadline"] is not None else r["since"], r["run_id"])
             for r in expected_running(f)
             if (r["deadline"] is not None and r["deadline"] < now)
             or (r["deadline"] is None and r["since"] < idle_before)]
    return [run_id for _, run_id in sorted(stale)[:limit]]


# ---------------------------------------------------------------- the audit trail

def expected_decisions(f: Fold, **where: Any) -> list[dict[str, Any]]:
    """Every decision row in log order (position, then call id); ``where`` keeps the rows
    whose fields equal the given values."""
    rows = [r for r in f.decisions if all(r[k] == v for k, v in where.items())]
    return sorted(rows, key=lambda r: (r["position"], r["tool_call_id"]))


def nearest_rank(values: list[float], p: int) -> float | None:
    """The smallest value with at least p% of the values at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(len(ordered) * p / 100)) - 1]


# What a call waits for, and the decision that accepts it.
ACCEPTING = {"confirmation": "confirmed", "external_execution": "external_result",
             "user_input": "user_input"}


def expected_analytics(f: Fold, group_by: str, *, by: str = "requested", tz: tzinfo = UTC,
                       since: datetime | None = None,
                       until: datetime | None = None) -> list[dict[str, Any]]:
    keys = group_by.split(",")

    def inside(t: datetime) -> bool:
        return (since is None or t >= since) and (until is None or t < until)

    def day(t: datetime) -> str:
        return t.astimezone(tz).date().isoformat()

    def decision_key(row: dict[str, Any]) -> tuple[str, ...]:
        values = {"tool": row["tool_name"], "agent": row["agent_id"], "actor": row["actor"],
                  "day": day(row[f"{by}_at"])}
        return tuple(values[k] for k in keys)

    with_requested = by == "requested" and "actor" not in keys
    groups: dict[tuple[str, ...], dict[str, Any]] = {}

    def group(key: tuple[str, ...]) -> dict[str, Any]:
        if key not in groups:
            groups[key] = {"group": key[0] if len(keys) == 1 else list(key),
                           "requested": 0 if with_requested else None,
                           **dict.fromkeys(DECISION_KINDS, 0), "times": [],
                           "kinds": {kind: {"accepted": 0, "rejected": 0}
                                     for kind in ACCEPTING}}
        return groups[key]

    for row in f.decisions:
        if not inside(row[f"{by}_at"]):
            continue
        g = group(decision_key(row))
        g[row["decision"]] += 1
        if row["decision"] not in BY_NO_PERSON:
            g["times"].append(row["time_to_decision_ms"])
        need = f.runs[row["run_id"]].calls[row["tool_call_id"]].kind  # "in_doubt": in none
        if need in ACCEPTING and row["decision"] == ACCEPTING[need]:
            g["kinds"][need]["accepted"] += 1
        elif need in ACCEPTING and row["decision"] == "rejected":
            g["kinds"][need]["rejected"] += 1
    if with_requested:
        for run in f.runs.values():
            for call in run.calls.values():
                if call.kind == "none" or not inside(call.asked_at):
                    continue
                values = {"tool": call.tool_name, "agent": run.agent_id,
                          "day": day(call.asked_at)}
                group(tuple(values[k] for k in keys))["requested"] += 1
    out = []
    for key in sorted(groups):
        g = groups[key]
        times = g.pop("times")
        g["acceptance"] = {kind: {**n, "rate": n["accepted"] / (n["accepted"] + n["rejected"])
                                  if n["accepted"] + n["rejected"] else None}
                           for kind, n in g.pop("kinds").items()}
        g["approval_rate"] = g["acceptance"]["confirmation"]["rate"]
        for p in (50, 90, 99):
            g[f"time_to_decision_p{p}_ms"] = nearest_rank(times, p)
        out.append(g)
    return out


def expected_queue_age(f: Fold, group_by: str, at: datetime) -> list[dict[str, Any]]:
    """Per group, the calls the queue shows waiting: how many, the oldest's request
    time, and the ages at ``at`` (ms) of the oldest, the p50 and the p90; a key that is
    missing (a call escalated to no group) sorts last."""
    keys = group_by.split(",")
    asked: dict[tuple[Any, ...], list[datetime]] = {}
    for item in expected_queue(f):
        for call in item["waiting_for"]:
            values = {"tool": call["tool_name"], "agent": item["agent_id"],
                      "kind": call["kind"], "group": call["escalated_to"]}
            asked.setdefault(tuple(values[k] for k in keys), []).append(call["requested_at"])
    out = []
    for key in sorted(asked, key=lambda k: [(v is None, v or "") for v in k]):
        ages = [(at - t) / timedelta(milliseconds=1) for t in asked[key]]
        out.append({"group": key[0] if len(keys) == 1 else list(key), "waiting": len(ages),
                    "oldest_requested_at": min(asked[key]), "age_oldest_ms": max(ages),
                    "age_p50_ms": nearest_rank(ages, 50), "age_p90_ms": nearest_rank(ages, 90)})
    return out
