"""The benchmark code runs (tiny sizes, no timing asserted), and the scale-out
benchmark's consistency check finds what it is there to find."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from bench.__main__ import main
from bench.load import Result
from bench.workers import check


def test_the_appends_section_runs_on_sqlite_and_prints_its_table(
        capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["--sections", "appends", "--stores", "sqlite", "--threads", "1,2",
                   "--appends-seconds", "0.2"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "machine: " in out and "store: SQLite" in out and "settings: threads 1,2" in out
    rows = [line.split() for line in out.splitlines() if line.split()[:1] in (["1"], ["2"])]
    assert [r[0] for r in rows] == ["1", "2"], out
    for r in rows:  # raw rows/s, service events/s, ratio, 1/save events/s, ratio: all > 0
        assert all(float(x) > 0 for x in r[1:]), out


def test_the_cycles_section_runs_both_setups_and_the_floor_runs(
        capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["--sections", "cycles,floor", "--stores", "sqlite", "--clients", "2",
                   "--cycles", "6", "--projections", "inline,process"])
    out = capsys.readouterr().out
    assert status == 0, out
    rows = {line.split()[0]: line.split() for line in out.splitlines()
            if line.split()[:1] in (["inline"], ["process"])}
    assert set(rows) == {"inline", "process"}, out
    assert rows["inline"][1:4] == ["2", "6", "0"], out  # clients, cycles, no errors
    assert rows["process"][1:4] == ["2", "6", "0"], out
    # The process setup names two CPU figures (server / project), inline one.
    assert "/" in rows["process"] and "/" not in rows["inline"], out
    assert "## floor: uvicorn and FastAPI alone" in out and "store: none" in out, out
    floor = [line.split() for line in out.split("## floor")[1].splitlines()
             if line.split()[:1] == ["2"]]
    assert floor and floor[0][1:3] == ["6", "0"], out


def test_the_cost_section_runs_and_names_what_each_table_grew_by(
        capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["--sections", "cost", "--stores", "sqlite", "--clients", "1",
                   "--cycles", "10"])
    out = capsys.readouterr().out
    assert status == 0, out
    [row] = [line.split() for line in out.splitlines() if line.split()[:1] == ["1"]]
    assert float(row[3]) > 0 and int(row[4]) > 0, out  # a ratio to the floor; bytes
    [tables] = [line for line in out.splitlines() if line.startswith("bytes per cycle by")]
    grown = dict(part.rsplit(" ", 1) for part in tables.split(": ", 1)[1].split(", "))
    assert int(grown["stored_events"]) > 0, out


def _cycles(url: str, n: int) -> list[str]:
    """``n`` HITL cycles in process (start, confirm, complete); their run ids."""
    from bootstrap import build_app, build_loop
    from domain.values import Decision, DecisionKind
    from service.config import Settings
    from tests.support.runs import Runs

    settings = Settings(database_url=url, model="offline", agents="agent.demo")
    runs = Runs(build_app(settings), build_loop(settings))
    ids = []
    for _ in range(n):
        run = runs.start("data_manager", "Delete 50 old records from the users table")
        run = runs.decide(run.run_id, [Decision(c.tool_call_id, DecisionKind.CONFIRMED)
                                       for c in run.pending_calls()], actor="me")
        run = runs.drive(run)
        assert run.status == "COMPLETED"
        ids.append(run.run_id)
    runs.loop.close()
    runs.store.close()
    return ids


def _project(url: str) -> None:
    from projections.runner import Projections
    from service.config import Settings, eventsourcing_env
    from service.runs import RunService

    env = eventsourcing_env(Settings(database_url=url))
    projections = Projections(RunService(env=env), env)
    projections.catch_up_all()
    projections.close()
    projections.store.close()


@pytest.mark.postgres
def test_the_workers_check_passes_a_sound_store_and_names_what_is_wrong(
        pg_database: Any) -> None:
    url = str(pg_database.url)
    ids = _cycles(url, 3)
    _project(url)
    assert check(url, Result(run_ids=list(ids))) == []

    # A run a client was answered for but the store does not hold; an event lost from
    # another; a read-model row that a rebuild would not make.
    with psycopg.connect(url) as conn:
        conn.execute("DELETE FROM signoff_events WHERE originator_id = %s "
                     "AND originator_version = 5", (ids[1],))
        conn.execute("UPDATE signoff_decisions SET actor = 'someone else' WHERE run_id = %s",
                     (ids[2],))
    problems = check(url, Result(run_ids=[*ids, "8d1b7d0c-0000-4000-8000-000000000000"]))
    text = "\n".join(problems)
    assert "1 runs answered 200 but not in the store" in text, text
    assert f"run {ids[1]}: versions" in text, text
    assert "projection audit, table signoff_decisions" in text, text
