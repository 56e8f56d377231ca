"""The read models a save writes in its own transaction (``service/inline.py`` calls
``InlineWriter.apply`` from inside the store's insert transaction).

Every read model whose class says ``inline`` (the queue, the audit trail, the webhook
deliveries, the sessions) is written there: the events, each read model's rows and
each one's tracked position commit together. A read model is written only when its
tracked position is the last event stored before these, so an event is applied exactly
once and in log order: one a little behind (another process saved without it, or its
follower held it a moment) first gets the events it missed (at most ``CATCH_UP``, read
and decoded in the same transaction); one further behind (a rebuild) is left to its
follower (``projections/runner.py``). The
anchors are not inline: they keep a running hash in one row, which every save would
then update; their follower writes them at most once a second.

Concurrency: on SQLite the insert holds the database's write lock, so nothing else
writes meanwhile. On PostgreSQL eventsourcing's insert holds the events table's lock
(inline writers go one at a time), and each read model is claimed with its follower's
advisory lock, without waiting: one held by a follower (a rebuild, ``signoff
project``) is left to it. The positions are read by the statement after the one that
takes the locks: a statement reads what was committed when it began, so a follower that
committed and let go of its lock just before is seen.

A read model that fails raises ``ReadModelsFailed``: the recorder rolls the transaction
back and writes the events again without the read models (``service/inline.py``); the
follower meets the error (and logs it) in its turn.

The positions are read for every inline read model in one statement (``claim``: on
PostgreSQL sent with the events' insert and the locks, in its round trip) and written
without reading back (eventsourcing's tracking upsert reads its answer: a round trip per read model,
inside the events table's lock).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from service.inline import Between, ReadModelsFailed

if TYPE_CHECKING:
    from projections.runner import Projections
    from projections.store import ViewMixin

log = logging.getLogger("signoff.projections")

# How many events a save applies to a read model that missed them (another process wrote
# without it, or its follower held it as this process saved); one further behind (a
# rebuild) is its follower's.
CATCH_UP = 200


@dataclass(frozen=True)
class Claim:
    """A save's question of where its read models are: the cursor that asked (its
    answer read, and the read models written, on it) and, on PostgreSQL, the cursor that
    took the followers' locks just before."""

    cursor: Any
    locks: Any = None


@dataclass(frozen=True)
class Applied:
    names: tuple[str, ...]  # the read models written
    position: int  # the position they reached
    left: bool  # whether an inline read model was left to its follower
    events: Sequence[tuple[int, Any]] = ()  # the save's events, at their positions


class InlineWriter:
    """Writes the inline read models of ``projections`` in a save's transaction."""

    def __init__(self, projections: Projections) -> None:
        self.projections = projections
        self.views: list[ViewMixin] = sorted(
            (v for v in projections.views.values() if v.model.inline),
            key=lambda v: v.tracking_name)
        self.postgres = bool(self.views) and self.views[0].dialect.name == "postgres"
        # A read model found too far behind, at the position it was found at.
        self._far: dict[ViewMixin, int] = {}
        # The statements every save sends, made once.
        self._locks_sql, self._claim_sql, self._names = self._claim_statements()
        # The positions' statements, for each set of read models a save writes.
        self._track: dict[tuple[ViewMixin, ...], list[tuple[str, list[str]]]] = {}

    def claim(self, raw: Any) -> Claim | None:
        """Ask, on ``raw``, where each inline read model is (0: none yet); on PostgreSQL
        first take each one's follower lock, without waiting, on a cursor of its own.
        Never prepared statements: they follow the insert in the pipeline, and when the
        insert fails (a conflict) psycopg may count as prepared a statement the server
        skipped ("prepared statement ... does not exist" on the next save)."""
        if not self.views:
            return None
        if self._locks_sql is None:
            raw.execute(self._claim_sql, self._names)
            return Claim(raw)
        locks = raw.connection.cursor()
        locks.execute(self._locks_sql, self._names, prepare=False)
        raw.execute(self._claim_sql, self._names, prepare=False)
        return Claim(raw, locks)

    def apply(self, claim: Claim, events: Sequence[tuple[int, Any]], between: Between,
              ) -> Applied | None:
        if not self.views:
            return None
        raw = claim.cursor
        first, last = events[0][0], events[-1][0]
        try:
            pages = self._pages(claim, events, between)
            # PostgreSQL: the writes are pipelined; a nested pipeline syncs as it ends,
            # so that an error of theirs is raised here, not at the commit.
            with raw.connection.pipeline() if self.postgres else nullcontext():
                if pages:  # every position in one statement
                    views = tuple(v for v, _ in pages)
                    statements = self._track.get(views) or self._track_statements(views)
                    views[0].cursor_class(raw, views[0].dialect).together(
                        [(sql, [p for name in names for p in (name, last)])
                         for sql, names in statements])
                for view, page in pages:
                    view.model.write_page(view.cursor_class(raw, view.dialect), page)
        except Exception as e:
            log.exception("the read models could not be written with the events at %d-%d",
                          first, last)
            raise ReadModelsFailed(Applied((), last, left=True)) from e
        return Applied(tuple(v.model.name for v, _ in pages), last,
                       left=len(pages) < len(self.views), events=events)

    def _pages(self, claim: Claim, events: Sequence[tuple[int, Any]], between: Between,
               ) -> list[tuple[ViewMixin, Sequence[tuple[int, Any]]]]:
        """What each read model is to apply: ``events``, after the events it missed when
        it is a little behind (at most ``CATCH_UP`` events: read, in the same
        transaction, from the position the claim answered). One held by its follower,
        or further behind, is left out (and not asked again at the same position)."""
        row = claim.cursor.fetchone()
        locked = claim.locks.fetchone() if claim.locks is not None else None
        first = events[0][0]
        missed: dict[int, list[tuple[int, Any]] | None] = {}
        pages: list[tuple[ViewMixin, Sequence[tuple[int, Any]]]] = []
        for i, view in enumerate(self.views):
            position = row[f"p{i}"] if locked is None or locked[f"l{i}"] else None
            if position is None or position >= first or self._far.get(view) == position:
                continue
            if position not in missed:
                missed[position] = self._missed(position, first, between)
            before = missed[position]
            if before is None:
                self._far[view] = position
                continue
            pages.append((view, [*before, *events]))
        return pages

    def _missed(self, position: int, first: int, between: Between,
                ) -> list[tuple[int, Any]] | None:
        """The events after ``position`` and before ``first`` (decoded), or None when there
        are more than ``CATCH_UP``."""
        if position == first - 1:
            return []
        found = between(position, first, CATCH_UP + 1)
        if len(found) > CATCH_UP:
            return None
        mapper = self.projections.store.mapper
        return [(n.id, mapper.to_domain_event(n)) for n in found]

    def committed(self, applied: Applied) -> None:
        """After the commit: the followers know where the read models are, whoever waits
        for a page is told, and what was left wakes the follower. The events are offered
        to the followers' tail (``projections/tail.py``): the anchors' follower then
        finds them decoded."""
        self.projections.applied_inline(applied.names, applied.position, applied.events)
        if applied.left:
            self.projections.prompt()

    def _claim_statements(self) -> tuple[str | None, str, list[str]]:
        """The statement that takes each read model's follower lock (PostgreSQL; None on
        SQLite), the one that reads each one's tracked position, and the names both take."""
        positions, names = [], []
        for i, view in enumerate(self.views):
            positions.append(f"coalesce((SELECT notification_id FROM {self._tracking(view)} "
                             f"WHERE application_name = %s), 0) AS p{i}")
            names.append(view.tracking_name)
        claim = "SELECT " + ", ".join(positions)
        if not self.postgres:
            return None, claim.replace("%s", "?"), names
        locks = "SELECT " + ", ".join(f"pg_try_advisory_xact_lock(hashtext(%s)) AS l{i}"
                                      for i in range(len(names)))
        return locks, claim, names

    def _track_statements(self, views: tuple[ViewMixin, ...]) -> list[tuple[str, list[str]]]:
        """The statements that set the positions of ``views`` in each tracking table (one, unless
        configured otherwise), with the names it tracks; remembered for the next save
        that writes the same read models."""
        tables: dict[str, list[str]] = {}
        for v in views:
            tables.setdefault(self._tracking(v), []).append(v.tracking_name)
        self._track[views] = [(sql, names) for table, names in tables.items()
                              for sql in self._upserts(table, len(names))]
        return self._track[views]

    def _upserts(self, table: str, n: int) -> list[str]:
        """The statements that set the rows of ``n`` read models in a tracking table to a
        position (each takes ``name, position`` for each read model). On PostgreSQL the
        rows that exist (all but a new read model's) are updated, and only the missing
        ones inserted: ``ON CONFLICT DO UPDATE`` would lock each row before updating it,
        a WAL record more per read model per save."""
        upsert = (" ON CONFLICT (application_name) "
                  "DO UPDATE SET notification_id = excluded.notification_id")
        if not self.postgres:
            return [f"INSERT INTO {table} (application_name, notification_id) VALUES "
                    + ", ".join(["(%s, %s)"] * n) + upsert]
        rows = ("(VALUES " + ", ".join(["(%s, %s::bigint)"] * n)
                + ") AS v (application_name, notification_id)")
        return [f"UPDATE {table} AS t SET notification_id = v.notification_id FROM {rows} "
                f"WHERE t.application_name = v.application_name",
                f"INSERT INTO {table} (application_name, notification_id) "
                f"SELECT v.application_name, v.notification_id FROM {rows} WHERE NOT EXISTS "
                f"(SELECT 1 FROM {table} AS t WHERE t.application_name = v.application_name)"
                + upsert]

    def _tracking(self, view: ViewMixin) -> str:
        table = view._tracking_table()
        if self.postgres:
            return f'"{view.datastore.schema}"."{table}"'  # type: ignore[attr-defined]
        return table
