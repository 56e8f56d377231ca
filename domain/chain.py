"""The hash chain of a run's events: what is hashed, and how.

Every event of a run carries ``hash``: the SHA-256 of the event's canonical record,
which holds the hash of the run's previous event (``prev``). Changing any stored event,
removing one or swapping two breaks the chain from that event on. The canonical record
of an event is a JSON object with exactly these keys::

    {"run_id":    "<the run's UUID, lower case, with hyphens>",
     "version":   <the event's position in its run: 1, 2, 3 ...>,
     "type":      "<the event's topic, e.g. domain.run:Run.ToolConfirmed>",
     "timestamp": "<ISO 8601, as Python's datetime.isoformat() writes it>",
     "data":      {<every other field of the event>},
     "prev":      "<hash of the run's previous event, or 64 zeros for the first>"}

serialized as compact JSON (no spaces), keys sorted, every non-ASCII character escaped
(``\\uXXXX``), and encoded as UTF-8: in Python,
``json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True)``.
Inside ``data``, a date and time is written as its ISO 8601 string. The export
(``signoff audit export``) writes each event as this record plus its ``hash``, so a
third party can check it with a few lines of their own (docs/audit.md has a script).

Why not RFC 8785 (JCS): its numbers are IEEE doubles, so an integer beyond 2**53 in a
tool's arguments (a 64-bit order id, say) could not be recorded at all. Sorted-key JSON
with ASCII escapes keeps every integer exact; floats are written by Python's shortest
round-trip ``repr``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate
from eventsourcing.utils import get_topic

GENESIS = "0" * 64
HEADER = ("originator_id", "originator_version", "timestamp", "hash")


def plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


def record(run_id: UUID | str, version: int, topic: str, timestamp: datetime,
           data: dict[str, Any], prev: str | None) -> dict[str, Any]:
    """The canonical record of one event (without its own hash)."""
    return {"run_id": str(run_id), "version": version, "type": topic,
            "timestamp": timestamp.isoformat(), "data": data, "prev": prev or GENESIS}


def canonical(rec: dict[str, Any]) -> bytes:
    return json.dumps(rec, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False, default=plain).encode()


def digest(rec: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(rec)).hexdigest()


def event_data(event: Any) -> dict[str, Any]:
    """An event's own fields: everything but the header the record names separately."""
    return {k: v for k, v in vars(event).items() if k not in HEADER}


def event_record(event: Any, topic: str, prev: str | None) -> dict[str, Any]:
    return record(event.originator_id, event.originator_version, topic, event.timestamp,
                  event_data(event), prev)


def link_of(event: Any, topic: str | None = None) -> str:
    """What an event adds to the log chain: its hash, or, for an event recorded before
    the run chains (no hash), the hash of its record with ``prev`` = 64 zeros."""
    if getattr(event, "hash", None):
        return str(event.hash)
    return digest(event_record(event, topic or get_topic(type(event)), None))


def log_link(log_hash: str, event_hash: str) -> str:
    """The log chain: ``sha256(previous log hash + event hash)``, both hex strings."""
    return hashlib.sha256((log_hash + event_hash).encode()).hexdigest()


class Chained(Aggregate):
    """An aggregate whose events are hash-chained: each carries ``hash``, the digest of
    its record with the previous event's hash (``chain_head``) as ``prev``. Runs and API
    keys are ``Chained``; eventsourcing makes every event class declared on a subclass a
    subclass of its ``Event``."""

    class Event(Aggregate.Event):
        hash: str | None

        # Version 1 events (recorded before the hash chain) have no hash: they read as
        # unchained, and ``signoff audit verify`` reports them as such.
        class_version = 2

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["hash"] = None

        def mutate(self, aggregate: Any) -> Any:
            aggregate = super().mutate(aggregate)
            aggregate.chain_head = self.hash
            return aggregate

    chain_head = None  # the hash of the newest event (a str once there is one)

    @classmethod
    def _create(cls, event_class: Any, *, id: UUID | None = None, **kwargs: Any) -> Any:
        """As eventsourcing's, with the first link of the hash chain."""
        aggregate_id = id or cls.create_id()
        timestamp = event_class.create_timestamp()
        data = {**kwargs, "originator_topic": get_topic(cls)}
        kwargs["hash"] = digest(record(aggregate_id, cls.INITIAL_VERSION,
                                       get_topic(event_class), timestamp, data, None))
        return super()._create(event_class, id=aggregate_id, timestamp=timestamp, **kwargs)

    def trigger_event(self, event_class: Any, **kwargs: Any) -> None:
        """As eventsourcing's, with each event chained to the one before."""
        timestamp = event_class.create_timestamp()
        kwargs["hash"] = digest(record(self.id, self.version + 1, get_topic(event_class),
                                       timestamp, kwargs, self.chain_head))
        super().trigger_event(event_class, timestamp=timestamp, **kwargs)


def runs_digest(heads: Iterable[tuple[str, int, str]]) -> str:
    """The digest of every stream's newest event: (id, version, link) in any order."""
    lines = sorted(f"{run_id}:{version}:{link}" for run_id, version, link in heads)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()
