"""Every golden history (``tests/golden/*/``, recorded by ``record.py`` with an earlier
version of signoff) still replays, through today's events and upcasters, to exactly the
states it had when it was recorded."""

from __future__ import annotations

import json
from pathlib import Path
from uuid import UUID

import pytest
from eventsourcing.persistence import StoredEvent

from projections.runner import Projections
from service import audit
from service.config import Settings, eventsourcing_env
from service.runs import RunService
from service.views import run_view
from tests.golden.record import _json, _state
from tests.projections.scenario import assert_matches_fold

HISTORIES = sorted(p.parent for p in Path(__file__).parent.glob("*/events.jsonl"))


def load(history: Path) -> RunService:
    app = RunService(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    with (history / "events.jsonl").open() as f:
        for line in f:
            e = json.loads(line)
            app.recorder.insert_events([StoredEvent(
                originator_id=UUID(e["originator_id"]),
                originator_version=e["originator_version"],
                topic=e["topic"],
                state=json.dumps(e["state"]).encode())])
    return app


def assert_holds(recorded: object, now: object, where: str) -> None:
    """Everything recorded is still there with the same value; a view may have gained
    fields since (a new field is not a different history)."""
    if isinstance(recorded, dict) and isinstance(now, dict):
        for key, value in recorded.items():
            assert key in now, f"{where}: {key!r} is gone"
            assert_holds(value, now[key], f"{where}.{key}")
    elif isinstance(recorded, list) and isinstance(now, list):
        assert len(recorded) == len(now), f"{where}: {len(recorded)} items, now {len(now)}"
        for i, (a, b) in enumerate(zip(recorded, now, strict=True)):
            assert_holds(a, b, f"{where}[{i}]")
    else:
        assert recorded == now, f"{where}: {recorded!r}, now {now!r}"


def test_there_are_golden_histories() -> None:
    assert HISTORIES, "no golden histories found"


@pytest.mark.parametrize("history", HISTORIES, ids=[h.name for h in HISTORIES])
def test_golden_history_replays_to_the_recorded_states(history: Path) -> None:
    app = load(history)
    expected = json.loads((history / "expected.json").read_text())
    assert len(expected) >= 12
    for run_id, want in expected.items():
        run = app.get_run(run_id)
        assert_holds(want["final"], _json(run_view(run)), run_id)
        for version, state in enumerate(want["versions"], start=1):
            assert _state(app.get_run(run_id, version=version)) == state, (run_id, version)


@pytest.mark.parametrize("history", HISTORIES, ids=[h.name for h in HISTORIES])
def test_golden_history_verifies(history: Path) -> None:
    """v1 predates the hash chain: its events read as unchained (upcast with no hash);
    every later history verifies with every event chained."""
    app = load(history)
    report = audit.verify_log(app)
    assert report.intact, report.as_dict()
    assert report.unchained == (report.events if history.name == "v1" else 0)


def test_a_v1_run_continued_today_chains_its_new_events() -> None:
    app = load(Path(__file__).parent / "v1")
    expected = json.loads((Path(__file__).parent / "v1" / "expected.json").read_text())
    paused = next(r for r, want in expected.items() if want["final"]["status"] == "PAUSED")
    run = app.get_run(paused)
    old = run.version
    call = run.pending_calls()[0].tool_call_id
    run.provide_external_result(call, decided_by="bob", result="paid")
    run.continue_run()
    app.save(run)
    report = audit.verify_run(app, paused)
    assert report.intact and report.unchained == old and report.events == old + 2
    new = app.run_events(paused)[old:]
    assert all(e.hash for e in new)


@pytest.mark.parametrize("history", HISTORIES, ids=[h.name for h in HISTORIES])
def test_golden_history_projects_to_what_the_fold_says(history: Path, tmp_path: Path) -> None:
    """Today's read models over an old log (fields added since read as their defaults)
    equal the independent fold's."""
    app = load(history)
    env = eventsourcing_env(Settings(database_url=f"sqlite:///{tmp_path / 'views.db'}"))
    projections = Projections(app, env)
    try:
        projections.catch_up_all()
        assert_matches_fold(projections, app)
    finally:
        projections.close()


def test_a_v3_escalated_call_is_decided_today_by_its_group() -> None:
    app = load(Path(__file__).parent / "v3")
    expected = json.loads((Path(__file__).parent / "v3" / "expected.json").read_text())
    [waiting] = [r for r, want in expected.items() if want["final"]["status"] == "PAUSED"
                 and want["final"]["agent_id"] == "policed"]
    run = app.get_run(waiting)
    [call] = run.pending_calls()
    assert call.escalated_to == "leads" and call.expires_at is not None
    run.confirm_tool(call.tool_call_id, decided_by="lead-lee")
    run.continue_run()
    app.save(run)
    assert audit.verify_run(app, waiting).intact
