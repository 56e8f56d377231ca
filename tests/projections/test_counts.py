"""The counters behind the unfiltered totals of ``/queue`` and ``/audit/decisions``.

They are rows of the projections' own tables, moved in the same transaction as the rows
they count; here: a store projected before the counters existed gets them exact when a
view opens (recounted under the write lock), a rebuild starts them from 0, and a filtered
total is counted up to the cap, on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from projections import audit, queue, queuepages
from projections.runner import Projections
from service.runs import RunService
from tests.projections.bulk import assert_dumps_equal, copy_events, dump, realistic_events
from tests.projections.scenario import assert_matches_fold, read_decisions, read_queue

RUNS = 250


@pytest.fixture
def app(env: dict[str, str]) -> Iterator[RunService]:
    app = RunService(env=env)
    copy_events(realistic_events(RUNS)[:2000], app)
    yield app
    app.close()


def test_a_store_projected_before_the_counters_gets_them_exact(
        app: RunService, env: dict[str, str]) -> None:
    p = Projections(app, env)
    p.catch_up_all()
    before = dump(p)
    assert before["signoff_queue_counts"] and before["signoff_audit_counts"]
    # As a store projected by a version without counters: no table, or no row.
    with p.views[queue.QueueProjection.name].write_transaction() as c:  # type: ignore[attr-defined]
        c.execute(f"DROP TABLE {queue.COUNTS_TABLE}")
    with p.views[audit.AuditProjection.name].write_transaction() as c:  # type: ignore[attr-defined]
        c.execute(f"DELETE FROM {audit.COUNTS_TABLE}")
    p.close()
    p = Projections(app, env)  # the table created, the counters recounted
    try:
        assert_dumps_equal(before, dump(p))
        assert_matches_fold(p, app)
        # A counter that exists is not recounted: it is what the projection made it.
        with p.views[queue.QueueProjection.name].write_transaction() as c:  # type: ignore[attr-defined]
            c.execute(f"UPDATE {queue.COUNTS_TABLE} SET n = n + 5")
        p.views[queue.QueueProjection.name].ensure_counts()
        [(stored, recounted)] = p.views[queue.QueueProjection.name].recount().values()
        assert stored == recounted + 5
    finally:
        p.close()


def test_a_rebuild_starts_the_counters_from_zero(app: RunService, env: dict[str, str]) -> None:
    p = Projections(app, env)
    try:
        p.catch_up_all()
        before = dump(p)
        for name in (queue.QueueProjection.name, audit.AuditProjection.name):
            view = p.views[name]
            view.reset()
            assert view.recount() == dict.fromkeys(view.counts, (0, 0))
            p.catch_up(name)
        assert_dumps_equal(before, dump(p))
        assert_matches_fold(p, app)
    finally:
        p.close()


def test_filtered_totals_are_counted_up_to_the_cap(app: RunService, env: dict[str, str]
                                                   ) -> None:
    p = Projections(app, env)
    try:
        p.catch_up_all()
        everything = read_decisions(p, limit=1000)
        actor = everything[0]["actor"]
        mine = [r for r in everything if r["actor"] == actor]
        assert len(mine) > 3
        with p.views[audit.AuditProjection.name].read() as c:
            page = audit.list_decisions(c, actor=actor, limit=2, total_cap=3)
            assert (page["total"], page["total_exact"]) == (3, False)
            page = audit.list_decisions(c, actor=actor, limit=2, total_cap=len(mine))
            assert (page["total"], page["total_exact"]) == (len(mine), True)
            page = audit.list_decisions(c, limit=2, total_cap=3)  # the counter: exact
            assert (page["total"], page["total_exact"]) == (len(everything), True)
        paused = read_queue(p, limit=50)
        assert len(paused) > 2
        user = paused[0]["user_id"]
        theirs = [i for i in paused if i["user_id"] == user]
        with p.views[queue.QueueProjection.name].read() as c:
            page = queuepages.list_queue(c, limit=1, total_cap=0)
            assert (page["total"], page["total_exact"]) == (len(paused), True)
            page = queuepages.list_queue(c, user_id=user, limit=1, total_cap=0)
            assert (page["total"], page["total_exact"]) == (0, False)
            page = queuepages.list_queue(c, user_id=user, limit=1, total_cap=len(theirs))
            assert (page["total"], page["total_exact"]) == (len(theirs), True)
        # read_queue / read_decisions check every page's total against the cap.
        read_queue(p, limit=2, total_cap=1, user_id=user)
        read_decisions(p, limit=2, total_cap=1, actor=actor)
    finally:
        p.close()
