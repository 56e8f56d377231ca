"""The paused-run queue as reviewers page through it (``GET /queue``): the paused runs,
oldest first, each with the calls it waits for, from the queue read model's tables
(``projections/queue.py``)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

from projections.queue import COUNTS_TABLE
from projections.sql import (
    TOTAL_CAP,  # a filtered total counts up to this many matches
    Cursor,
    Row,
    Total,
    capped_count,
)


def _cursor_encode(paused_since: datetime, run_id: str) -> str:
    raw = json.dumps([paused_since.isoformat(), run_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def cursor_decode(token: str) -> tuple[datetime, str]:
    """The position after which a page starts; ValueError when the token is not ours."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        since, run_id = json.loads(raw)
        if not isinstance(run_id, str):
            raise TypeError("run id")
        paused_since = datetime.fromisoformat(since)
        if paused_since.tzinfo is None:  # ours always carry their zone
            raise ValueError("no time zone")
        # In UTC, as stored; a time that has no UTC equivalent is no cursor of ours.
        return paused_since.astimezone(UTC), run_id
    except (ValueError, TypeError, OverflowError, UnicodeDecodeError) as e:
        raise ValueError("not a queue cursor") from e


def list_queue(
    c: Cursor,
    *,
    agent_id: str | None = None,
    user_id: str | None = None,
    tool_name: str | None = None,
    kind: str | None = None,
    after: str | None = None,
    limit: int = 50,
    total_cap: int = TOTAL_CAP,
    group: str | None = None,
) -> dict[str, Any]:
    """Paused runs, oldest first, with the calls they wait for; ``next_cursor`` continues
    after this page. ``group``: only runs with a call escalated to that group.

    ``total`` counts the runs matching the filters (all pages). Unfiltered, it is the
    ``paused`` counter: exact, whatever the size of the queue. Filtered, the matches are
    counted up to ``total_cap``: ``total_exact`` is false when there are more than
    ``total`` (then ``total`` is the cap)."""
    d = c.dialect
    where = ["r.paused_since IS NOT NULL"]
    params: list[Any] = []
    if agent_id is not None:
        where.append("r.agent_id = %s")
        params.append(agent_id)
    if user_id is not None:
        where.append("r.user_id = %s")
        params.append(user_id)
    if tool_name is not None or kind is not None:
        # A semi-join: PostgreSQL merges the runs and the calls in run id order, or
        # probes the calls of each run by (tool, run) or (kind, run); SQLite probes.
        sub = ["q.run_id = r.run_id", "q.waiting"]
        if tool_name is not None:
            sub.append("q.tool_name = %s")
            params.append(tool_name)
        if kind is not None:
            sub.append("q.kind = %s")
            params.append(kind)
        where.append(f"EXISTS (SELECT 1 FROM signoff_queue_calls q WHERE {' AND '.join(sub)})")
    if group is not None:
        # A deadline's row lives while its call waits: escalated and still waiting.
        where.append("EXISTS (SELECT 1 FROM signoff_queue_deadlines x "
                     "WHERE x.escalated_to = %s AND x.run_id = r.run_id)")
        params.append(group)
    filters = " AND ".join(where)
    filtered = any(v is not None for v in (agent_id, user_id, tool_name, kind, group))
    total = (Total.capped(f"SELECT 1 FROM signoff_queue_runs r WHERE {filters}", params,
                          total_cap) if filtered else Total.counter(COUNTS_TABLE, "paused"))
    page_where, page_params = filters, list(params)
    if after is not None:
        since, run_id = cursor_decode(after)
        # The range on paused_since alone is what an index can seek to: written as
        # (paused_since > t OR (= t AND run_id > r)) only, the scan starts at the queue's
        # head and filters every row before the cursor (deep pages cost their depth).
        page_where += (" AND r.paused_since >= %s"
                       " AND (r.paused_since > %s OR r.run_id > %s)")
        page_params += [d.time(since), d.time(since), run_id]
    # One statement: the total, the page's runs and their waiting calls (a row per call;
    # one row of NULLs after the total when the page is empty).
    total_sql, total_params = total.select()
    rows = c.execute(
        "WITH page AS (SELECT r.run_id, r.agent_id, r.user_id, r.session_id, r.started_at, "
        f"r.paused_since FROM signoff_queue_runs r WHERE {page_where} "
        "ORDER BY r.paused_since, r.run_id LIMIT %s) "
        "SELECT t.total, p.run_id, p.agent_id, p.user_id, p.session_id, p.started_at, "
        "p.paused_since, q.tool_call_id, q.tool_name, q.tool_args, q.kind, "
        "q.confirmation_message, q.requested_at, x.expires_at, x.escalated_to "
        f"FROM ({total_sql}) AS t LEFT JOIN page p ON 1 = 1 "
        "LEFT JOIN signoff_queue_calls q ON q.run_id = p.run_id AND q.waiting "
        "LEFT JOIN signoff_queue_deadlines x "
        "ON x.run_id = q.run_id AND x.tool_call_id = q.tool_call_id "
        "ORDER BY p.paused_since, p.run_id, q.requested_at, q.tool_call_id",
        [*page_params, limit + 1, *total_params]).fetchall()
    if rows[0]["total"] is None:  # pragma: no cover - the counter's row always exists
        counted = capped_count(c, f"SELECT 1 FROM signoff_queue_runs r WHERE {filters}",
                               params, total_cap)
    else:
        counted = total.read(rows[0]["total"])
    items: list[Row] = []
    for row in rows:
        if row["run_id"] is None:
            continue
        if not items or items[-1]["run_id"] != row["run_id"]:
            items.append({"run_id": row["run_id"], "agent_id": row["agent_id"],
                          "user_id": row["user_id"], "session_id": row["session_id"],
                          "started_at": d.from_time(row["started_at"]),
                          "paused_since": d.from_time(row["paused_since"]),
                          "waiting_for": []})
        if row["tool_call_id"] is not None:
            items[-1]["waiting_for"].append({
                "tool_call_id": row["tool_call_id"], "tool_name": row["tool_name"],
                "tool_args": d.from_json(row["tool_args"]), "kind": row["kind"],
                "confirmation_message": row["confirmation_message"],
                "requested_at": d.from_time(row["requested_at"]),
                "expires_at": d.from_time(row["expires_at"]),
                "escalated_to": row["escalated_to"]})
    has_more = len(items) > limit
    items = items[:limit]
    next_cursor = (_cursor_encode(items[-1]["paused_since"], items[-1]["run_id"])
                   if has_more and items else None)
    total_n, exact = counted
    return {"items": items, "total": total_n, "total_exact": exact,
            "next_cursor": next_cursor}
