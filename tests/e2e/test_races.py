"""Races over HTTP: many requests decide the same tool call at the same moment.

Exactly one decision is recorded. The losers get 409 with the decision that stands,
unless they carry the ``Idempotency-Key`` of the winning request: then they get 200.
Runs on SQLite and on a throwaway PostgreSQL (the ``server`` fixture).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from typing import Any
from uuid import UUID

import httpx
import pytest

from service.config import Settings, eventsourcing_env
from service.runs import RunService
from tests.support.server import LiveServer

pytestmark = pytest.mark.e2e

N = 20
DELETE = 'call slow_delete {"table_name": "users"}'


# ------------------------------------------------------------------ helpers

def start_paused_run(server: LiveServer) -> tuple[str, list[dict[str, Any]]]:
    with server.client() as c:
        r = c.post("/agents/ops/runs", data={"message": DELETE, "stream": "false"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["status"] == "PAUSED"
    return out["run_id"], out["tools"]


def decided(tools: list[dict[str, Any]], confirmed: bool, note: str | None = None) -> str:
    return json.dumps([{**t, "confirmed": confirmed, "confirmation_note": note} for t in tools])


def race(servers: list[LiveServer], requests: list[Callable[[httpx.Client], httpx.Response]],
         ) -> list[httpx.Response]:
    """Send the requests from one thread each, released together by a barrier; the
    i-th goes to ``servers[i % len(servers)]``. Answers in the order of ``requests``."""
    barrier = threading.Barrier(len(requests))
    answers: list[httpx.Response | BaseException | None] = [None] * len(requests)

    def worker(i: int) -> None:
        try:
            with servers[i % len(servers)].client() as c:
                c.get("/health")  # connect before the barrier: the race is in the service
                barrier.wait(30)
                answers[i] = requests[i](c)
        except BaseException as e:  # reported below
            answers[i] = e

    threads = [threading.Thread(target=worker, args=(i,), daemon=True)
               for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(isinstance(a, httpx.Response) for a in answers), answers
    return answers  # type: ignore[return-value]


def confirm(run_id: str, tools: str, key: str | None = None,
            ) -> Callable[[httpx.Client], httpx.Response]:
    headers = {"Idempotency-Key": key} if key else {}

    def send(c: httpx.Client) -> httpx.Response:
        return c.post(f"/agents/ops/runs/{run_id}/continue",
                      data={"tools": tools, "stream": "false"}, headers=headers)

    return send


@pytest.fixture
def store(store_url: str) -> Iterator[RunService]:
    """The store itself, read directly (not through the API under test)."""
    app = RunService(env=eventsourcing_env(Settings(database_url=store_url,
                                                    postgres_pool_size=1)))
    try:
        yield app
    finally:
        app.close()


def stored(store: RunService, run_id: str) -> list[str]:
    """The run's event types as stored, checking that versions are 1..N."""
    evs = list(store.repository.event_store.get(UUID(run_id)))
    assert [e.originator_version for e in evs] == list(range(1, len(evs) + 1))
    return [type(e).__name__ for e in evs]


def by_status(answers: list[httpx.Response]) -> dict[int, list[httpx.Response]]:
    out: dict[int, list[httpx.Response]] = {}
    for a in answers:
        out.setdefault(a.status_code, []).append(a)
    return out


# -------------------------------------------------------------------- tests

def test_concurrent_confirmations_record_one_decision(
        server: LiveServer, store: RunService) -> None:
    run_id, tools = start_paused_run(server)
    answers = race([server], [confirm(run_id, decided(tools, True))] * N)

    groups = by_status(answers)
    assert sorted(groups) == [200, 409], [(a.status_code, a.text) for a in answers]
    [won] = groups[200]
    assert len(groups[409]) == N - 1
    assert won.json()["status"] == "COMPLETED"
    assert won.json()["content"] == "Done. Dropped users"
    decisions = [a.json()["decision"] for a in groups[409]]
    assert all(a.headers["content-type"] == "application/problem+json" for a in groups[409])
    assert {d["kind"] for d in decisions} == {"confirmed"}
    assert len({(d["version"], d["decided_at"]) for d in decisions}) == 1  # the same one

    types = stored(store, run_id)
    assert types.count("ToolConfirmed") == 1
    assert types.count("ToolExecutionStarted") == 1
    assert types.count("ToolExecuted") == 1
    assert types[-1] == "RunCompleted"


def test_concurrent_retries_with_one_idempotency_key_all_succeed(
        server: LiveServer, store: RunService) -> None:
    run_id, tools = start_paused_run(server)
    key = "retry-7f3a"
    answers = race([server], [confirm(run_id, decided(tools, True), key)] * N)

    assert [a.status_code for a in answers] == [200] * N, [a.text for a in answers]
    bodies = [a.json() for a in answers]
    assert {b["run_id"] for b in bodies} == {run_id}
    assert all(b["tools"][0]["confirmed"] is True for b in bodies)
    # The request that decided drove the run to its end; a repeat answers with the run as
    # it is when the repeat is read (possibly still running the tool), never re-deciding.
    assert "COMPLETED" in {b["status"] for b in bodies}
    assert {b["status"] for b in bodies} <= {"RUNNING", "COMPLETED"}
    types = stored(store, run_id)
    assert types.count("ToolConfirmed") == 1
    assert types[-1] == "RunCompleted"

    # A retry after the run completed: the completed run, and nothing new is recorded.
    with server.client() as c:
        again = confirm(run_id, decided(tools, True), key)(c)
        assert again.status_code == 200, again.text
        assert again.json()["status"] == "COMPLETED"
        assert again.json()["content"] == "Done. Dropped users"
        assert stored(store, run_id) == types

        # The same request with another key is a new decision on a decided call: 409.
        other = confirm(run_id, decided(tools, True), "another-key")(c)
        assert other.status_code == 409, other.text
        assert other.json()["decision"]["request_key"] == key
    assert stored(store, run_id) == types


def test_confirm_and_reject_racing_one_wins(server: LiveServer, store: RunService) -> None:
    winners = []
    for attempt in range(4):  # a few rounds, each on a new run, in both sending orders
        run_id, tools = start_paused_run(server)
        confirming = confirm(run_id, decided(tools, True))
        rejecting = confirm(run_id, decided(tools, False, note="not today"))
        answers = race([server], [confirming, rejecting][::1 if attempt % 2 else -1])

        groups = by_status(answers)
        assert sorted(groups) == [200, 409], [(a.status_code, a.text) for a in answers]
        [won], [lost] = groups[200], groups[409]
        confirmed = won.json()["tools"][0]["confirmed"]
        winners.append(confirmed)
        assert won.json()["status"] == "COMPLETED"
        assert won.json()["content"] == ("Done. Dropped users" if confirmed
                                         else "Done. not today")
        assert lost.json()["decision"]["kind"] == ("confirmed" if confirmed else "rejected")

        types = stored(store, run_id)
        assert types.count("ToolConfirmed") + types.count("ToolRejected") == 1
        assert types.count("ToolConfirmed" if confirmed else "ToolRejected") == 1
        assert types.count("ToolExecuted") == (1 if confirmed else 0)
        assert types[-1] == "RunCompleted"
