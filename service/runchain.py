"""One run's hash chain, event by event (``RunChain``), what is wrong with a run the
anchors saw (``anchored_problem``), and where a run's events are in the log
(``log_positions``): what the whole log's check and a run's own check share
(``service/audit.py``), so that both say the same damage in the same words, at the same
log position."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from uuid import UUID

from eventsourcing.persistence import StoredEvent
from eventsourcing.sqlite import SQLiteDatastore

from domain import chain
from service.runs import RunService, type_name, unreadable

MISMATCH = "does not match its hash"
_REORDER_MAX = 300  # events: a longer run's swapped events are named by their hash only


class Unchained(Protocol):
    unchained: int  # events recorded before the hash chain, counted


@dataclass
class Broken:
    """One event that breaks the record, and how."""

    run_id: str
    version: int
    problem: str
    type: str | None = None
    position: int | None = None


class RunChain:
    """Checks one run's events in order; ``first`` is the first that breaks it."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.version = 0
        self.prev: str | None = None
        self.chained = False
        self.broken = False
        self.first: Broken | None = None
        self.expected = 0  # the version expected where ``first`` was met
        self.event: Any = None  # the newest event, decoded (None: it cannot be read)

    def check(self, app: RunService, stored: StoredEvent, report: Unchained,
              position: int | None = None) -> str:
        """Checks one stored event; returns its link in the log chain."""
        version = stored.originator_version
        name = type_name(stored.topic)

        def broken(problem: str) -> None:
            if not self.broken:  # only a run's first broken event is reported
                self.first = Broken(self.run_id, version, problem, name, position)
                self.expected = self.version + 1
            self.broken = True

        if version != self.version + 1:
            if version <= self.version:
                broken(f"version {version} comes again after version {self.version}")
            else:
                missing = (f"version {self.version + 1}" if version == self.version + 2
                           else f"versions {self.version + 1} to {version - 1}")
                broken(f"{missing} of the run missing before this event")
        self.version = version
        try:
            self.event = event = app.mapper.to_domain_event(stored)
            stored_hash = getattr(event, "hash", None)
            computed = (chain.link_of(event, stored.topic) if stored_hash is None else
                        chain.digest(chain.event_record(event, stored.topic, self.prev)))
        except Exception as err:  # altered ciphertext, bytes, JSON or topic; a wrong key
            self.event = None
            broken(unreadable(err, stored.topic))
            self.prev = None
            return chain.digest({"unreadable": stored.state.hex()})
        if stored_hash is None:
            if self.chained:
                broken("has no hash, but an earlier event of the run does")
            else:
                report.unchained += 1
            return computed
        self.chained = True
        if computed != stored_hash:
            broken(f"{MISMATCH}: this event was altered, or one before it was altered, "
                   "removed or moved")
        self.prev = stored_hash
        return str(stored_hash)


def reordered(app: RunService, stored: Sequence[StoredEvent], first: Broken) -> Broken | None:
    """``first`` (an event that does not match its hash) named as ``reordered`` when its
    hash holds at another version of the run, after another of the run's events: it was
    recorded there, and swapped or moved since."""
    if len(stored) > _REORDER_MAX:
        return None
    events: dict[int, Any] = {}
    topics: dict[int, str] = {}
    for s in stored:
        try:
            events[s.originator_version] = app.mapper.to_domain_event(s)
            topics[s.originator_version] = s.topic
        except Exception:  # reported as it was checked
            continue
    target = events.get(first.version)
    own = getattr(target, "hash", None)
    if target is None or not own:
        return None
    data = chain.event_data(target)
    hashes = [h for e in events.values() if (h := getattr(e, "hash", None))]
    for version in sorted(set(events) - {first.version}):
        for prev in ([None] if version == 1 else hashes):
            rec = chain.record(target.originator_id, version, topics[first.version],
                               target.timestamp, data, prev)
            if chain.digest(rec) == own:
                return Broken(first.run_id, first.version, (
                    f"reordered: this event is version {version} of the run, stored as "
                    f"version {first.version}: the run's events were swapped or moved"),
                    first.type, first.position)
    return None


def anchored_problem(version: int, hash_: str, reached: int, link: str | None) -> str | None:
    """What is wrong with a run the anchors saw at ``version`` with ``hash_``, which the
    store holds up to version ``reached`` with ``link`` at ``version``."""
    if reached == 0:
        return (f"the run has no events, but the anchors saw it at version {version}: it "
                "was removed")
    if version > reached:
        return (f"truncated: the anchors saw version {version} of the run, the store holds "
                f"it up to version {reached}: its last events were removed")
    if link != hash_:
        return ("is not the event the anchors saw at this version: the run was rewritten "
                "(its hashes recomputed or removed) after it was anchored")
    return None


def resume(app: RunService, run_id: str, version: int) -> RunChain:
    """A run met for the first time (or again, after being forgotten): take its chain up
    from the event before, which was checked when it was read (if it exists)."""
    run_chain = RunChain(run_id)
    if version > 1:
        before = app.recorder.select_events(UUID(run_id), gt=version - 2, lte=version - 1)
        if before:
            try:
                event = app.mapper.to_domain_event(before[0])
                run_chain.prev = getattr(event, "hash", None)
                run_chain.chained = run_chain.prev is not None
            except Exception:  # reported when it was read
                run_chain.broken = True
            run_chain.version = version - 1
    return run_chain


def log_positions(app: RunService, run_id: UUID) -> dict[int, int]:
    """The log position of each of the run's stored versions, read from the events table
    (a store of eventsourcing's own, in memory, has none: empty)."""
    table = getattr(app.recorder, "events_table_name", None)
    datastore = getattr(app.recorder, "datastore", None)
    if table is None or datastore is None:
        return {}
    if isinstance(datastore, SQLiteDatastore):  # its notification id is the rowid
        statement = (f"SELECT originator_version AS v, rowid AS p FROM {table} "
                     "WHERE originator_id = ?")
        key: Any = run_id.hex
    else:
        statement = (f"SELECT originator_version AS v, notification_id AS p FROM {table} "
                     "WHERE originator_id = %s")
        key = run_id
    with datastore.transaction(commit=False) as c:
        c.execute(statement, (key,))
        return {int(row["v"]): int(row["p"]) for row in c.fetchall()}
