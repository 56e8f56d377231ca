"""Anchors: the hash of the whole log, event by event, so that a removed run shows.

Each run's events are hash-chained (``domain/chain.py``), which catches an altered,
removed or reordered event inside a run, but not a run removed whole, nor the last
events of a run cut off. The log chain covers those: in log order,

    log_hash(0) = 64 zeros
    log_hash(n) = sha256(log_hash(n-1) + hash of the n-th event)   (hex strings)

where an event recorded before the run chains (no ``hash``) counts with the hash of its
canonical record with ``prev`` = 64 zeros. Tables (plain SQL; see docs/audit.md):

- ``signoff_anchor_head``: one row, the log hash at the projection's position (the
  anchor to print and keep outside signoff: ``signoff audit anchor``).
- ``signoff_anchors``: a checkpoint every ``EVERY`` events, kept for good.

``signoff audit verify`` recomputes the log hash from the stored events and compares it
with every checkpoint, the head, and any anchor an auditor kept (``--anchor``).
"""

from __future__ import annotations

from typing import Any

from domain import chain
from projections.store import Cursor, Dialect

NAME = "anchors"
TABLES_IN_ORDER = ("signoff_anchors", "signoff_anchor_head")
EVERY = 1000  # events between two checkpoints


def tables(d: Dialect) -> list[str]:
    return [
        f"""CREATE TABLE IF NOT EXISTS signoff_anchors (
            position BIGINT PRIMARY KEY,
            events BIGINT NOT NULL,
            hash TEXT NOT NULL,
            anchored_at {d.time_type} NOT NULL)""",
        f"""CREATE TABLE IF NOT EXISTS signoff_anchor_head (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            position BIGINT NOT NULL,
            events BIGINT NOT NULL,
            hash TEXT NOT NULL,
            anchored_at {d.time_type} NOT NULL)""",
    ]


def apply_event(c: Cursor, e: Any, position: int) -> None:
    # The head is read once per page (a page is one transaction and one Cursor) and kept
    # on the cursor; each event then only writes.
    head = getattr(c, "anchor_head", None)
    if head is None:
        row = c.execute("SELECT events, hash FROM signoff_anchor_head WHERE id = 1").fetchone()
        head = c.anchor_head = [0, chain.GENESIS] if row is None else [row["events"],
                                                                        row["hash"]]
        c.execute("INSERT INTO signoff_anchor_head (id, position, events, hash, anchored_at) "
                  "VALUES (1, 0, 0, %s, %s) ON CONFLICT (id) DO NOTHING",
                  (chain.GENESIS, c.dialect.time(e.timestamp)))
    head[0] += 1
    head[1] = chain.log_link(head[1], chain.link_of(e))
    at = c.dialect.time(e.timestamp)
    c.execute("UPDATE signoff_anchor_head SET position = %s, events = %s, hash = %s, "
              "anchored_at = %s WHERE id = 1", (position, head[0], head[1], at))
    if head[0] % EVERY == 0:
        c.execute("INSERT INTO signoff_anchors (position, events, hash, anchored_at) "
                  "VALUES (%s, %s, %s, %s)", (position, head[0], head[1], at))


def read_anchors(c: Cursor) -> list[dict[str, Any]]:
    """Every checkpoint, then the head (as the last item), oldest first."""
    d = c.dialect
    rows = c.execute("SELECT position, events, hash, anchored_at FROM signoff_anchors "
                     "ORDER BY position").fetchall()
    head = c.execute("SELECT position, events, hash, anchored_at FROM signoff_anchor_head "
                     "WHERE id = 1").fetchone()
    out = [{**r, "kind": "checkpoint"} for r in rows]
    if head is not None and head["events"] > 0:
        out.append({**head, "kind": "head"})
    for r in out:
        r["anchored_at"] = d.from_time(r["anchored_at"])
    return out
