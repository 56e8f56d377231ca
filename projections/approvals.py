"""Approvals (Agno's word): the calls that wait, or waited, for a person's confirmation,
read from the queue (those that wait) and the audit trail (those resolved). No table of
their own: what ``/approvals`` serves is what these two read models hold.

- **pending**: a call of ``signoff_queue_calls`` of kind ``confirmation`` that is
  ``waiting`` (an escalated one too: it waits for its group);
- resolved: the call's decision in ``signoff_decisions`` (a call of kind
  ``confirmation`` in ``signoff_audit_calls``): **approved** (``confirmed``),
  **rejected**, **expired** (an expiry that escalated the call is not one: the call waits
  on), **cancelled** (with its run).

A call put in doubt after a crash is not an approval: both read models give it the kind
``in_doubt`` from then on, and the queue serves it. ``from_call`` reads the same
approval from the run itself, for the routes that answer for one approval: what the run
says now, not what the read models have applied so far.

An approval's id is derived, never stored (``approval_id``): a UUID that begins with
the run id's first twelve hex digits, so that ``locate`` finds it from a range of the
run id's index.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from domain.calls import ToolCall
from domain.run import Run
from domain.values import CallState, DecisionKind, Requirement
from projections.sql import Cursor, Dialect, Row, capped_count

QUEUE_CALLS = "signoff_queue_calls"
AUDIT_CALLS = "signoff_audit_calls"
STATUSES = ("pending", "approved", "rejected", "expired", "cancelled")
# A resolved approval's status, by the decision of the audit trail that resolved it.
_BY_DECISION = {"confirmed": "approved", "rejected": "rejected", "expired": "expired",
                "cancelled": "cancelled"}
_DECISION_OF = {status: decision for decision, status in _BY_DECISION.items()}
_STATUS_OF_KIND = {DecisionKind.CONFIRMED: "approved", DecisionKind.REJECTED: "rejected",
                   DecisionKind.EXPIRED: "expired"}
_PREFIX = 12  # hex digits of the run id that begin an approval id


def approval_id(run_id: str, tool_call_id: str) -> str:
    """The id of the approval of one call: a UUID (version 5 layout) made of the run id's
    first twelve hex digits and SHA-1 of the run id and the call id. The same for good,
    and different for every call."""
    digest = hashlib.sha1(f"signoff:approval:{run_id}:{tool_call_id}".encode()).hexdigest()
    prefix = run_id.replace("-", "")[:_PREFIX].lower()
    return str(uuid.UUID(hex=(prefix + digest)[:32], version=5))


@dataclass(frozen=True)
class Approval:
    """One approval, as the read models or the run hold it. ``note``: the reviewer's
    note (an approval's) or reason (a rejection's); ``expires_at``: when a pending one
    expires, or when an expired one did; ``run_status``: filled in by the reader."""

    run_id: str
    tool_call_id: str
    agent_id: str
    user_id: str | None
    session_id: str
    tool_name: str
    tool_args: Any
    requested_at: datetime
    status: str
    expires_at: datetime | None = None
    resolved_by: str | None = None
    resolved_at: datetime | None = None
    note: str | None = None
    run_status: str | None = None

    @property
    def id(self) -> str:
        return approval_id(self.run_id, self.tool_call_id)

    def order(self) -> tuple[datetime, str, str]:
        """Newest request first, as Agno lists them (this key, descending)."""
        return self.requested_at, self.run_id, self.tool_call_id


@dataclass(frozen=True)
class Filters:
    """What a list is limited to: the request's filters, and the caller's reach (a
    reviewer's ``agents`` and ``tools``; None: every one)."""

    agent_id: str | None = None
    user_id: str | None = None
    run_id: str | None = None
    agents: frozenset[str] | None = None
    tools: frozenset[str] | None = None

    def where(self, runs: str, calls: str) -> tuple[list[str], list[Any]]:
        """SQL conditions on the tables aliased ``runs`` (agent, user) and ``calls``
        (run id, tool name)."""
        where: list[str] = []
        params: list[Any] = []
        for column, value in ((f"{runs}.agent_id", self.agent_id),
                              (f"{runs}.user_id", self.user_id),
                              (f"{calls}.run_id", self.run_id)):
            if value is not None:
                where.append(f"{column} = %s")
                params.append(value)
        for column, allowed in ((f"{runs}.agent_id", self.agents),
                                (f"{calls}.tool_name", self.tools)):
            if allowed is not None:
                where.append(f"{column} IN ({', '.join(['%s'] * len(allowed))})"
                             if allowed else "1 = 0")
                params += sorted(allowed)
        return where, params


# ------------------------------------------------------------------ pending (queue)

_PENDING = ("FROM signoff_queue_calls q JOIN signoff_queue_runs r ON r.run_id = q.run_id "
            "WHERE q.waiting AND q.kind = 'confirmation'")


def pending(c: Cursor, f: Filters, *, limit: int, offset: int = 0) -> list[Approval]:
    """Pending approvals, newest first; ``run_status`` PAUSED, or RUNNING while the run
    has not paused yet."""
    where, params = f.where("r", "q")
    rows = c.execute(
        "SELECT q.run_id, q.tool_call_id, q.tool_name, q.tool_args, q.requested_at, "
        "r.agent_id, r.user_id, r.session_id, r.paused_since, x.expires_at "
        "FROM signoff_queue_calls q JOIN signoff_queue_runs r ON r.run_id = q.run_id "
        "LEFT JOIN signoff_queue_deadlines x "
        "ON x.run_id = q.run_id AND x.tool_call_id = q.tool_call_id "
        "WHERE q.waiting AND q.kind = 'confirmation'" + "".join(f" AND {w}" for w in where)
        + " ORDER BY q.requested_at DESC, q.run_id DESC, q.tool_call_id DESC "
        "LIMIT %s OFFSET %s", [*params, limit, offset]).fetchall()
    d = c.dialect
    return [Approval(
        run_id=r["run_id"], tool_call_id=r["tool_call_id"], agent_id=r["agent_id"],
        user_id=r["user_id"], session_id=r["session_id"], tool_name=r["tool_name"],
        tool_args=d.from_json(r["tool_args"]), requested_at=_time(d, r["requested_at"]),
        status="pending", expires_at=d.from_time(r["expires_at"]),
        run_status="RUNNING" if r["paused_since"] is None else "PAUSED") for r in rows]


def count_pending(c: Cursor, f: Filters) -> int:
    """How many approvals are pending (exact: they are the queue's, which holds only
    what waits)."""
    where, params = f.where("r", "q")
    row = c.execute("SELECT COUNT(*) AS n " + _PENDING + "".join(f" AND {w}" for w in where),
                    params).fetchone()
    return int(row["n"]) if row else 0


# --------------------------------------------------------------- resolved (audit)

# The decision that resolved an approval: on a call that needed a confirmation, and not
# an expiry that escalated it (the call waits on, for a group).
_RESOLVED = ("FROM signoff_decisions d JOIN signoff_audit_calls k "
             "ON k.run_id = d.run_id AND k.tool_call_id = d.tool_call_id "
             "WHERE k.kind = 'confirmation' "
             "AND (d.decision <> 'expired' OR d.details ->> 'action' <> 'escalate')")


def _resolved_where(f: Filters, status: str | None) -> tuple[str, list[Any]]:
    where, params = f.where("d", "d")
    if status is not None:
        where.append("d.decision = %s")
        params.append(_DECISION_OF[status])
    return _RESOLVED + "".join(f" AND {w}" for w in where), params


def resolved(c: Cursor, f: Filters, *, status: str | None = None, limit: int,
             offset: int = 0) -> list[Approval]:
    """Resolved approvals (of one ``status``, or all), newest request first."""
    sql, params = _resolved_where(f, status)
    rows = c.execute(
        "SELECT d.run_id, d.tool_call_id, d.agent_id, d.user_id, d.session_id, d.tool_name, "
        "d.args_requested, d.requested_at, d.decision, d.actor, d.note, d.details, "
        f"d.decided_at {sql} ORDER BY d.requested_at DESC, d.run_id DESC, "
        "d.tool_call_id DESC LIMIT %s OFFSET %s", [*params, limit, offset]).fetchall()
    return [_from_decision(c.dialect, r) for r in rows]


def count_resolved(c: Cursor, f: Filters, *, status: str | None = None,
                   cap: int) -> tuple[int, bool]:
    """How many approvals are resolved, counted up to ``cap``: ``(n, exact)``."""
    sql, params = _resolved_where(f, status)
    return capped_count(c, "SELECT 1 " + sql, params, cap)


def _from_decision(d: Dialect, r: Row) -> Approval:
    status = _BY_DECISION[r["decision"]]
    details = d.from_json(r["details"]) or {}
    expired_at = details.get("expired_at") if status == "expired" else None
    return Approval(
        run_id=r["run_id"], tool_call_id=r["tool_call_id"], agent_id=r["agent_id"],
        user_id=r["user_id"], session_id=r["session_id"], tool_name=r["tool_name"],
        tool_args=d.from_json(r["args_requested"]), requested_at=_time(d, r["requested_at"]),
        status=status,
        expires_at=datetime.fromisoformat(expired_at) if expired_at else None,
        resolved_by=r["actor"], resolved_at=d.from_time(r["decided_at"]),
        note=r["note"] if status in ("approved", "rejected") else None)


# -------------------------------------------------------------------- one approval

def locate(c: Cursor, table: str, wanted: str) -> tuple[str, str] | None:
    """The (run id, call id) whose approval id is ``wanted``, among the calls of kind
    ``confirmation`` of ``table`` (``QUEUE_CALLS`` or ``AUDIT_CALLS``); None when there
    is none. The runs whose id begins as the approval id does are found by a range of
    the table's index on (run id, call id); each of their calls is then checked."""
    try:
        hex_id = uuid.UUID(wanted).hex
    except ValueError:
        return None
    head = hex_id[:8]  # the run id's first eight hex digits, then a hyphen, then four
    where = ["run_id >= %s", "substr(run_id, 1, 13) = %s", "kind = 'confirmation'"]
    params: list[Any] = [head, f"{head}-{hex_id[8:_PREFIX]}"]
    if head != "f" * 8:
        # The next eight digits: a bound that sorts after every id beginning with
        # ``head`` in any collation (digits and letters only, no punctuation).
        where.append("run_id < %s")
        params.append(f"{int(head, 16) + 1:08x}")
    rows = c.execute(f"SELECT run_id, tool_call_id FROM {table} WHERE {' AND '.join(where)}",
                     params).fetchall()
    for r in rows:
        if approval_id(r["run_id"], r["tool_call_id"]) == str(uuid.UUID(wanted)):
            return r["run_id"], r["tool_call_id"]
    return None


def run_states(c: Cursor, run_ids: Iterable[str]) -> dict[str, str]:
    """The status of those of ``run_ids`` that have not ended (PAUSED or RUNNING), from
    the queue's runs."""
    ids = sorted(set(run_ids))
    if not ids:
        return {}
    rows = c.execute("SELECT run_id, paused_since FROM signoff_queue_runs "
                     f"WHERE run_id IN ({', '.join(['%s'] * len(ids))})", ids).fetchall()
    return {r["run_id"]: "RUNNING" if r["paused_since"] is None else "PAUSED" for r in rows}


def is_approval(call: ToolCall) -> bool:
    """Is the call an approval: does it need (or did it need) a person's confirmation,
    and is it not in doubt? The run's ``tools[].approval_id`` is set for these."""
    return call.requires == Requirement.CONFIRMATION and call.state != CallState.IN_DOUBT


def from_call(run: Run, call: ToolCall, ended_at: datetime | None = None,
              ) -> Approval | None:
    """The approval of ``call`` as the run holds it now (None when the call is no
    approval: it needed no confirmation, or it is in doubt). ``ended_at``: when the run
    ended, for a call that ended with it undecided (cancelled)."""
    if not is_approval(call):
        return None
    decision = call.decision
    status, by, at, note, expires_at = "pending", None, None, None, call.expires_at
    if call.state != CallState.PENDING:
        expires_at = None
        if decision is None:  # ended with its run, undecided
            status, by, at = "cancelled", run.cancelled_by, ended_at
        else:
            status, by, at = _STATUS_OF_KIND[decision.kind], decision.decided_by, \
                decision.decided_at
            if decision.kind == DecisionKind.EXPIRED:
                expires_at = decision.expired_at
            else:
                note = decision.note if decision.kind == DecisionKind.CONFIRMED \
                    else decision.reason
    return Approval(
        run_id=run.run_id, tool_call_id=call.tool_call_id, agent_id=run.agent_id,
        user_id=run.user_id, session_id=run.session_id, tool_name=call.tool_name,
        tool_args=call.tool_args, requested_at=call.requested_at, status=status,
        expires_at=expires_at, resolved_by=by, resolved_at=at, note=note,
        run_status=str(run.status))


def newest_first(*lists: Sequence[Approval]) -> list[Approval]:
    """Approvals of several reads in one list, newest request first; an approval read
    twice (the queue and the audit trail a moment apart) once, as resolved."""
    seen: dict[str, Approval] = {}
    for a in (a for items in lists for a in items):
        if a.id not in seen or seen[a.id].status == "pending":
            seen[a.id] = a
    return sorted(seen.values(), key=Approval.order, reverse=True)


def _time(d: Dialect, value: Any) -> datetime:
    t = d.from_time(value)
    assert t is not None  # NOT NULL columns
    return t
