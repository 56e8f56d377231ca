"""The decision trail inside the proof: every row of ``signoff_decisions`` against the log.

``signoff audit verify`` (and ``GET /audit/verify``) hands each event it reads from the
log to ``DecisionRowsCheck.add``, in log order. The check applies them, a page at a
time, to a scratch copy of the audit read model (the same ``AuditProjection``, in a
temporary SQLite file: memory stays flat), and compares the decision rows the page makes
there with the rows the store holds at the same log positions: column by column (run,
call, agent, user, session, tool, arguments requested and approved, decision, actor,
note, details, times), with the version and hash of the event each row came from
(``signoff_decision_events``). It names:

- a row that differs from what its event says (each column that differs);
- a decision event that has no row, and a row whose position holds no decision event;
- a row whose event is not the one at its position (another version or hash);
- the ``decisions`` counter (the unfiltered ``total`` of ``/audit/decisions``) when it is
  not the count of the rows.

A row with no event version and hash (projected before they were recorded) is still
compared, column by column, and counted as ``unbound``: ``signoff project rebuild audit``
records them. The rows are checked up to the position the projection had reached when
the check began; an event that cannot be read stops the check there (the projection
cannot have applied it either).
"""

from __future__ import annotations

import json
import math
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from projections.audit import COUNTS_TABLE, AuditProjection
from projections.sql import Cursor, Dialect

Read = Callable[[], AbstractContextManager[Cursor]]
NAMED = 100  # rows named in a report; the rest are counted
_SCRATCH = Dialect("sqlite")
_SELECT = ("SELECT d.*, s.version AS event_version, s.hash AS event_hash "
           "FROM signoff_decisions d LEFT JOIN signoff_decision_events s "
           "ON s.position = d.position AND s.tool_call_id = d.tool_call_id ")


class DecisionRowsCheck:
    """Compares the stored decision rows with the log, as the log is read (``add``), up
    to ``upto`` (the audit projection's position when the check began); ``finish``
    reports. ``read`` opens a read of the stored read model, ``position`` reads its
    position now."""

    def __init__(self, read: Read, upto: int, position: Callable[[], int],
                 page: int = 500) -> None:
        self.read, self.upto, self.position, self.page = read, upto, position, page
        self.model = AuditProjection()
        self.pending: list[tuple[int, Any]] = []
        self.done = 0  # rows up to this position are compared
        self.stopped: str | None = None
        self.rows = self.unbound = self.differ = 0
        self.named: list[dict[str, Any]] = []
        self._dir = tempfile.TemporaryDirectory(prefix="signoff-verify-")
        self.db = sqlite3.connect(Path(self._dir.name) / "decisions.db")
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode = OFF")
        self.db.execute("PRAGMA synchronous = OFF")
        for statement in AuditProjection.create_statements(_SCRATCH):
            self.db.execute(statement)

    def add(self, position: int, event: Any | None) -> None:
        """The log's next event (None: it cannot be read)."""
        if self.stopped or position > self.upto:
            return
        if event is None:
            self._flush()
            self.stopped = (f"the event at position {position} cannot be read: rows past "
                            f"position {self.done} are not checked")
            return
        self.pending.append((position, event))
        if len(self.pending) >= self.page:
            self._flush()

    def finish(self) -> dict[str, Any]:
        """The report: {table, rows, upto, differ, unbound, named, stopped}."""
        try:
            self._flush()
            if not self.stopped:
                self._rows_past_the_log()
            self._counter()
        finally:
            self.close()
        return {"table": "signoff_decisions", "rows": self.rows,
                "upto": self.done if self.stopped else self.upto, "differ": self.differ,
                "unbound": self.unbound, "named": self.named, "stopped": self.stopped}

    def close(self) -> None:
        """Remove the scratch copy (``finish`` does; again is harmless)."""
        self.db.close()
        self._dir.cleanup()

    # ------------------------------------------------------------------ pages

    def _flush(self) -> None:
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        with self.db:
            self.model.write_page(Cursor(self.db.cursor(), _SCRATCH), batch)
        expected = [dict(r) for r in self.db.execute(
            _SELECT + "ORDER BY d.position, d.tool_call_id").fetchall()]
        with self.db:
            self.db.execute("DELETE FROM signoff_decision_events")
            self.db.execute("DELETE FROM signoff_decisions")
        low, self.done = self.done, batch[-1][0]
        self._compare(expected, low, self.done)

    def _compare(self, expected: list[dict[str, Any]], low: int, high: int) -> None:
        """The scratch rows of the positions (low, high] against the stored ones."""
        with self.read() as c:
            stored = c.execute(_SELECT + "WHERE d.position > %s AND d.position <= %s "
                               "ORDER BY d.position, d.tool_call_id", (low, high)).fetchall()
            dialect = c.dialect
        want = {(r["position"], r["tool_call_id"]): _plain(_SCRATCH, r, dialect)
                for r in expected}
        have = {(r["position"], r["tool_call_id"]): _plain(dialect, r) for r in stored}
        self.rows += len(have)
        for key in sorted(want.keys() | have.keys()):
            self._row(want.get(key), have.get(key))

    def _row(self, want: dict[str, Any] | None, have: dict[str, Any] | None) -> None:
        if have is not None and have["event_version"] is None:
            self.unbound += 1
        if want is None:
            assert have is not None
            self._name(have, "no decision event at its position: the row was added, or "
                       "its event removed or moved")
        elif have is None:
            self._name(want, "the decision event has no row: the row was removed")
        else:
            problems = _differences(want, have)
            if problems:
                self._name(have, "; ".join(problems), want["event_version"])

    def _rows_past_the_log(self) -> None:
        """Rows at positions the log holds no event at: past the last event read up to
        ``upto``, and past where the projection is now."""
        with self.read() as c:
            past = c.execute(_SELECT + "WHERE (d.position > %s AND d.position <= %s) "
                             "OR d.position > %s ORDER BY d.position, d.tool_call_id",
                             (self.done, self.upto, max(self.upto, self.position()))
                             ).fetchall()
            dialect = c.dialect
        for row in past:
            self.rows += 1
            self._row(None, _plain(dialect, row))

    def _counter(self) -> None:
        with self.read() as c:
            row = c.execute(f"SELECT (SELECT n FROM {COUNTS_TABLE} WHERE name = 'decisions') "
                            "AS counter, (SELECT COUNT(*) FROM signoff_decisions) AS n"
                            ).fetchone()
        assert row is not None
        if row["counter"] is not None and int(row["counter"]) != int(row["n"]):
            self.differ += 1
            self.named.append({"position": None, "run_id": None, "tool_call_id": None,
                               "version": None, "problem": (
                                   f"the decisions counter says {row['counter']}, the table "
                                   f"holds {row['n']} rows: it was altered")})

    def _name(self, row: dict[str, Any], problem: str, version: Any = None) -> None:
        self.differ += 1
        if len(self.named) < NAMED:
            self.named.append({"position": row["position"], "run_id": row["run_id"],
                               "tool_call_id": row["tool_call_id"],
                               "version": version or row["event_version"],
                               "problem": problem})


def _plain(d: Dialect, row: Any, stored: Dialect | None = None) -> dict[str, Any]:
    """A row as Python values (JSON decoded, times as datetimes). ``stored``: the row is
    the scratch's, to compare with a store of that dialect (PostgreSQL keeps no NUL in
    text, and JSON as jsonb holds it)."""
    out = dict(row)
    for key in ("args_requested", "args_approved", "details"):
        out[key] = d.from_json(out[key])
        if stored is not None and stored.name == "postgres" and out[key] is not None:
            out[key] = stored.json(out[key]).obj
    for key in ("requested_at", "decided_at"):
        out[key] = d.from_time(out[key])
    if stored is not None:
        out = {k: stored.param(v) for k, v in out.items()}
    return out


def _differences(want: dict[str, Any], have: dict[str, Any]) -> list[str]:
    """Each column of the stored row that is not what the event says."""
    out = []
    for key, value in want.items():
        if key in ("event_version", "event_hash") or key not in have:
            continue
        if not _same(value, have[key]):
            out.append(f"{key} is {_show(have[key])}, the event says {_show(value)}")
    if have["event_version"] is not None and (
            (have["event_version"], have["event_hash"])
            != (want["event_version"], want["event_hash"])):
        out.append(f"it names the event at version {have['event_version']} with hash "
                   f"{have['event_hash']}; the log holds version {want['event_version']} "
                   f"with hash {want['event_hash']} at its position")
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=1e-6)
        except (TypeError, ValueError):
            return False
    return bool(a == b)


def _show(value: Any) -> str:
    text = (repr(value) if not isinstance(value, dict | list)
            else json.dumps(value, sort_keys=True, default=str))
    return text if len(text) <= 80 else text[:77] + "..."


def named_lines(report: dict[str, Any]) -> Iterator[str]:
    """The rows a report names, one line each."""
    for n in report["named"]:
        if n["position"] is None:
            yield n["problem"]
        else:
            version = f" version {n['version']}" if n["version"] else ""
            yield (f"position {n['position']}, run {n['run_id']}{version}, call "
                   f"{n['tool_call_id']}: {n['problem']}")
