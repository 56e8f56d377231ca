"""Runs stored in the eventsourcing Application (in memory) and rebuilt from their events."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from eventsourcing.persistence import IntegrityError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.messages import chat_messages
from domain.errors import InvalidRunTransition, ToolCallNotPending
from domain.run import Run
from domain.values import RUN_CONFIRMATION_TOOL, CallState, Requirement, RunStatus
from service.runs import RunService
from tests.domain.given import DEADLINE, a_call, a_confirmation_call, a_user_input_call

TERMINAL = {CallState.REJECTED, CallState.ANSWERED, CallState.EXECUTED, CallState.FAILED,
            CallState.CANCELLED}


def new_app() -> RunService:
    app = RunService(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    assert app.describe() == {"persistence": "eventsourcing.popo"}
    return app


@pytest.fixture
def app() -> RunService:
    return new_app()


def state(run: Run) -> dict[str, Any]:
    """The run's domain state: everything but eventsourcing's private attributes."""
    return {k: v for k, v in vars(run).items() if not k.startswith("_")}


def start() -> Run:
    return Run.start(agent_id="travel", agent_name="Travel agent", user_id="u1",
                     session_id="s1", input="Book me a flight", instructions="Be brief.")


def ask(run: Run, *calls: dict[str, Any], content: str | None = None) -> None:
    run.record_model_response(
        model="gpt-test", provider="test", content=content, input_tokens=3, output_tokens=2,
        tool_calls=[{"id": c["tool_call_id"], "name": c["tool_name"], "args": c["tool_args"]}
                    for c in calls])
    for c in calls:
        run.request_tool_call(**c)


def versions(app: RunService, run: Run) -> list[int]:
    return [e.originator_version for e in app.repository.event_store.get(run.id)]


def a_full_story(run: Run):
    """Commands of a run with every kind of call and decision."""
    yield lambda: ask(run, a_call("c1"), a_confirmation_call("c2"),
                      a_call("c3", Requirement.EXTERNAL_EXECUTION),
                      a_user_input_call("c4", "seat"))
    yield run.pause
    yield lambda: run.confirm_tool("c2", decided_by="ann", approved_args={"to": "Bergen"},
                                   request_key="k1")
    yield lambda: run.provide_external_result("c3", decided_by="bot", result="42")
    yield lambda: run.provide_user_input("c4", decided_by="ann", values={"seat": "1A"})
    yield run.continue_run
    yield lambda: run.start_tool("c1", deadline=DEADLINE)
    yield lambda: run.start_tool("c2", deadline=DEADLINE)
    yield lambda: run.start_tool("c4", deadline=DEADLINE)
    yield lambda: run.record_tool_result("c1", "3 flights")
    yield lambda: run.mark_in_doubt("c2")
    yield lambda: run.record_tool_failure("c4", "no seat")
    yield run.pause
    yield lambda: run.confirm_tool("c2", decided_by="ann", note="again")
    yield run.continue_run
    yield lambda: run.start_tool("c2", deadline=DEADLINE)
    yield lambda: run.record_tool_result("c2", "booked")
    yield lambda: ask(run, content="Booked to Bergen.")
    yield lambda: run.complete("Booked to Bergen.")


# ------------------------------------------------------------ examples


def test_given_a_saved_run_when_it_is_read_back_then_its_state_is_the_same(app) -> None:
    run = start()
    for command in a_full_story(run):
        command()
    app.save(run)

    read = app.repository.get(run.id)

    assert state(read) == state(run)
    assert read.version == run.version
    assert isinstance(read.status, RunStatus) and read.status == RunStatus.COMPLETED
    assert chat_messages(read) == chat_messages(run)


def test_given_a_saved_run_when_it_is_read_at_a_version_then_it_is_the_state_after_n_events(
    app,
) -> None:
    run = start()
    after = {run.version: copy.deepcopy(state(run))}
    for command in a_full_story(run):
        command()  # ask() records several events: the state after its last one is kept
        after[run.version] = copy.deepcopy(state(run))
    app.save(run)

    for version, expected in after.items():
        assert state(app.repository.get(run.id, version=version)) == expected, version


def test_given_a_run_saved_in_steps_when_its_events_are_read_then_versions_have_no_gaps(
    app,
) -> None:
    run = start()
    app.save(run)
    for command in a_full_story(run):
        command()
        app.save(run)

    assert versions(app, run) == list(range(1, run.version + 1))


def test_given_two_readers_when_both_decide_the_same_call_then_only_the_first_is_stored(
    app,
) -> None:
    run = start()
    ask(run, a_confirmation_call("c1"))
    run.pause()
    app.save(run)
    ann, bob = app.repository.get(run.id), app.repository.get(run.id)
    ann.confirm_tool("c1", decided_by="ann")
    bob.reject_tool("c1", decided_by="bob")
    app.save(ann)

    with pytest.raises(IntegrityError):
        app.save(bob)

    fresh = app.repository.get(run.id)
    with pytest.raises(ToolCallNotPending) as raised:
        fresh.reject_tool("c1", decided_by="bob")
    assert raised.value.decision.decided_by == "ann"


def test_given_a_run_long_enough_to_be_snapshotted_when_it_is_read_then_it_still_works(
    app,
) -> None:
    run = start()
    for i in range(40):  # 4 events a turn: past the snapshotting interval of 100
        call_id = f"c{i}"
        ask(run, a_call(call_id))
        run.start_tool(call_id, deadline=DEADLINE)
        run.record_tool_result(call_id, "ok")
    ask(run, a_confirmation_call("last"))
    run.pause()
    app.save(run)
    assert app.snapshots is not None and list(app.snapshots.get(run.id))

    read = app.repository.get(run.id)
    at_snapshot = app.repository.get(run.id, version=100)

    assert state(read) == state(run)
    # The service's own load (a run shorter than the interval folded from its events in
    # one read; a longer one from its snapshot) gives what the repository gives.
    assert state(app.get_run(run.id)) == state(run)
    for version in (1, 57, 99, 100, 101, run.version - 1):
        loaded = app.get_run(run.id, version)
        assert loaded.version == version
        assert state(loaded) == state(app.repository.get(run.id, version=version)), version
    # Regression: a snapshot's JSON state gave back plain strings, and
    # ``status.is_final`` raised AttributeError on the restored run.
    assert isinstance(at_snapshot.status, RunStatus)
    at_snapshot.fail("a run read from its snapshot can still end")
    assert isinstance(read.status, RunStatus)
    assert all(isinstance(c.state, CallState) for c in read.calls.values())
    read.cancel(cancelled_by="ann")
    assert read.calls["last"].state == CallState.CANCELLED
    with pytest.raises(InvalidRunTransition):
        read.confirm_tool("last", decided_by="ann")


# ------------------------------------------------------------- property

KINDS = [None, Requirement.CONFIRMATION, Requirement.EXTERNAL_EXECUTION, Requirement.USER_INPUT]


def decide(run: Run, call: dict[str, Any], data: st.DataObject) -> None:
    """One valid decision, drawn from those the call accepts."""
    call_id = call.tool_call_id
    if call.state == CallState.IN_DOUBT:
        options = ["confirm", "reject", "result"]
    else:
        options = {Requirement.CONFIRMATION: ["confirm", "reject"],
                   Requirement.EXTERNAL_EXECUTION: ["result", "reject"],
                   Requirement.USER_INPUT: ["input", "reject"]}[Requirement(call.requires)]
    choice = data.draw(st.sampled_from(options), label=f"decision on {call_id}")
    if choice == "confirm":
        edited = call.editable_args and data.draw(st.booleans(), label="edit args")
        run.confirm_tool(call_id, decided_by="ann",
                         approved_args={"n": -1} if edited else None)
    elif choice == "reject":
        run.reject_tool(call_id, decided_by="ann",
                        reason=data.draw(st.none() | st.text(max_size=5), label="reason"))
    elif choice == "result":
        run.provide_external_result(call_id, decided_by="bot",
                                    result=data.draw(st.text(max_size=5), label="result"))
    else:
        run.provide_user_input(call_id, decided_by="ann", values={"seat": "1A"})


def decide_one_at_a_time(run: Run, data: st.DataObject) -> None:
    run.pause()
    order = data.draw(st.permutations([c.tool_call_id for c in run.pending_calls()]),
                      label="decision order")
    for i, call_id in enumerate(order):
        decide(run, run.calls[call_id], data)
        if i < len(order) - 1:
            with pytest.raises(InvalidRunTransition):
                run.continue_run()
    run.continue_run()


def play(app: RunService, data: st.DataObject) -> Run:
    """Drive a run through random valid commands, saving at the points the loop does."""
    run = start()
    if data.draw(st.booleans(), label="confirm before run"):
        run.request_tool_call(tool_call_id="confirm", tool_name=RUN_CONFIRMATION_TOOL,
                              tool_args={"message": run.input},
                              requires=Requirement.CONFIRMATION, editable_args=False)
        run.pause()
        app.save(run)
        if not data.draw(st.booleans(), label="run confirmed"):
            run.reject_tool("confirm", decided_by="ann")
            run.cancel(cancelled_by="ann")
            return run
        run.confirm_tool("confirm", decided_by="ann")
        run.continue_run()
    kinds = data.draw(st.lists(st.sampled_from(KINDS), min_size=1, max_size=3), label="calls")
    calls = [a_user_input_call(f"c{i}", "seat", args={"n": i})
             if kind == Requirement.USER_INPUT
             else a_call(f"c{i}", kind, args={"n": i},
                         editable_args=data.draw(st.booleans(), label="editable"))
             for i, kind in enumerate(kinds)]
    ask(run, *calls)
    if run.pending_calls():
        if data.draw(st.integers(0, 4), label="cancel while paused") == 0:
            run.pause()
            run.cancel(cancelled_by="ann")
            return run
        decide_one_at_a_time(run, data)
    app.save(run)
    while to_run := run.calls_in(CallState.APPROVED):
        for call in to_run:
            run.start_tool(call.tool_call_id, deadline=DEADLINE)
        app.save(run)
        for call in to_run:
            outcomes = ["ok", "error"] + (["doubt"] if call.attempts == 1 else [])
            outcome = data.draw(st.sampled_from(outcomes), label=f"{call.tool_call_id} ran")
            if outcome == "ok":
                run.record_tool_result(call.tool_call_id, "done")
            elif outcome == "error":
                run.record_tool_failure(call.tool_call_id, "boom")
            else:
                run.mark_in_doubt(call.tool_call_id)
        if run.pending_calls():
            decide_one_at_a_time(run, data)
        app.save(run)
    ask(run, content="All done.")
    run.complete("All done.")
    return run


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_given_random_valid_commands_when_the_run_is_replayed_then_it_matches_the_live_run(
    data: st.DataObject,
) -> None:
    app = new_app()
    run = play(app, data)
    app.save(run)

    stored = list(app.repository.event_store.get(run.id))
    assert [e.originator_version for e in stored] == list(range(1, run.version + 1))
    assert state(app.repository.get(run.id)) == state(run)
    assert run.status.is_final

    # Fold the stored events one at a time: a call, once in a terminal state, stays in it.
    folded: Run | None = None
    settled: dict[str, CallState] = {}
    for event in stored:
        folded = event.mutate(folded)
        for call_id, call in folded.calls.items():
            if call_id in settled:
                assert call.state == settled[call_id], (call_id, type(event).__name__)
            elif call.state in TERMINAL:
                settled[call_id] = call.state
    assert folded is not None and state(folded) == state(run)
    assert settled.keys() == run.calls.keys()  # every call ended in a terminal state
