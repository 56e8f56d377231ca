"""Webhooks: which subscriber is owed which notification, and every attempt to send it.

The projection follows the log like the others. A subscription's ``Created`` event adds
it to ``signoff_webhooks``; from then on, each event of a run that a subscription wants
(``domain.webhooks.event_type``) adds one row to ``signoff_webhook_deliveries``, keyed by
(subscription, log position): the delivery's id is derived from both, so a page applied
again, or a rebuild, never owes a notification twice. The dispatcher
(``projections/deliveries.py``) sends what is due and records each attempt in
``signoff_webhook_attempts``.

Tables (plain SQL; see docs/webhooks.md):

- ``signoff_webhooks``: one row per subscription (its URL, event types, who made it).
  Rebuilt from the log by ``signoff project rebuild webhooks``.
- ``signoff_webhook_deliveries``: one row per (subscription, event): ``pending`` (with
  ``next_attempt_at``), ``delivered``, ``failed`` (out of attempts) or ``cancelled`` (the
  subscription was deleted first). The signed body is kept once made.
- ``signoff_webhook_attempts``: one row per attempt: when, how long, the status code
  or the error.
- ``signoff_webhook_secrets``: each subscription's secret. Not in the log (see
  domain/webhooks.py).

A rebuild empties ``signoff_webhooks`` only: deliveries, attempts and secrets are what
happened, not a fold of the log, and are kept; the replayed events find their deliveries
already there (``ON CONFLICT DO NOTHING``) and nothing is sent again.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from functools import singledispatchmethod
from typing import Any

from domain.webhooks import Webhook, event_type, wants
from projections.readmodel import Page, ReadModel
from projections.sql import Cursor, Dialect, Row

_NAMESPACE = uuid.UUID("0c2a4f55-7d0b-4a43-9a8e-3f1c6b2d9e17")
DELIVERY_STATUSES = ("pending", "delivered", "failed", "cancelled")


def delivery_id(webhook_id: str, position: int) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{webhook_id}:{position}"))


@dataclass
class _WebhooksPage(Page):
    """The live subscriptions, read once per page and changed by the page's own
    events."""

    subscriptions: list[tuple[str, list[str]]] = field(default_factory=list)


class WebhooksProjection(ReadModel[_WebhooksPage]):
    name = "webhooks"
    # What a rebuild empties: the subscriptions only. Deliveries and their attempts stay
    # (a delivery's id is its webhook and position: one already there is not sent again).
    tables_in_order = ("signoff_webhooks",)
    # Deliveries this instance has written (rolled back ones included): the dispatcher
    # looks for due ones when it moves (``projections/deliveries.py``).
    deliveries_made = 0

    @classmethod
    def create_statements(cls, d: Dialect) -> list[str]:
        t = d.time_type
        return [
            f"""CREATE TABLE IF NOT EXISTS signoff_webhooks (
                webhook_id TEXT PRIMARY KEY,
                url TEXT NOT NULL,
                event_types {d.json_type} NOT NULL,
                hint TEXT NOT NULL,
                created_by TEXT NOT NULL,
                created_at {t} NOT NULL,
                created_position BIGINT NOT NULL,
                deleted BOOLEAN NOT NULL,
                deleted_by TEXT,
                deleted_at {t})""",
            """CREATE TABLE IF NOT EXISTS signoff_webhook_secrets (
                webhook_id TEXT PRIMARY KEY,
                secret TEXT NOT NULL)""",
            f"""CREATE TABLE IF NOT EXISTS signoff_webhook_deliveries (
                delivery_id TEXT PRIMARY KEY,
                webhook_id TEXT NOT NULL,
                position BIGINT NOT NULL,
                event_type TEXT NOT NULL,
                run_id TEXT NOT NULL,
                version BIGINT NOT NULL,
                occurred_at {t} NOT NULL,
                status TEXT NOT NULL,
                attempts INTEGER NOT NULL,
                next_attempt_at {t},
                claim TEXT,
                body TEXT)""",
            "CREATE UNIQUE INDEX IF NOT EXISTS signoff_webhook_deliveries_webhook "
            "ON signoff_webhook_deliveries (webhook_id, position)",
            "CREATE INDEX IF NOT EXISTS signoff_webhook_deliveries_due "
            "ON signoff_webhook_deliveries (next_attempt_at) WHERE status = 'pending'",
            "CREATE INDEX IF NOT EXISTS signoff_webhook_deliveries_failed "
            "ON signoff_webhook_deliveries (position) WHERE status = 'failed'",
            "CREATE INDEX IF NOT EXISTS signoff_webhook_deliveries_claimed "
            "ON signoff_webhook_deliveries (claim) WHERE claim IS NOT NULL",
            f"""CREATE TABLE IF NOT EXISTS signoff_webhook_attempts (
                delivery_id TEXT NOT NULL,
                attempt INTEGER NOT NULL,
                started_at {t} NOT NULL,
                duration_ms DOUBLE PRECISION NOT NULL,
                status_code INTEGER,
                error TEXT,
                PRIMARY KEY (delivery_id, attempt))""",
        ]

    def begin(self, c: Cursor) -> _WebhooksPage:
        rows = c.execute("SELECT webhook_id, event_types FROM signoff_webhooks "
                         "WHERE NOT deleted").fetchall()
        return _WebhooksPage(c, subscriptions=[
            (r["webhook_id"], c.dialect.from_json(r["event_types"])) for r in rows])

    @singledispatchmethod
    def process_event(self, event: Any, page: _WebhooksPage) -> None:
        """Any other event: a delivery to each subscription that wants its type."""
        made = event_type(event)
        if made is None:
            return
        d = page.c.dialect
        for webhook_id, event_types in page.subscriptions:
            if wants(event_types, made):
                self.deliveries_made += 1
                page.c.execute(
                    "INSERT INTO signoff_webhook_deliveries (delivery_id, webhook_id, "
                    "position, event_type, run_id, version, occurred_at, status, "
                    "attempts, next_attempt_at) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, 'pending', 0, %s) "
                    "ON CONFLICT DO NOTHING",
                    (delivery_id(webhook_id, page.position), webhook_id, page.position,
                     made, str(event.originator_id), event.originator_version,
                     d.time(event.timestamp), d.time(event.timestamp)))

    @process_event.register
    def created(self, e: Webhook.Created, page: _WebhooksPage) -> None:
        d = page.c.dialect
        page.c.execute("INSERT INTO signoff_webhooks (webhook_id, url, event_types, hint, "
                       "created_by, created_at, created_position, deleted) "
                       "VALUES (%s, %s, %s, %s, %s, %s, %s, FALSE) "
                       "ON CONFLICT (webhook_id) DO NOTHING",
                       (str(e.originator_id), e.url, d.json(e.event_types), e.hint,
                        e.created_by, d.time(e.timestamp), page.position))
        page.subscriptions.append((str(e.originator_id), list(e.event_types)))

    @process_event.register
    def deleted(self, e: Webhook.Deleted, page: _WebhooksPage) -> None:
        webhook_id = str(e.originator_id)
        page.c.execute("UPDATE signoff_webhooks SET deleted = TRUE, deleted_by = %s, "
                       "deleted_at = %s WHERE webhook_id = %s",
                       (e.deleted_by, page.c.dialect.time(e.timestamp), webhook_id))
        page.c.execute("UPDATE signoff_webhook_deliveries SET status = 'cancelled', "
                       "next_attempt_at = NULL WHERE webhook_id = %s AND status = 'pending'",
                       (webhook_id,))
        page.subscriptions[:] = [s for s in page.subscriptions if s[0] != webhook_id]


# ------------------------------------------------------------------ reads

def _webhook(d: Dialect, r: Row) -> Row:
    return {"id": r["webhook_id"], "url": r["url"],
            "event_types": d.from_json(r["event_types"]), "hint": r["hint"],
            "created_by": r["created_by"], "created_at": d.from_time(r["created_at"]),
            "deleted": bool(r["deleted"]), "deleted_by": r["deleted_by"],
            "deleted_at": d.from_time(r["deleted_at"])}


def read_webhooks(c: Cursor) -> list[Row]:
    rows = c.execute("SELECT * FROM signoff_webhooks ORDER BY created_position").fetchall()
    return [_webhook(c.dialect, r) for r in rows]


def read_webhook(c: Cursor, webhook_id: str) -> Row | None:
    r = c.execute("SELECT * FROM signoff_webhooks WHERE webhook_id = %s",
                  (webhook_id,)).fetchone()
    return _webhook(c.dialect, r) if r else None


def read_deliveries(c: Cursor, webhook_id: str, *, status: str | None = None,
                    before: int | None = None, limit: int = 50) -> list[Row]:
    """A subscription's deliveries, newest event first, each with its attempts."""
    d = c.dialect
    where, params = ["webhook_id = %s"], [webhook_id]
    if status:
        where.append("status = %s")
        params.append(status)
    if before is not None:
        where.append("position < %s")
        params.append(before)
    rows = c.execute(f"SELECT * FROM signoff_webhook_deliveries WHERE {' AND '.join(where)} "
                     "ORDER BY position DESC LIMIT %s", (*params, limit)).fetchall()
    attempts: dict[str, list[Row]] = {r["delivery_id"]: [] for r in rows}
    if rows:
        marks = ", ".join(["%s"] * len(rows))
        for a in c.execute(f"SELECT * FROM signoff_webhook_attempts WHERE delivery_id IN "
                           f"({marks}) ORDER BY attempt", list(attempts)).fetchall():
            attempts[a["delivery_id"]].append({
                "attempt": a["attempt"], "started_at": d.from_time(a["started_at"]),
                "duration_ms": a["duration_ms"], "status_code": a["status_code"],
                "error": a["error"]})
    return [{"id": r["delivery_id"], "webhook_id": r["webhook_id"],
             "event_type": r["event_type"], "position": r["position"], "run_id": r["run_id"],
             "version": r["version"], "occurred_at": d.from_time(r["occurred_at"]),
             "status": r["status"], "next_attempt_at": d.from_time(r["next_attempt_at"]),
             "body": r["body"], "attempts": attempts[r["delivery_id"]]} for r in rows]


def keep_secret(c: Cursor, webhook_id: str, secret: str) -> None:
    c.execute("INSERT INTO signoff_webhook_secrets (webhook_id, secret) VALUES (%s, %s) "
              "ON CONFLICT (webhook_id) DO UPDATE SET secret = excluded.secret",
              (webhook_id, secret))


# ------------------------------------------------------------------ dispatching

@dataclass(frozen=True)
class Due:
    """A delivery claimed for one attempt."""

    delivery_id: str
    webhook_id: str
    position: int
    event_type: str
    run_id: str
    version: int
    attempts: int  # made so far
    body: str | None
    url: str | None  # None: the subscription is not (yet) in signoff_webhooks (a rebuild)
    secret: str | None


def claim(c: Cursor, *, now: datetime, lease_until: datetime, limit: int,
          token: str) -> list[Due]:
    """Take up to ``limit`` due deliveries for one attempt each: they are not due again
    before ``lease_until`` (so another dispatcher leaves them), unless ``record`` says
    when. On PostgreSQL, rows another dispatcher is claiming are skipped, not waited for."""
    d = c.dialect
    lock = " FOR UPDATE SKIP LOCKED" if d.name == "postgres" else ""
    c.execute("UPDATE signoff_webhook_deliveries SET claim = %s, next_attempt_at = %s "
              "WHERE delivery_id IN (SELECT delivery_id FROM signoff_webhook_deliveries "
              "WHERE status = 'pending' AND next_attempt_at <= %s "
              f"ORDER BY next_attempt_at LIMIT %s{lock})",
              (token, d.time(lease_until), d.time(now), limit))
    rows = c.execute(
        "SELECT d.*, w.url, s.secret FROM signoff_webhook_deliveries d "
        "LEFT JOIN signoff_webhooks w ON w.webhook_id = d.webhook_id "
        "LEFT JOIN signoff_webhook_secrets s ON s.webhook_id = d.webhook_id "
        "WHERE d.claim = %s ORDER BY d.next_attempt_at, d.position", (token,)).fetchall()
    return [Due(r["delivery_id"], r["webhook_id"], r["position"], r["event_type"],
                r["run_id"], r["version"], r["attempts"], r["body"], r["url"], r["secret"])
            for r in rows]


def record(c: Cursor, due: Due, *, token: str, started_at: datetime, duration_ms: float,
           status_code: int | None, error: str | None, status: str,
           next_attempt_at: datetime | None, body: str | None) -> bool:
    """Record one attempt and what follows (``status``: pending again, delivered, failed).
    False when the claim was lost (its lease ran out and another dispatcher took it)."""
    d = c.dialect
    moved = c.execute(
        # Deleted meanwhile: it stays cancelled (no retry), the attempt is recorded.
        "UPDATE signoff_webhook_deliveries SET attempts = %s, "
        "status = CASE WHEN status = 'cancelled' THEN status ELSE %s END, "
        f"next_attempt_at = CASE WHEN status = 'cancelled' THEN NULL "
        f"ELSE CAST(%s AS {d.time_type}) END, "
        "claim = NULL, body = COALESCE(body, %s) "
        "WHERE delivery_id = %s AND claim = %s",
        (due.attempts + 1, status, d.time(next_attempt_at), body, due.delivery_id, token))
    raw = getattr(moved.raw, "sqlite_cursor", moved.raw)  # eventsourcing's SQLite wrapper
    if raw.rowcount != 1:
        return False
    c.execute("INSERT INTO signoff_webhook_attempts (delivery_id, attempt, started_at, "
              "duration_ms, status_code, error) VALUES (%s, %s, %s, %s, %s, %s)",
              (due.delivery_id, due.attempts + 1, d.time(started_at), duration_ms,
               status_code, error))
    return True


def release(c: Cursor, due: Due, *, token: str, at: datetime) -> None:
    """Give a claimed delivery back without an attempt (its subscription is not there
    yet: a rebuild in progress)."""
    c.execute("UPDATE signoff_webhook_deliveries SET claim = NULL, next_attempt_at = %s "
              "WHERE delivery_id = %s AND claim = %s",
              (c.dialect.time(at), due.delivery_id, token))


def next_due(c: Cursor) -> datetime | None:
    row = c.execute("SELECT MIN(next_attempt_at) AS at FROM signoff_webhook_deliveries "
                    "WHERE status = 'pending'").fetchone()
    return c.dialect.from_time(row["at"]) if row else None


def read_stats(c: Cursor) -> Row:
    """For /metrics: deliveries pending and failed (each counted in its partial index),
    and when the oldest pending one's event occurred."""
    row = c.execute(
        "SELECT (SELECT COUNT(*) FROM signoff_webhook_deliveries WHERE status = 'pending') "
        "AS pending, (SELECT COUNT(*) FROM signoff_webhook_deliveries "
        "WHERE status = 'failed') AS failed, (SELECT MIN(occurred_at) FROM "
        "signoff_webhook_deliveries WHERE status = 'pending') AS oldest").fetchone()
    assert row is not None
    return {"pending": int(row["pending"]), "failed": int(row["failed"]),
            "oldest": c.dialect.from_time(row["oldest"])}

