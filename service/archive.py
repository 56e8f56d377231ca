"""Export the event log as JSON Lines, and import such an export into an empty store.

One line per event, in log order: the event's canonical record (``domain/chain.py``)
with its ``hash`` and its ``position`` in the log::

    {"position": 7, "run_id": "…", "version": 3, "type": "domain.run:Run.RunPaused",
     "timestamp": "2030-03-10T21:03:00+00:00", "data": {"waiting_for": ["…"]},
     "prev": "…", "hash": "…"}

An event that cannot be read (its bytes, JSON or topic altered, or encrypted with another
key) is left out of an export, which goes on with the rest and names what it left out
(``left_out``); the next event of its run then has ``"prev": null``: the hash before it
is not known (so too after a version missing from the store).

A whole export (no ``since``/``until``, format 2) begins and ends with a line that
holds no event (it has no ``run_id``): a header with the anchors in force when it was
written (the anchors projection's checkpoints and head, ``{kind, events, hash, runs,
position, anchored_at}``), and a trailer with the export's own anchor (its count, log
hash and runs digest)::

    {"export": {"format": 2}, "anchors": [{"kind": "head", "events": 102, …}]}
    … one line per event …
    {"export": {"format": 2, "events": 102}, "anchors": [{"kind": "export", …}]}

``check_export`` recomputes every line's hash, every run's chain and the log chain, and
compares them with every anchor of the export and any the auditor kept, each after its
count of lines: an export with lines removed, altered, or a run stripped of its hashes
is refused before anything is imported. An export without them (a period, or written
before format 2) is checked against the kept anchors only.

Both directions stream in constant memory (but for each stream's newest version and
hash, kept for the runs digest). An import rebuilds each stored event from
its line exactly (the same fields with the same types, timestamps and hashes), so every
run's state and hash chain, and the log chain, come out identical; positions are
renumbered from 1 in the new store, and the anchors projection then recomputes them.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any
from uuid import UUID

from eventsourcing.utils import resolve_topic

from domain import chain
from service.runs import RunDamaged, RunService, type_name, unreadable

Progress = Callable[[int, int], None]
LeftOut = Callable[[RunDamaged], None]
_ENDS = (".RunCompleted", ".RunFailed", ".RunCancelled")
_UNKNOWN = "?"  # the hash before an event, when that event cannot be read or is missing


def export_events(app: RunService, *, since: datetime | None = None,
                  until: datetime | None = None, progress: Progress | None = None,
                  page: int = 500, left_out: LeftOut | None = None,
                  anchors: Iterable[dict[str, Any]] = ()) -> Iterator[str]:
    """Every event of the log (recorded at or after ``since`` and before ``until``), one
    JSON line each (with its newline).

    An event that cannot be read is passed to ``left_out`` (a ``RunDamaged`` with its
    run, version, log position, type and what is wrong) and left out, and the export
    goes on; without ``left_out`` it is raised there. Its time is not known, so it is
    passed on whatever the period.

    A whole export ends with the trailer (above): ``anchors`` (the anchors projection's,
    ``projections.anchors.read_anchors``) up to the count exported, and the export's
    own."""
    whole = since is None and until is None
    log = _LogChain()
    if whole:
        kept = [{k: a.get(k) for k in ("kind", "events", "hash", "runs", "position",
                                       "anchored_at")}
                for a in anchors if int(a["events"]) > 0]
        yield json.dumps({"export": {"format": FORMAT}, "anchors": kept},
                         default=chain.plain) + "\n"
    for line in _export_lines(app, since, until, progress, page, left_out):
        if whole:
            log.add(json.loads(line))
        yield line
    if whole:
        own = {"kind": "export", "events": log.count, "hash": log.hash, "runs": log.runs()}
        yield json.dumps({"export": {"format": FORMAT, "events": log.count},
                          "anchors": [own]}) + "\n"


FORMAT = 2  # 1: event lines only; 2: and the trailer


class _LogChain:
    """The log hash and runs digest over exported lines (as a third party computes it)."""

    def __init__(self) -> None:
        self.count = 0
        self.hash = chain.GENESIS
        self.heads: dict[str, tuple[int, str]] = {}

    def add(self, rec: dict[str, Any]) -> str:
        link = rec["hash"] or chain.digest({**_record(rec), "prev": chain.GENESIS})
        self.count += 1
        self.hash = chain.log_link(self.hash, link)
        self.heads[rec["run_id"]] = (int(rec["version"]), link)
        return str(link)

    def runs(self) -> str:

        return chain.runs_digest((r, v, h) for r, (v, h) in self.heads.items())


def _record(rec: dict[str, Any]) -> dict[str, Any]:
    return {k: rec[k] for k in ("run_id", "version", "type", "timestamp", "data", "prev")}


def _export_lines(app: RunService, since: datetime | None, until: datetime | None,
                  progress: Progress | None, page: int,
                  left_out: LeftOut | None) -> Iterator[str]:
    head = app.head()
    start = 1
    prevs = _Prevs(app)
    while True:
        notifications = app.recorder.select_notifications(start, page)
        for n in notifications:
            try:
                event: Any = app.mapper.to_domain_event(n)
                rec = chain.event_record(event, n.topic, None)
            except Exception as err:
                damaged = RunDamaged(n.originator_id, n.originator_version,
                                     unreadable(err, n.topic), type=type_name(n.topic),
                                     position=n.id)
                if left_out is None:
                    raise damaged from err
                left_out(damaged)
                prevs.set(n.originator_id, n.originator_version, _UNKNOWN)
                continue
            hash_ = getattr(event, "hash", None)
            prev = prevs.before(n.originator_id, n.originator_version)
            if n.topic.endswith(_ENDS):  # an ended run is forgotten (see service/audit.py)
                prevs.forget(n.originator_id)
            else:
                prevs.set(n.originator_id, n.originator_version, hash_)
            if (since and event.timestamp < since) or (until and event.timestamp >= until):
                continue
            rec["prev"] = None if prev == _UNKNOWN else (prev or chain.GENESIS)
            try:
                yield json.dumps({"position": n.id, **rec, "hash": hash_},
                                 ensure_ascii=False, default=chain.plain) + "\n"
            except (TypeError, ValueError) as err:  # a value JSON cannot hold
                damaged = RunDamaged(n.originator_id, n.originator_version,
                                     f"cannot be written as JSON ({type(err).__name__})",
                                     type=type_name(n.topic), position=n.id)
                if left_out is None:
                    raise damaged from err
                left_out(damaged)
        if notifications and progress:
            progress(notifications[-1].id, max(head, notifications[-1].id))
        if len(notifications) < page:
            return
        start = notifications[-1].id + 1


class _Prevs:
    """The hash of each run's newest event met so far, for the ``prev`` of its next one;
    bounded, and looked up in the store for a run forgotten."""

    def __init__(self, app: RunService, remember: int = 100_000) -> None:
        self.app = app
        self.remember = remember
        self.hashes: dict[UUID | str, tuple[int, str | None]] = {}

    def before(self, run_id: UUID | str, version: int) -> str | None:
        """The hash of the run's event before ``version``: ``None`` before its first (or
        when that event has none), ``_UNKNOWN`` when it is missing or cannot be read."""
        known = self.hashes.get(run_id)
        if known and known[0] == version - 1:
            return known[1]
        if version == 1:
            return None
        stored = self.app.recorder.select_events(run_id, gt=version - 2, lte=version - 1)
        if not stored:
            return _UNKNOWN
        try:
            return getattr(self.app.mapper.to_domain_event(stored[0]), "hash", None)
        except Exception:  # left out of the export, where it was met
            return _UNKNOWN

    def forget(self, run_id: UUID | str) -> None:
        self.hashes.pop(run_id, None)

    def set(self, run_id: UUID | str, version: int, hash_: str | None) -> None:
        self.hashes.pop(run_id, None)
        self.hashes[run_id] = (version, hash_)
        if len(self.hashes) > self.remember:
            del self.hashes[next(iter(self.hashes))]


class ImportError_(Exception):
    """The export cannot be imported (the store is not empty, or a line is invalid)."""


def import_events(app: RunService, lines: Iterable[str], *, batch: int = 500,
                  progress: Callable[[int], None] | None = None) -> int:
    """Load an export into an empty store. Returns the number of events imported. The
    chains are not trusted here: run ``verify_log`` afterwards (the CLI does)."""
    if app.head():
        raise ImportError_("the store already holds events: import only into an empty one")
    pending = []
    count = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if "anchors" in rec and "run_id" not in rec:
                continue  # the trailer (check_export checks it)
            pending.append(app.mapper.to_stored_event(_event(rec)))
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise ImportError_(f"line {number}: not an exported event ({err})") from err
        if len(pending) >= batch:
            app.recorder.insert_events(pending)
            count += len(pending)
            pending = []
            if progress:
                progress(count)
    if pending:
        app.recorder.insert_events(pending)
        count += len(pending)
        if progress:
            progress(count)
    return count


@dataclass
class ExportCheck:
    events: int = 0
    log_hash: str = chain.GENESIS
    runs: int = 0
    anchors: list[dict[str, Any]] = field(default_factory=list)  # the trailer's
    anchors_checked: int = 0
    trailer: bool = False


def check_export(lines: Iterable[str], kept: Iterable[dict[str, Any]] = ()) -> ExportCheck:
    """Check an export before importing it: every line's hash, every run's chain, the
    log chain against the trailer's anchors and ``kept`` ({events, hash}, optionally
    runs). Raises ``ImportError_`` naming the first problem."""
    checker = _ExportChecker(kept)
    for number, line in enumerate(lines, start=1):
        if line.strip():
            checker.line(number, line)
    return checker.finish()


def _refused(message: str) -> ImportError_:
    return ImportError_(message + ": nothing was imported")


class _ExportChecker:
    """``check_export``, one line at a time."""

    def __init__(self, kept: Iterable[dict[str, Any]]) -> None:
        self.result = ExportCheck()
        self.log = _LogChain()
        self.last: dict[str, tuple[int, str | None]] = {}  # run -> (version, hash)
        self.pending: list[dict[str, Any]] = sorted(kept, key=lambda a: int(a["events"]))
        self.header = False
        self.trailer: dict[str, Any] | None = None

    def line(self, number: int, line: str) -> None:
        if self.trailer is not None:
            raise _refused(f"line {number}: a line after the export's trailer")
        try:
            rec = json.loads(line)
        except ValueError as err:
            raise _refused(f"line {number}: not JSON ({err})") from err
        if "anchors" in rec and "run_id" not in rec:
            self._anchors(number, rec)
        else:
            self._event(number, rec)

    def finish(self) -> ExportCheck:
        if self.header and self.trailer is None:
            raise _refused("the export has no trailer: its last lines were removed")
        self.result.trailer = self.trailer is not None
        self._check(2**62, "the export's or the kept")
        self.result.events, self.result.log_hash = self.log.count, self.log.hash
        return self.result

    def _anchors(self, number: int, rec: dict[str, Any]) -> None:
        try:
            anchors = [{"events": int(a["events"]), "hash": str(a["hash"]),
                        "runs": a.get("runs"), "position": a.get("position")}
                       for a in rec["anchors"]]
        except (KeyError, TypeError, ValueError) as err:
            raise _refused(f"line {number}: the export's anchors are not valid "
                           f"({err})") from err
        if any(a["events"] < self.log.count for a in anchors):
            raise _refused(f"line {number}: an anchor of fewer events than the lines "
                           "before it")
        self.result.anchors += anchors
        self.pending = sorted([*self.pending, *anchors], key=lambda a: int(a["events"]))
        if number == 1:
            self.header = True
        else:
            self.trailer = rec
        self._check(self.log.count, "the export's")

    def _event(self, number: int, rec: dict[str, Any]) -> None:
        try:
            run_id, version, hash_ = rec["run_id"], int(rec["version"]), rec["hash"]
            computed = chain.digest(_record(rec))
        except (KeyError, TypeError, ValueError) as err:
            raise _refused(f"line {number}: not an exported event ({err})") from err
        where = f"line {number} (run {run_id} version {version})"
        before = self.last.get(run_id)
        if before is not None and version != before[0] + 1:
            raise _refused(f"{where}: version {before[0] + 1} of the run is missing "
                           "before it")
        if self.header and before is None and version != 1:
            raise _refused(f"{where}: the run's first line, in a whole export, is not its "
                           "version 1 (its first events were removed)")
        _check_link(where, rec, before, computed)
        if version == 1 and rec["type"].endswith(":Run.RunStarted"):
            self.result.runs += 1
        self.last[run_id] = (version, hash_)
        self.log.add(rec)
        self._check(self.log.count, "the export's or the kept")

    def _check(self, upto: int, why: str) -> None:
        while self.pending and int(self.pending[0]["events"]) <= upto:
            a = self.pending.pop(0)
            self.result.anchors_checked += 1
            problem = _anchor_mismatch(a, self.log)
            if problem:
                raise _refused(f"{why} anchor of {a['events']} events does not match: "
                               f"{problem}")


def _check_link(where: str, rec: dict[str, Any], before: tuple[int, str | None] | None,
                computed: str) -> None:
    """The line's own hash, and its link to the run's event before it."""
    if rec["hash"] is None:
        if before is not None and before[1] is not None:
            raise _refused(f"{where}: has no hash, but an earlier event of the run does "
                           "(its hashes were removed)")
    else:
        expected_prev = before[1] if before else (chain.GENESIS if int(rec["version"]) == 1
                                                  else rec["prev"])
        if rec["prev"] != expected_prev or computed != rec["hash"]:
            raise _refused(f"{where}: does not match its hash (the line was altered, or "
                           "one of its run before it altered or removed)")


def _anchor_mismatch(anchor: dict[str, Any], log: _LogChain) -> str | None:
    """Why the log does not match the anchor at its count; None when it does."""
    if int(anchor["events"]) != log.count:
        return f"the export holds {log.count} events (events were removed)"
    if anchor["hash"] != log.hash:
        return ("the export's log hash at that count is not the anchored one (events were "
                "altered, removed, inserted or reordered, or a run's hashes removed)")
    if anchor.get("runs") and anchor["runs"] != log.runs():
        return "its runs digest differs"
    return None


def _event(rec: dict[str, Any]) -> Any:
    cls = resolve_topic(rec["type"])
    dates = _date_fields(cls)
    state = {k: (datetime.fromisoformat(v) if k in dates and isinstance(v, str) else v)
             for k, v in rec["data"].items()}
    state.update(originator_id=UUID(rec["run_id"]), originator_version=int(rec["version"]),
                 timestamp=datetime.fromisoformat(rec["timestamp"]), hash=rec["hash"])
    event = object.__new__(cls)
    object.__setattr__(event, "__dict__", state)
    return event


@cache
def _date_fields(cls: type) -> frozenset[str]:
    """The event's fields that hold a date and time (written as ISO strings)."""
    hints = typing.get_type_hints(cls)
    return frozenset(k for k, t in hints.items()
                     if t is datetime or datetime in typing.get_args(t))
