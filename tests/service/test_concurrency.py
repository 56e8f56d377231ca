"""Several workers over one PostgreSQL database decide the same tool call.

Each worker is its own eventsourcing Application (its own connection pool), as in
``signoff serve --workers N`` or several hosts. Optimistic concurrency on the stored
version lets exactly one decision in: the other save raises ``IntegrityError`` and
stores nothing of its batch.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from eventsourcing.persistence import IntegrityError

from agent.loop import AgentLoop, load_agents
from agent.models.offline import OfflineModel
from domain.errors import ToolCallNotPending
from domain.run import Run
from domain.values import CallState, Decision, DecisionKind, Requirement, RunStatus
from service.config import Settings, eventsourcing_env
from service.runs import RunService
from tests.support.postgres import PgServer
from tests.support.runs import Runs
from tests.support.server import LiveServer, live_server

pytestmark = pytest.mark.postgres

T = TypeVar("T")
CALL = "call_1"


@pytest.fixture
def workers(pg_database: PgServer) -> Iterator[tuple[RunService, RunService]]:
    """Two Application objects (two workers) over one PostgreSQL database."""
    env = eventsourcing_env(Settings(database_url=pg_database.url, postgres_pool_size=2))
    a, b = RunService(env=env), RunService(env=env)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def paused_run(app: RunService) -> Run:
    run = Run.start(agent_id="ops", agent_name="Ops", user_id="u1", session_id="s1",
                    input='call slow_delete {"table_name": "users"}')
    run.record_model_response(model="offline", provider="signoff", content=None,
                              tool_calls=[{"id": CALL, "name": "slow_delete",
                                           "args": {"table_name": "users"}}])
    run.request_tool_call(tool_call_id=CALL, tool_name="slow_delete",
                          tool_args={"table_name": "users"},
                          requires=Requirement.CONFIRMATION)
    run.pause()
    app.save(run)
    return run


def worker_runs(*apps: RunService) -> list[Runs]:
    """A run lifecycle per worker, each over its own Application, as ``signoff serve``
    builds one per process."""
    agents = load_agents(["tests.support.agents"])
    return [Runs(app, AgentLoop(agents, OfflineModel())) for app in apps]


def close(*runs: Runs) -> None:
    for r in runs:
        r.loop.close()


def event_types(app: RunService, run: Run) -> list[str]:
    evs = app.run_events(run.id)
    assert [e.originator_version for e in evs] == list(range(1, len(evs) + 1))
    return [type(e).__name__ for e in evs]


def together(*fns: Callable[[], T]) -> list[T | BaseException]:
    """Call each function in its own thread, released at once by a barrier."""
    barrier = threading.Barrier(len(fns))
    out: list[T | BaseException | None] = [None] * len(fns)

    def worker(i: int) -> None:
        barrier.wait(30)
        try:
            out[i] = fns[i]()
        except BaseException as e:  # returned to the test
            out[i] = e

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    return out  # type: ignore[return-value]


# ------------------------------------------------------ two Application objects

def test_second_worker_saving_the_same_version_gets_integrity_error(
        workers: tuple[RunService, RunService]) -> None:
    a, b = workers
    run = paused_run(a)
    in_a, in_b = a.get_run(run.id), b.get_run(run.id)
    assert in_a.version == in_b.version == run.version

    in_a.confirm_tool(CALL, decided_by="alice")
    in_a.continue_run()
    in_b.confirm_tool(CALL, decided_by="bob")
    in_b.continue_run()
    a.save(in_a)
    with pytest.raises(IntegrityError):
        b.save(in_b)

    for app in (a, b):  # both workers read the same history: alice's decision only
        types = event_types(app, run)
        assert types.count("ToolConfirmed") == 1
        assert types.count("RunContinued") == 1
        assert types[-2:] == ["ToolConfirmed", "RunContinued"]
        fresh = app.get_run(run.id)
        assert fresh.calls[CALL].decision.decided_by == "alice"
        assert fresh.status == RunStatus.RUNNING

    # The loser reloads and checks the rule again: the call is no longer pending.
    again = b.get_run(run.id)
    with pytest.raises(ToolCallNotPending) as e:
        again.confirm_tool(CALL, decided_by="bob")
    assert e.value.decision is not None
    assert e.value.decision.decided_by == "alice"


def test_two_workers_deciding_at_once_record_one_decision(
        workers: tuple[RunService, RunService]) -> None:
    a, b = workers
    sides = worker_runs(a, b)
    try:
        for _ in range(3):
            run = paused_run(a)
            run_id = str(run.id)
            results = together(*(
                functools.partial(side.decide, run_id, [Decision(CALL, DecisionKind.CONFIRMED)],
                                  actor=who)
                for side, who in zip(sides, ("alice", "bob"), strict=True)))

            won = [r for r in results if isinstance(r, Run)]
            lost = [r for r in results if not isinstance(r, Run)]
            assert len(won) == 1 and len(lost) == 1, results
            assert isinstance(lost[0], ToolCallNotPending), repr(lost[0])
            winner = won[0].calls[CALL].decision.decided_by
            assert lost[0].decision is not None
            assert lost[0].decision.decided_by == winner
            assert lost[0].decision.kind == "confirmed"

            types = event_types(b, run)
            assert types.count("ToolConfirmed") == 1
            assert types[-2:] == ["ToolConfirmed", "RunContinued"]
            assert b.get_run(run.id).calls[CALL].state == CallState.APPROVED
    finally:
        close(*sides)


def test_two_workers_deciding_and_driving_at_once_run_the_tool_once(
        workers: tuple[RunService, RunService]) -> None:
    """``decide(drive=True)`` (a continue with stream=false) commits the decision with
    the tool's start: exactly one decision goes in, its tool runs once, the other gets
    the winner's decision."""
    a, b = workers
    sides = worker_runs(a, b)
    saves: list[list[str]] = []  # the event types of each save that committed
    for app in (a, b):
        app.on_commit.append(lambda _objs, recordings: saves.append(
            [type(r.domain_event).__name__ for r in recordings]))
    try:
        for _ in range(3):
            run = paused_run(a)
            saves.clear()
            results = together(*(
                functools.partial(side.decide, str(run.id),
                                  [Decision(CALL, DecisionKind.CONFIRMED)], actor=who,
                                  drive=True)
                for side, who in zip(sides, ("alice", "bob"), strict=True)))

            won = [r for r in results if isinstance(r, Run)]
            lost = [r for r in results if not isinstance(r, Run)]
            assert len(won) == 1 and len(lost) == 1, results
            assert isinstance(lost[0], ToolCallNotPending), repr(lost[0])
            assert won[0].status == RunStatus.COMPLETED
            winner = won[0].calls[CALL].decision.decided_by
            assert lost[0].decision is not None
            assert lost[0].decision.decided_by == winner

            types = event_types(b, run)
            assert [t for t in types if t.startswith("Tool")] == [
                "ToolCallRequested", "ToolConfirmed", "ToolExecutionStarted", "ToolExecuted"]
            assert types[-1] == "RunCompleted"
            # The decision and the tool's start were committed in one save, then the
            # outcome, then the model's answer and the end.
            assert saves == [["ToolConfirmed", "RunContinued", "ToolExecutionStarted"],
                             ["ToolExecuted"], ["ModelResponded", "RunCompleted"]]
    finally:
        close(*sides)


def test_worker_that_loaded_before_the_other_commit_answers_with_the_winner(
        workers: tuple[RunService, RunService], monkeypatch: pytest.MonkeyPatch) -> None:
    """The exact interleaving: B reads, A commits, B saves (IntegrityError), B rereads."""
    a, b = workers
    runs_a, runs_b = worker_runs(a, b)
    try:
        run = paused_run(a)
        stale = b.get_run(run.id)  # B has read the run ...
        runs_a.decide(str(run.id), [Decision(CALL, DecisionKind.REJECTED, note="no")],
                      actor="alice")  # ... when A commits its decision
        reads = iter([stale])
        real_get_run = b.get_run
        monkeypatch.setattr(b, "get_run", lambda *args, **kw: next(reads, None)
                            or real_get_run(*args, **kw))
        with pytest.raises(ToolCallNotPending) as e:
            runs_b.decide(str(run.id), [Decision(CALL, DecisionKind.CONFIRMED)], actor="bob")
        assert e.value.decision is not None
        assert (e.value.decision.kind, e.value.decision.decided_by) == ("rejected",
                                                                              "alice")
        types = event_types(a, run)
        assert types.count("ToolRejected") == 1
        assert "ToolConfirmed" not in types
    finally:
        close(runs_a, runs_b)


def test_loser_whose_winner_already_ended_the_run_gets_the_standing_decision(
        workers: tuple[RunService, RunService]) -> None:
    """Regression: B decided on what it read (PAUSED); by the time B reloaded the
    run, A had confirmed it and driven it to COMPLETED. B got ``InvalidRunTransition``
    ("cannot decide: the run is COMPLETED"): a 409 without the standing decision, and a
    retry carrying the winner's Idempotency-Key got 409 instead of 200."""
    a, b = workers
    runs_a, runs_b = worker_runs(a, b)
    try:
        run = paused_run(a)
        won = runs_a.drive(runs_a.decide(str(run.id), [Decision(CALL, DecisionKind.CONFIRMED)],
                                         actor="alice", request_key="k-a"))
        assert won.status == RunStatus.COMPLETED
        with pytest.raises(ToolCallNotPending) as e:
            runs_b.decide(str(run.id), [Decision(CALL, DecisionKind.CONFIRMED)], actor="bob")
        assert e.value.decision is not None
        assert (e.value.decision.decided_by, e.value.decision.request_key) == (
            "alice", "k-a")
        assert event_types(b, run).count("ToolConfirmed") == 1
    finally:
        close(runs_a, runs_b)


# ------------------------------------------------------- two uvicorn processes

@pytest.fixture
def two_servers(pg_database: PgServer, tmp_path: Path) -> Iterator[list[LiveServer]]:
    """Two ``signoff serve`` processes over one PostgreSQL database."""
    with live_server(pg_database.url, tmp_path / "a.log") as one, \
            live_server(pg_database.url, tmp_path / "b.log") as two:
        yield [one, two]


def _race_continue(servers: list[LiveServer], run_id: str, tools: str, n: int,
                   key: str | None = None) -> list[httpx.Response]:
    headers = {"Idempotency-Key": key} if key else {}
    clients = [servers[i % len(servers)].client() for i in range(n)]
    try:
        for c in clients:
            assert c.get("/health").status_code == 200  # connected before the race
        answers = together(*(
            (lambda c=c: c.post(f"/agents/ops/runs/{run_id}/continue",
                                data={"tools": tools, "stream": "false"}, headers=headers))
            for c in clients))
    finally:
        for c in clients:
            c.close()
    assert all(isinstance(a, httpx.Response) for a in answers), answers
    return answers  # type: ignore[return-value]


def _start(server: LiveServer) -> tuple[str, str]:
    with server.client() as c:
        r = c.post("/agents/ops/runs", data={
            "message": 'call slow_delete {"table_name": "users"}', "stream": "false"})
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    assert out["status"] == "PAUSED"
    return out["run_id"], json.dumps([{**t, "confirmed": True} for t in out["tools"]])


def _stored_types(server: LiveServer, run_id: str) -> list[str]:
    with server.client() as c:
        evs = c.get(f"/runs/{run_id}/events").json()
    assert [e["version"] for e in evs] == list(range(1, len(evs) + 1))
    return [e["type"] for e in evs]


def test_two_server_processes_racing_confirmations_record_one(
        two_servers: list[LiveServer]) -> None:
    run_id, tools = _start(two_servers[0])
    answers = _race_continue(two_servers, run_id, tools, n=10)

    codes = sorted(a.status_code for a in answers)
    assert codes == [200] + [409] * 9, [(a.status_code, a.text) for a in answers]
    [won] = [a for a in answers if a.status_code == 200]
    assert won.json()["status"] == "COMPLETED"
    assert {a.json()["decision"]["kind"] for a in answers if a.status_code == 409} == {
        "confirmed"}
    for server in two_servers:  # both processes read the same history
        types = _stored_types(server, run_id)
        assert types.count("ToolConfirmed") == 1
        assert types.count("ToolExecuted") == 1
        assert types[-1] == "RunCompleted"


def test_two_server_processes_with_one_idempotency_key(
        two_servers: list[LiveServer]) -> None:
    run_id, tools = _start(two_servers[1])
    answers = _race_continue(two_servers, run_id, tools, n=10, key="k-1")

    assert [a.status_code for a in answers] == [200] * 10, [a.text for a in answers]
    assert "COMPLETED" in {a.json()["status"] for a in answers}
    types = _stored_types(two_servers[0], run_id)
    assert types.count("ToolConfirmed") == 1
    assert types[-1] == "RunCompleted"


@pytest.mark.postgres
def test_workers_starting_together_on_one_postgresql_all_come_up(pg_database: PgServer) -> None:
    """Each start creates the tables and eventsourcing's insert function if missing; on
    the catalog, concurrent starts collide ("tuple concurrently updated"): build_app
    tries again, so every worker comes up."""
    from bootstrap import build_app

    settings = Settings(database_url=pg_database.url)
    build_app(settings).close()
    for _ in range(3):
        errors: list[BaseException] = []

        def start(errors: list[BaseException] = errors) -> None:
            try:
                build_app(settings).close()
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=start) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
