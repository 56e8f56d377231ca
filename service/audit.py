"""Verifying the record: each run's hash chain, and the whole log against its anchors.

Verification reads the stored events themselves (not the read models), decodes them
with the application's mapper (so it works with encryption on) and recomputes every
hash (``domain/chain.py``). It reports the first broken event of each run and of the
log, in constant memory: the log is read in pages, and the runs it remembers are
bounded (a run forgotten and met again is looked up in the store).

An event that cannot be read (its bytes, JSON or topic altered, encrypted with another
key, or decoded but without the fields its record needs) is a finding like any other:
``cannot be read``, with its position, run and version; verification goes on past it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent

from domain import chain
from service.runs import RunNotFound, RunService, _uuid, unreadable

Progress = Callable[[int, int], None]  # (position reached, head)
_ENDS = (".RunCompleted", ".RunFailed", ".RunCancelled")


@dataclass
class Broken:
    """One event that breaks the record, and how."""

    run_id: str
    version: int
    problem: str
    type: str | None = None
    position: int | None = None


@dataclass
class AnchorCheck:
    position: int
    events: int
    hash: str
    found_events: int | None = None
    found_hash: str | None = None

    @property
    def ok(self) -> bool:
        return self.found_hash == self.hash and self.found_events == self.events


@dataclass
class Report:
    events: int = 0
    runs: int = 0
    unchained: int = 0  # events recorded before the hash chain
    broken: int = 0
    first_broken: Broken | None = None
    head: dict[str, Any] | None = None  # log position, events and hash reached
    anchors_checked: int = 0
    anchor_mismatch: dict[str, Any] | None = None
    _runs: set[str] = field(default_factory=set, repr=False)

    @property
    def intact(self) -> bool:
        return self.first_broken is None and self.anchor_mismatch is None

    def add(self, b: Broken) -> None:
        self.broken += 1
        if self.first_broken is None:
            self.first_broken = b

    def as_dict(self) -> dict[str, Any]:
        return {"intact": self.intact, "events": self.events, "runs": self.runs,
                "unchained_events": self.unchained, "broken_events": self.broken,
                "first_broken": asdict(self.first_broken) if self.first_broken else None,
                "anchors_checked": self.anchors_checked,
                "anchor_mismatch": self.anchor_mismatch, "head": self.head}


class _RunChain:
    """Checks one run's events in order."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.version = 0
        self.prev: str | None = None
        self.chained = False
        self.broken = False

    def check(self, app: RunService, stored: StoredEvent, report: Report,
              position: int | None = None) -> str:
        """Checks one stored event; returns its link in the log chain."""
        version = stored.originator_version
        name = stored.topic.rsplit(".", 1)[-1]

        def broken(problem: str) -> None:
            if not self.broken:  # only a run's first broken event is reported
                report.add(Broken(self.run_id, version, problem, name, position))
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
            event = app.mapper.to_domain_event(stored)
            stored_hash = getattr(event, "hash", None)
            computed = (chain.link_of(event, stored.topic) if stored_hash is None else
                        chain.digest(chain.event_record(event, stored.topic, self.prev)))
        except Exception as err:  # altered ciphertext, bytes, JSON or topic; a wrong key
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
            broken("does not match its hash: this event was altered, or one before it "
                   "was altered, removed or moved")
        self.prev = stored_hash
        return str(stored_hash)


def verify_run(app: RunService, run_id: str | UUID) -> Report:
    """Check one run's chain (``RunNotFound`` when it has no events)."""
    stored = app.recorder.select_events(_uuid(run_id))
    if not stored:
        raise RunNotFound(f"no run {run_id!r}")
    report = Report(runs=1)
    run_chain = _RunChain(str(run_id))
    for s in stored:
        run_chain.check(app, s, report)
        report.events += 1
    report.head = {"version": run_chain.version, "hash": run_chain.prev}
    return report


def verify_log(app: RunService, anchors: Iterable[dict[str, Any]] = (), *,
               progress: Progress | None = None, page: int = 500,
               remember: int = 100_000) -> Report:
    """Check every run's chain and the log chain against ``anchors`` ({position, events,
    hash}, any order): the checkpoints and head of the anchors projection, and any anchor
    an auditor kept."""
    report = Report()
    todo: list[dict[str, Any]] = sorted(
        ({"position": int(a["position"]), "events": int(a["events"]), "hash": str(a["hash"])}
         for a in anchors), key=lambda a: int(a["position"]))
    log_hash, count, position = chain.GENESIS, 0, 0
    runs: OrderedDict[str, _RunChain] = OrderedDict()
    head = app.head()

    def check_anchors(upto: int) -> None:
        while todo and todo[0]["position"] <= upto:
            a = todo.pop(0)
            report.anchors_checked += 1
            if (a["events"], a["hash"]) != (count, log_hash) and not report.anchor_mismatch:
                report.anchor_mismatch = {
                    "position": a["position"], "expected_events": a["events"],
                    "expected_hash": a["hash"], "found_events": count,
                    "found_hash": log_hash,
                    "problem": _anchor_problem(a["events"], count)}

    for position, stored in _stored_log(app, page):
        check_anchors(position - 1)  # anchors at positions no longer in the log
        run_id = str(stored.originator_id)
        run_chain = runs.pop(run_id, None)
        if run_chain is None:
            run_chain = _resume(app, run_id, stored.originator_version)
        runs[run_id] = run_chain
        if len(runs) > remember:
            runs.popitem(last=False)
        if stored.originator_version == 1 and stored.topic.endswith(":Run.RunStarted"):
            report.runs += 1  # (API keys are chained streams in the same log)
        log_hash = chain.log_link(log_hash, run_chain.check(app, stored, report, position))
        if stored.topic.endswith(_ENDS):
            # An ended run is forgotten: memory holds the runs still open, not every run
            # of the log (a late event of an ended run looks its predecessor up).
            del runs[run_id]
        count += 1
        report.events = count
        check_anchors(position)
        if progress and count % page == 0:
            progress(position, max(head, position))
    check_anchors(2**62)  # anchors past the end: the log's tail was cut off
    report.head = {"position": position, "events": count, "hash": log_hash}
    if progress:
        progress(position, max(head, position))
    return report


def _anchor_problem(expected: int, found: int) -> str:
    if found < expected:
        return (f"{expected - found} event(s) fewer than when anchored: events were "
                "removed up to this position")
    if found > expected:
        return f"{found - expected} event(s) more than when anchored: events were inserted"
    return "as many events as when anchored, but different ones: events were altered, "\
           "replaced or reordered up to this position"


def _resume(app: RunService, run_id: str, version: int) -> _RunChain:
    """A run met for the first time (or again, after being forgotten): take its chain up
    from the event before, which was checked when it was read (if it exists)."""
    run_chain = _RunChain(run_id)
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


def _stored_log(app: RunService, page: int) -> Iterator[tuple[int, StoredEvent]]:
    start = 1
    while True:
        notifications = app.recorder.select_notifications(start, page)
        for n in notifications:
            yield n.id, n
        if len(notifications) < page:
            return
        start = notifications[-1].id + 1
