"""Verifying the record: each run's hash chain, and the whole log against its anchors.

Verification reads the stored events themselves (not the read models), decodes them
with the application's mapper (so it works with encryption on) and recomputes every
hash (``domain/chain.py``). It reports the first broken event of each run and of the
log, in constant memory: the log is read in pages, and the runs it remembers are
bounded (a run forgotten and met again is looked up in the store).

One damage, one message: a run found broken while the log is read is checked again as
``verify_run`` checks it (its events in version order), and that finding is reported, so
both checks name the same event in the same words. Events of a run swapped or moved are
named ``reordered``, with the version the event was recorded as (its hash holds there).

An event that cannot be read (its bytes, JSON or topic altered, encrypted with another
key, or decoded but without the fields its record needs) is a finding like any other:
``cannot be read``, with its position, run and version; verification goes on past it.

Given public keys, every stored anchor's signature is checked (``chain.signature_problem``).
Given ``observe``, each event read is handed on ((position, event), or (position, None)
when it cannot be read): the read models are checked in the same pass over the log
(``projections/auditproof.py``; their finding is the report's ``read_models``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from uuid import UUID

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from eventsourcing.persistence import StoredEvent

from domain import chain
from service.runchain import (
    MISMATCH,
    Broken,
    RunChain,
    anchored_problem,
    log_positions,
    reordered,
    resume,
)
from service.runs import RunNotFound, RunService, _uuid

__all__ = ["Broken", "Report", "verify_log", "verify_run"]

Progress = Callable[[int, int], None]  # (position reached, head)
Observe = Callable[[int, Any], None]  # (position, the decoded event or None)
_ENDS = (".RunCompleted", ".RunFailed", ".RunCancelled")
NAMED = 100  # bad signatures named in a report; the rest are counted


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
    signatures_checked: int = 0
    bad_signatures: list[dict[str, Any]] = field(default_factory=list)
    read_models: dict[str, Any] | None = None  # ``projections.auditproof``'s report

    @property
    def intact(self) -> bool:
        return (self.first_broken is None and self.anchor_mismatch is None
                and not self.bad_signatures
                and not (self.read_models and self.read_models["differ"]))

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
                "anchored": self.anchored, "signatures_checked": self.signatures_checked,
                "bad_signatures": self.bad_signatures, "read_models": self.read_models}


def verify_run(app: RunService, run_id: str | UUID,
               anchored: dict[str, Any] | None = None) -> Report:
    """Check one run's chain (``RunNotFound`` when it has no events), and, given
    ``anchored`` ({version, hash}: the run's newest event as the anchors saw it,
    ``projections.anchors.anchored_run``), that the run still reaches that event
    unchanged: a run cut short, or rewritten (its hashes recomputed or removed) after it
    was anchored, is named here."""
    rid = _uuid(run_id)
    stored = app.recorder.select_events(rid)
    if not stored and not anchored:
        raise RunNotFound(f"no run {run_id!r}")
    return _run_report(app, str(run_id), stored, anchored,
                       log_positions(app, rid) if stored else {})


def _run_report(app: RunService, run_id: str, stored: Sequence[StoredEvent],
                anchored: dict[str, Any] | None, positions: dict[int, int]) -> Report:
    """The run's own check; ``positions``: each version's log position (the head's, and
    the first broken event's, are reported)."""
    report = Report(runs=1, anchored=anchored)
    run_chain = RunChain(run_id)
    links: dict[int, str] = {}
    for s in stored:
        links[s.originator_version] = run_chain.check(app, s, report)
        report.events += 1
    first = run_chain.first
    if first is not None and first.problem.startswith(MISMATCH):
        first = reordered(app, stored, first) or first
    if first is not None:
        first.position = positions.get(first.version, first.position)
        report.add(first)
    report.head = {"version": run_chain.version, "hash": run_chain.prev,
                   "position": positions.get(run_chain.version)}
    if anchored:
        version = int(anchored["version"])
        problem = anchored_problem(version, str(anchored["hash"]), run_chain.version,
                                    links.get(version))
        if problem:
            report.add(Broken(run_id, version, problem))
    return report


def verify_log(app: RunService, anchors: Iterable[dict[str, Any]] = (), *,
               runs: Iterable[tuple[str, int, str]] = (),
               progress: Progress | None = None, page: int = 500,
               remember: int = 100_000, public_keys: Sequence[Ed25519PublicKey] = (),
               observe: Observe | None = None) -> Report:
    """Check every run's chain and the log chain against ``anchors`` ({events, hash},
    optionally ``runs``, the runs digest, and ``position``, for information; any order):
    the checkpoints and head of the anchors projection, and any anchor an auditor kept.
    An anchor is checked after its count of events, whatever the positions. Given
    ``public_keys``, every anchor of the anchors projection (those with a ``kind``) must
    carry a ``signature`` that holds with one of them.

    ``runs`` are the runs' heads the anchors projection saw ((id, version, hash),
    ``projections.anchors.anchored_runs``): a run whose stored head is older (cut
    short, or removed whole) or different is named as broken.

    Memory: the runs still open (up to ``remember``) and, to check the runs digests,
    every stream's newest version and hash (about 200 bytes a stream)."""
    anchors = list(anchors)
    report = Report()
    if public_keys:
        _check_signatures(report, anchors, public_keys)
    log = _LogPass(app, report, anchors, runs, remember, observe)
    head, position = app.head(), 0
    for position, stored in _stored_log(app, page):
        log.event(position, stored)
        if progress and log.count % page == 0:
            progress(position, max(head, position))
    log.finish(position)
    if progress:
        progress(position, max(head, position))
    return report


def _check_signatures(report: Report, anchors: list[dict[str, Any]],
                      keys: Sequence[Ed25519PublicKey]) -> None:
    for a in anchors:
        if a.get("kind") not in ("checkpoint", "head"):
            continue  # kept outside signoff, or an export's own: not signed
        report.signatures_checked += 1
        problem = chain.signature_problem(keys, a)
        if problem and len(report.bad_signatures) < NAMED:
            report.bad_signatures.append({"kind": a["kind"], "events": int(a["events"]),
                                          "position": a.get("position"),
                                          "problem": problem})


class _LogPass:
    """The whole log in order: each run's chain, the log chain, the anchors."""

    def __init__(self, app: RunService, report: Report, anchors: list[dict[str, Any]],
                 runs: Iterable[tuple[str, int, str]], remember: int,
                 observe: Observe | None) -> None:
        self.app, self.report, self.remember, self.observe = app, report, remember, observe
        self.todo: list[dict[str, Any]] = sorted(
            ({"events": int(a["events"]), "hash": str(a["hash"]), "runs": a.get("runs"),
              "position": a.get("position")} for a in anchors), key=lambda a: a["events"])
        self.anchored = {r: (int(v), str(h)) for r, v, h in runs}
        self.at_anchor: dict[str, str] = {}  # run: its link at the version anchored
        self.log_hash, self.count = chain.GENESIS, 0
        self.chains: OrderedDict[str, RunChain] = OrderedDict()
        self.heads: dict[str, tuple[int, str]] = {}
        self._check_anchors()  # anchors of 0 events

    def event(self, position: int, stored: StoredEvent) -> None:
        run_id, version = str(stored.originator_id), stored.originator_version
        run_chain = self.chains.pop(run_id, None)
        if run_chain is None:
            run_chain = resume(self.app, run_id, version)
        self.chains[run_id] = run_chain
        if len(self.chains) > self.remember:
            self.chains.popitem(last=False)
        if version == 1 and stored.topic.endswith(":Run.RunStarted"):
            self.report.runs += 1  # (API keys are chained streams in the same log)
        was_broken = run_chain.broken
        link = run_chain.check(self.app, stored, self.report, position)
        if run_chain.first is not None and not was_broken:
            self.report.add(self._as_its_own_check(run_chain, position, stored))
        if self.observe:
            self.observe(position, run_chain.event)
        self.log_hash = chain.log_link(self.log_hash, link)
        self.heads[run_id] = (version, link)
        if self.anchored.get(run_id, (0, ""))[0] == version:
            self.at_anchor[run_id] = link
        if stored.topic.endswith(_ENDS):
            # An ended run is forgotten: memory holds the runs still open, not every run
            # of the log (a late event of an ended run looks its predecessor up).
            del self.chains[run_id]
        self.count += 1
        self.report.events = self.count
        self._check_anchors()

    def _as_its_own_check(self, run_chain: RunChain, position: int,
                          stored: StoredEvent) -> Broken:
        """The run's first broken event as ``verify_run`` names it (the same words for
        the same damage), at its log position when it is this event. When the run reads
        whole in version order, only the log's order was altered."""
        first = run_chain.first
        assert first is not None
        rid = UUID(run_chain.run_id)
        own = _run_report(self.app, run_chain.run_id, self.app.recorder.select_events(rid),
                          None, log_positions(self.app, rid)).first_broken
        if own is None:
            return Broken(first.run_id, first.version, (
                f"reordered: version {first.version} of the run comes before its version "
                f"{run_chain.expected} in the log: the log's order was altered"),
                first.type, position)
        if own.version == stored.originator_version:
            own.position = position  # (a store in memory has no positions to look up)
        return own

    def finish(self, position: int) -> None:
        self._check_anchors(past_end=True)  # anchors past the end: the log's tail cut off
        for run_id, (version, hash_) in self.anchored.items():
            reached = self.heads.get(run_id, (0, ""))[0]
            problem = anchored_problem(version, hash_, reached, self.at_anchor.get(run_id))
            if problem:
                self.report.add(Broken(run_id, version, problem))
        self.report.head = {"position": position, "events": self.count,
                            "hash": self.log_hash, "runs": self._digest()}

    def _digest(self) -> str:
        return chain.runs_digest((r, v, h) for r, (v, h) in self.heads.items())

    def _check_anchors(self, past_end: bool = False) -> None:
        report = self.report
        while self.todo and (past_end or self.todo[0]["events"] <= self.count):
            a = self.todo.pop(0)
            report.anchors_checked += 1
            if report.anchor_mismatch:
                continue
            if a["events"] != self.count:
                problem = (f"{a['events'] - self.count} event(s) fewer than when anchored: "
                           "events were removed")
            elif a["hash"] != self.log_hash:
                problem = ("as many events as when anchored, but different ones: events "
                           "were altered, removed, inserted or reordered before this point")
            elif a["runs"] and a["runs"] != self._digest():
                problem = ("the log hash matches but the runs digest does not: the anchor's "
                           "runs digest was altered")
            else:
                continue
            report.anchor_mismatch = {
                "position": a["position"], "expected_events": a["events"],
                "expected_hash": a["hash"], "found_events": self.count,
                "found_hash": self.log_hash, "problem": problem}


def _stored_log(app: RunService, page: int) -> Iterator[tuple[int, StoredEvent]]:
    start = 1  # positions have gaps: each page starts after the last one read
    while True:
        notifications = app.recorder.select_notifications(start, page)
        for n in notifications:
            yield n.id, n
        if len(notifications) < page:
            return
        start = notifications[-1].id + 1
