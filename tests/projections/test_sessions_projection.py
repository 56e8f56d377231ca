"""The sessions read model (``projections/sessions.py``): sessions opened by runs and by
clients, renamed, changed and deleted, read back with their filters, sorts and pages, on
SQLite and PostgreSQL. Runs are made with the domain's commands at times of a fake
clock (the events' timestamps); session changes are the ``Session`` aggregate's."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

import pytest

from domain.run import Run
from domain.sessions import session_key
from domain.values import Requirement
from projections import sessions
from projections.runner import Projections
from service.runs import RunService
from service.sessions import load_session, record
from tests.projections.bulk import assert_dumps_equal, dump, rebuilt
from tests.projections.scenario import FakeClock, fake_time

T0 = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)
NAME = sessions.SessionsProjection.name


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


@pytest.fixture
def projections(app: RunService, env: dict[str, str]) -> Iterator[Projections]:
    p = Projections(app, env, names=[NAME])
    try:
        yield p
    finally:
        p.close()


class World:
    """Runs and session changes at the fake clock's times, each saved at once."""

    def __init__(self, app: RunService, p: Projections) -> None:
        self.app = app
        self.p = p
        self.clock = FakeClock(T0)

    def start(self, minutes: float, session_id: str, input: str = "go", *,
              user: str | None = "ann", agent: str = "ops") -> Run:
        self.clock.t = at(minutes)
        with fake_time(self.clock):
            run = Run.start(agent_id=agent, agent_name=agent.title(), user_id=user,
                            session_id=session_id, input=input)
            self.app.save(run)
        return run

    def pause(self, minutes: float, run: Run, tokens: tuple[int, int] = (0, 0),
              model: str = "m") -> Run:
        self.clock.t = at(minutes)
        with fake_time(self.clock):
            run.record_model_response(model=model, provider="p", content=None,
                                      tool_calls=[{"id": "c1", "name": "t", "args": {}}],
                                      input_tokens=tokens[0], output_tokens=tokens[1])
            run.request_tool_call(tool_call_id="c1", tool_name="t", tool_args={},
                                  requires=Requirement.CONFIRMATION)
            run.pause()
            self.app.save(run)
        return run

    def end(self, minutes: float, run: Run, how: str = "complete") -> Run:
        self.clock.t = at(minutes)
        with fake_time(self.clock):
            if how == "complete":
                run.complete("done")
            elif how == "fail":
                run.fail("boom")
            else:
                run.cancel(cancelled_by="bob")
            self.app.save(run)
        return run

    def change(self, minutes: float, session_id: str, what: str, **fields: Any) -> None:
        self.clock.t = at(minutes)
        with fake_time(self.clock):
            record(self.app, session_id, lambda s: getattr(s, what)(by="ann", **fields))

    def read(self) -> Any:
        self.p.catch_up(NAME)
        return self.p.views[NAME].read()


def test_runs_open_sessions_named_by_their_first_input(app: RunService,
                                                      projections: Projections) -> None:
    w = World(app, projections)
    first = w.pause(1, w.start(0, "s1", "Delete 50 old records"), tokens=(10, 5))
    w.end(2, w.start(1.5, "s1", "And 20 more"), "fail")
    w.pause(3, w.start(2.5, "s2", "Other", user="bob", agent="desk"), model="n")
    with w.read() as c:
        page, total = sessions.list_sessions(c)
        s1 = sessions.get_session(c, "s1")
        runs = sessions.session_runs(c, "s1")
    assert total == 2
    assert [s["session_id"] for s in page] == ["s2", "s1"]  # newest first
    assert s1 is not None
    assert (s1["name"], s1["user_id"], s1["agent_id"]) == ("Delete 50 old records", "ann", "ops")
    assert (s1["created_at"], s1["updated_at"]) == (at(0), at(2))  # the second run's end
    assert s1["models"] == [{"model": "m", "provider": "p", "input_tokens": 10,
                             "output_tokens": 5}]
    assert [(r["run_id"], r["status"], r["created_at"]) for r in runs] == [
        (first.run_id, "PAUSED", at(0)), (runs[1]["run_id"], "ERROR", at(1.5))]


def test_a_client_names_changes_and_creates_sessions(app: RunService,
                                                     projections: Projections) -> None:
    w = World(app, projections)
    w.start(0, "s1", "first words")
    w.change(1, "s1", "update", session_name="Data cleanup")
    w.change(2, "s1", "update", session_state={"stage": "b"}, metadata={"k": 1},
             summary={"summary": "short"})
    w.change(3, "pre", "define", user_id="ann", agent_id="ops", session_name=None,
             session_state={"stage": "draft"}, metadata=None)
    w.start(4, "pre", "a run in a session made before it")
    with w.read() as c:
        s1, pre = sessions.get_session(c, "s1"), sessions.get_session(c, "pre")
    assert s1 is not None and pre is not None
    assert s1["name"] == "Data cleanup"  # the name given wins over the first input
    assert (s1["session_state"], s1["metadata"], s1["summary"]) == (
        {"stage": "b"}, {"k": 1}, {"summary": "short"})
    assert s1["updated_at"] == at(2)
    # Made before any run: named by its first run's input, since it was given none.
    assert pre["name"] == "a run in a session made before it"
    assert (pre["created_at"], pre["updated_at"]) == (at(3), at(4))
    assert pre["session_state"] == {"stage": "draft"}


def test_a_deleted_session_no_longer_lists_and_its_id_may_begin_again(
        app: RunService, projections: Projections) -> None:
    w = World(app, projections)
    old = w.pause(1, w.start(0, "s1", "before"))
    w.change(2, "s1", "delete")
    with w.read() as c:
        assert sessions.get_session(c, "s1") is None
        assert sessions.list_sessions(c) == ([], 0)
        assert sessions.session_runs(c, "s1") == []
    # The run stays in the log, and goes on; it does not bring the session back.
    assert app.get_run(old.run_id).status == "PAUSED"
    w.end(3, old, "cancel")
    new = w.start(4, "s1", "after")
    with w.read() as c:
        s1 = sessions.get_session(c, "s1")
        runs = sessions.session_runs(c, "s1")
    assert s1 is not None and (s1["name"], s1["created_at"]) == ("after", at(4))
    assert [r["run_id"] for r in runs] == [new.run_id]


def test_filters_sorts_and_pages(app: RunService, projections: Projections) -> None:
    w = World(app, projections)
    w.start(0, "a", "Cleanup 100% of logs", user="ann")
    w.start(1, "b", "cleanup_tables", user="ann", agent="desk")
    w.start(2, "c", "Refund", user="bob")
    w.start(3, "d", "CLEANUP x", user=None)
    w.change(4, "a", "update", session_name="zz cleanup 100% of logs")
    with w.read() as c:
        def ids(**kw: Any) -> tuple[list[str], int]:
            page, total = sessions.list_sessions(c, **kw)
            return [s["session_id"] for s in page], total

        assert ids(user_id="ann") == (["b", "a"], 2)
        assert ids(agent_id="desk") == (["b"], 1)
        assert ids(agents=frozenset({"ops"})) == (["d", "c", "a"], 3)
        assert ids(agents=frozenset()) == ([], 0)
        assert ids(name="CLEANUP") == (["d", "b", "a"], 3)  # any case
        assert ids(name="100%") == (["a"], 1)  # % and _ are themselves
        assert ids(name="p_t") == (["b"], 1)
        assert ids(sort_by="updated_at") == (["a", "d", "c", "b"], 4)
        # By code point, on both databases: upper case before lower case.
        assert ids(sort_by="session_name", descending=False) == (["d", "c", "b", "a"], 4)
        assert ids(sort_by="user_id", descending=False) == (["d", "a", "b", "c"], 4)
        assert ids(limit=3, page=2) == (["a"], 4)
        assert ids(limit=3, page=3) == ([], 4)


def test_a_sessions_runs_filtered(app: RunService, projections: Projections) -> None:
    w = World(app, projections)
    one = w.end(1, w.start(0, "s", user="ann"))
    two = w.pause(2, w.start(1, "s", user="bob", agent="desk"))
    three = w.start(2, "s", user="ann")
    with w.read() as c:
        def ids(**kw: Any) -> list[str]:
            return [r["run_id"] for r in sessions.session_runs(c, "s", **kw)]

        assert ids() == [one.run_id, two.run_id, three.run_id]
        assert ids(user_id="ann") == [one.run_id, three.run_id]
        assert ids(agents=frozenset({"desk"})) == [two.run_id]
        assert ids(statuses=["PAUSED", "RUNNING"]) == [two.run_id, three.run_id]
        assert ids(statuses=[]) == []
        assert ids(created_after=at(1)) == [two.run_id, three.run_id]
        assert ids(created_before=at(1)) == [one.run_id]
        assert ids(created_after=at(1), created_before=at(2)) == [two.run_id]


def test_a_rebuild_gives_the_same_rows(app: RunService, projections: Projections) -> None:
    w = World(app, projections)
    w.pause(1, w.start(0, "s1", "x"), tokens=(3, 4))
    w.pause(2, w.start(1, "s1", "y"), tokens=(1, 1))
    w.change(3, "s1", "update", session_name="named")
    w.start(4, "s2", "z")
    w.change(5, "s2", "delete")
    w.start(6, "s2", "again")
    projections.catch_up(NAME)
    before = dump(projections)
    assert before["signoff_session_models"] == [
        {"session_id": "s1", "model": "m", "provider": "p", "input_tokens": 4,
         "output_tokens": 5}]
    assert_dumps_equal(before, rebuilt(projections))


def test_a_session_change_is_recorded_again_after_a_concurrent_one(
        app: RunService, projections: Projections) -> None:
    """Two requests change one session at once: the one that saves second records its
    change after the other's (``IntegrityError``, then again), rather than failing."""
    w = World(app, projections)
    w.start(0, "s", "x")
    record(app, "s", lambda s: s.update(by="ann", session_name="one"))
    stale = load_session(app, "s")  # read by a request ...
    record(app, "s", lambda s: s.update(by="bob", session_name="two"))  # ... saved before it
    loads = iter([stale])
    with mock.patch("service.sessions.load_session",
                    lambda a, i: next(loads, None) or load_session(a, i)):
        record(app, "s", lambda s: s.update(by="cy", session_name="three"))
    assert [type(e).__name__ for e in app.repository.event_store.get(session_key("s"))] == [
        "Opened", "Updated", "Updated", "Updated"]
    with w.read() as c:
        s = sessions.get_session(c, "s")
    assert s is not None and s["name"] == "three"
