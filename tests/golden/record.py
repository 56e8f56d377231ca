"""Records a golden history: the stored events of a fixed set of runs, made by the
version of signoff that runs this script, and what each run looked like after each of
its events.

    .venv/bin/python -m tests.golden.record NAME    # writes tests/golden/NAME/

A golden history is never re-recorded once committed: ``tests/golden/test_golden.py``
replays every one of them in every test run, so a change to the events that would make
an old history unreadable (or read differently) fails CI. Record a new one after each
change to the events, beside the old ones.

The runs cover every event type: each kind of decision, edited arguments, rejections
with and without reasons, a run confirmed before it starts, a tool that ends the run, a
failing tool, a failed run, a cancelled run, and a crash mid-tool that leaves a call in
doubt (decided afterwards). From v3 on, also calls decided by policies (allowed by a
rule of the settings or by the tool's function, held by them, held because a rule or a
function failed) and decisions that expire (rejected, approved, escalated then decided
by the group, escalated then expired again, escalated and still waiting):
``populate_policies_and_expiry``.
"""

from __future__ import annotations

import contextlib
import json
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from domain.run import Run
from domain.values import Decision, DecisionKind
from service.runs import RunService
from service.views import run_view
from tests.projections.scenario import (
    TOOL_TIMEOUT,
    FakeClock,
    SimulatedCrash,
    fake_time,
    new_loop,
)

HERE = Path(__file__).parent


def _json(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def record(name: str) -> Path:
    app = RunService(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    clock = FakeClock()
    ids = populate(app, clock)
    ids += populate_policies_and_expiry(app, clock)
    out = HERE / name
    out.mkdir(parents=True, exist_ok=False)
    with (out / "events.jsonl").open("w") as f:
        for n in app.recorder.select_notifications(1, 1_000_000):
            f.write(json.dumps({"originator_id": str(n.originator_id),
                                "originator_version": n.originator_version,
                                "topic": n.topic,
                                "state": json.loads(n.state)}, sort_keys=True) + "\n")
    expected = {}
    for run_id in ids:
        final = app.get_run(run_id)
        expected[run_id] = {
            "final": _json(run_view(final)),
            "versions": [_state(app.get_run(run_id, version=v))
                         for v in range(1, final.version + 1)],
        }
    (out / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
    return out


def populate(app: RunService, clock: FakeClock | None = None) -> list[str]:
    """Make the runs (12 of them) in ``app``; returns their ids in order of start."""
    clock = clock or FakeClock()
    runs = new_loop(app, clock)
    C, R = DecisionKind.CONFIRMED, DecisionKind.REJECTED
    E, U = DecisionKind.EXTERNAL_RESULT, DecisionKind.USER_INPUT
    ids: list[str] = []

    def start(agent: str, message: str, user: str | None = "alice") -> Run:
        clock.tick(timedelta(minutes=3))
        with contextlib.suppress(SimulatedCrash):
            runs.start(agent, message, user_id=user, session_id="golden",
                       observer=lambda run, _: ids.append(run.run_id)
                       if run.run_id not in ids else None)
        return app.get_run(ids[-1])

    def decide(run: Run, *decisions: Decision, actor: str = "bob") -> Run:
        clock.tick(timedelta(seconds=97))
        with contextlib.suppress(SimulatedCrash):
            runs.drive(runs.decide(run.run_id, list(decisions), actor=actor))
        return app.get_run(run.id)

    def pending(run: Run) -> list[str]:
        return [c.tool_call_id for c in run.pending_calls()]

    with fake_time(clock):
        # The seed's flow: confirmed, runs, completes.
        r = start("data_manager", "Delete 50 records from the users table")
        decide(r, Decision(pending(r)[0], C, note="checked"))
        # Confirmed with edited arguments.
        r = start("data_manager", 'call delete_records {"table_name": "logs", "count": 900}')
        decide(r, Decision(pending(r)[0], C, approved_args={"table_name": "logs", "count": 9}))
        # Rejected with a reason, and without one.
        r = start("data_manager", 'call delete_records {"table_name": "users", "count": 1}')
        decide(r, Decision(pending(r)[0], R, note="not today"), actor="carol")
        r = start("data_manager", 'call send_notification {"recipient": "ann", "message": "hi"}',
                  user=None)
        decide(r, Decision(pending(r)[0], R))
        # External result and user input, two calls decided one at a time.
        r = start("support_desk", 'call check_payment {"order_id": "o-1"}\n'
                  'call issue_refund {"order_id": "o-1", "amount": 12.5}')
        first, second = pending(r)
        r = decide(r, Decision(first, E, result="paid"))
        decide(r, Decision(second, U, values={"email": "ann@example.com"}))
        # Confirmed before the run starts; a tool that ends the run; a failing tool.
        r = start("gatekeeper", 'call slow_delete {"table_name": "tmp"}')
        r = decide(r, Decision(pending(r)[0], C))
        decide(r, Decision(pending(r)[0], C))
        r = start("ops", 'call archive_table {"table_name": "old"}')
        decide(r, Decision(pending(r)[0], C))
        start("ops", 'call failing_tool {"name": "x"}')
        # Cancelled while paused, with a reason.
        r = start("ops", 'call transfer_money {"account": "acct-9", "amount": 5}')
        clock.tick(timedelta(hours=7))
        runs.cancel(r.run_id, actor="carol", reason="duplicate")
        # A crash while a tool runs: in doubt after its deadline, then rejected.
        r = start("crashing", 'call wire_funds {"account": "acct-9", "crash": true}')
        r = decide(r, Decision(pending(r)[0], C))
        clock.tick(timedelta(seconds=TOOL_TIMEOUT + 1))
        r = runs.settle(r.run_id)
        decide(r, Decision(pending(r)[0], R, note="ran twice before"))
        # A run that fails (as when the model cannot be reached).
        clock.tick(timedelta(minutes=1))
        failed = Run.start(agent_id="ops", agent_name="Ops", user_id="alice",
                           session_id="golden", input="call refresh_cache")
        failed.fail("model unavailable: connection refused")
        app.save(failed)
        ids.append(failed.run_id)
        # A run left paused.
        start("support_desk", 'call check_payment {"order_id": "o-2"}', user="bob")

    return ids


def populate_policies_and_expiry(app: RunService, clock: FakeClock) -> list[str]:
    """The runs (10 of them) of the policed agent (``tests/projections/scenario.py``):
    its tools' policies, the scenario's rules, and its deadlines."""
    runs = new_loop(app, clock)
    C, R = DecisionKind.CONFIRMED, DecisionKind.REJECTED
    ids: list[str] = []

    def start(message: str) -> Run:
        clock.tick(timedelta(minutes=2))
        run = runs.start("policed", message, user_id="dana", session_id="golden-v3")
        ids.append(run.run_id)
        return run

    def decide(run: Run, kind: DecisionKind, actor: str = "bob") -> Run:
        clock.tick(timedelta(seconds=41))
        call = run.pending_calls()[0].tool_call_id
        return runs.drive(runs.decide(run.run_id, [Decision(call, kind)], actor=actor))

    def expire(run: Run, after: timedelta) -> Run:
        clock.tick(after)
        return runs.expire(run.run_id)

    with fake_time(clock):
        start('call pay {"account": "acct-1", "amount": 1}')  # allowed: a settings rule
        start('call pay {"account": "acct-1", "amount": 50}')  # allowed: the tool's function
        decide(start('call pay {"account": "acct-1", "amount": 500}'), C)  # held by it
        decide(start('call pay {"account": "acct-9", "amount": 50}'), R)  # a rule failed
        decide(start('call flag {"item": "users"}'), C, actor="carol")  # a function raised
        expire(start('call warm_cache {"name": "home"}'), timedelta(minutes=11))  # approved
        expire(start('call fetch_quote {"symbol": "ACME"}'), timedelta(hours=1))  # rejected
        r = expire(start('call purge {"bucket": "tmp"}'), timedelta(hours=2))  # escalated
        decide(r, C, actor="lead-lee")  # ... and decided by the group
        r = expire(start('call purge {"bucket": "old"}'), timedelta(hours=2))
        expire(r, timedelta(hours=2))  # ... escalated, then expired again
        expire(start('call purge {"bucket": "keep"}'), timedelta(hours=2))  # still waiting
    return ids


def _state(run: Run) -> dict[str, Any]:
    """The parts of a run's state a replay must reproduce at every version."""
    return _json({"status": str(run.status),
                  "pending": [c.tool_call_id for c in run.pending_calls()],
                  "calls": {k: str(c.state) for k, c in run.calls.items()},
                  "content": run.content})


if __name__ == "__main__":
    print(record(sys.argv[1]))
