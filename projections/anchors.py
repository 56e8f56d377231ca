"""Anchors: the hash of the whole log, event by event, so that a removed run shows.

Each run's events are hash-chained (``domain/chain.py``), which catches an altered,
removed or reordered event inside a run, but not a run removed whole, nor the last
events of a run cut off. The log chain covers those: in log order,

    log_hash(0) = 64 zeros
    log_hash(n) = sha256(log_hash(n-1) + hash of the n-th event)   (hex strings)

where an event recorded before the run chains (no ``hash``) counts with the hash of its
canonical record with ``prev`` = 64 zeros (``chain.link_of``).

An anchor says *after N events the log hash was H* (and the runs' heads digest was R,
below). It is keyed on the count of events, never on log positions: positions have gaps
(a save that loses a race burns one) and an import renumbers them from 1, but the count
and the hash survive export and import. The position an anchor was taken at is kept for
information only.

The **runs digest** binds every stream's newest event at that point::

    runs_digest = sha256("\\n".join(sorted(f"{id}:{version}:{link}" for each stream)))

(``id`` the stream's UUID as text, ``link`` its newest event's hash as above; API keys
are streams of the same log and count too.) It lets a run's own check say it was cut
short: ``signoff_anchor_runs`` keeps each stream's newest anchored version and hash, and
a run whose stored head is older than that was truncated. It is worked out for the head
when the head is read (``signoff audit anchor``, exports, ``/audit/anchors``), not for
each checkpoint: at a checkpoint the log hash already binds the same events, and
working the digest out reads every stream's head, a cost that grows with the runs.
(Checkpoints of stores anchored when they carried one keep it, and it is checked.)

Tables (plain SQL; see docs/audit.md):

- ``signoff_anchor_head``: one row, the log hash at the projection's position (the
  anchor to print and keep outside signoff: ``signoff audit anchor``).
- ``signoff_anchor_checkpoints``: a checkpoint every ``EVERY`` events, kept for good,
  keyed by ``events``.
- ``signoff_anchor_runs``: each stream's newest version and hash seen by the projection.
- ``signoff_anchor_signatures``: with a signing key (``SIGNOFF_ANCHOR_SIGNING_KEY``), the
  Ed25519 signature of each checkpoint and of the head (``chain.signed_text``), keyed
  like them: (``kind``, ``events``), and the public key that signed (information). A
  table of its own, so that a store projected before signatures existed gets it as it
  opens. A checkpoint is signed as it is written; the head once per page, as the page
  ends.

``signoff audit verify`` recomputes the log hash from the stored events and compares it
with every checkpoint, the head, and any anchor an auditor kept (``--anchor``); given a
public key, it checks every stored anchor's signature too.

(Before anchors were keyed on the count, checkpoints lived in ``signoff_anchors``,
keyed on position; that table is no longer read. A store projected before then gets the
new tables by a rebuild: ``signoff project rebuild anchors``.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from domain import chain
from projections.readmodel import Page, ReadModel
from projections.sql import Cursor, Dialect

EVERY = 1000  # events between two checkpoints


@dataclass
class _AnchorsPage(Page):
    """The log hash as the page goes, and each stream's newest event in the page (written
    once per stream when the page ends, or before a checkpoint reads them)."""

    events: int = 0
    hash: str = chain.GENESIS
    at: datetime | None = None
    # stream id: (version, link, position)
    heads: dict[str, tuple[int, str, int]] = field(default_factory=dict)


class AnchorsProjection(ReadModel[_AnchorsPage]):
    name = "anchors"
    inline = False  # its head row would be updated by every save: its follower writes it
    tables_in_order = ("signoff_anchor_checkpoints", "signoff_anchor_runs",
                       "signoff_anchor_head", "signoff_anchor_signatures")

    def __init__(self, signer: Ed25519PrivateKey | None = None) -> None:
        self.signer = signer  # None: anchors are written unsigned

    @classmethod
    def create_statements(cls, d: Dialect) -> list[str]:
        return [
            f"""CREATE TABLE IF NOT EXISTS signoff_anchor_checkpoints (
                events BIGINT PRIMARY KEY,
                position BIGINT NOT NULL,
                hash TEXT NOT NULL,
                runs TEXT NOT NULL,
                anchored_at {d.time_type} NOT NULL)""",
            f"""CREATE TABLE IF NOT EXISTS signoff_anchor_runs (
                run_id TEXT PRIMARY KEY,
                version BIGINT NOT NULL,
                hash TEXT NOT NULL,
                position BIGINT NOT NULL){d.keyed}""",
            f"""CREATE TABLE IF NOT EXISTS signoff_anchor_head (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                position BIGINT NOT NULL,
                events BIGINT NOT NULL,
                hash TEXT NOT NULL,
                anchored_at {d.time_type} NOT NULL)""",
            """CREATE TABLE IF NOT EXISTS signoff_anchor_signatures (
                kind TEXT NOT NULL,
                events BIGINT NOT NULL,
                signature TEXT NOT NULL,
                signed_by TEXT NOT NULL,
                PRIMARY KEY (kind, events))""",
        ]

    def begin(self, c: Cursor) -> _AnchorsPage:
        row = c.execute("SELECT events, hash FROM signoff_anchor_head WHERE id = 1").fetchone()
        if row is None:
            return _AnchorsPage(c)
        return _AnchorsPage(c, events=int(row["events"]), hash=row["hash"])

    def process_event(self, event: Any, page: _AnchorsPage) -> None:
        """Every event counts, whatever its class: it moves the log hash and its stream's
        head."""
        link = chain.link_of(event)
        page.events += 1
        page.hash = chain.log_link(page.hash, link)
        page.at = event.timestamp
        page.heads[str(event.originator_id)] = (event.originator_version, link, page.position)
        if page.events % EVERY == 0:  # no runs digest (the module's docstring says why)
            page.c.execute(
                "INSERT INTO signoff_anchor_checkpoints (events, position, hash, runs, "
                "anchored_at) VALUES (%s, %s, %s, '', %s)",
                (page.events, page.position, page.hash, page.c.dialect.time(page.at)))
            self._sign(page, {"kind": "checkpoint", "events": page.events,
                              "hash": page.hash})

    def end(self, page: _AnchorsPage) -> None:
        self._write_heads(page)
        page.c.execute(
            "INSERT INTO signoff_anchor_head (id, position, events, hash, anchored_at) "
            "VALUES (1, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET "
            "position = excluded.position, events = excluded.events, hash = excluded.hash, "
            "anchored_at = excluded.anchored_at",
            (page.position, page.events, page.hash, page.c.dialect.time(page.at)))
        if self.signer is not None:  # the head's signature replaces the one before
            page.c.execute("DELETE FROM signoff_anchor_signatures WHERE kind = 'head'")
            self._sign(page, {"kind": "head", "events": page.events, "hash": page.hash})

    def _sign(self, page: _AnchorsPage, anchor: dict[str, Any]) -> None:
        """Record the anchor's signature (nothing without a signing key)."""
        if self.signer is None:
            return
        page.c.execute(
            "INSERT INTO signoff_anchor_signatures (kind, events, signature, signed_by) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (kind, events) DO UPDATE SET "
            "signature = excluded.signature, signed_by = excluded.signed_by",
            (anchor["kind"], anchor["events"], chain.sign(self.signer, anchor),
             chain.public_text(self.signer.public_key())))

    @staticmethod
    def _write_heads(page: _AnchorsPage) -> None:
        page.c.executemany(
            "INSERT INTO signoff_anchor_runs (run_id, version, hash, position) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (run_id) DO UPDATE SET "
            "version = excluded.version, hash = excluded.hash, position = excluded.position",
            [(run_id, *head) for run_id, head in page.heads.items()])
        page.heads.clear()


def _runs_now(c: Cursor) -> str:
    rows = c.execute("SELECT run_id, version, hash FROM signoff_anchor_runs").fetchall()
    return chain.runs_digest((r["run_id"], int(r["version"]), r["hash"]) for r in rows)


def read_anchors(c: Cursor) -> list[dict[str, Any]]:
    """Every checkpoint, then the head (as the last item), oldest first: each
    {kind, events, hash, runs, position, anchored_at, signature, signed_by} (the last two
    None when it is not signed)."""
    d = c.dialect
    rows = c.execute(
        "SELECT k.position, k.events, k.hash, k.runs, k.anchored_at, s.signature, "
        "s.signed_by FROM signoff_anchor_checkpoints k LEFT JOIN signoff_anchor_signatures s "
        "ON s.kind = 'checkpoint' AND s.events = k.events ORDER BY k.events").fetchall()
    head = c.execute(
        "SELECT h.position, h.events, h.hash, h.anchored_at, s.signature, s.signed_by "
        "FROM signoff_anchor_head h LEFT JOIN signoff_anchor_signatures s "
        "ON s.kind = 'head' AND s.events = h.events WHERE h.id = 1").fetchone()
    out = [{**r, "runs": r["runs"] or None, "kind": "checkpoint"} for r in rows]
    if head is not None and head["events"] > 0:
        out.append({**head, "runs": _runs_now(c), "kind": "head"})
    for r in out:
        r["anchored_at"] = d.from_time(r["anchored_at"])
    return out


def use_signing_key(views: Mapping[str, Any], key: Ed25519PrivateKey | None) -> None:
    """Sign the anchors with ``key`` from now on, when ``views`` (a ``Projections``'
    views) keep them."""
    view = views.get(AnchorsProjection.name)
    if view is not None and isinstance(view.model, AnchorsProjection):
        view.model.signer = key


def anchored_run(c: Cursor, run_id: str) -> dict[str, Any] | None:
    """The run's newest version and hash the anchors saw ({version, hash, position})."""
    row = c.execute("SELECT version, hash, position FROM signoff_anchor_runs "
                    "WHERE run_id = %s", (str(run_id),)).fetchone()
    return None if row is None else {"version": int(row["version"]), "hash": row["hash"],
                                     "position": int(row["position"])}


def anchored_runs(c: Cursor) -> list[tuple[str, int, str]]:
    """Every stream's newest anchored (id, version, hash)."""
    rows = c.execute("SELECT run_id, version, hash FROM signoff_anchor_runs").fetchall()
    return [(r["run_id"], int(r["version"]), r["hash"]) for r in rows]


def anchor_text(a: dict[str, Any]) -> str:
    """An anchor as printed and kept: ``EVENTS:HASH:RUNS`` (``EVENTS:HASH`` for a
    checkpoint, which carries no runs digest)."""
    return f"{a['events']}:{a['hash']}" + (f":{a['runs']}" if a.get("runs") else "")


def parse_anchor(text: str) -> tuple[dict[str, Any], bool]:
    """``EVENTS:HASH``, ``EVENTS:HASH:RUNS``, or the deprecated ``POSITION:EVENTS:HASH``
    (its position ignored). Returns the anchor and whether the spelling is deprecated;
    ``ValueError`` when it is none of them."""
    parts = text.strip().split(":")

    def hexhash(s: str) -> str:
        if len(s) != 64 or any(ch not in "0123456789abcdef" for ch in s):
            raise ValueError(f"{s!r} is not a SHA-256 hex digest")
        return s

    if len(parts) == 3 and parts[1].isdigit():  # POSITION:EVENTS:HASH (deprecated)
        return {"events": int(parts[1]), "hash": hexhash(parts[2]),
                "position": int(parts[0])}, True
    if len(parts) in (2, 3) and parts[0].isdigit():
        anchor: dict[str, Any] = {"events": int(parts[0]), "hash": hexhash(parts[1])}
        if len(parts) == 3:
            anchor["runs"] = hexhash(parts[2])
        return anchor, False
    raise ValueError(f"{text!r} is not EVENTS:HASH[:RUNS]")
