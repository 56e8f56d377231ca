"""Where a projection keeps its rows: eventsourcing's tracking recorders, extended with
the projection's own tables, on SQLite or PostgreSQL.

A view writes a batch of events and the tracking position of the last one in ONE
transaction (``write``), after checking, under the projection's write lock, that the
recorded position is still the one the batch was read after: a batch is applied exactly
once, after crashes and with several runners too.

Counters: a projection may keep exact counts of its rows (``counts``: a name and the
``SELECT COUNT(*) AS n`` that recounts it) in a table of its own (``counts_table``: ``name``,
``n``). Its ``apply_event`` moves them in the same transaction as the rows they count, so a
count is exactly as current as the rows a read sees. A missing counter is recounted under
the write lock when the view is opened (a store projected before the counter existed);
a reset puts every counter back at 0. ``capped_count`` counts what no counter covers, up to
a cap.

The SQL of a projection is written once, with ``%s`` placeholders; ``Dialect`` adapts it
to SQLite (``?``; JSON and times as text) or PostgreSQL (``jsonb``, ``timestamptz``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
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
from psycopg.types.json import Jsonb

Row = dict[str, Any]


class PositionMoved(IntegrityError):
    """The projection is no longer at the position a page was read after: another runner
    applied events meanwhile, or a rebuild reset it. Nothing was written: read the
    position again and go on from there."""


@dataclass(frozen=True)
class Dialect:
    name: str  # "sqlite" | "postgres"

    @property
    def json_type(self) -> str:
        return "jsonb" if self.name == "postgres" else "TEXT"

    @property
    def time_type(self) -> str:
        return "timestamptz" if self.name == "postgres" else "TEXT"

    def sql(self, statement: str) -> str:
        return statement.replace("%s", "?") if self.name == "sqlite" else statement

    def json(self, value: Any) -> Any:
        if value is None:
            return None
        if self.name == "postgres":
            return Jsonb(_without_nul(value))
        return json.dumps(value, sort_keys=True)

    def param(self, value: Any) -> Any:
        """PostgreSQL text cannot hold NUL: one such character in an event (a model's or a
        user's text) would otherwise stop a projection for good. It becomes U+FFFD."""
        if self.name == "postgres" and isinstance(value, str):
            return value.replace("\x00", "\ufffd")
        return value

    def from_json(self, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) and self.name == "sqlite" else value

    def time(self, value: datetime | None) -> Any:
        """A time as stored or compared: timestamptz, or fixed-width UTC ISO text that
        sorts right (four-digit years: ``0999-...`` before ``2024-...``). A time that is
        outside the years 1 to 9999 in UTC (``0001-01-01T00:00+14:00``,
        ``9999-12-31T23:59-14:00``) is before or after every time text can hold: it is
        compared as the first or the last of them."""
        if value is None or self.name == "postgres":
            return value
        try:
            utc = value.astimezone(UTC)
        except OverflowError:  # in year 1 east of UTC, or in year 9999 west of it
            utc = datetime.min if value.year == 1 else datetime.max
        return utc.replace(tzinfo=None).isoformat(timespec="microseconds") + "+00:00"

    def from_time(self, value: Any) -> datetime | None:
        if value is None or isinstance(value, datetime):
            return value
        return datetime.fromisoformat(value)


def _without_nul(value: Any) -> Any:
    """What jsonb refuses: NUL in strings (→ U+FFFD), NaN and infinities (→ null)."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    return value


class Cursor:
    """A cursor that speaks one SQL (``%s``) on both databases and returns dict rows."""

    def __init__(self, raw: Any, dialect: Dialect) -> None:
        self.raw = raw
        self.dialect = dialect

    def execute(self, statement: str, params: Sequence[Any] = ()) -> Cursor:
        self.raw.execute(self.dialect.sql(statement), [self.dialect.param(p) for p in params])
        return self

    def executemany(self, statement: str, params: Sequence[Sequence[Any]]) -> None:
        if params:
            self.raw.executemany(self.dialect.sql(statement),
                                 [[self.dialect.param(v) for v in p] for p in params])

    def fetchall(self) -> list[Row]:
        return [dict(r) for r in self.raw.fetchall()]

    def fetchone(self) -> Row | None:
        row = self.raw.fetchone()
        return dict(row) if row is not None else None


# A rebuild under way: each projection's row holds the log's head when its rebuild began
# (``reset``); until its position reaches it, what it serves is partial.
_REBUILDS = ("CREATE TABLE IF NOT EXISTS signoff_rebuilds (name TEXT PRIMARY KEY, "
             "target BIGINT NOT NULL)")


class ViewMixin:
    """What both view classes share. ``tables`` are the projection's DDL statements."""

    tables: Sequence[str] = ()
    tracking_name: str = ""
    counts_table: str = ""
    counts: Mapping[str, str] = {}  # counter name -> SELECT COUNT(*) AS n that recounts it
    dialect: Dialect
    # apply(cursor, event, position): writes what one event changes
    apply_event: Callable[[Cursor, Any, int], None]

    def write(self, events: Sequence[tuple[int, Any]], *, after: int | None = None) -> None:
        """Apply (position, event) pairs and track the last position, in one transaction.

        ``after`` is the position the page was read after: unless it is still the
        recorded one, ``PositionMoved`` is raised and nothing is written. The check is
        made holding the projection's write lock (until commit), so concurrent runners
        never apply an event twice, even when their pages overlap without being equal
        (eventsourcing's tracking upsert alone only refuses a page that does not end past
        the recorded position: a longer page would re-apply the overlap).
        """
        if not events:
            return
        with self.datastore.transaction(commit=True) as raw:  # type: ignore[attr-defined]
            cursor = Cursor(raw, self.dialect)
            self._lock(cursor)
            if after is not None:
                recorded = self._max_tracking_id(self.tracking_name, raw) or 0  # type: ignore[attr-defined]
                if recorded != after:
                    raise PositionMoved(f"{self.tracking_name} is at {recorded}, not {after}")
            with self._pipeline(raw):  # the position and the rows in one round trip
                self._insert_tracking(raw, Tracking(self.tracking_name, events[-1][0]))  # type: ignore[attr-defined]
                for position, event in events:
                    self.apply_event(cursor, event, position)

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
            yield Cursor(raw, self.dialect)

    @contextmanager
    def write_transaction(self) -> Iterator[Cursor]:
        with self.datastore.transaction(commit=True) as raw:  # type: ignore[attr-defined]
            yield Cursor(raw, self.dialect)

    def position(self) -> int:
        return self.max_tracking_id(self.tracking_name) or 0  # type: ignore[attr-defined]

    def reset(self, table_names: Sequence[str], target: int = 0) -> None:
        """Empty the projection's tables and forget its position (for a rebuild); every
        counter is back at 0. ``target``: the log's head now; until the projection has
        applied it again, it is ``rebuilding``."""
        with self.write_transaction() as c:
            self._lock(c)  # not in the middle of a runner's page
            c.execute("DELETE FROM signoff_rebuilds WHERE name = %s", (self.tracking_name,))
            c.execute("INSERT INTO signoff_rebuilds (name, target) VALUES (%s, %s)",
                      (self.tracking_name, target))
            for table in table_names:
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


class SQLiteView(ViewMixin, SQLiteTrackingRecorder):
    dialect = Dialect("sqlite")

    def construct_create_table_statements(self) -> list[str]:
        return [*super().construct_create_table_statements(),
                *(self.dialect.sql(t) for t in (*self.tables, _REBUILDS))]


class PostgresView(ViewMixin, PostgresTrackingRecorder):
    dialect = Dialect("postgres")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sql_create_statements.extend(  # type: ignore[arg-type]  # plain SQL text
            SQL(t) for t in (*self.tables, _REBUILDS))


def open_view(
    name: str,
    env: dict[str, str],
    tables: Sequence[str],
    apply_event: Callable[[Cursor, Any, int], None],
    *,
    counts_table: str = "",
    counts: Mapping[str, str] | None = None,
) -> ViewMixin:
    """The view of projection ``name`` in the store ``env`` points at (eventsourcing's
    persistence settings), with its tables created when missing and its counters
    (``counts`` in ``counts_table``, which ``tables`` creates) present."""
    factory = InfrastructureFactory[TrackingRecorder].construct(env=_env(name, env))
    base = PostgresView if env["PERSISTENCE_MODULE"].endswith("postgres") else SQLiteView
    view_class = type(f"{name.title()}View", (base,), {
        "tables": tuple(tables),
        "tracking_name": f"signoff:{name}",
        "apply_event": staticmethod(apply_event),
        "counts_table": counts_table,
        "counts": dict(counts or {}),
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


# How far a filtered total is counted: the database stops at the next match, so a count
# costs at most this many index entries (about 1 ms on PostgreSQL, warm).
TOTAL_CAP = 1_000


def read_count(c: Cursor, table: str, name: str) -> int | None:
    """A counter's value as of the read's snapshot (None when it has no row)."""
    row = c.execute(f"SELECT n FROM {table} WHERE name = %s", (name,)).fetchone()
    return int(row["n"]) if row is not None else None


def capped_count(c: Cursor, select: str, params: Sequence[Any], cap: int) -> tuple[int, bool]:
    """How many rows ``select`` (a ``SELECT 1 FROM ... WHERE ...``) gives, counting no
    further than ``cap``: ``(n, True)`` when there are ``n <= cap``, ``(cap, False)`` when
    there are more. The database stops after ``cap + 1`` matches, so the cost is bounded
    by the cap, not by the size of the table."""
    sql, sql_params = Total.capped(select, params, cap).select()
    row = c.execute(sql, sql_params).fetchone()
    return Total.capped(select, params, cap).read(row["total"] if row else 0)


@dataclass(frozen=True)
class Total:
    """How a page counts its matches, as a one-row ``SELECT ... AS total`` that the page's
    own statement joins (one statement, one snapshot, one round trip): a counter's value
    (exact), the matches of ``select`` counted up to ``cap``, or nothing."""

    sql: str
    params: tuple[Any, ...] = ()
    cap: int | None = None  # None: exact

    @classmethod
    def counter(cls, table: str, name: str) -> Total:
        return cls(f"SELECT (SELECT n FROM {table} WHERE name = %s) AS total", (name,))

    @classmethod
    def capped(cls, select: str, params: Sequence[Any], cap: int) -> Total:
        return cls(f"SELECT COUNT(*) AS total FROM ({select} LIMIT %s) AS matches",
                   (*params, cap + 1), cap)

    @classmethod
    def none(cls) -> Total:
        return cls("SELECT NULL AS total")

    def select(self) -> tuple[str, list[Any]]:
        return self.sql, list(self.params)

    def read(self, value: Any) -> tuple[int, bool]:
        """``(total, total_exact)`` from the ``total`` column."""
        n = int(value)
        if self.cap is None or n <= self.cap:
            return n, True
        return self.cap, False


def _env(name: str, env: dict[str, str]) -> Any:
    from eventsourcing.utils import Environment

    return Environment(f"signoff_{name}", env)
