"""Analytics' default clock (``by=requested``) windows the decision trail on
``signoff_decisions.requested_at``: an index serves it, and a store whose trail was made
before the index existed gets it when the trail is next opened (SQLite and PostgreSQL)."""

from __future__ import annotations

import sqlite3
from typing import Any

import psycopg

from bootstrap import build_projections
from projections.audit import AuditProjection
from service.config import Settings

INDEX = "signoff_decisions_requested"


def _open_and_close(url: str) -> None:
    projections = build_projections(Settings(database_url=url), [AuditProjection.name])
    projections.close()
    projections.store.close()


def _sql(url: str, statement: str, *params: Any) -> list[Any]:
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            return conn.execute(statement.replace("%s", "?"), params).fetchall()
    with psycopg.connect(url, autocommit=True) as pg:
        cur = pg.execute(statement, params)
        return cur.fetchall() if cur.description else []


def _indexes(url: str) -> dict[str, str]:
    if url.startswith("sqlite"):
        rows = _sql(url, "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND "
                    "tbl_name = 'signoff_decisions'")
    else:
        rows = _sql(url, "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = "
                    "'signoff_decisions'")
    return {name: str(text) for name, text in rows}


def test_an_older_store_gets_the_index_when_next_opened(store_url: str) -> None:
    _open_and_close(store_url)
    assert "(requested_at)" in _indexes(store_url)[INDEX]
    _sql(store_url, f"DROP INDEX {INDEX}")  # as a store made before it
    assert INDEX not in _indexes(store_url)
    _open_and_close(store_url)
    assert "(requested_at)" in _indexes(store_url)[INDEX]
    _open_and_close(store_url)  # idempotent: opened again, nothing fails
    assert INDEX in _indexes(store_url)


def test_a_window_on_the_request_time_reads_the_index(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    _open_and_close(url)
    plan = _sql(url, "EXPLAIN QUERY PLAN SELECT d.decision FROM signoff_decisions d "
                "WHERE d.requested_at >= ? AND d.requested_at < ?",
                "2030-03-10T00:00:00.000000+00:00", "2030-03-11T00:00:00.000000+00:00")
    assert any(INDEX in str(row[-1]) for row in plan), plan
