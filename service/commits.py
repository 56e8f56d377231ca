"""Group commit: the saves of concurrent requests share one transaction.

Every save of eventsourcing is one insert transaction, and on PostgreSQL each takes the
events table's lock (commit order must equal position order), so writers queue for it
one by one and each pays its own round trips and its own commit to disk. Here a save
that finds another in progress joins a queue instead; when the one in progress ends,
the oldest queued save becomes the leader and writes every save queued by then in one
transaction, then hands over to the next. Under load the transactions grow with the
queue; a lone save writes at once, as before.

The application's event store (``GroupCommitStore``, made by eventsourcing's
``Application.construct_event_store``) puts each save's events through the group; the
group writes through the recorder's ``insert_events``, handing it the domain events
too, so that the read models written inline (``service/inline.py``) are written in the
same transaction. With ``SIGNOFF_GROUP_COMMIT`` off, each save is a group of its own.

A save is all or nothing as before, and its aggregates' events stay together, in order.
If the shared transaction fails (a conflict: another request saved one of the same
aggregates first), each save of the group is written again on its own, so only the one
that conflicts gets ``IntegrityError``: a save never fails for another's sake.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from eventsourcing.persistence import EventStore, Mapper, Notification, Recording, StoredEvent

from service.inline import InlineBatch

# (stored events, their domain events) -> their positions, written in one transaction
Insert = Callable[[Sequence[StoredEvent], Sequence[Any]], Sequence[int] | None]


class _Save:
    __slots__ = ("done", "error", "events", "ids", "lead", "stored")

    def __init__(self, events: Sequence[Any], stored: list[StoredEvent]) -> None:
        self.events = events
        self.stored = stored
        self.ids: Sequence[int] | None = None
        self.error: BaseException | None = None
        self.lead = False  # woken to write the queue, not with its own outcome
        self.done = threading.Event()


class GroupCommit:
    """Writes the saves of concurrent threads in shared transactions (``insert``: the
    recorder's ``insert_events``), at most ``max_group`` saves in one."""

    def __init__(self, insert: Insert, max_group: int = 256) -> None:
        self.insert = insert
        self.max_group = max_group
        self._lock = threading.Lock()
        self._queue: list[_Save] = []
        self._writing = False

    def put(self, events: Sequence[Any], stored: list[StoredEvent]) -> list[Recording[Any]]:
        """Record ``events`` (``stored``: the same, mapped); their recordings, in order."""
        save = _Save(events, stored)
        with self._lock:
            self._queue.append(save)
            lead = not self._writing
            self._writing = True
        if not lead:
            save.done.wait()
        if lead or save.lead:
            self._write_queue()
        if save.error is not None:
            raise save.error
        return _recordings(save)

    def _write_queue(self) -> None:
        """As the leader: write what is queued (this save included), then hand over."""
        with self._lock:
            group = self._queue[:self.max_group]
            del self._queue[:self.max_group]
        try:
            self._write(group)
        except BaseException as e:  # interrupted: no save of the group may pass as written
            for save in group:
                if save.ids is None and save.error is None:
                    save.error = e
            raise
        finally:
            with self._lock:
                if self._queue:
                    self._queue[0].lead = True
                    self._queue[0].done.set()
                else:
                    self._writing = False
            for save in group:
                save.done.set()

    def _write(self, group: list[_Save]) -> None:
        if len(group) == 1:
            self._write_alone(group[0])
            return
        try:
            ids = self.insert([s for save in group for s in save.stored],
                              [e for save in group for e in save.events])
        except Exception:
            # Which save broke the group? Each on its own: the others commit.
            for save in group:
                self._write_alone(save)
            return
        start = 0
        for save in group:
            end = start + len(save.stored)
            save.ids = ids[start:end] if ids else None
            start = end

    def _write_alone(self, save: _Save) -> None:
        try:
            save.ids = self.insert(save.stored, save.events)
        except BaseException as e:
            save.error = e


def _recordings(save: _Save) -> list[Recording[Any]]:
    if not save.ids:
        return []
    return [Recording(d, Notification(id=n, originator_id=s.originator_id,
                                      originator_version=s.originator_version,
                                      topic=s.topic, state=s.state))
            for d, s, n in zip(save.events, save.stored, save.ids, strict=True)]


class GroupCommitStore(EventStore[Any]):
    """eventsourcing's event store, its saves written through a ``GroupCommit``. A save
    that tracks a position or carries options of its own is written as eventsourcing
    writes it."""

    def __init__(self, mapper: Mapper[Any], recorder: Any, max_group: int = 256) -> None:
        super().__init__(mapper, recorder)

        def insert(stored: Sequence[StoredEvent], events: Sequence[Any],
                   ) -> Sequence[int] | None:
            ids: Sequence[int] | None = recorder.insert_events(
                stored, inline=InlineBatch(events))
            return ids

        self.group = GroupCommit(insert, max_group)

    def put(self, domain_events: Sequence[Any], **kwargs: Any) -> list[Recording[Any]]:
        if kwargs.get("tracking") is not None or any(
                k != "tracking" for k in kwargs) or not domain_events:
            return super().put(domain_events, **kwargs)
        # Mapped (encoded, compressed, encrypted) here, in the saving thread.
        return self.group.put(domain_events,
                              [self.mapper.to_stored_event(e) for e in domain_events])
