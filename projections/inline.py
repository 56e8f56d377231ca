"""The read models a save writes in its own transaction (``service/inline.py`` calls
``InlineWriter.apply`` from inside the store's insert transaction).

Every read model whose class says ``inline`` (the queue, the audit trail, the webhook
deliveries, the sessions) is written there: the events, each read model's rows and
each one's tracked position commit together. A read model is written only when its
tracked position is the last event stored before these (no event committed in
between), so an event is applied exactly once and in log order; otherwise it is left
to the follower (``projections/runner.py``), which applies what it missed. The
anchors are not inline: they keep a running hash in one row, which every save would
then update; their follower writes them at most once a second.

Concurrency: on SQLite the insert holds the database's write lock, so nothing else
writes meanwhile. On PostgreSQL eventsourcing's insert holds the events table's lock
(inline writers go one at a time), and each read model is claimed with its follower's
advisory lock, without waiting: one held by a follower (a rebuild, ``signoff
project``) is left to it.

A read model that fails raises ``ReadModelsFailed``: the recorder rolls the transaction
back and writes the events again without the read models (``service/inline.py``); the
follower meets the error (and logs it) in its turn.
The positions are read for every inline read model in one statement (``claim``: on
PostgreSQL sent with the events' insert, in its round trip) and written without reading
back (eventsourcing's tracking upsert reads its answer: a round trip per read model,
inside the events table's lock).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from service.inline import GapFree, ReadModelsFailed

if TYPE_CHECKING:
    from projections.runner import Projections
    from projections.store import ViewMixin

log = logging.getLogger("signoff.projections")


@dataclass(frozen=True)
class Applied:
    names: tuple[str, ...]  # the read models written
    position: int  # the position they reached
    left: bool  # whether an inline read model was left to its follower


class InlineWriter:
    """Writes the inline read models of ``projections`` in a save's transaction."""

    def __init__(self, projections: Projections) -> None:
        self.projections = projections
        self.views: list[ViewMixin] = sorted(
            (v for v in projections.views.values() if v.model.inline),
            key=lambda v: v.tracking_name)
        self.postgres = bool(self.views) and self.views[0].dialect.name == "postgres"

    def claim(self, raw: Any) -> None:
        """Ask where each inline read model is (``_claim``)."""
        if self.views:
            self._claim(raw)

    def apply(self, raw: Any, events: Sequence[tuple[int, Any]], gap_free: GapFree,
              ) -> Applied | None:
        if not self.views:
            return None
        first, last = events[0][0], events[-1][0]
        try:
            due = self._due(raw, first, gap_free)
            # PostgreSQL: the writes are pipelined; a nested pipeline syncs as it ends,
            # so that an error of theirs is raised here, not at the commit.
            with raw.connection.pipeline() if self.postgres else nullcontext():
                if due:  # every position, in one statement on PostgreSQL
                    c = due[0].cursor_class(raw, due[0].dialect)
                    c.together([(self._track_sql(v), (v.tracking_name, last)) for v in due])
                for view in due:
                    view.model.write_page(view.cursor_class(raw, view.dialect), events)
        except Exception as e:
            log.exception("the read models could not be written with the events at %d-%d",
                          first, last)
            raise ReadModelsFailed(Applied((), last, left=True)) from e
        return Applied(tuple(v.model.name for v in due), last,
                       left=len(due) < len(self.views))

    def _due(self, raw: Any, first: int, gap_free: GapFree) -> list[ViewMixin]:
        """The read models whose position (the claim's answer) is the last event stored
        before ``first``."""
        row = raw.fetchone()
        contiguous: dict[int, bool] = {}
        due = []
        for i, view in enumerate(self.views):
            position = row[f"p{i}"]
            if position is None or position >= first:  # its follower's, or ahead
                continue
            if position not in contiguous:
                contiguous[position] = position == first - 1 or gap_free(position, first)
            if contiguous[position]:
                due.append(view)
        return due

    def committed(self, applied: Applied) -> None:
        """After the commit: the followers know where the read models are, whoever waits
        for a page is told, and what was left wakes the follower."""
        self.projections.applied_inline(applied.names, applied.position)
        if applied.left:
            self.projections.prompt()

    def _claim(self, raw: Any) -> None:
        """Ask, in one statement, for each inline read model's tracked position (0: none
        yet), or None when its follower holds it (PostgreSQL)."""
        params: list[Any] = []
        columns = []
        for i, view in enumerate(self.views):
            table = self._tracking(view)
            position = (f"coalesce((SELECT notification_id FROM {table} "
                        f"WHERE application_name = %s), 0)")
            if self.postgres:
                columns.append(f"CASE WHEN pg_try_advisory_xact_lock(hashtext(%s)) "
                               f"THEN {position} END AS p{i}")
                params += [view.tracking_name, view.tracking_name]
            else:
                columns.append(f"{position} AS p{i}")
                params.append(view.tracking_name)
        sql = "SELECT " + ", ".join(columns)
        raw.execute(sql if self.postgres else sql.replace("%s", "?"), params)

    def _track_sql(self, view: ViewMixin) -> str:
        return (f"INSERT INTO {self._tracking(view)} (application_name, notification_id) "
                "VALUES (%s, %s) ON CONFLICT (application_name) DO UPDATE SET "
                "notification_id = excluded.notification_id")

    def _tracking(self, view: ViewMixin) -> str:
        table = view._tracking_table()
        if self.postgres:
            return f'"{view.datastore.schema}"."{table}"'  # type: ignore[attr-defined]
        return table
