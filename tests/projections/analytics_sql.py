"""The SQL of docs/analytics.md, run as an analyst would run it, and the API's figures
rebuilt from what it returns.

``query(title)`` is the docs' block whose first line is ``-- title``; ``grouped`` makes
the edits the docs describe (another grouping, the other clock, a time zone's days);
``run`` binds the parameters as sqlite3 or psycopg take them. ``decisions_from_sql`` and
``queue_from_sql`` give, per group (its key as one text, ``" / "`` between keys), every
figure of ``GET /analytics/decisions`` and ``GET /analytics/queue``; ``by_group`` puts an
API answer's groups in the same form.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from projections.sql import Cursor

DOC = Path(__file__).resolve().parents[2] / "docs" / "analytics.md"
# "No bound", as the docs say to write it.
EARLIEST = datetime(1, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
COUNTS = ("confirmed", "rejected", "external_result", "user_input", "allowed", "expired",
          "cancelled")
KINDS = ("confirmation", "external_execution", "user_input")
MISSING = "-"  # a key that is null, as the docs' queue SQL writes it when keys are joined

Figures = dict[str, dict[str, Any]]


# The docs' queries, by the comment that opens each.
QUERIES = ("decisions: counts and acceptance per group",
           "times to decision: nearest rank per group",
           "requested: calls asked for a decision per group",
           "queue age (PostgreSQL)", "queue age (SQLite)")


def _blocks() -> list[str]:
    return re.findall(r"```sql\n(.*?)```", DOC.read_text(), re.S)


def block_titles() -> list[str]:
    return [b.splitlines()[0].removeprefix("-- ") for b in _blocks()]


def query(title: str) -> str:
    [block] = [b for b in _blocks() if b.startswith(f"-- {title}\n")]
    return block


def run(c: Cursor, sql: str, **params: Any) -> list[dict[str, Any]]:
    """``sql`` with its ``:name`` parameters bound (times as the store holds them)."""
    d = c.dialect
    if d.name == "postgres":
        sql = re.sub(r"(?<![:\w]):(\w+)", r"%(\1)s", sql)
    else:
        params = {k: d.time(v) if isinstance(v, datetime) else v for k, v in params.items()}
    c.raw.execute(sql, params)
    return c.fetchall()


def _day(dialect: str, column: str, tz: str) -> str:
    if dialect == "postgres":
        return f"to_char({column} AT TIME ZONE '{tz}', 'YYYY-MM-DD')"
    assert tz == "UTC", "SQLite's days are UTC's"
    return f"date({column})"


def grouped(sql: str, keys: list[str], dialect: str, *, by: str = "requested",
            tz: str = "UTC") -> str:
    """The docs' query (grouped by tool, on the requested clock) edited as the docs say:
    grouped by ``keys``, on the clock ``by``, with days in ``tz``."""
    if "d.tool_name AS g" in sql:  # a decisions query
        sql = sql.replace("d.requested_at", f"d.{by}_at")
        columns = {"tool": "d.tool_name", "agent": "d.agent_id", "actor": "d.actor",
                   "day": _day(dialect, f"d.{by}_at", tz)}
        placeholder = "d.tool_name AS g"
    elif "q.tool_name AS g" in sql:  # the queue's
        columns = {"tool": "q.tool_name", "agent": "r.agent_id", "kind": "q.kind",
                   "group": "x.escalated_to" if len(keys) == 1
                   else f"coalesce(x.escalated_to, '{MISSING}')"}
        placeholder = "q.tool_name AS g"
    else:  # the requests'
        columns = {"tool": "tool_name", "agent": "agent_id",
                   "day": _day(dialect, "requested_at", tz)}
        placeholder = "tool_name AS g"
    return sql.replace(placeholder, " || ' / ' || ".join(columns[k] for k in keys) + " AS g")


def by_group(groups: list[dict[str, Any]]) -> Figures:
    """An API answer's groups by their key as one text."""
    out: Figures = {}
    for g in groups:
        key = g["group"]
        text = (" / ".join(MISSING if k is None else k for k in key)
                if isinstance(key, list) else MISSING if key is None else key)
        out[text] = {k: v for k, v in g.items() if k != "group"}
    return out


def decisions_from_sql(c: Cursor, group_by: str, *, by: str = "requested", tz: str = "UTC",
                       since: datetime | None = None,
                       until: datetime | None = None) -> Figures:
    """Every figure of ``GET /analytics/decisions``, from the docs' three queries."""
    keys, d = group_by.split(","), c.dialect.name
    window = {"since": since or EARLIEST, "until": until or LATEST}
    with_requested = by == "requested" and "actor" not in keys
    out: Figures = {}

    def group(g: str) -> dict[str, Any]:
        return out.setdefault(g, {
            "requested": 0 if with_requested else None, **dict.fromkeys(COUNTS, 0),
            "approval_rate": None,
            "acceptance": {k: {"accepted": 0, "rejected": 0, "rate": None} for k in KINDS},
            **{f"time_to_decision_p{p}_ms": None for p in (50, 90, 99)}})

    for row in run(c, grouped(query(QUERIES[0]), keys, d,
                              by=by, tz=tz), **window):
        g = group(row["g"])
        g.update({k: int(row[k]) for k in COUNTS})
        g["approval_rate"] = row["approval_rate"]
        g["acceptance"] = {k: {"accepted": int(row[f"{k}_accepted"]),
                               "rejected": int(row[f"{k}_rejected"]),
                               "rate": row["approval_rate" if k == "confirmation"
                                           else f"{k}_rate"]} for k in KINDS}
    for row in run(c, grouped(query(QUERIES[1]), keys, d,
                              by=by, tz=tz), **window):
        group(row["g"]).update({k: row[k] for k in row if k != "g"})
    if with_requested:
        for row in run(c, grouped(query(QUERIES[2]),
                                  keys, d, tz=tz), **window):
            group(row["g"])["requested"] = int(row["requested"])
    return out


def queue_from_sql(c: Cursor, group_by: str, at: datetime) -> Figures:
    """Every figure of ``GET /analytics/queue`` at ``at``, from the docs' query."""
    d = c.dialect
    title = QUERIES[3] if d.name == "postgres" else QUERIES[4]
    out: Figures = {}
    for row in run(c, grouped(query(title), group_by.split(","), d.name), at=at):
        out[MISSING if row["g"] is None else row["g"]] = {
            "waiting": int(row["waiting"]),
            "oldest_requested_at": d.from_time(row["oldest_requested_at"]),
            **{k: row[k] for k in ("age_oldest_ms", "age_p50_ms", "age_p90_ms")}}
    return out
