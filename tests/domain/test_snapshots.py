"""Snapshots of a run (the application takes one every 100 events): a run loads from one
as it was, also from a snapshot stored while a run held its tool calls as plain dicts
(``snapshot_v1.json``, written by that version of signoff: version 1 of ``Run``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import StoredEvent

from domain.calls import Expiry, PolicyOutcome, ToolCall
from domain.errors import ToolCallNotPending
from domain.run import Run
from domain.values import (
    CallState,
    DecisionKind,
    PolicyVerdict,
    RecordedDecision,
    TimeoutAction,
)
from service.runs import RunService
from service.views import run_view
from tests.domain.given import a_confirmation_call, a_run_paused_on

V1 = json.loads((Path(__file__).parent / "snapshot_v1.json").read_text())


def new_app() -> RunService:
    return RunService(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})


def stored(snapshot: dict[str, Any]) -> StoredEvent:
    return StoredEvent(originator_id=UUID(snapshot["originator_id"]),
                       originator_version=snapshot["originator_version"],
                       topic=snapshot["topic"], state=json.dumps(snapshot["state"]).encode())


def as_json(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def holds(recorded: Any, now: Any) -> bool:
    """Everything recorded is still there, with the same value (a view may gain keys)."""
    if isinstance(recorded, dict) and isinstance(now, dict):
        return all(k in now and holds(v, now[k]) for k, v in recorded.items())
    if isinstance(recorded, list) and isinstance(now, list):
        return len(recorded) == len(now) and all(map(holds, recorded, now))
    return bool(recorded == now)


@pytest.fixture
def v1_run() -> Run:
    app = new_app()
    assert app.snapshots is not None
    app.snapshots.recorder.insert_events([stored(V1)])
    run = app.repository.get(UUID(V1["originator_id"]))
    assert isinstance(run, Run) and run.version == V1["originator_version"]
    return run


def test_a_snapshot_from_before_typed_calls_loads_its_calls_as_values(v1_run: Run) -> None:
    run = v1_run

    assert all(isinstance(c, ToolCall) for c in run.calls.values())
    assert {i: c.state for i, c in run.calls.items()} == {
        "ran": CallState.EXECUTED, "confirmed": CallState.APPROVED,
        "rejected": CallState.REJECTED, "input": CallState.APPROVED,
        "escalated": CallState.PENDING}
    ran, confirmed = run.calls["ran"], run.calls["confirmed"]
    assert (ran.result, ran.attempts) == ("found", 1)
    assert ran.started_at is not None and ran.outcome_at is not None
    assert isinstance(confirmed.decision, RecordedDecision)
    assert (confirmed.decision.kind, confirmed.decision.decided_by, confirmed.decision.note,
            confirmed.decision.request_key, confirmed.decision.version) == (
        DecisionKind.CONFIRMED, "ann", "ok", "k1", 11)
    assert confirmed.args == {"to": "Bergen"}
    assert confirmed.policy == PolicyOutcome("settings:book", PolicyVerdict.REQUIRED,
                                             "costs money")
    assert run.calls["rejected"].decision.reason == "too much"
    assert run.calls["input"].args == {"row": 1, "seat": "12A"}
    escalated = run.calls["escalated"]
    assert (escalated.escalated_to, escalated.on_timeout) == ("leads", TimeoutAction.REJECT)
    [expiry] = escalated.expiries
    assert isinstance(expiry, Expiry)
    assert expiry.expired_at == datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def test_a_snapshot_from_before_typed_calls_shows_the_run_as_it_was_shown(
        v1_run: Run) -> None:
    assert holds(V1["view"], as_json(run_view(v1_run)))


def test_a_run_loaded_from_a_snapshot_from_before_typed_calls_takes_commands(
        v1_run: Run) -> None:
    run = v1_run
    with pytest.raises(ToolCallNotPending) as raised:
        run.reject_tool("confirmed", decided_by="bob")
    assert raised.value.decision == run.calls["confirmed"].decision

    run.confirm_tool("escalated", decided_by="lead-lee")
    run.continue_run()

    assert run.calls["escalated"].state == CallState.APPROVED
    assert run.pending_calls() == []


def test_a_snapshot_taken_now_holds_typed_calls_and_loads_them_as_they_were() -> None:
    app = new_app()
    run = a_run_paused_on(a_confirmation_call("c1"), a_confirmation_call("c2"))
    run.confirm_tool("c1", decided_by="ann", approved_args={"to": "Bergen"})
    app.save(run)

    snapshot = app.mapper.to_stored_event(Run.Snapshot.take(run))
    state = json.loads(snapshot.state)["state"]
    assert state["class_version"] == 2
    assert state["calls"]["c1"]["_type_"] == "tool_call"  # the application's transcoding
    assert app.snapshots is not None
    app.snapshots.recorder.insert_events([snapshot])

    loaded = app.repository.get(run.id)
    assert loaded.calls == run.calls
    assert loaded.status == run.status and loaded.chain_head == run.chain_head
