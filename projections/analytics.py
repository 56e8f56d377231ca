"""Analytics over the decision audit trail: counts, approval rate and times to decision
per tool, agent, reviewer or day (``GET /analytics/decisions``)."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from projections.audit import decision_filters, time_range
from projections.sql import Cursor

DECISIONS = ("confirmed", "rejected", "external_result", "user_input", "allowed", "expired",
             "cancelled")
# Decisions no person took: left out of the times to decision.
NOT_BY_PEOPLE = ("allowed", "expired", "cancelled")
GROUPS = {"tool": "tool_name", "agent": "agent_id", "actor": "actor", "day": "decided_day"}


def analytics(
    c: Cursor, group_by: str, *, since: datetime | None = None, until: datetime | None = None,
) -> list[dict[str, Any]]:
    """Counts, approval rate and time-to-decision percentiles (nearest rank) per group."""
    d = c.dialect
    column = GROUPS[group_by]
    where, params = decision_filters(d, None, None, None, None, since, until)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    groups: dict[Any, dict[str, Any]] = {}

    def group(key: Any) -> dict[str, Any]:
        return groups.setdefault(key, {"group": key, "requested": 0 if column != "actor"
                                       else None, **{k: 0 for k in DECISIONS},
                                       "_times": []})

    rows = c.execute(f"SELECT {column} AS g, decision, time_to_decision_ms AS ms "
                     f"FROM signoff_decisions{clause} ORDER BY g, ms", params)
    for row in rows.fetchall():
        g = group(row["g"])
        g[row["decision"]] += 1
        if row["decision"] not in NOT_BY_PEOPLE:
            g["_times"].append(row["ms"])
    if column != "actor":
        req_column = {"tool_name": "tool_name", "agent_id": "agent_id",
                      "decided_day": "requested_day"}[column]
        req_where = ["kind <> 'none'"]
        req_params: list[Any] = []
        time_range(d, "requested_at", since, until, req_where, req_params)
        for row in c.execute(
                f"SELECT {req_column} AS g, COUNT(*) AS n FROM signoff_audit_calls "
                f"WHERE {' AND '.join(req_where)} GROUP BY {req_column}", req_params).fetchall():
            group(row["g"])["requested"] = int(row["n"])
    out = []
    for key in sorted(groups, key=lambda k: (k is None, k)):
        g = groups[key]
        times = g.pop("_times")
        decided = g["confirmed"] + g["rejected"]
        g["approval_rate"] = g["confirmed"] / decided if decided else None
        for p in (50, 90, 99):
            g[f"time_to_decision_p{p}_ms"] = _nearest_rank(times, p)
        out.append(g)
    return out


def _nearest_rank(sorted_values: list[float], p: int) -> float | None:
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]
