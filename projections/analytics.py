"""Analytics over the decision audit trail (``GET /analytics/decisions``) and over what
waits in the queue (``GET /analytics/queue``). docs/analytics.md says what each figure
counts, with the SQL that gives the same figures.

Decisions are grouped by one or more keys (``tool``, ``agent``, ``actor``, ``day``) and
placed in a window and a day by one clock: ``requested`` (when the call was asked for the
decision) or ``decided`` (when the decision was made). Days are dates in a time zone.

A decision's kind is what its call waits for as the trail holds it
(``signoff_audit_calls.kind``); a call that went in doubt after a crash waits for
``in_doubt`` from then on, and its decisions count in no acceptance rate. The queue's
ages are measured from ``at`` to when each waiting call was asked (or went in doubt).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from projections.audit import time_range
from projections.sql import Cursor, Dialect

DECISIONS = ("confirmed", "rejected", "external_result", "user_input", "allowed", "expired",
             "cancelled")
# Decisions a person took on the call's merits: the times to decision count these only.
BY_PEOPLE = ("confirmed", "rejected", "external_result", "user_input")
# What a call waits for, and the decision that accepts it (a rejection refuses any).
ACCEPTED_BY = {"confirmation": "confirmed", "external_execution": "external_result",
               "user_input": "user_input"}
DECISION_KEYS = ("tool", "agent", "actor", "day")
QUEUE_KEYS = ("tool", "agent", "kind", "group")
CLOCKS = ("requested", "decided")
PERCENTILES = (50, 90, 99)
QUEUE_PERCENTILES = (50, 90)

_DECISION_COLUMNS = {"tool": "d.tool_name", "agent": "d.agent_id", "actor": "d.actor"}
_CALL_COLUMNS = {"tool": "tool_name", "agent": "agent_id", "day": "requested_at"}
_QUEUE_COLUMNS = {"tool": "q.tool_name", "agent": "r.agent_id", "kind": "q.kind",
                  "group": "x.escalated_to"}

Key = tuple[Any, ...]


def group_keys(group_by: str, allowed: Sequence[str]) -> tuple[str, ...]:
    """``"actor,tool"`` → ``("actor", "tool")``; ValueError for an unknown or repeated
    key."""
    keys = tuple(k.strip() for k in group_by.split(","))
    unknown = [k for k in keys if k not in allowed]
    if unknown or len(set(keys)) != len(keys):
        raise ValueError(f"group_by takes distinct keys among {', '.join(allowed)}, "
                         f"comma-separated: not {group_by!r}")
    return keys


def nearest_rank(sorted_values: Sequence[float], p: int) -> float | None:
    """The smallest value with at least p % of the values at or below it: the value of
    rank ceil(p n / 100), in integers."""
    if not sorted_values:
        return None
    return sorted_values[(p * len(sorted_values) + 99) // 100 - 1]


def analytics(
    c: Cursor, group_by: str, *, by: str = "requested", tz: tzinfo = UTC,
    since: datetime | None = None, until: datetime | None = None,
) -> list[dict[str, Any]]:
    """Per group: calls requested (``by="requested"`` only; never per actor), the count of
    each decision, the acceptance of each kind of call (``approval_rate``: of
    confirmations), and the times to decision's percentiles (nearest rank). ``since``
    inclusive, ``until`` exclusive, on the clock ``by``."""
    keys = group_keys(group_by, DECISION_KEYS)
    if by not in CLOCKS:
        raise ValueError(f"by is one of {', '.join(CLOCKS)}: not {by!r}")
    d = c.dialect
    clock = f"d.{by}_at"
    columns = {**_DECISION_COLUMNS, "day": clock}
    where: list[str] = []
    params: list[Any] = []
    time_range(d, clock, since, until, where, params)
    rows = c.execute(
        f"SELECT {_select(keys, columns)}, d.decision, d.time_to_decision_ms AS ms, "
        "k.kind FROM signoff_decisions d JOIN signoff_audit_calls k "
        "ON k.run_id = d.run_id AND k.tool_call_id = d.tool_call_id"
        + (f" WHERE {' AND '.join(where)}" if where else ""), params).fetchall()
    counts_requested = by == "requested" and "actor" not in keys
    groups: dict[Key, dict[str, Any]] = {}

    def group(key: Key) -> dict[str, Any]:
        if key not in groups:
            groups[key] = {"requested": 0 if counts_requested else None,
                           **dict.fromkeys(DECISIONS, 0),
                           "_kinds": {k: [0, 0] for k in ACCEPTED_BY}, "_times": []}
        return groups[key]

    for row in rows:
        _count(group(_key(d, keys, row, tz)), row)
    if counts_requested:
        for key, n in _requested(c, keys, tz, since, until).items():
            group(key)["requested"] = n
    return [{"group": key[0] if len(keys) == 1 else list(key), **_figures(groups[key])}
            for key in sorted(groups, key=_order)]


def _count(g: dict[str, Any], row: dict[str, Any]) -> None:
    decision = row["decision"]
    g[decision] += 1
    if decision in BY_PEOPLE:
        g["_times"].append(row["ms"])
    kind = row["kind"]
    if kind in ACCEPTED_BY and decision in (ACCEPTED_BY[kind], "rejected"):
        g["_kinds"][kind][decision == "rejected"] += 1


def _figures(g: dict[str, Any]) -> dict[str, Any]:
    kinds, times = g.pop("_kinds"), sorted(g.pop("_times"))
    acceptance = {kind: {"accepted": accepted, "rejected": rejected,
                         "rate": accepted / (accepted + rejected) if accepted + rejected
                         else None}
                  for kind, (accepted, rejected) in kinds.items()}
    return {**g, "approval_rate": acceptance["confirmation"]["rate"],
            "acceptance": acceptance,
            **{f"time_to_decision_p{p}_ms": nearest_rank(times, p) for p in PERCENTILES}}


def _requested(c: Cursor, keys: tuple[str, ...], tz: tzinfo, since: datetime | None,
               until: datetime | None) -> dict[Key, int]:
    """The calls asked for a decision in the window (a call in doubt: when it went in
    doubt), per group: a policy's allowance counts, a call that needed nothing does not."""
    where = ["kind <> 'none'"]
    params: list[Any] = []
    time_range(c.dialect, "requested_at", since, until, where, params)
    select = _select(keys, _CALL_COLUMNS)
    out: dict[Key, int] = {}
    for row in c.execute(f"SELECT {select}, COUNT(*) AS n FROM signoff_audit_calls "
                         f"WHERE {' AND '.join(where)} GROUP BY "
                         + ", ".join(_CALL_COLUMNS[k] for k in keys), params).fetchall():
        key = _key(c.dialect, keys, row, tz)
        out[key] = out.get(key, 0) + int(row["n"])
    return out


def queue_age(c: Cursor, group_by: str, *, at: datetime) -> list[dict[str, Any]]:
    """What waits in the queue now (the waiting calls of paused runs), per group (``tool``,
    ``agent``, ``kind``, ``group``: the group of reviewers an escalated call waits for,
    null for the others): how many, since when the oldest waits, and the ages at ``at``
    of the oldest and the p50 / p90 (nearest rank, in ms)."""
    keys = group_keys(group_by, QUEUE_KEYS)
    d = c.dialect
    rows = c.execute(
        f"SELECT {_select(keys, _QUEUE_COLUMNS)}, q.requested_at FROM signoff_queue_calls q "
        "JOIN signoff_queue_runs r ON r.run_id = q.run_id "
        "LEFT JOIN signoff_queue_deadlines x "
        "ON x.run_id = q.run_id AND x.tool_call_id = q.tool_call_id "
        "WHERE q.waiting AND r.paused_since IS NOT NULL").fetchall()
    asked: dict[Key, list[datetime]] = {}
    for row in rows:
        requested_at = d.from_time(row["requested_at"])
        assert requested_at is not None  # NOT NULL
        asked.setdefault(_key(d, keys, row, UTC), []).append(requested_at)
    out = []
    for key in sorted(asked, key=_order):
        ages = sorted((at - t) / timedelta(milliseconds=1) for t in asked[key])
        out.append({"group": key[0] if len(keys) == 1 else list(key), "waiting": len(ages),
                    "oldest_requested_at": min(asked[key]), "age_oldest_ms": ages[-1],
                    **{f"age_p{p}_ms": nearest_rank(ages, p) for p in QUEUE_PERCENTILES}})
    return out


def _select(keys: tuple[str, ...], columns: dict[str, str]) -> str:
    return ", ".join(f"{columns[k]} AS g{i}" for i, k in enumerate(keys))


def _key(d: Dialect, keys: tuple[str, ...], row: dict[str, Any], tz: tzinfo) -> Key:
    """The row's group: a day is the date, in ``tz``, of the time the row holds."""
    return tuple(_day(d, row[f"g{i}"], tz) if k == "day" else row[f"g{i}"]
                 for i, k in enumerate(keys))


def _day(d: Dialect, value: Any, tz: tzinfo) -> str:
    t = d.from_time(value)
    assert t is not None
    return t.astimezone(tz).date().isoformat()


def _order(key: Key) -> tuple[tuple[bool, str], ...]:
    """Groups in key order (code points), a missing key (null) last."""
    return tuple((v is None, v or "") for v in key)
