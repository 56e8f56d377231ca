"""The newest events of the log, read and decoded once for every projection that follows
it (``projections/runner.py``)."""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from service.runs import RunService


class Tail:
    """The newest events of the log, read and decoded once for every projection that
    follows it.

    Holds every event at the positions from ``start`` to ``end`` (a read of the log
    returns every event in the range it covers: commit order is position order), at most
    ``keep`` of them. A page asked for inside that range comes from here; what lies
    past ``end`` is read from the log, under the lock (the followers asking for it at
    the same moment wait for one read) -- unless nothing was signalled since the last
    read that reached the log's head: then nothing new can have been committed that a
    notification has not yet announced, and that notification signals again and wakes
    every follower. A page asked for behind ``start`` (a projection far behind: a
    rebuild) is read from the log without keeping it. The events of this process's own
    saves are offered as they commit (``offer``), and kept when they are the next
    positions: a follower then finds them without reading or decoding them again.
    """

    def __init__(self, store: RunService, keep: int) -> None:
        self.store = store
        self.keep = keep
        self._lock = threading.Lock()
        self._events: list[tuple[int, Any]] = []
        self._ids: list[int] = []
        self._start = 1
        self._end = 0
        self._signals = 0  # how many times something may have been committed
        self._head_read_at = -1  # ``_signals`` when the last read that reached the head began

    def signal(self) -> None:
        with self._lock:
            self._signals += 1

    def page(self, start: int, limit: int) -> list[tuple[int, Any]]:
        with self._lock:
            if start < self._start:
                return self._read(start, limit)
            if start > self._end + 1:  # ahead of what is kept: keep from here on
                self._events, self._ids = [], []
                self._start, self._end = start, start - 1
            i = bisect.bisect_left(self._ids, start)
            cached = self._events[i:i + limit]
            if len(cached) == limit or self._head_read_at == self._signals:
                return cached
            signals = self._signals
            fresh = self._read(self._end + 1, limit - len(cached))
            if len(fresh) < limit - len(cached):
                self._head_read_at = signals
            if fresh:
                self._events.extend(fresh)
                self._ids.extend(n for n, _ in fresh)
                self._end = fresh[-1][0]
                self._trim()
            return cached + fresh

    def offer(self, events: Sequence[tuple[int, Any]]) -> None:
        """Events this process has just committed, decoded already: kept when they are
        the next positions after what is kept (else the log is read for them, as for
        any other's: an event between might be another process's)."""
        with self._lock:
            if not events or events[0][0] != self._end + 1:
                return
            self._events.extend(events)
            self._ids.extend(n for n, _ in events)
            self._end = events[-1][0]
            self._trim()

    def _trim(self) -> None:
        if len(self._events) > self.keep:
            del self._events[:-self.keep]
            del self._ids[:-self.keep]
            self._start = self._ids[0]

    def _read(self, start: int, limit: int) -> list[tuple[int, Any]]:
        mapper = self.store.mapper
        return [(n.id, mapper.to_domain_event(n))
                for n in self.store.recorder.select_notifications(start, limit)]
