"""A read model being rebuilt never answers a partial result as complete (SQLite and
PostgreSQL): while a rebuild has not yet applied the log as it was when it began,
``/audit/decisions``, ``/analytics/decisions`` and ``/queue`` say ``complete: false``
(``total_exact`` false, header ``Signoff-Complete: false``), and an export is a 503.

The server runs with ``SIGNOFF_PROJECTIONS=off``; the test holds the projections
itself, so a rebuild can be stopped half-way, as one in another process would be seen.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bootstrap import build_projections
from projections import audit, queue
from projections.runner import Projections
from service.config import Settings
from tests.e2e.flows import assert_problem, decided, form, pending
from tests.support.server import live_server

pytestmark = pytest.mark.e2e


@pytest.fixture
def held(store_url: str, tmp_path: Path) -> Iterator[tuple[httpx.Client, Projections]]:
    projections = build_projections(Settings(database_url=store_url))
    with live_server(store_url, tmp_path / "server.log", SIGNOFF_PROJECTIONS="off") as s, \
            s.client() as c:
        try:
            yield c, projections
        finally:
            projections.close()
            projections.store.close()


def _decide_some(c: httpx.Client, n: int) -> None:
    for _ in range(n):
        r = c.post("/agents/data_manager/runs", files=form(
            message="Delete 50 old records from the users table", stream="false"))
        run = r.json()
        r = c.post(f"/agents/data_manager/runs/{run['run_id']}/continue", files=form(
            tools=[decided(t, confirmed=True) for t in pending(run)], stream="false"))
        assert r.status_code == 200, r.text
    c.post("/agents/data_manager/runs", files=form(  # one left waiting in the queue
        message="Delete 50 old records from the users table", stream="false"))


def _answers(c: httpx.Client) -> dict[str, httpx.Response]:
    return {"decisions": c.get("/audit/decisions"), "analytics": c.get("/analytics/decisions"),
            "queue": c.get("/queue")}


def test_a_rebuild_half_way_answers_partial(held: tuple[httpx.Client, Projections]) -> None:
    c, projections = held
    _decide_some(c, 3)
    projections.catch_up_all()
    for name, r in _answers(c).items():
        assert r.status_code == 200, (name, r.text)
        assert r.json()["complete"] is True, name
        assert "signoff-complete" not in r.headers, name
    assert c.get("/audit/decisions").json()["total"] == 3

    # A rebuild begins (its tables emptied, the log's head its target) and stops there.
    for name in (audit.AuditProjection.name, queue.QueueProjection.name):
        projections.views[name].reset(target=projections.store.head())
    for name, r in _answers(c).items():
        assert r.status_code == 200, (name, r.text)
        assert r.json()["complete"] is False, name
        assert r.headers["signoff-complete"] == "false", name
        if "total_exact" in r.json():
            assert r.json()["total_exact"] is False, name
    assert_problem(c.get("/audit/decisions", params={"format": "csv"}), 503)
    assert_problem(c.get("/audit/decisions", params={"format": "jsonl"}), 503)

    # Caught up to where the log was when the rebuild began: complete again.
    projections.catch_up_all()
    for name, r in _answers(c).items():
        assert r.json()["complete"] is True, name
    page = c.get("/audit/decisions").json()
    assert (page["total"], page["total_exact"]) == (3, True)
    assert c.get("/audit/decisions", params={"format": "csv"}).status_code == 200

    # A whole rebuild ends complete.
    projections.rebuild(audit.AuditProjection.name)
    assert c.get("/audit/decisions").json()["complete"] is True
