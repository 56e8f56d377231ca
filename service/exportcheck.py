"""Checking an export before it is imported: every line's hash, every run's chain, the
log chain against the anchors the export carries and those the auditor kept, and, given
public keys, the signatures of the anchors it carries (``check_export``); and the log
hash and runs digest over exported lines, as a third party computes them (``LogChain``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from domain import chain


class ImportError_(Exception):
    """The export cannot be imported (the store is not empty, or a line is invalid)."""


class LogChain:
    """The log hash and runs digest over exported lines (as a third party computes it)."""

    def __init__(self) -> None:
        self.count = 0
        self.hash = chain.GENESIS
        self.heads: dict[str, tuple[int, str]] = {}

    def add(self, rec: dict[str, Any]) -> str:
        link = rec["hash"] or chain.digest({**record_of(rec), "prev": chain.GENESIS})
        self.count += 1
        self.hash = chain.log_link(self.hash, link)
        self.heads[rec["run_id"]] = (int(rec["version"]), link)
        return str(link)

    def runs(self) -> str:
        return chain.runs_digest((r, v, h) for r, (v, h) in self.heads.items())


def record_of(rec: dict[str, Any]) -> dict[str, Any]:
    return {k: rec[k] for k in ("run_id", "version", "type", "timestamp", "data", "prev")}


@dataclass
class ExportCheck:
    events: int = 0
    log_hash: str = chain.GENESIS
    runs: int = 0
    anchors: list[dict[str, Any]] = field(default_factory=list)  # the trailer's
    anchors_checked: int = 0
    trailer: bool = False
    signed: int = 0  # anchors of the header that carry a signature


def check_export(lines: Iterable[str], kept: Iterable[dict[str, Any]] = (), *,
                 public_keys: Sequence[Ed25519PublicKey] = ()) -> ExportCheck:
    """Check an export before importing it: every line's hash, every run's chain, the
    log chain against the trailer's anchors and ``kept`` ({events, hash}, optionally
    runs), and, given ``public_keys``, the signature of every anchor of the header.
    Raises ``ImportError_`` naming the first problem."""
    checker = _ExportChecker(kept, public_keys)
    for number, line in enumerate(lines, start=1):
        if line.strip():
            checker.line(number, line)
    return checker.finish()


def _refused(message: str) -> ImportError_:
    return ImportError_(message + ": nothing was imported")


class _ExportChecker:
    """``check_export``, one line at a time."""

    def __init__(self, kept: Iterable[dict[str, Any]],
                 keys: Sequence[Ed25519PublicKey]) -> None:
        self.keys = keys
        self.result = ExportCheck()
        self.log = LogChain()
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
        if number == 1:
            self._signatures(rec["anchors"])
        self.result.anchors += anchors
        self.pending = sorted([*self.pending, *anchors], key=lambda a: int(a["events"]))
        if number == 1:
            self.header = True
        else:
            self.trailer = rec
        self._check(self.log.count, "the export's")

    def _signatures(self, anchors: list[dict[str, Any]]) -> None:
        """The header's anchors: how many are signed; given keys, each must verify."""
        self.result.signed = sum(1 for a in anchors if a.get("signature"))
        for a in anchors if self.keys else ():
            problem = chain.signature_problem(self.keys, {**a, "signed_by": None})
            if problem:
                raise _refused(f"line 1: the export's anchor of {a['events']} events "
                               f"({a.get('kind')}, position {a.get('position')}): {problem}")

    def _event(self, number: int, rec: dict[str, Any]) -> None:
        try:
            run_id, version, hash_ = rec["run_id"], int(rec["version"]), rec["hash"]
            computed = chain.digest(record_of(rec))
        except (KeyError, TypeError, ValueError) as err:
            raise _refused(f"line {number}: not an exported event ({err})") from err
        where = f"line {number} (run {run_id} version {version})"
        before = self.last.get(run_id)
        if before is not None and version != before[0] + 1:
            raise _refused(f"{where}: version {before[0] + 1} of the run is missing "
                           "before it")
        if before is None and version != 1:
            raise _refused(f"{where}: the run's first line, in a whole export, is not its "
                           "version 1 (its first events were removed)" if self.header else
                           f"{where}: the run's first line is not its version 1: an export "
                           "of a period (--since) lacks the run's earlier events, and a store "
                           "cannot hold the run without them: import a whole export")
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
    else:  # (the first event with a hash after events without: prev is 64 zeros)
        expected_prev = (before[1] if before else None) or chain.GENESIS
        if rec["prev"] != expected_prev or computed != rec["hash"]:
            raise _refused(f"{where}: does not match its hash (the line was altered, or "
                           "one of its run before it altered or removed)")


def _anchor_mismatch(anchor: dict[str, Any], log: LogChain) -> str | None:
    """Why the log does not match the anchor at its count; None when it does."""
    if int(anchor["events"]) != log.count:
        return f"the export holds {log.count} events (events were removed)"
    if anchor["hash"] != log.hash:
        return ("the export's log hash at that count is not the anchored one (events were "
                "altered, removed, inserted or reordered, or a run's hashes removed)")
    if anchor.get("runs") and anchor["runs"] != log.runs():
        return "its runs digest differs"
    return None
