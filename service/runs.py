"""The eventsourcing Application: where runs are stored and read back."""

from __future__ import annotations

import logging
import select
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.domain import Aggregate, DomainEventProtocol
from eventsourcing.persistence import Recording
from eventsourcing.utils import strtobool

from domain.run import Run
from service import tracing
from service.commits import GroupCommit

log = logging.getLogger("signoff.store")


class RunNotFound(Exception):
    """No run has this id."""


_SHORT = 100  # events: a run with fewer has no snapshot (one is taken every 100)


class RunService(Application[UUID]):
    """Stores runs as event streams. The agent loop drives them; the API reads them."""

    name = "signoff"
    snapshotting_intervals = {Run: _SHORT}

    def __init__(self, env: Any = None) -> None:
        super().__init__(env)
        # Concurrent saves share transactions (service/commits.py); SIGNOFF_GROUP_COMMIT.
        self.group_commit: GroupCommit | None = (
            GroupCommit(self.recorder.insert_events)
            if strtobool(self.env.get("GROUP_COMMIT") or "y") else None)
        _check_pooled_connections_cheaply(self)
        self.after_save: list[Callable[[], None]] = []  # e.g. prompt the projections
        # (saved aggregates, recordings) after each commit: e.g. metrics, fact logs
        self.on_commit: list[Callable[[Sequence[Any], Sequence[Any]], None]] = []

    def save(self, *objs: Any, **kwargs: Any) -> Any:
        ids = ",".join(str(getattr(o, "id", "")) for o in objs)
        with tracing.span("signoff.save", run_id=ids or None, aggregates=len(objs)):
            if all(isinstance(o, Aggregate) for o in objs):
                recordings = self._save_aggregates(objs, kwargs)
            else:
                recordings = super().save(*objs, **kwargs)
        for listener in self.after_save:
            listener()
        for on_commit in self.on_commit:
            try:
                on_commit(objs, recordings)
            except Exception:  # committed is committed: never fail the caller after it
                log.exception("a commit listener failed")
        return recordings

    def _save_aggregates(self, objs: Sequence[Aggregate], kwargs: dict[str, Any],
                         ) -> list[Recording[UUID]]:
        """``Application.save`` for aggregates, their events collected without its
        ``isinstance`` checks against runtime-checkable protocols (each of which walks
        the protocol's members: a few µs, several times a save)."""
        processing_event: ProcessingEvent[UUID] = ProcessingEvent()
        for obj in objs:
            processing_event.events.extend(obj.collect_events())
            processing_event.aggregates[obj.id] = obj
        processing_event.saved_kwargs.update(kwargs)
        recordings = self._record(processing_event)
        self._take_snapshots(processing_event)
        self._notify(recordings)
        self.notify(processing_event.events)  # as Application.save (deprecated hook)
        return recordings

    def _record(self, processing_event: Any) -> list[Recording[UUID]]:
        """Write a save's events: through the group commit, unless it tracks a position
        or carries options of its own (then as eventsourcing does)."""
        group = self.group_commit
        if group is None or processing_event.tracking or processing_event.saved_kwargs:
            return super()._record(processing_event)
        events = processing_event.events
        if not events:
            return []
        # Mapped (encoded, compressed, encrypted) here, in the caller's thread.
        return group.put(events, [self.mapper.to_stored_event(e) for e in events])

    def get_run(self, run_id: str | UUID, version: int | None = None) -> Run:
        """The run (after its first ``version`` events). A run shorter than the snapshot
        interval is folded from its events, read in one query; a longer one is loaded
        by the repository from its latest snapshot (which eventsourcing looks for on
        every load: a round trip more, for what most runs do not have)."""
        rid = _uuid(run_id)
        events = list(self.repository.event_store.get(rid, lte=version, limit=_SHORT))
        if not events:
            raise RunNotFound(f"no run {run_id!r}")
        if len(events) < _SHORT:
            run = _fold(None, events)
        else:
            try:
                run = self.repository.get(rid, version=version, projector_func=_fold)
            except AggregateNotFoundError:  # pragma: no cover - it has events
                raise RunNotFound(f"no run {run_id!r}") from None
        if not isinstance(run, Run):  # pragma: no cover - only runs are stored
            raise RunNotFound(f"no run {run_id!r}")
        return run

    def get_run_at(self, run_id: str | UUID, *, version: int | None = None,
                   as_of: datetime | None = None) -> Run:
        """The run as it was after its first ``version`` events, or at the time ``as_of``
        (after every event recorded at or before it). ``RunNotFound`` when the run did
        not exist yet then, or has fewer events than asked for."""
        if as_of is not None:
            version = None
            for event in self.run_events(run_id):
                if event.timestamp > as_of:
                    break
                version = event.originator_version
            if version is None:
                raise RunNotFound(f"run {run_id!r} did not exist yet at {as_of.isoformat()}")
        run = self.get_run(run_id, version=version)
        if version is not None and run.version < version:
            raise RunNotFound(f"run {run_id!r} has only {run.version} events, not {version}")
        return run

    def run_events(self, run_id: str | UUID) -> list[DomainEventProtocol[UUID]]:
        """Every event of one run, in order. ``RunNotFound`` when there are none, or when
        they are another aggregate's (the store holds API keys and webhooks too): a run's
        first event is its ``RunStarted``."""
        events = list(self.repository.event_store.get(_uuid(run_id)))
        if not events or not isinstance(events[0], Run.RunStarted):
            raise RunNotFound(f"no run {run_id!r}")
        return events

    def log(self, start: int = 1, limit: int = 500,
            topics: Sequence[str] = ()) -> Iterator[tuple[int, DomainEventProtocol[UUID]]]:
        """Follow the whole event log from ``start``: (notification id, event) pairs."""
        recorder = self.recorder
        while True:
            page = recorder.select_notifications(start, limit, topics=topics)
            for n in page:
                yield n.id, self.mapper.to_domain_event(n)
            if len(page) < limit:
                return
            start = page[-1].id + 1

    def head(self) -> int:
        """The notification id of the newest event in the log (0 when empty)."""
        return self.recorder.max_notification_id() or 0

    def check_readable(self) -> None:
        """Decode the newest event: raises ``MapperDeserialisationError`` at start rather
        than on the first request when the cipher key is wrong or missing."""
        head = self.head()
        if head:
            for n in self.recorder.select_notifications(head, 1):
                self.mapper.to_domain_event(n)

    def describe(self) -> dict[str, Any]:
        return {"persistence": type(self.factory).__module__}


def _fold(run: Any, events: Iterable[Any]) -> Any:
    """eventsourcing's ``project_aggregate`` without its per-event ``isinstance`` check
    against a runtime-checkable protocol (every stored event here is one of the domain's
    own, each with ``mutate``)."""
    for event in events:
        run = event.mutate(run)
    return run


def _check_pooled_connections_cheaply(app: Application[Any]) -> None:
    """On PostgreSQL (``POSTGRES_PRE_PING``) a pooled connection is checked before it is
    handed out, so that one broken by a restart or a failover is replaced instead of
    failing a request. psycopg_pool's check is a round trip on every checkout (several
    per request); this one looks at the idle connection's socket first and makes the
    round trip only when there is something to read on it: a server that closes a
    connection (restart, failover, ``pg_terminate_backend``, an idle timeout) says so
    on the socket, or the socket is at its end."""
    pool = getattr(getattr(app.factory, "datastore", None), "pool", None)
    check = getattr(pool, "_check", None)
    if check is None:  # SQLite, or no pre-ping asked for
        return

    def check_if_readable(conn: Any) -> None:
        if select.select([conn.fileno()], [], [], 0)[0]:
            check(conn)

    pool._check = check_if_readable  # type: ignore[union-attr]


def _uuid(run_id: str | UUID) -> UUID:
    try:
        return run_id if isinstance(run_id, UUID) else UUID(str(run_id))
    except ValueError:
        raise RunNotFound(f"no run {run_id!r}") from None
