"""Idempotency-Key: a key is bound to the actor who first sent it and to what that
request asked (``request_digest`` of its replies), both recorded on each decision the
request made (``request_key``, ``request_digest``). ``replayed`` tells a repeat of that
request from a new request that reuses the key (``KeyReused``, 422).

A request that decides nothing, on a run that decisions made elsewhere continued, is
answered as those left the run too (``continued_since``): Agno's client continues with
``tools=[]`` after an approval was resolved (``POST /approvals/{id}/resolve``)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from domain.run import Run
from domain.values import Reply, RunStatus


class KeyReused(Exception):
    """An ``Idempotency-Key`` sent again with another request, or by another actor."""


@dataclass(frozen=True)
class IdempotencyKey:
    key: str
    digest: str  # of what the request asked (``request_digest``)


def request_digest(replies: list[Reply]) -> str:
    """A digest of what a decision request asks: each reply, by call."""
    asked = sorted((asdict(r) for r in replies), key=lambda r: r["tool_call_id"])
    text = json.dumps(asked, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()  # ASCII: json.dumps escapes the rest


def replayed(run: Run, key: IdempotencyKey, decided_by: str) -> int | None:
    """The version of the first decision an earlier request with this key recorded,
    or None if none did. ``KeyReused`` when that request asked something else, or
    was made by someone else."""
    made = [d for d in (c.decision for c in run.calls.values())
            if d is not None and d.request_key == key.key]
    if not made:
        return None
    for d in made:
        if d.decided_by != decided_by:
            raise KeyReused("this Idempotency-Key was used by another actor: a key "
                            "belongs to the caller who first sent it")
        # No digest: recorded before keys were bound to their request (taken as the same).
        if d.request_digest not in (None, key.digest):
            raise KeyReused("this Idempotency-Key was used for another request: "
                            "send a new key for a new request")
    return min(d.version for d in made)


def continued_since(run: Run) -> int | None:
    """For a run that waits for no decision and was decided on: the version of the last
    decision, from which its events are what that decision caused (the run went on).
    None for a run that waits, or that no one decided on."""
    if run.status == RunStatus.PAUSED or run.pending_calls():
        return None
    return max((c.decision.version for c in run.calls.values() if c.decision is not None),
               default=None)
