"""A store filled with the golden scenario's runs, and direct SQL on its events table, to
tamper with the record the way someone with database access could."""

from __future__ import annotations

import json
import sqlite3
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import psycopg

from bootstrap import build_app, build_projections
from projections import anchors
from projections.audit import AuditProjection
from projections.auditproof import DecisionRowsCheck
from projections.runner import Projections
from service import audit
from service.compression import Zlib
from service.config import Settings
from service.runs import RunService
from tests.golden.record import populate


@dataclass
class Store:
    settings: Settings
    app: RunService
    projections: Projections
    run_ids: list[str]

    @property
    def postgres(self) -> bool:
        return self.settings.database_url.startswith("postgres")

    def anchor(self) -> list[dict[str, Any]]:
        """Bring the anchors projection up to date; its checkpoints and head."""
        self.projections.catch_up(anchors.AnchorsProjection.name)
        with self.projections.views[anchors.AnchorsProjection.name].read() as c:
            return anchors.read_anchors(c)

    def stored_anchors(self) -> list[dict[str, Any]]:
        with self.projections.views[anchors.AnchorsProjection.name].read() as c:
            return anchors.read_anchors(c)

    def anchored_runs(self) -> list[tuple[str, int, str]]:
        with self.projections.views[anchors.AnchorsProjection.name].read() as c:
            return anchors.anchored_runs(c)

    def anchored(self, run_id: str) -> dict[str, Any] | None:
        with self.projections.views[anchors.AnchorsProjection.name].read() as c:
            return anchors.anchored_run(c, run_id)

    def verify(self, *kept: dict[str, Any], rows: bool = False) -> audit.Report:
        """The whole log against the stored anchors (and the runs they saw, and their
        signatures with the settings' public keys), and ``kept``; with ``rows``, the
        decision rows too (as ``signoff audit verify`` does by default)."""
        check = None
        if rows:
            self.projections.catch_up(AuditProjection.name)
            view = self.projections.views[AuditProjection.name]
            check = DecisionRowsCheck(view.read, view.position(), view.position)
        report = audit.verify_log(self.app, [*self.stored_anchors(), *kept],
                                  runs=self.anchored_runs(),
                                  public_keys=self.settings.anchor_public_keys(),
                                  observe=check.add if check else None)
        if check is not None:
            report.read_models = check.finish()
        return report

    def verify_run(self, run_id: str) -> audit.Report:
        """One run, against its head as the anchors saw it (as the API and CLI do)."""
        return audit.verify_run(self.app, run_id, self.anchored(run_id))

    # ------------------------------------------------------------ raw SQL

    @contextmanager
    def sql(self) -> Iterator[Any]:
        if self.postgres:
            with psycopg.connect(self.settings.database_url, autocommit=False) as conn:
                yield conn
        else:
            conn = sqlite3.connect(self.settings.database_url.removeprefix("sqlite:///"))
            try:
                yield conn
                conn.commit()
            finally:
                conn.close()

    @property
    def table(self) -> str:
        return "signoff_events" if self.postgres else "stored_events"

    def q(self, statement: str) -> str:
        return statement if self.postgres else statement.replace("%s", "?")

    def _id(self, run_id: str) -> Any:
        return UUID(run_id) if self.postgres else UUID(run_id).hex

    def rows(self, run_id: str) -> list[tuple[int, str, bytes]]:
        """(version, topic, state bytes) of a run, as stored (decompressed, as anyone with
        access to the database can; a state written back uncompressed reads too)."""
        with self.sql() as conn:
            rows = conn.execute(self.q(
                f"SELECT originator_version, topic, state FROM {self.table} "
                "WHERE originator_id = %s ORDER BY originator_version"),
                (self._id(run_id),)).fetchall()
        return [(v, t, _plain(bytes(s))) for v, t, s in rows]

    def set_state(self, run_id: str, version: int, state: bytes,
                  topic: str | None = None) -> None:
        with self.sql() as conn:
            conn.execute(self.q(
                f"UPDATE {self.table} SET state = %s, topic = COALESCE(%s, topic) "
                "WHERE originator_id = %s AND originator_version = %s"),
                (state, topic, self._id(run_id), version))

    def edit(self, run_id: str, version: int, change: Any) -> None:
        """Decode a stored event's JSON, let ``change`` alter it, write it back."""
        state = json.loads(dict((v, s) for v, _, s in self.rows(run_id))[version])
        change(state)
        self.set_state(run_id, version, json.dumps(state).encode())

    def delete(self, run_id: str, *versions: int) -> None:
        with self.sql() as conn:
            for version in versions or [v for v, _, _ in self.rows(run_id)]:
                conn.execute(self.q(f"DELETE FROM {self.table} WHERE originator_id = %s "
                                    "AND originator_version = %s"),
                             (self._id(run_id), version))

    def swap(self, run_id: str, a: int, b: int) -> None:
        rows = {v: (t, s) for v, t, s in self.rows(run_id)}
        self.set_state(run_id, a, rows[b][1], rows[b][0])
        self.set_state(run_id, b, rows[a][1], rows[a][0])

    def close(self) -> None:
        self.projections.close()
        self.projections.store.close()
        self.app.close()


def filled_store(database_url: str, cipher_key: str = "", **more: Any) -> Store:
    """The golden scenario's 12 runs, the anchors brought up to date (``more``: other
    settings, such as ``anchor_signing_key``)."""
    settings = Settings(database_url=database_url, cipher_key=cipher_key, **more)
    app = build_app(settings)
    run_ids = populate(app)
    store = Store(settings, app, build_projections(settings), run_ids)
    store.anchor()
    return store


def _plain(state: bytes) -> bytes:
    """A stored state decompressed; an encrypted one as it is."""
    try:
        return Zlib().decompress(state)
    except zlib.error:
        return state
