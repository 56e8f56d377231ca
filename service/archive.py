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
position, anchored_at, signature}``: ``signature`` is null when the anchor is not signed),
and a trailer with the export's own anchor (its count, log hash and runs digest; never
signed: whoever exports may not hold the signing key)::

    {"export": {"format": 2}, "anchors": [{"kind": "head", "events": 102, …}]}
    … one line per event …
    {"export": {"format": 2, "events": 102}, "anchors": [{"kind": "export", …}]}

``check_export`` (``service/exportcheck.py``) recomputes every line's hash, every run's
chain and the log chain, and compares them with every anchor of the export and any the
auditor kept, each after its count of lines (and, given public keys, checks the header
anchors' signatures): an export with lines removed or altered, or a run stripped of its
hashes, is refused before anything is imported. One without anchors (a period, or
older) meets the kept ones only.

Both directions stream in constant memory (but for each stream's newest version and
hash, kept for the runs digest). An import rebuilds each stored event from its line
exactly (the same fields, types, timestamps and hashes), so every run's state and chain,
and the log chain, come out identical; positions are renumbered from 1, and the anchors
projection then recomputes them.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from functools import cache
from typing import Any
from uuid import UUID

from eventsourcing.utils import resolve_topic

from domain import chain
from service.exportcheck import ImportError_, LogChain, check_export
from service.runs import RunDamaged, RunService, type_name, unreadable

__all__ = ["ImportError_", "check_export", "export_events", "import_events"]

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
    log = LogChain()
    if whole:
        kept = [{k: a.get(k) for k in ("kind", "events", "hash", "runs", "position",
                                       "anchored_at", "signature")}
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
