"""Stores full of realistic runs, written fast; dumps of the projections' tables.

``realistic_events`` drives runs through the lifecycle and ``AgentLoop`` (offline model) on an
in-memory store: every kind of pause, decisions of every kind by several actors,
cancels, runs left paused. ``copy_events`` then writes those events into a real store in
large transactions (thousands of events a second), so a test can fill a log big enough
that catching up takes seconds. ``write_runs`` is the slow, honest way: run by run,
through the lifecycle, as the API would.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence
from typing import Any

from agent.loop import AgentLoop
from agent.models.offline import OfflineModel
from domain.calls import ToolCall
from domain.values import Decision, DecisionKind, Requirement, RunStatus
from projections.runner import Projections
from projections.store import PositionMoved
from service.runs import RunService
from tests.projections.scenario import AGENTS
from tests.support.runs import Runs

_MESSAGES = {
    "data_manager": ['call delete_records {"table_name": "%s", "count": %d}',
                     'call send_notification {"recipient": "%s@example.com", "message": "hi"}'],
    "support_desk": ['call check_payment {"order_id": "%s"}',
                     'call issue_refund {"order_id": "%s", "amount": %d}',
                     'call lookup_order {"order_id": "%s"}'],
    "ops": ['call refresh_cache {"name": "%s"}', 'call transfer_money {"account": "%s", '
            '"amount": %d}', 'call archive_table {"table_name": "%s"}',
            'call failing_tool {"name": "%s"}'],
    "gatekeeper": ['call slow_delete {"table_name": "%s"}'],
}
_ACTORS = ["alice", "bob", "carol", "ops-bot"]


def _message(rng: random.Random, agent_id: str) -> str:
    lines = []
    for _ in range(rng.randint(1, 3)):
        template = rng.choice(_MESSAGES[agent_id])
        values: tuple[Any, ...] = (rng.choice(["users", "orders", "o-1", "acct"]),)
        if template.count("%") == 2:
            values += (rng.randint(1, 900),)
        lines.append(template % values)
    return "\n".join(lines)


def _decision(rng: random.Random, call: ToolCall) -> Decision:
    cid = call.tool_call_id
    if rng.random() < 0.25:
        return Decision(cid, DecisionKind.REJECTED, note=rng.choice([None, "no", "not today"]))
    requires = Requirement(call.requires)
    if requires == Requirement.EXTERNAL_EXECUTION:
        return Decision(cid, DecisionKind.EXTERNAL_RESULT, result=rng.choice(["paid", "late"]))
    if requires == Requirement.USER_INPUT:
        return Decision(cid, DecisionKind.USER_INPUT, values={"email": "ann@example.com"})
    edited = None
    if call.editable_args and call.tool_name == "delete_records" and rng.random() < 0.3:
        edited = {**call.tool_args, "count": rng.randint(1, 9)}
    return Decision(cid, DecisionKind.CONFIRMED, note=rng.choice([None, "ok"]),
                    approved_args=edited)


def drive_one(runs: Runs, rng: random.Random, user: str | None = None) -> str:
    """One run from start to wherever the dice leave it (most end; some stay paused)."""
    agent_id = rng.choice(sorted(_MESSAGES))
    run = runs.start(agent_id, _message(rng, agent_id), user_id=user or rng.choice(
        ["alice", "bob", None]))
    for _ in range(4):
        if run.status != RunStatus.PAUSED:
            break
        roll = rng.random()
        if roll < 0.1:
            break  # left paused: stays in the queue
        if roll < 0.2:
            runs.cancel(run.run_id, actor=rng.choice(_ACTORS), reason=rng.choice([None, "stop"]))
            break
        pending = run.pending_calls()
        chosen = pending if rng.random() < 0.7 else pending[:1]
        run = runs.decide(run.run_id, [_decision(rng, c) for c in chosen],
                          actor=rng.choice(_ACTORS))
        run = runs.drive(run)
    return run.run_id


@functools.cache
def realistic_events(runs: int, seed: int = 0) -> tuple[Any, ...]:
    """The events of ``runs`` runs driven on an in-memory store, in log order (made once
    per test session for each ``runs`` and ``seed``)."""
    app = RunService(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    loop = AgentLoop(AGENTS, OfflineModel())
    lifecycle = Runs(app, loop)
    rng = random.Random(seed)
    try:
        for _ in range(runs):
            drive_one(lifecycle, rng)
        return tuple(e for _, e in app.log(limit=5000))
    finally:
        loop.close()


def copy_events(events: Sequence[Any], app: RunService, chunk: int = 1000) -> None:
    """Write ``events`` into ``app``'s store as they are, ``chunk`` per transaction."""
    for i in range(0, len(events), chunk):
        app.recorder.insert_events([app.mapper.to_stored_event(e)
                                    for e in events[i:i + chunk]])


def write_runs(app: RunService, runs: int, seed: int) -> list[str]:
    """Drive ``runs`` runs through the lifecycle into ``app``'s store (a save per step)."""
    loop = AgentLoop(AGENTS, OfflineModel())
    rng = random.Random(seed)
    try:
        lifecycle = Runs(app, loop)
        return [drive_one(lifecycle, rng) for _ in range(runs)]
    finally:
        loop.close()


# ------------------------------------------------------------------ table dumps

def dump(p: Projections) -> dict[str, Any]:
    """Every row of every projection table (sorted), and each projection's position."""
    out: dict[str, Any] = {}
    for name, view in p.views.items():
        with view.read() as c:
            for table in view.model.tables_in_order:
                rows = c.execute(f"SELECT * FROM {table}").fetchall()
                out[table] = sorted((_plain(c.dialect, r) for r in rows), key=repr)
        out[f"position:{name}"] = view.position()
    return out


def _plain(dialect: Any, row: dict[str, Any]) -> dict[str, Any]:
    """A row with JSON decoded and times as datetimes, whichever the database."""
    plain = {}
    for key, value in row.items():
        if isinstance(value, str) and value[:1] in ("{", "["):
            value = dialect.from_json(value)
        plain[key] = value
    return plain


def rebuilt(p: Projections) -> dict[str, Any]:
    """``dump`` after rebuilding every projection from the start of the log."""
    for name in p.views:
        p.rebuild(name)
    return dump(p)


def assert_dumps_equal(before: dict[str, Any], after: dict[str, Any]) -> None:
    assert before.keys() == after.keys()
    for key in before:
        a, b = before[key], after[key]
        if a != b:
            if isinstance(a, list):
                only_a = [r for r in a if r not in b][:3]
                only_b = [r for r in b if r not in a][:3]
                raise AssertionError(f"{key}: {len(a)} rows vs {len(b)} after the rebuild; "
                                     f"only before: {only_a}; only after: {only_b}")
            raise AssertionError(f"{key}: {a!r} vs {b!r} after the rebuild")


def count_writes(p: Projections) -> dict[str, list[int]]:
    """Record the positions each view of ``p`` applies, in the transactions that passed
    their position check (``applied[name]``: each view's read model writing a page, alone
    or together with the others), and the pages a view refused because another runner got
    there first (``applied[name + ":moved"]``, the positions they were read after)."""
    applied: dict[str, list[int]] = {}
    for name, view in p.views.items():
        original, write_page = view.write, view.model.write_page
        applied[name], applied[f"{name}:moved"] = [], []

        def write(events: Sequence[tuple[int, Any]], *, after: int | None = None,
                  _original: Any = original, _name: str = name) -> None:
            try:
                _original(events, after=after)
            except PositionMoved:
                applied[f"{_name}:moved"].append(after or 0)
                raise

        def page(c: Any, events: Sequence[tuple[int, Any]], _original: Any = write_page,
                 _name: str = name) -> None:
            _original(c, events)
            applied[_name].extend(position for position, _ in events)

        view.write = write  # type: ignore[method-assign]
        view.model.write_page = page  # type: ignore[method-assign]
    return applied


def log_positions(app: RunService) -> list[int]:
    return [position for position, _ in app.log(limit=5000)]
