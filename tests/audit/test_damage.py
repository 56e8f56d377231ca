"""One damaged event stops nothing around it: a run whose stored events cannot be read
back (bytes or JSON altered, a topic unknown, encrypted with another key, a version
missing) is a 409 problem naming the damage, never a 500, and nothing is written to it;
the other runs answer as before; ``audit export`` writes the readable rest and names
what it left out; ``audit verify`` names the damage (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.cryptography import AESCipher
from eventsourcing.persistence import Mapper
from eventsourcing.utils import Environment

from domain.run import Run
from projections import anchors
from service import runs
from tests.audit.store import Store, filled_store
from tests.domain.given import DEADLINE, a_call
from tests.support.server import ROOT, live_server

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

PROBLEM = "application/problem+json"
PAUSED = 11  # the one run of the golden scenario left paused (support_desk, 4 events)


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = filled_store(store_url)
    yield s
    s.close()


def _cli(store: Store, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SIGNOFF_DATABASE_URL": store.settings.database_url,
           "SIGNOFF_CIPHER_KEY": store.settings.cipher_key}
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def _other_key(store: Store, run_id: str, version: int) -> bytes:
    """The event's state as a process with another cipher key would have stored it."""
    event = store.app.run_events(run_id)[version - 1]
    key = AESCipher.create_key(32)
    mapper = Mapper(transcoder=store.app.mapper.transcoder,
                    compressor=store.app.mapper.compressor,
                    cipher=AESCipher(Environment(env={"CIPHER_KEY": key})))
    return mapper.to_stored_event(event).state


DAMAGE: dict[str, Any] = {
    "broken JSON": lambda s, r, v: s.set_state(r, v, b'{"tool_call_id": "call_'),
    "unknown topic": lambda s, r, v: s.set_state(r, v, s.rows(r)[v - 1][2],
                                                 topic="domain.run:Run.NoSuchEvent"),
    "deleted": lambda s, r, v: s.delete(r, v),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_run_raises_run_damaged_and_other_runs_read(store: Store,
                                                              damage: str) -> None:
    run_id, sound = store.run_ids[0], store.run_ids[1]
    DAMAGE[damage](store, run_id, 3)
    reads = {"get_run": lambda: store.app.get_run(run_id),
             "get_run_at": lambda: store.app.get_run_at(run_id, version=5),
             "run_events": lambda: store.app.run_events(run_id)}
    for name, read in reads.items():
        with pytest.raises(runs.RunDamaged) as caught:
            read()
        e = caught.value
        assert (e.run_id, e.version) == (run_id, 3), name
        assert str(run_id) in str(e) and "version 3" in str(e), name
        assert ("missing" if damage == "deleted" else "cannot be read") in e.problem
    # What lies before the damage is still read; the other runs are untouched.
    assert store.app.get_run_at(run_id, version=2).version == 2
    assert store.app.get_run(sound).version == len(store.app.run_events(sound))


def test_an_event_encrypted_with_another_key_is_damage(store_url: str) -> None:
    store = filled_store(store_url, cipher_key=AESCipher.create_key(32))
    try:
        run_id = store.run_ids[0]
        store.set_state(run_id, 4, _other_key(store, run_id, 4))
        with pytest.raises(runs.RunDamaged) as caught:
            store.app.get_run(run_id)
        assert caught.value.version == 4
        assert "cannot be read" in caught.value.problem
        assert store.app.get_run(store.run_ids[1]).version > 0
    finally:
        store.close()


def test_a_long_run_read_from_its_snapshot(store: Store,
                                           caplog: pytest.LogCaptureFixture) -> None:
    """Past 100 events a run is read from its snapshot: a snapshot that does not read is
    passed over (the run is read from its events); an event after it that does not read,
    or is missing, is damage."""
    run = Run.start(agent_id="ops", agent_name="Ops", user_id="u", session_id="s",
                    input="x")
    for i in range(40):  # 4 events a turn: a snapshot at version 100
        run.record_model_response(model="m", provider="p", content=None, tool_calls=[
            {"id": f"c{i}", "name": "book_flight", "args": {}}])
        run.request_tool_call(**a_call(f"c{i}", args={}))
        run.start_tool(f"c{i}", deadline=DEADLINE)
        run.record_tool_result(f"c{i}", "ok")
    store.app.save(run)
    run_id, table = str(run.id), "signoff_snapshots" if store.postgres else "stored_snapshots"
    with store.sql() as conn:
        conn.execute(store.q(f"UPDATE {table} SET state = %s"), (b"{not json",))
    assert store.app.get_run(run_id).version == run.version == 161
    assert "its snapshot could not be used" in caplog.text

    DAMAGE["broken JSON"](store, run_id, 150)
    DAMAGE["deleted"](store, run_id, 120)
    for version, problem in ((None, "version 120 is missing"), (119, None),
                             (140, "version 120 is missing")):
        if problem is None:
            assert store.app.get_run(run_id, version).version == version
            continue
        with pytest.raises(runs.RunDamaged, match=problem):
            store.app.get_run(run_id, version)
    DAMAGE["broken JSON"](store, run_id, 50)
    with pytest.raises(runs.RunDamaged, match="version 50 cannot be read"):
        store.app.get_run(run_id)


def test_a_damaged_run_answers_a_problem_over_http(store: Store, tmp_path: Path) -> None:
    """Every route that reads a damaged run answers 409 (a problem naming the run, the
    version and what is wrong), writes nothing, and keeps the connection; another run
    answers 200 on the same connection."""
    paused, gap, sound = store.run_ids[PAUSED], store.run_ids[0], store.run_ids[1]
    call_id = store.app.get_run(paused).pending_calls()[0].tool_call_id
    DAMAGE["broken JSON"](store, paused, 3)
    DAMAGE["deleted"](store, gap, 3)
    head = store.app.head()
    tools = json.dumps([{"tool_call_id": call_id, "result": "paid"}])
    with live_server(store.settings.database_url, tmp_path / "server.log") as server, \
            server.client() as c:
        answers = [
            c.get(f"/runs/{paused}"),
            c.get(f"/runs/{paused}/events"),
            c.get(f"/runs/{paused}", params={"at_version": 4}),
            c.get(f"/agents/support_desk/runs/{paused}"),
            c.post(f"/agents/support_desk/runs/{paused}/continue",
                   files={"tools": (None, tools), "stream": (None, "false")}),
            c.post(f"/runs/{paused}/cancel", json={"reason": "x"}),
            c.post(f"/agents/support_desk/runs/{paused}/cancel"),
            c.get(f"/runs/{gap}"),
            c.get(f"/runs/{gap}/events"),
        ]
        for r in answers:
            where = f"{r.request.method} {r.request.url.path}: {r.text}"
            assert r.status_code == 409, where
            assert r.headers["content-type"] == PROBLEM, where
            assert r.headers.get("connection") != "close", where
            problem = r.json()
            run_id = gap if gap in r.request.url.path else paused
            assert run_id in problem["detail"] and "version 3" in problem["detail"], where
            assert problem["status"] == 409 and problem["instance"] == r.request.url.path
        assert "cannot be read" in answers[0].json()["detail"]
        assert "missing" in answers[-1].json()["detail"]
        assert c.get(f"/runs/{sound}").status_code == 200
        assert c.get(f"/runs/{sound}/events").status_code == 200
        assert c.get(f"/runs/{paused}", params={"at_version": 2}).status_code == 200
    assert store.app.head() == head  # nothing was written to the damaged run
    log = server.log_path.read_text()  # no request failed unexpectedly (a 500)
    assert "unexpected error" not in log and "Exception in ASGI application" not in log


def test_export_writes_the_readable_rest_and_names_what_it_left_out(
        store: Store, tmp_path: Path) -> None:
    first, second = store.run_ids[0], store.run_ids[5]
    positions = {run_id: [p for p, e in store.app.log() if str(e.originator_id) == run_id]
                 for run_id in (first, second)}
    DAMAGE["broken JSON"](store, first, 3)
    DAMAGE["unknown topic"](store, second, 2)
    out = tmp_path / "record.jsonl"

    exported = _cli(store, "audit", "export", "-o", str(out))

    assert exported.returncode == 3, exported.stderr
    assert "Traceback" not in exported.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    lines = [line for line in lines if "run_id" in line]  # not the anchors (format 2)
    assert len(lines) == 102 - 2
    left_out = {(r, p) for r, ps in positions.items() for p in ps} - \
        {(line["run_id"], line["position"]) for line in lines}
    assert left_out == {(first, positions[first][2]), (second, positions[second][1])}
    for run_id, version, why in ((first, 3, "cannot be read"), (second, 2, "NoSuchEvent")):
        named = next(line for line in exported.stderr.splitlines()
                     if run_id in line and f"version {version}" in line)
        assert f"position {positions[run_id][version - 1]}" in named and why in named
    assert "exported 100 events; left out 2" in exported.stderr
    # The event after one left out has no known predecessor: its prev is null.
    after = next(line for line in lines if line["run_id"] == first and line["version"] == 4)
    assert after["prev"] is None


def test_verify_names_an_unreadable_event_even_with_the_anchors_behind(
        store: Store) -> None:
    """The anchors projection cannot get past an event it cannot read: verify checks
    against the anchors recorded before it, and names the event."""
    run_id = store.run_ids[3]
    position = [p for p, e in store.app.log() if str(e.originator_id) == run_id][1]
    DAMAGE["unknown topic"](store, run_id, 2)
    # The anchors projection as if it had never run (a new store, a rebuild).
    store.projections.views[anchors.AnchorsProjection.name].reset()

    verified = _cli(store, "audit", "verify")

    assert verified.returncode == 1, verified.stdout + verified.stderr
    assert "Traceback" not in verified.stderr
    assert verified.stdout.startswith("BROKEN: 102 events of 12 runs")
    assert (f"first broken event: position {position}, run {run_id} version 2 "
            "(NoSuchEvent): cannot be read") in verified.stdout
    assert "unknown" in verified.stdout
    assert "the anchors cannot be brought up to date" in verified.stderr


def test_damage_is_named_only_to_a_caller_who_may_see_the_run(store: Store) -> None:
    """Whose run it is comes from its first event: its own client, a reviewer and an
    auditor are told it is damaged; another client is told it does not exist. With its
    first event damaged too, only those who see every run are told."""
    from domain.keys import Role
    from service.access import read_for
    from service.auth import Identity

    run_id = store.run_ids[0]
    owner = store.app.get_run(run_id).user_id or ""
    DAMAGE["broken JSON"](store, run_id, 3)
    read = lambda: store.app.get_run(run_id)  # noqa: E731
    callers = {"owner": Identity(owner, Role.CLIENT), "stranger": Identity("zed", Role.CLIENT),
               "reviewer": Identity("rita", Role.REVIEWER),
               "auditor": Identity("audrey", Role.AUDITOR)}
    for name, caller in callers.items():
        expected = runs.RunNotFound if name == "stranger" else runs.RunDamaged
        with pytest.raises(expected):
            read_for(caller, store.app, run_id, read)
    DAMAGE["broken JSON"](store, run_id, 1)
    for name, caller in callers.items():
        expected = runs.RunDamaged if name == "auditor" else runs.RunNotFound
        with pytest.raises(expected):
            read_for(caller, store.app, run_id, read)
