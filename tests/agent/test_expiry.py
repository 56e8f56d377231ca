"""Expiry and escalation with an injected clock (nothing sleeps): the sweeper reads what
is due from the queue read model, records ``DecisionExpired`` through the run lifecycle
and continues the runs; the queue, the audit trail and analytics show it.

A real store (SQLite, and PostgreSQL) and its projections; the loop, the lifecycle, the
sweeper (as the server wires it: ``api/sweeper.py``) and every event's timestamp share
one fake clock (``tests/projections/scenario.py``), which the tests move.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.loop import AgentLoop
from agent.models.offline import OfflineModel
from agent.tools import Agent, tool
from api.sweeper import sweeper
from domain.errors import ToolCallNotPending
from domain.run import Run
from domain.values import CallState, Decision, DecisionKind, RunStatus
from projections.runner import Projections
from service.config import Settings, eventsourcing_env
from service.runs import RunService
from tests.projections.scenario import (
    FakeClock,
    assert_matches_fold,
    fake_time,
    read_analytics,
    read_decisions,
    read_queue,
)
from tests.support.runs import Runs

RAN: list[str] = []


@tool(requires_confirmation=True, decision_timeout=600)
def delete_table(name: str) -> str:
    """Delete a table; undecided for 10 minutes: rejected.

    Args:
        name: Which table
    """
    RAN.append(f"delete {name}")
    return f"Deleted {name}"


@tool(requires_confirmation=True, decision_timeout=timedelta(minutes=5), on_timeout="approve",
      safe=True)
def warm_cache(name: str) -> str:
    """Warm a cache (safe); undecided for 5 minutes: it runs.

    Args:
        name: Which cache
    """
    RAN.append(f"warm {name}")
    return f"Warmed {name}"


@tool(requires_confirmation=True, decision_timeout=3600, on_timeout="escalate",
      escalate_to="leads")
def pay(amount: int) -> str:
    """Pay; undecided for an hour: the leads decide (for another hour).

    Args:
        amount: How much
    """
    RAN.append(f"pay {amount}")
    return f"Paid {amount}"


@tool(requires_confirmation=True)
def archive(name: str) -> str:
    """Archive (no deadline: waits for ever).

    Args:
        name: What
    """
    return f"Archived {name}"


ops = Agent(id="ops", name="Ops", tools=[delete_table, warm_cache, pay, archive])


class World:
    def __init__(self, url: str) -> None:
        self.env = eventsourcing_env(Settings(database_url=url, postgres_pool_size=2))
        self.app = RunService(env=self.env)
        self.clock = FakeClock()
        self.loop = AgentLoop({"ops": ops}, OfflineModel(), clock=self.clock.now)
        self.runs = Runs(self.app, self.loop)
        self.projections = Projections(self.app, self.env)
        # As the server wires it; not started (interval 0): the tests sweep.
        self.sweeper = sweeper(self.runs.lifecycle, self.projections, interval=0)

    def start(self, *calls: tuple[str, dict[str, Any]]) -> Run:
        return self.runs.start("ops", "\n".join(f"call {n} {json.dumps(a)}" for n, a in calls),
                               user_id="u")

    def sweep(self, after: timedelta) -> list[Run]:
        """Time passes; the projections catch up; one sweep."""
        self.clock.tick(after)
        self.projections.catch_up_all()
        return self.sweeper.sweep()

    def close(self) -> None:
        self.loop.close()
        self.projections.close()
        self.app.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    RAN.clear()
    w = World(f"sqlite:///{tmp_path / 'e.db'}" if request.param == "sqlite"
              else request.getfixturevalue("pg_database").url)
    with fake_time(w.clock):
        yield w
    w.close()


def test_an_undecided_call_is_rejected_at_its_deadline_and_the_run_goes_on(
        world: World) -> None:
    run = world.start(("delete_table", {"name": "users"}))
    [call] = run.pending_calls()
    # The request says when it expires.
    assert call.expires_at == world.clock.now() + timedelta(minutes=10)
    world.projections.catch_up_all()
    [item] = read_queue(world.projections, limit=10)
    assert item["waiting_for"][0]["expires_at"] == call.expires_at

    assert world.sweep(timedelta(minutes=9, seconds=59)) == []  # not yet
    assert world.app.get_run(run.id).status == RunStatus.PAUSED

    [after] = world.sweep(timedelta(seconds=1))
    assert after.status == RunStatus.COMPLETED
    expired = after.calls[call.tool_call_id]
    assert expired.state == CallState.REJECTED
    assert expired.decision.kind == "expired"
    assert RAN == []  # never run
    # The model was told it expired (the offline model echoes the tool message).
    assert "No decision was made in time" in (after.content or "")
    events = [type(e).__name__ for e in world.app.run_events(run.id)]
    assert events[-4:] == ["DecisionExpired", "RunContinued", "ModelResponded",
                           "RunCompleted"]

    world.projections.catch_up_all()
    assert read_queue(world.projections, limit=10) == []
    [row] = read_decisions(world.projections, limit=10)
    assert (row["decision"], row["actor"], row["note"]) == ("expired", "system", "reject")
    assert row["details"]["action"] == "reject"
    assert row["time_to_decision_ms"] == 10 * 60 * 1000
    [group] = read_analytics(world.projections, "tool")
    assert (group["requested"], group["expired"], group["rejected"]) == (1, 1, 0)
    assert group["time_to_decision_p50_ms"] is None  # nobody decided
    assert_matches_fold(world.projections, world.app)


def test_a_safe_tool_marked_approve_runs_as_after_a_confirmation(world: World) -> None:
    run = world.start(("warm_cache", {"name": "home"}))
    [after] = world.sweep(timedelta(minutes=5))
    assert after.status == RunStatus.COMPLETED
    assert RAN == ["warm home"]
    [call] = after.calls.values()
    assert call.state == CallState.EXECUTED
    assert call.decision.action == "approve"
    world.projections.catch_up_all()
    [row] = read_decisions(world.projections, limit=10, run_id=run.run_id)
    assert (row["decision"], row["actor"], row["note"]) == ("expired", "system", "approve")


def test_an_escalated_call_waits_for_its_group_then_is_rejected(world: World) -> None:
    run = world.start(("pay", {"amount": 5}))
    [after] = world.sweep(timedelta(hours=1))
    assert after.status == RunStatus.PAUSED
    [call] = after.pending_calls()
    assert call.escalated_to == "leads"
    assert call.expires_at == world.clock.now() + timedelta(hours=1)
    world.projections.catch_up_all()
    [item] = read_queue(world.projections, limit=10)
    assert item["waiting_for"][0]["escalated_to"] == "leads"
    assert item["waiting_for"][0]["expires_at"] == call.expires_at
    [row] = read_decisions(world.projections, limit=10)
    assert (row["decision"], row["note"], row["details"]["escalated_to"]) == (
        "expired", "escalate to leads", "leads")

    assert world.sweep(timedelta(minutes=59)) == []  # nothing due yet
    assert world.app.get_run(run.id).status == RunStatus.PAUSED
    [done] = world.sweep(timedelta(minutes=1))
    assert done.status == RunStatus.COMPLETED
    assert done.calls[call.tool_call_id].state == CallState.REJECTED
    world.projections.catch_up_all()
    assert [r["note"] for r in read_decisions(world.projections, limit=10)] == [
        "escalate to leads", "reject"]
    [group] = read_analytics(world.projections, "tool")
    assert (group["requested"], group["expired"]) == (1, 2)
    assert_matches_fold(world.projections, world.app)


def test_an_escalated_call_decided_by_the_group_runs(world: World) -> None:
    run = world.start(("pay", {"amount": 7}))
    world.sweep(timedelta(hours=1))
    [call] = world.app.get_run(run.id).pending_calls()
    world.clock.tick(timedelta(minutes=3))
    world.runs.drive(world.runs.decide(run.run_id, [Decision(
        call.tool_call_id, DecisionKind.CONFIRMED)], actor="lead-ann"))
    assert RAN == ["pay 7"]
    world.projections.catch_up_all()
    rows = read_decisions(world.projections, limit=10)
    assert [(r["decision"], r["actor"]) for r in rows] == [("expired", "system"),
                                                           ("confirmed", "lead-ann")]
    assert world.sweep(timedelta(days=1)) == []  # nothing left to expire
    assert_matches_fold(world.projections, world.app)


def test_only_the_calls_past_their_deadline_expire(world: World) -> None:
    run = world.start(("delete_table", {"name": "a"}), ("pay", {"amount": 1}),
                      ("archive", {"name": "b"}))
    [after] = world.sweep(timedelta(minutes=30))
    assert after.status == RunStatus.PAUSED
    states = {c.tool_name: c.state for c in after.calls.values()}
    assert states == {"delete_table": CallState.REJECTED, "pay": CallState.PENDING,
                      "archive": CallState.PENDING}
    assert [c.tool_name for c in after.pending_calls()] == ["pay", "archive"]
    # A week later: pay has escalated; archive, with no deadline, still waits.
    world.sweep(timedelta(days=7))
    after = world.app.get_run(run.id)
    assert after.calls_in(CallState.PENDING)[0].tool_name == "pay"
    world.sweep(timedelta(days=7))
    after = world.app.get_run(run.id)
    assert [c.tool_name for c in after.pending_calls()] == ["archive"]
    assert after.status == RunStatus.PAUSED


def test_a_reviewer_deciding_at_the_same_moment_wins_or_loses_whole(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    run = world.start(("delete_table", {"name": "x"}))
    [call] = run.pending_calls()
    world.clock.tick(timedelta(minutes=11))
    # The sweeper loaded the run; the reviewer's decision is saved first: the expiry's
    # save fails on the version (IntegrityError), and the reviewer's decision stands.
    stale = world.app.get_run(run.id)
    world.runs.decide(run.run_id, [Decision(call.tool_call_id, DecisionKind.CONFIRMED)],
                      actor="bob")
    after = world.runs.lifecycle.expire(run.run_id, stale)
    assert after.calls[call.tool_call_id].decision.decided_by == "bob"
    assert "DecisionExpired" not in [type(e).__name__ for e in world.app.run_events(run.id)]

    # The other way round: the expiry is saved first; the reviewer gets the expiry.
    other = world.start(("delete_table", {"name": "y"}))
    [call] = other.pending_calls()
    world.clock.tick(timedelta(minutes=11))
    stale = world.app.get_run(other.id)  # the reviewer's request has loaded the run ...
    world.runs.expire(other.run_id)  # ... when the expiry is saved
    reads = iter([stale])
    real_get_run = world.app.get_run
    monkeypatch.setattr(world.app, "get_run", lambda *args, **kw: next(reads, None)
                        or real_get_run(*args, **kw))
    with pytest.raises(ToolCallNotPending) as caught:
        world.runs.decide(other.run_id, [Decision(call.tool_call_id,
                                                  DecisionKind.CONFIRMED)], actor="bob")
    monkeypatch.undo()
    assert caught.value.decision.kind == "expired"
    assert RAN == []


def test_a_sweep_skips_what_the_read_model_names_but_was_decided_since(world: World) -> None:
    run = world.start(("delete_table", {"name": "x"}))
    world.projections.catch_up_all()  # the read model has the deadline ...
    [call] = run.pending_calls()
    world.runs.decide(run.run_id, [Decision(call.tool_call_id, DecisionKind.REJECTED)],
                      actor="bob")  # ... and is not told of the decision before the sweep
    world.clock.tick(timedelta(hours=1))
    [after] = world.sweeper.sweep()
    assert after.calls[call.tool_call_id].decision.decided_by == "bob"


def test_a_run_whose_agent_is_gone_is_logged_and_the_others_expire(
        world: World, caplog: pytest.LogCaptureFixture) -> None:
    first = world.start(("delete_table", {"name": "a"}))
    world.clock.tick(timedelta(seconds=1))
    second = world.start(("delete_table", {"name": "b"}))
    world.loop.agents = {}  # served no more: the first run cannot go on after its expiry
    runs = world.sweep(timedelta(hours=1))
    assert runs == []
    assert "could not settle run" in caplog.text
    # Each expiry was recorded before the run was to be driven on.
    for run in (first, second):
        assert world.app.get_run(run.id).calls_in(CallState.REJECTED)


@pytest.mark.parametrize(("options", "message"), [
    ({"decision_timeout": 60, "on_timeout": "approve"}, "safe=True"),
    ({"decision_timeout": 60, "on_timeout": "escalate"}, "escalate_to"),
    ({"decision_timeout": 60, "escalate_to": "leads"}, "escalate_to is only"),
    ({"on_timeout": "reject", "escalate_to": "x"}, "need a decision_timeout"),
    ({"on_timeout": "approve", "safe": True}, "need a decision_timeout"),
    ({"decision_timeout": 0}, "positive"),
    ({"decision_timeout": timedelta(seconds=-1)}, "positive"),
    ({"decision_timeout": "soon"}, "positive"),
    ({"decision_timeout": 60, "on_timeout": "ignore"}, "must be 'reject'"),
    ({"decision_timeout": 60, "on_timeout": "approve", "safe": True,
      "external_execution": True}, "cannot be approved"),
])
def test_a_tool_that_cannot_expire_as_declared_is_a_definition_error(
        options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tool(requires_confirmation=True, **options)(archive.fn)
