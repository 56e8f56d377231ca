"""The SQL a read model writes and reads, once for both databases.

A projection's SQL is written once, with ``%s`` placeholders; ``Dialect`` adapts it to
SQLite (``?``; JSON and times as text) or PostgreSQL (``jsonb``, ``timestamptz``). Each
database has its ``Cursor``: the same statements, dict rows, and the few writes that
differ (``together``: several changes in one statement on PostgreSQL).

Counters: a read model may keep exact counts of its rows in a table of its own and move
them in the same transaction as the rows; ``Total`` reads a counter, or counts matches up
to a cap (``capped_count``), in the page's own statement.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from psycopg.types.json import Jsonb

Row = dict[str, Any]
Change = tuple[str, Sequence[Any]]  # a statement and its values


@dataclass(frozen=True)
class Dialect:
    name: str  # "sqlite" | "postgres"

    @property
    def json_type(self) -> str:
        return "jsonb" if self.name == "postgres" else "TEXT"

    @property
    def time_type(self) -> str:
        return "timestamptz" if self.name == "postgres" else "TEXT"

    @property
    def keyed(self) -> str:
        """What ends the DDL of a table of small rows read and written by their primary
        key: on SQLite ``WITHOUT ROWID``, so that the rows live in the key's b-tree
        (no rowid table beside a separate index of the key: one b-tree written per row,
        about 50 bytes less a row)."""
        return "" if self.name == "postgres" else " WITHOUT ROWID"

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

    def together(self, changes: Sequence[Change]) -> None:
        """Make ``changes`` (to different tables), one after the other."""
        for statement, values in changes:
            self.execute(statement, values)

    def counting(self, counter: Change, rows: Change, changes: Sequence[Change]) -> None:
        """Make ``changes``, and move a counter when the rows they change were as
        ``rows`` selects before them: ``counter`` is the counter's ``UPDATE ... WHERE
        EXISTS (SELECT 1 FROM {rows})``, with ``{rows}`` standing for the selection."""
        (update, by), (select, values) = counter, rows
        self.execute(update.format(rows=f"({select}) AS before_change"), [*by, *values])
        self.together(changes)


class PostgresCursor(Cursor):
    """Several changes in one statement (data-modifying CTEs, which all see the rows as
    they were before the statement): nothing comes back to Python, so a page's statements
    go to PostgreSQL in one pipeline, one statement fewer per change."""

    def together(self, changes: Sequence[Change]) -> None:
        *before, (last, last_values) = changes
        ctes = [f"change{i} AS ({statement})" for i, (statement, _) in enumerate(before)]
        params = [v for _, values in before for v in values]
        self.execute((f"WITH {', '.join(ctes)} " if ctes else "") + last,
                     [*params, *last_values])

    def counting(self, counter: Change, rows: Change, changes: Sequence[Change]) -> None:
        (update, by), (select, values) = counter, rows
        ctes = [f"before_change AS ({select})"]
        params: list[Any] = [*values]
        for i, (statement, change_values) in enumerate(changes):
            ctes.append(f"change{i} AS ({statement})")
            params += change_values
        self.execute(f"WITH {', '.join(ctes)} " + update.format(rows="before_change"),
                     [*params, *by])


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
