"""Where a projection keeps its rows: eventsourcing's tracking recorders, extended with
the projection's own tables, on SQLite or PostgreSQL.

A view writes a batch of events and the tracking position of the last one in ONE
transaction (``write``): eventsourcing's ``_insert_tracking`` refuses a position that is
not past the recorded one, so a batch is applied exactly once, after crashes too.

The SQL of a projection is written once, with ``%s`` placeholders; ``Dialect`` adapts it
to SQLite (``?``; JSON and times as text) or PostgreSQL (``jsonb``, ``timestamptz``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from eventsourcing.persistence import InfrastructureFactory, Tracking, TrackingRecorder
from eventsourcing.postgres import PostgresTrackingRecorder
from eventsourcing.sqlite import SQLiteTrackingRecorder
from psycopg.sql import SQL
from psycopg.types.json import Jsonb

Row = dict[str, Any]


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
        return Jsonb(value) if self.name == "postgres" else json.dumps(value, sort_keys=True)

    def from_json(self, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) and self.name == "sqlite" else value

    def time(self, value: datetime | None) -> Any:
        """A time as stored: timestamptz, or fixed-width UTC ISO text that sorts right."""
        if value is None or self.name == "postgres":
            return value
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")

    def from_time(self, value: Any) -> datetime | None:
        if value is None or isinstance(value, datetime):
            return value
        return datetime.fromisoformat(value)


class Cursor:
    """A cursor that speaks one SQL (``%s``) on both databases and returns dict rows."""

    def __init__(self, raw: Any, dialect: Dialect) -> None:
        self.raw = raw
        self.dialect = dialect

    def execute(self, statement: str, params: Sequence[Any] = ()) -> Cursor:
        self.raw.execute(self.dialect.sql(statement), tuple(params))
        return self

    def executemany(self, statement: str, params: Sequence[Sequence[Any]]) -> None:
        if params:
            self.raw.executemany(self.dialect.sql(statement), [tuple(p) for p in params])

    def fetchall(self) -> list[Row]:
        return [dict(r) for r in self.raw.fetchall()]

    def fetchone(self) -> Row | None:
        row = self.raw.fetchone()
        return dict(row) if row is not None else None


class ViewMixin:
    """What both view classes share. ``tables`` are the projection's DDL statements."""

    tables: Sequence[str] = ()
    tracking_name: str = ""
    dialect: Dialect
    # apply(cursor, event, position): writes what one event changes
    apply_event: Callable[[Cursor, Any, int], None]

    def write(self, events: Sequence[tuple[int, Any]]) -> None:
        """Apply (position, event) pairs and track the last position, in one transaction."""
        if not events:
            return
        with self.datastore.transaction(commit=True) as raw:  # type: ignore[attr-defined]
            cursor = Cursor(raw, self.dialect)
            with self._pipeline(raw):
                for position, event in events:
                    self.apply_event(cursor, event, position)
            self._insert_tracking(raw, Tracking(self.tracking_name, events[-1][0]))  # type: ignore[attr-defined]

    def _pipeline(self, raw: Any) -> Any:
        """PostgreSQL: send the page's statements without waiting for each answer."""
        return raw.connection.pipeline() if self.dialect.name == "postgres" else nullcontext()

    @contextmanager
    def read(self) -> Iterator[Cursor]:
        with self.datastore.transaction(commit=False) as raw:  # type: ignore[attr-defined]
            yield Cursor(raw, self.dialect)

    @contextmanager
    def write_transaction(self) -> Iterator[Cursor]:
        with self.datastore.transaction(commit=True) as raw:  # type: ignore[attr-defined]
            yield Cursor(raw, self.dialect)

    def position(self) -> int:
        return self.max_tracking_id(self.tracking_name) or 0  # type: ignore[attr-defined]

    def reset(self, table_names: Sequence[str]) -> None:
        """Empty the projection's tables and forget its position (for a rebuild)."""
        with self.write_transaction() as c:
            for table in table_names:
                c.execute(f"DELETE FROM {table}")
            c.execute(f"DELETE FROM {self._tracking_table()} WHERE application_name = %s",
                      (self.tracking_name,))

    def _tracking_table(self) -> str:
        return getattr(self, "tracking_table_name", "tracking")


class SQLiteView(ViewMixin, SQLiteTrackingRecorder):
    dialect = Dialect("sqlite")

    def construct_create_table_statements(self) -> list[str]:
        return [*super().construct_create_table_statements(),
                *(self.dialect.sql(t) for t in self.tables)]


class PostgresView(ViewMixin, PostgresTrackingRecorder):
    dialect = Dialect("postgres")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sql_create_statements.extend(SQL(t) for t in self.tables)  # type: ignore[arg-type]


def open_view(
    name: str,
    env: dict[str, str],
    tables: Sequence[str],
    apply_event: Callable[[Cursor, Any, int], None],
) -> ViewMixin:
    """The view of projection ``name`` in the store ``env`` points at (eventsourcing's
    persistence settings), with its tables created when missing."""
    factory = InfrastructureFactory[TrackingRecorder].construct(env=_env(name, env))
    base = PostgresView if env["PERSISTENCE_MODULE"].endswith("postgres") else SQLiteView
    view_class = type(f"{name.title()}View", (base,), {
        "tables": tuple(tables),
        "tracking_name": f"signoff:{name}",
        "apply_event": staticmethod(apply_event),
    })
    view = factory.tracking_recorder(view_class)
    assert isinstance(view, ViewMixin)
    return view


def _env(name: str, env: dict[str, str]) -> Any:
    from eventsourcing.utils import Environment

    return Environment(f"signoff_{name}", env)
