"""Where a read model keeps its rows: eventsourcing's tracking recorders, extended with
the read model's own tables, on SQLite (``SQLiteView``) or PostgreSQL (``PostgresView``).

A view writes a page of events and the tracking position of the last one in ONE
transaction (``write``), after checking, under the read model's write lock, that the
recorded position is still the one the page was read after: a page is applied exactly
once, after crashes and with several runners too. What each event changes is the read
model's (``projections/readmodel.py``).

Counters: a read model may keep exact counts of its rows (``counts``: a name and the
``SELECT COUNT(*) AS n`` that recounts it) in a table of its own (``counts_table``:
``name``, ``n``), moved in the same transaction as the rows they count, so a count is
exactly as current as the rows a read sees. A missing counter is recounted under the
write lock when the view is opened (a store projected before the counter existed); a
reset puts every counter back at 0.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

from eventsourcing.persistence import (
    InfrastructureFactory,
    IntegrityError,
    PersistenceError,
    Tracking,
    TrackingRecorder,
)
from eventsourcing.postgres import PostgresTrackingRecorder
from eventsourcing.sqlite import SQLiteTrackingRecorder
from psycopg.sql import SQL

from projections.readmodel import ReadModel
from projections.sql import Cursor, Dialect, PostgresCursor, read_count


class PositionMoved(IntegrityError):
    """The projection is no longer at the position a page was read after: another runner
    applied events meanwhile, or a rebuild reset it. Nothing was written: read the
    position again and go on from there."""


# A rebuild under way: each projection's row holds the log's head when its rebuild began
# (``reset``); until its position reaches it, what it serves is partial.
_REBUILDS = ("CREATE TABLE IF NOT EXISTS signoff_rebuilds (name TEXT PRIMARY KEY, "
             "target BIGINT NOT NULL)")


class ViewMixin:
    """What both view classes share. ``tables`` are the projection's DDL statements."""

    model: ReadModel
    tables: Sequence[str] = ()
    tracking_name: str = ""
    counts_table: str = ""
    counts: Mapping[str, str] = {}  # counter name -> SELECT COUNT(*) AS n that recounts it
    dialect: Dialect
    cursor_class: type[Cursor] = Cursor

    def write(self, events: Sequence[tuple[int, Any]], *, after: int | None = None) -> None:
        """Apply (position, event) pairs and track the last position, in one transaction
        (``write_together`` with this view alone)."""
        write_together([self], events, after=after)

    def _lock(self, c: Cursor) -> None:
        """Hold the projection's write lock until the transaction ends.

        PostgreSQL: a transaction-level advisory lock on the projection's name. SQLite:
        a write (that changes nothing) as the transaction's first statement, so it holds
        the database's write lock before it reads anything: a read snapshot taken before
        another connection's commit cannot be upgraded to a write ("database is locked"
        at once, no busy wait).
        """
        if self.dialect.name == "postgres":
            # A read model can always be rebuilt from the log, and its rows and its
            # tracking position commit together: if PostgreSQL crashes before the commit
            # reaches disk, both are lost together and the page is applied again. So the
            # commit need not wait for the WAL flush (several ms per page otherwise).
            # (set_config(..., true) is SET LOCAL: one round trip for both.)
            c.execute("SELECT set_config('synchronous_commit', 'off', true), "
                      "pg_advisory_xact_lock(hashtext(%s))", (self.tracking_name,))
        else:
            c.execute(f"UPDATE {self._tracking_table()} SET notification_id = notification_id "
                      "WHERE application_name = %s", (self.tracking_name,))

    def _pipeline(self, raw: Any) -> Any:
        """PostgreSQL: send the page's statements without waiting for each answer."""
        return raw.connection.pipeline() if self.dialect.name == "postgres" else nullcontext()

    @contextmanager
    def read(self, *, snapshot: bool = True) -> Iterator[Cursor]:
        """A read-only transaction. On PostgreSQL at REPEATABLE READ: one snapshot for
        all its statements. ``snapshot=False`` saves that statement's round trip, for a
        read that is one statement (which always sees one snapshot)."""
        with self.datastore.transaction(commit=False) as raw:  # type: ignore[attr-defined]
            if self.dialect.name == "postgres" and snapshot:
                raw.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            yield self.cursor_class(raw, self.dialect)

    @contextmanager
    def write_transaction(self) -> Iterator[Cursor]:
        with self.datastore.transaction(commit=True) as raw:  # type: ignore[attr-defined]
            yield self.cursor_class(raw, self.dialect)

    def position(self) -> int:
        return self.max_tracking_id(self.tracking_name) or 0  # type: ignore[attr-defined]

    def reset(self, target: int = 0) -> None:
        """Empty the projection's tables and forget its position (for a rebuild); every
        counter is back at 0. ``target``: the log's head now; until the projection has
        applied it again, it is ``rebuilding``."""
        with self.write_transaction() as c:
            self._lock(c)  # not in the middle of a runner's page
            c.execute("DELETE FROM signoff_rebuilds WHERE name = %s", (self.tracking_name,))
            c.execute("INSERT INTO signoff_rebuilds (name, target) VALUES (%s, %s)",
                      (self.tracking_name, target))
            for table in self.model.tables_in_order:
                c.execute(f"DELETE FROM {table}")
            c.execute(f"DELETE FROM {self._tracking_table()} WHERE application_name = %s",
                      (self.tracking_name,))
            if self.counts_table:
                c.execute(f"DELETE FROM {self.counts_table}")
                c.executemany(f"INSERT INTO {self.counts_table} (name, n) VALUES (%s, 0)",
                              [(name,) for name in self.counts])

    def rebuilding(self) -> bool:
        """Whether a rebuild has not yet applied the log as it was when the rebuild began:
        then what the projection serves is partial. (A rebuild that stopped half-way
        stays so until the projection, following, gets past that point.)"""
        with self.read() as c:
            row = c.execute("SELECT target FROM signoff_rebuilds WHERE name = %s",
                            (self.tracking_name,)).fetchone()
        return row is not None and self.position() < int(row["target"])

    def rebuilt(self) -> None:
        """The rebuild is done: forget its target."""
        with self.write_transaction() as c:
            c.execute("DELETE FROM signoff_rebuilds WHERE name = %s", (self.tracking_name,))

    def ensure_counts(self) -> None:
        """Recount the counters that have no row yet, holding the write lock (the rows
        and the position cannot move meanwhile): a store projected before a counter
        existed gets it exact, and the projection moves it from there on."""
        if not self.counts_table:
            return
        with self.read() as c:
            present = {r["name"] for r in c.execute(
                f"SELECT name FROM {self.counts_table}").fetchall()}
        if present >= set(self.counts):
            return
        with self.write_transaction() as c:
            self._lock(c)
            present = {r["name"] for r in c.execute(
                f"SELECT name FROM {self.counts_table}").fetchall()}
            for name, recount in self.counts.items():
                if name not in present:
                    row = c.execute(recount).fetchone()
                    c.execute(f"INSERT INTO {self.counts_table} (name, n) VALUES (%s, %s)",
                              (name, int(row["n"]) if row else 0))

    def recount(self) -> dict[str, tuple[int | None, int]]:
        """Each counter's stored value (None when it has no row) and what recounting the
        rows says, in one snapshot: they are equal, or a counter is wrong."""
        out: dict[str, tuple[int | None, int]] = {}
        with self.read() as c:
            for name, sql in self.counts.items():
                row = c.execute(sql).fetchone()
                out[name] = (read_count(c, self.counts_table, name),
                             int(row["n"]) if row else 0)
        return out

    def _tracking_table(self) -> str:
        return getattr(self, "tracking_table_name", "tracking")


def write_together(views: Sequence[ViewMixin], events: Sequence[tuple[int, Any]], *,
                   after: int | None = None) -> None:
    """Apply (position, event) pairs to each view's read model and track the last position
    of each, in ONE transaction on the first view's connection (the views are of one
    database: ``same_database``): one commit for every read model a page changes.

    ``after`` is the position the page was read after: unless it is still every view's
    recorded one, ``PositionMoved`` is raised and nothing is written. The check is made
    holding each view's write lock (until commit; taken in the order of their names, so
    that two runners never wait for each other's), so concurrent runners never apply an
    event twice, even
    when their pages overlap without being equal (eventsourcing's tracking upsert alone
    only refuses a page that does not end past the recorded position: a longer page
    would re-apply the overlap).
    """
    if not events:
        return
    first = views[0]
    with first.datastore.transaction(commit=True) as raw:  # type: ignore[attr-defined]
        cursors = [view.cursor_class(raw, view.dialect) for view in views]
        for view, cursor in sorted(zip(views, cursors, strict=True),
                                   key=lambda pair: pair[0].tracking_name):
            view._lock(cursor)
        for view in views:
            if after is None:
                break
            recorded = view._max_tracking_id(view.tracking_name, raw) or 0  # type: ignore[attr-defined]
            if recorded != after:
                raise PositionMoved(f"{view.tracking_name} is at {recorded}, not {after}")
        with first._pipeline(raw):  # the positions and the rows in one round trip
            for view, cursor in zip(views, cursors, strict=True):
                view._insert_tracking(raw, Tracking(view.tracking_name, events[-1][0]))  # type: ignore[attr-defined]
                view.model.write_page(cursor, events)


def same_database(env: Mapping[str, str]) -> bool:
    """Whether every view opened on ``env`` is a connection to one database (PostgreSQL,
    or a SQLite file), so that one transaction can write them all. An in-memory SQLite
    database is one per connection."""
    if env["PERSISTENCE_MODULE"].endswith("postgres"):
        return True
    name = env.get("SQLITE_DBNAME", "")
    return bool(name) and ":memory:" not in name and "mode=memory" not in name


class SQLiteView(ViewMixin, SQLiteTrackingRecorder):
    dialect = Dialect("sqlite")

    def construct_create_table_statements(self) -> list[str]:
        return [*super().construct_create_table_statements(),
                *(self.dialect.sql(t) for t in (*self.tables, _REBUILDS))]


class PostgresView(ViewMixin, PostgresTrackingRecorder):
    dialect = Dialect("postgres")
    cursor_class = PostgresCursor

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sql_create_statements.extend(  # type: ignore[arg-type]  # plain SQL text
            SQL(t) for t in (*self.tables, _REBUILDS))


def open_view(model: ReadModel, env: dict[str, str]) -> ViewMixin:
    """The view of ``model`` in the store ``env`` points at (eventsourcing's persistence
    settings), with its tables created when missing and its counters present."""
    factory = InfrastructureFactory[TrackingRecorder].construct(env=_env(model.name, env))
    base = PostgresView if env["PERSISTENCE_MODULE"].endswith("postgres") else SQLiteView
    view_class = type(f"{type(model).__name__}View", (base,), {
        "model": model,
        "tables": tuple(model.create_statements(base.dialect)),
        "tracking_name": f"signoff:{model.name}",
        "counts_table": model.counts_table,
        "counts": dict(model.counts),
    })
    for attempt in range(1, 6):
        view = None
        try:
            view = factory.tracking_recorder(view_class)
            assert isinstance(view, ViewMixin)
            view.ensure_counts()
            break
        except PersistenceError:
            if view is not None:
                view.datastore.close()  # type: ignore[attr-defined]
            # Processes starting together on a new store (API workers and `signoff
            # project`) all create the tables: all but one fail, on the catalog's unique
            # constraints or on the tracking table's first row. Once the first has
            # committed, the tables exist and another attempt passes.
            if attempt == 5:
                raise
            time.sleep(0.05 * attempt)
    assert isinstance(view, ViewMixin)
    return view


def _env(name: str, env: dict[str, str]) -> Any:
    from eventsourcing.utils import Environment

    return Environment(f"signoff_{name}", env)
