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
    anchored: dict[str, Any] | None = None  # a run's check: its head as the anchors saw it
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
                "anchor_mismatch": self.anchor_mismatch, "head": self.head,
                "anchored": self.anchored}


class _RunChain:
    """Checks one run's events in order."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.version = 0
        self.prev: str | None = None
        self.chained = False
        self.broken = False
        self.link: str | None = None  # the newest event's link in the log chain

    def check(self, app: RunService, stored: StoredEvent, report: Report,
              position: int | None = None) -> str:
        """Checks one stored event; returns its link in the log chain."""
        self.link = self._check(app, stored, report, position)
        return self.link

    def _check(self, app: RunService, stored: StoredEvent, report: Report,
               position: int | None = None) -> str:
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


def verify_run(app: RunService, run_id: str | UUID,
               anchored: dict[str, Any] | None = None) -> Report:
    """Check one run's chain (``RunNotFound`` when it has no events), and, given
    ``anchored`` ({version, hash}: the run's newest event as the anchors saw it,
    ``projections.anchors.anchored_run``), that the run still reaches that event
    unchanged: a run cut short, or rewritten (its hashes recomputed or removed) after it
    was anchored, is named here."""
    stored = app.recorder.select_events(_uuid(run_id))
    if not stored:
        if anchored:  # deleted whole after it was anchored
            report = Report(runs=1, anchored=anchored)
            report.add(Broken(str(run_id), int(anchored["version"]),
                              f"the run has no events, but the anchors saw it at version "
                              f"{anchored['version']}: it was removed"))
            report.head = {"version": 0, "hash": None}
            return report
        raise RunNotFound(f"no run {run_id!r}")
    report = Report(runs=1, anchored=anchored)
    run_chain = _RunChain(str(run_id))
    links: dict[int, str] = {}
    for s in stored:
        links[s.originator_version] = run_chain.check(app, s, report)
        report.events += 1
    report.head = {"version": run_chain.version, "hash": run_chain.prev}
    if anchored:
        version, hash_ = int(anchored["version"]), str(anchored["hash"])
        if version > run_chain.version:
            report.add(Broken(str(run_id), version, (
                f"truncated: the anchors saw version {version} of the run, the store "
                f"holds it up to version {run_chain.version}: its last events were "
                "removed")))
        elif links.get(version) != hash_:
            report.add(Broken(str(run_id), version, (
                "is not the event the anchors saw at this version: the run was rewritten "
                "(its hashes recomputed or removed) after it was anchored")))
    return report


def verify_log(app: RunService, anchors: Iterable[dict[str, Any]] = (), *,
               runs: Iterable[tuple[str, int, str]] = (),
               progress: Progress | None = None, page: int = 500,
               remember: int = 100_000) -> Report:
    """Check every run's chain and the log chain against ``anchors`` ({events, hash},
    optionally ``runs``, the runs digest, and ``position``, for information; any order):
    the checkpoints and head of the anchors projection, and any anchor an auditor kept.
    An anchor is checked after its count of events, whatever the positions.

    ``runs`` are the runs' heads the anchors projection saw ((id, version, hash),
    ``projections.anchors.anchored_runs``): a run whose stored head is older (cut
    short, or removed whole) or different is named as broken.

    Memory: the runs still open (up to ``remember``) and, to check the runs digests,
    every stream's newest version and hash (about 200 bytes a stream)."""
    report = Report()
    todo: list[dict[str, Any]] = sorted(
        ({"events": int(a["events"]), "hash": str(a["hash"]),
          "runs": a.get("runs"), "position": a.get("position")}
         for a in anchors), key=lambda a: int(a["events"]))
    log_hash, count, position = chain.GENESIS, 0, 0
    chains: OrderedDict[str, _RunChain] = OrderedDict()
    heads: dict[str, tuple[int, str]] = {}
    head = app.head()

    def digest_now() -> str:
        return chain.runs_digest((r, v, h) for r, (v, h) in heads.items())

    def check_anchors(past_end: bool = False) -> None:
        while todo and (past_end or todo[0]["events"] <= count):
            a = todo.pop(0)
            report.anchors_checked += 1
            if report.anchor_mismatch:
                continue
            if a["events"] != count:
                problem = _anchor_problem(a["events"], count)
            elif a["hash"] != log_hash:
                problem = ("as many events as when anchored, but different ones: events "
                           "were altered, removed, inserted or reordered before this point")
            elif a["runs"] and a["runs"] != digest_now():
                problem = ("the log hash matches but the runs digest does not: the anchor's "
                           "runs digest was altered")
            else:
                continue
            report.anchor_mismatch = {
                "position": a["position"], "expected_events": a["events"],
                "expected_hash": a["hash"], "found_events": count, "found_hash": log_hash,
                "problem": problem}

    check_anchors()  # anchors of 0 events
    for position, stored in _stored_log(app, page):
        run_id = str(stored.originator_id)
        run_chain = chains.pop(run_id, None)
        if run_chain is None:
            run_chain = _resume(app, run_id, stored.originator_version)
        chains[run_id] = run_chain
        if len(chains) > remember:
            chains.popitem(last=False)
        if stored.originator_version == 1 and stored.topic.endswith(":Run.RunStarted"):
            report.runs += 1  # (API keys are chained streams in the same log)
        link = run_chain.check(app, stored, report, position)
        log_hash = chain.log_link(log_hash, link)
        heads[run_id] = (stored.originator_version, link)
        if stored.topic.endswith(_ENDS):
            # An ended run is forgotten: memory holds the runs still open, not every run
            # of the log (a late event of an ended run looks its predecessor up).
            del chains[run_id]
        count += 1
        report.events = count
        check_anchors()
        if progress and count % page == 0:
            progress(position, max(head, position))
    check_anchors(past_end=True)  # anchors past the end: the log's tail was cut off
    for run_id, version, hash_ in runs:
        found = heads.get(run_id)
        if found is None:
            report.add(Broken(run_id, version, f"the run has no events, but the anchors saw "
                              f"it at version {version}: it was removed"))
        elif found[0] < version:
            report.add(Broken(run_id, version, (
                f"truncated: the anchors saw version {version} of the run, the store holds "
                f"it up to version {found[0]}: its last events were removed")))
        elif found[0] == version and found[1] != hash_:
            report.add(Broken(run_id, version, (
                "is not the event the anchors saw at this version: the run was rewritten "
                "(its hashes recomputed or removed) after it was anchored")))
    report.head = {"position": position, "events": count, "hash": log_hash,
                   "runs": digest_now()}
    if progress:
        progress(position, max(head, position))
    return report


def _anchor_problem(expected: int, found: int) -> str:
    if found < expected:
        return (f"{expected - found} event(s) fewer than when anchored: events were "
                "removed")
    return f"{found - expected} event(s) more than when anchored"  # (not reached)


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
