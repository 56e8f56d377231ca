"""Group commit (service/commits.py): saves made while another is being written wait and
are then written together, in one transaction, on SQLite and PostgreSQL.

To make the grouping certain rather than likely, the first transaction is held open
(its insert waits on a gate) until the other saves have queued behind it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from eventsourcing.persistence import IntegrityError

from domain.run import Run
from service.config import Settings, eventsourcing_env
from service.runs import RunService


@pytest.fixture
def app(store_url: str) -> Iterator[RunService]:
    app = RunService(env=eventsourcing_env(Settings(database_url=store_url)))
    try:
        yield app
    finally:
        app.close()


def new_run(n: int) -> Run:
    return Run.start(agent_id="ops", agent_name="Ops", user_id=f"u{n}", session_id="s",
                     input=f"message {n}")


class Gate:
    """Wraps the recorder's insert: the first call waits until ``open()``; every call's
    batch size is kept."""

    def __init__(self, app: RunService) -> None:
        assert app.group_commit is not None
        self.group = app.group_commit
        self.insert = self.group.insert
        self.group.insert = self._insert
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.batches: list[int] = []

    def _insert(self, stored: Any, events: Any) -> Any:
        if not self.entered.is_set():
            self.entered.set()
            assert self.gate.wait(10)
        self.batches.append(len(stored))
        return self.insert(stored, events)

    def queued(self) -> int:
        with self.group._lock:
            return len(self.group._queue)


def save_in_threads(app: RunService, gate: Gate, runs: list[Run]) -> dict[int, Any]:
    """Save runs[0] first (it holds the gate), then the others while it waits; the
    outcome of each save (its recordings, or the exception it raised)."""
    outcomes: dict[int, Any] = {}

    def save(i: int) -> None:
        try:
            outcomes[i] = app.save(runs[i])
        except Exception as e:
            outcomes[i] = e

    first = threading.Thread(target=save, args=(0,))
    first.start()
    assert gate.entered.wait(10)
    others = [threading.Thread(target=save, args=(i,)) for i in range(1, len(runs))]
    for t in others:
        t.start()
    deadline = time.monotonic() + 10
    while gate.queued() < len(others) and time.monotonic() < deadline:
        time.sleep(0.001)
    gate.gate.set()
    for t in [first, *others]:
        t.join(10)
    return outcomes


def test_saves_queued_behind_a_transaction_are_written_together(app: RunService) -> None:
    gate = Gate(app)
    runs = [new_run(i) for i in range(9)]
    outcomes = save_in_threads(app, gate, runs)

    # The first save alone, then the eight that queued behind it in one transaction.
    assert gate.batches == [1, 8]
    for i, run in enumerate(runs):
        recordings = outcomes[i]
        assert not isinstance(recordings, Exception), recordings
        assert [r.domain_event.originator_id for r in recordings] == [run.id]
        assert app.get_run(run.id).input == f"message {i}"
    # Each save got its own positions in the log, in one unbroken run of positions.
    positions = sorted(r.notification.id for i in range(1, 9) for r in outcomes[i])
    assert positions == list(range(positions[0], positions[0] + 8))
    assert [n.id for n in app.recorder.select_notifications(1, 100)] == \
        sorted(r.notification.id for i in range(9) for r in outcomes[i])


def test_a_conflicting_save_fails_alone_and_the_rest_of_its_group_commits(
        app: RunService) -> None:
    taken = new_run(100)
    app.save(taken)
    # Another copy of the same run, changed as if by a request that read it too: its
    # event's version is taken by the save below.
    stale = app.get_run(taken.id)
    fresh = app.get_run(taken.id)
    fresh.cancel(cancelled_by="alice", reason="first")
    app.save(fresh)
    stale.cancel(cancelled_by="bob", reason="second")

    gate = Gate(app)
    runs = [new_run(0), new_run(1), stale, new_run(3)]
    outcomes = save_in_threads(app, gate, runs)

    assert isinstance(outcomes[2], IntegrityError)
    for i in (0, 1, 3):
        assert not isinstance(outcomes[i], Exception), outcomes[i]
        assert app.get_run(runs[i].id).version == 1
    # The group of three failed as one, then each was written on its own.
    assert gate.batches[:2] == [1, 3]
    assert sorted(gate.batches[2:]) == [1, 1, 1]
    # What stands for the contested run is the first cancel, nothing of the second.
    assert app.get_run(taken.id).cancelled_by == "alice"
    assert len(app.run_events(taken.id)) == 2


def test_without_group_commit_each_save_is_its_own_transaction(store_url: str) -> None:
    env = eventsourcing_env(Settings(database_url=store_url, group_commit=False))
    app = RunService(env=env)
    try:
        assert app.group_commit.max_group == 1
        run = new_run(0)
        app.save(run)
        assert app.get_run(run.id).input == "message 0"
    finally:
        app.close()
