"""The eventsourcing Application: where runs are stored and read back."""

from __future__ import annotations

import logging
import select
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import (
    EventStore,
    JSONTranscoder,
    MapperDeserialisationError,
    PersistenceError,
    StoredEvent,
    Transcoding,
)
from eventsourcing.utils import TopicError, resolve_topic, strtobool

from domain.calls import ToolCall
from domain.run import Run
from service import tracing
from service.commits import GroupCommit, GroupCommitStore

log = logging.getLogger("signoff.store")


class RunNotFound(Exception):
    """No run has this id."""


class RunDamaged(Exception):
    """A run's stored events cannot be read back into the run: an event does not decode
    (its bytes or JSON altered, its topic unknown, encrypted with another key) or does
    not replay, or a version is missing (a run's versions are 1, 2, 3, ... without a
    gap). ``run_id``, ``version`` (the first at fault), ``problem`` (what is wrong, as
    ``signoff audit verify`` says it), ``type`` (the stored event's type, when known) and
    ``position`` (in the log, when read from the log: the export) name it.

    Raised where runs are read (``get_run``, ``get_run_at``, ``run_events``), so nothing
    is written to a damaged run: a decision or a cancel loads the run first. The other
    runs are not affected. The API answers it 409 Conflict (``api/errors.py``): the
    request is well formed and would be valid for a sound run (not 422, which says the
    request's content is wrong); it conflicts with the state of the run as stored, which
    no request can change; and it is not an unexpected failure of the server (a 500): the
    damage is found, named, and nothing is done to the run. Repairing it is an operator's
    job (docs/audit.md, "Damaged events").
    """

    def __init__(self, run_id: str | UUID, version: int, problem: str, *,
                 type: str | None = None, position: int | None = None) -> None:
        self.run_id = str(run_id)
        self.version = version
        self.problem = problem
        self.type = type
        self.position = position
        at = f" (log position {position})" if position is not None else ""
        super().__init__(f"run {self.run_id} is damaged: version {version}{at} {problem}; "
                         "nothing is written to it (signoff audit verify names the "
                         "damage)")


def unreadable(err: Exception, topic: str) -> str:
    """What is wrong with a stored event that could not be decoded (``err``)."""
    name = type(err).__name__
    if isinstance(err, TopicError):
        return (f"cannot be read ({name}): its type {topic[:200]!r} is unknown: its stored "
                "topic was altered, or a newer version of signoff wrote it")
    if isinstance(err, MapperDeserialisationError):
        return (f"cannot be read ({name}): its stored bytes were altered, or the cipher key "
                "is not the one it was written with")
    return (f"cannot be read ({name}): its stored state is not what its type expects (a "
            "field removed or of another type)")


def type_name(topic: str) -> str:
    """The event's type as reports name it (``ToolConfirmed``), from its stored topic."""
    return topic.rsplit(":", 1)[-1].rsplit(".", 1)[-1]


_SHORT = 100  # events: a run with fewer has no snapshot (one is taken every 100)


class ToolCallAsDict(Transcoding):
    """A run's tool call in a snapshot's state: its mapping form (``ToolCall.as_dict``),
    whose times the transcoder writes as it writes any other."""

    type = ToolCall
    name = "tool_call"

    def encode(self, obj: ToolCall) -> dict[str, Any]:
        return obj.as_dict()

    def decode(self, data: dict[str, Any]) -> ToolCall:
        return ToolCall.of(data)


class RunService(Application[UUID]):
    """Stores runs as event streams. The agent loop drives them; the API reads them."""

    name = "signoff"
    snapshotting_intervals = {Run: _SHORT}

    def __init__(self, env: Any = None) -> None:
        super().__init__(env)
        _check_pooled_connections_cheaply(self)
        self.after_save: list[Callable[[], None]] = []  # e.g. prompt the projections
        # (saved aggregates, recordings) after each commit: e.g. metrics, fact logs
        self.on_commit: list[Callable[[Sequence[Any], Sequence[Any]], None]] = []

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        transcoder.register(ToolCallAsDict())

    def construct_event_store(self) -> EventStore[UUID]:
        """Concurrent saves share transactions (``service/commits.py``); with
        ``SIGNOFF_GROUP_COMMIT`` off, each save is a transaction of its own."""
        shared = strtobool(self.env.get("GROUP_COMMIT") or "y")
        return GroupCommitStore(self.mapper, self.recorder, max_group=256 if shared else 1)

    @property
    def group_commit(self) -> GroupCommit:
        assert isinstance(self.events, GroupCommitStore)
        return self.events.group

    def save(self, *objs: Any, **kwargs: Any) -> Any:
        ids = ",".join(str(getattr(o, "id", "")) for o in objs)
        with tracing.span("signoff.save", run_id=ids or None, aggregates=len(objs)):
            recordings = super().save(*objs, **kwargs)
        for listener in self.after_save:
            listener()
        for on_commit in self.on_commit:
            try:
                on_commit(objs, recordings)
            except Exception:  # committed is committed: never fail the caller after it
                log.exception("a commit listener failed")
        return recordings

    def get_run(self, run_id: str | UUID, version: int | None = None) -> Run:
        """The run (after its first ``version`` events). A run shorter than the snapshot
        interval is folded from its events, read in one query; a longer one is loaded
        by the repository from its latest snapshot (which eventsourcing looks for on
        every load: a round trip more, for what most runs do not have).

        ``RunDamaged`` when an event up to ``version`` does not read or replay, or a
        version is missing (for a long run: among its first 100 events, or after its
        snapshot; a snapshot that does not read is passed over, the run is read from its
        events)."""
        rid = _uuid(run_id)
        stored = self._stored(rid, run_id, lte=version, limit=_SHORT)
        if len(stored) < _SHORT:
            run = _replay(rid, None, self._decoded(rid, stored))
        else:
            for _ in self._decoded(rid, stored):  # the first 100 read, a gap named
                pass
            run = self._get_long(rid, run_id, version)
        if not isinstance(run, Run):  # pragma: no cover - only runs are stored
            raise RunNotFound(f"no run {run_id!r}")
        return run

    def _get_long(self, rid: UUID, run_id: str | UUID, version: int | None) -> Any:
        try:
            return self.repository.get(rid, version=version)
        except AggregateNotFoundError:  # pragma: no cover - it has events
            raise RunNotFound(f"no run {run_id!r}") from None
        except PersistenceError:  # the store out of reach: not the run's fault
            raise
        except Exception as err:
            # Its snapshot, or an event after it, does not read or replay: the run read
            # from all its events names the damage, or is the run (the snapshot's fault).
            run = _replay(rid, None, self._decoded(
                rid, self._stored(rid, run_id, lte=version)))
            log.warning("run %s: its snapshot could not be used (%s); read from its events",
                        rid, type(err).__name__)
            return run

    def _stored(self, rid: UUID, run_id: str | UUID, *, lte: int | None = None,
                limit: int | None = None) -> list[StoredEvent]:
        """A run's stored events; ``RunNotFound`` when there are none, or when they are
        another aggregate's (the store holds API keys and webhooks too)."""
        stored = list(self.recorder.select_events(rid, lte=lte, limit=limit))
        if not stored or not _is_run(stored[0].topic):
            raise RunNotFound(f"no run {run_id!r}")
        return stored

    def _decoded(self, rid: UUID, stored: Iterable[StoredEvent],
                 ) -> Iterator[DomainEventProtocol[UUID]]:
        """A run's events, decoded one at a time from its stored events (versions from
        1); ``RunDamaged`` at the first that is missing or does not decode."""
        to_event = self.mapper.to_domain_event
        for expected, s in enumerate(stored, start=1):
            if s.originator_version != expected:
                raise RunDamaged(rid, expected, f"is missing (the next stored event is "
                                 f"version {s.originator_version}): it was removed")
            try:
                yield to_event(s)
            except Exception as err:
                raise RunDamaged(rid, expected, unreadable(err, s.topic),
                                 type=type_name(s.topic)) from err

    def get_run_at(self, run_id: str | UUID, *, version: int | None = None,
                   as_of: datetime | None = None) -> Run:
        """The run as it was after its first ``version`` events, or at the time ``as_of``
        (after every event recorded at or before it). ``RunNotFound`` when the run did
        not exist yet then, or has fewer events than asked for."""
        if as_of is not None:
            version = None
            rid = _uuid(run_id)
            # Read up to the first event after ``as_of``: damage past it is not met, as
            # with ``version``.
            for event in self._decoded(rid, self._stored(rid, run_id)):
                if event.timestamp > as_of:  # type: ignore[attr-defined]  # every event has one
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
        they are another aggregate's (the store holds API keys and webhooks too).
        ``RunDamaged`` when one does not decode, a version is missing, or the first is
        not the ``RunStarted`` a run begins with."""
        rid = _uuid(run_id)
        events = list(self._decoded(rid, self._stored(rid, run_id)))
        if not isinstance(events[0], Run.RunStarted):
            raise RunDamaged(rid, 1, f"is a {type(events[0]).__name__}, not the RunStarted "
                             "a run begins with: its stored topic was altered",
                             type=type(events[0]).__name__)
        return events

    def started_by(self, run_id: str | UUID) -> tuple[str | None, str]:
        """(user, agent) of a run, read from its first event alone: what an access check
        needs of a run that may be damaged further on. ``RunDamaged`` when that event
        does not read."""
        rid = _uuid(run_id)
        [first] = self._decoded(rid, self._stored(rid, run_id, lte=1))
        if not isinstance(first, Run.RunStarted):
            raise RunDamaged(rid, 1, "is not the RunStarted a run begins with",
                             type=type(first).__name__)
        return first.user_id, first.agent_id

    def log(  # type: ignore[override]  # Application.log is deprecated (notification_log)
            self, start: int = 1, limit: int = 500,
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

    def describe(self) -> dict[str, Any]:
        return {"persistence": type(self.factory).__module__}


def _replay(rid: UUID, run: Any, events: Iterable[Any]) -> Any:
    """Each event's ``mutate`` in turn, naming the event that does not replay
    (``RunDamaged``): it decoded, but its state is not what its type expects (a field
    removed or of another type)."""
    for event in events:
        try:
            run = event.mutate(run)
        except Exception as err:
            log.warning("run %s: version %s does not replay", rid,
                        getattr(event, "originator_version", "?"), exc_info=True)
            raise RunDamaged(rid, event.originator_version,
                             f"cannot be replayed ({type(err).__name__}): its stored state "
                             "is not what its type expects", type=type(event).__name__,
                             ) from err
    return run


def _is_run(topic: str) -> bool:
    """Whether a stored event's topic is a run's: ``False`` for another aggregate's;
    ``True`` for one that does not resolve (altered: damage, named when decoded)."""
    try:
        cls = resolve_topic(topic)
    except TopicError:
        return True
    return isinstance(cls, type) and issubclass(cls, Run.Event)


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

    pool._check = check_if_readable  # type: ignore[union-attr]  # found above


def _uuid(run_id: str | UUID) -> UUID:
    try:
        return run_id if isinstance(run_id, UUID) else UUID(str(run_id))
    except ValueError:
        raise RunNotFound(f"no run {run_id!r}") from None
