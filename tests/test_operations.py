"""Operating signoff: settings checked at start, ``/ready``, and metrics that count only
what was committed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from eventsourcing.persistence import IntegrityError
from prometheus_client import REGISTRY

from agent.loop import AgentLoop, load_agents
from agent.models.offline import OfflineModel
from domain.values import Decision, DecisionKind
from service.config import Settings, eventsourcing_env, unknown_variables
from service.metrics import CommittedFacts, watch_commits
from service.runs import RunService
from tests.e2e.flows import assert_problem, start
from tests.support.postgres import throwaway_postgres
from tests.support.runs import Runs
from tests.support.server import LiveServer, live_server

ROOT = Path(__file__).resolve().parents[1]


def run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SIGNOFF_")}
    return subprocess.run(args, cwd=ROOT, text=True, capture_output=True, timeout=60,
                          env={**clean, "PYTHONPATH": str(ROOT), **env})


SERVE = [sys.executable, "-m", "cli", "serve"]
# uvicorn started directly on the app factory, as a process manager may do.
UVICORN = [sys.executable, "-m", "uvicorn", "api.app:create_app", "--factory", "--port", "0"]


# ------------------------------------------------------------------ settings

@pytest.mark.parametrize("command", [SERVE, UVICORN], ids=["signoff serve", "uvicorn"])
@pytest.mark.parametrize(("variable", "value"), [
    ("SIGNOFF_LOG_LEVEL", "loud"),
    ("SIGNOFF_LOG_FORMAT", "xml"),
    ("SIGNOFF_READY_MAX_LAG", "-1"),
    ("SIGNOFF_PROJECTIONS", "sometimes"),
    ("SIGNOFF_POSTGRES_POOL_SIZE", "many"),
])
def test_starting_with_an_invalid_setting_exits_with_a_message_naming_the_variable(
    command: list[str], variable: str, value: str
) -> None:
    result = run(command, **{variable: value})
    assert result.returncode == 2, result.stderr[-2000:]
    assert variable in result.stderr
    assert "Traceback" not in result.stderr


def test_each_bad_value_is_named_and_no_value_is_echoed() -> None:
    result = run(UVICORN, SIGNOFF_DATABASE_URL="mysql://admin:hunter2@db/x",
                 SIGNOFF_PORT="seventy", SIGNOFF_LOG_LEVEL="chatty")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("signoff: ")]
    assert [line.split(":")[1].strip() for line in lines] == [
        "invalid SIGNOFF_DATABASE_URL", "invalid SIGNOFF_PORT", "invalid SIGNOFF_LOG_LEVEL"]
    assert "hunter2" not in result.stderr  # a value may be a password
    assert "must start with sqlite:/// or postgresql://" in lines[0]


def test_a_missing_multiprocess_metrics_directory_is_named_at_start(tmp_path: Path) -> None:
    result = run(SERVE, PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "missing"),
                 SIGNOFF_DATABASE_URL=f"sqlite:///{tmp_path / 's.db'}")
    assert result.returncode == 2
    assert "PROMETHEUS_MULTIPROC_DIR" in result.stderr


def test_log_settings_take_any_case_and_unknown_variables_are_found() -> None:
    settings = Settings(log_level="WARNING", log_format=" Json ")  # type: ignore[arg-type,call-arg]
    assert (settings.log_level, settings.log_format) == ("warning", "json")
    assert unknown_variables({"SIGNOFF_LOG_LEVL": "debug", "SIGNOFF_PORT": "1",
                              "OTHER": "x"}) == ["SIGNOFF_LOG_LEVL"]


def test_an_unknown_signoff_variable_is_logged_as_a_warning(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    with live_server(url, tmp_path / "server.log", SIGNOFF_DATABSE_URL="typo") as server:
        pass
    assert "SIGNOFF_DATABSE_URL is not a signoff setting; it is ignored" in server.log()


# ------------------------------------------------------------------ /ready

@pytest.mark.e2e
def test_a_fresh_server_is_ready_and_alive(server: LiveServer) -> None:
    with server.client() as c:
        r = c.get("/ready")
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["status"], body["log_head"], body["max_lag"]) == ("ready", 0, 1000)
        assert {p["name"] for p in body["projections"]} >= {"queue", "audit"}
        assert all(p["lag"] == 0 for p in body["projections"])
        assert c.get("/health").json()["status"] == "ok"


@pytest.mark.e2e
def test_not_ready_while_the_projections_lag_behind_the_bound(tmp_path: Path) -> None:
    """No projection process beside a server with SIGNOFF_PROJECTIONS=off: the read models
    fall behind, and the server says so (503, a problem), while it stays alive."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    with live_server(url, tmp_path / "server.log", SIGNOFF_PROJECTIONS="off",
                     SIGNOFF_READY_MAX_LAG="3") as server, server.client() as c:
        assert c.get("/ready").status_code == 200
        start(c, "data_manager", "Delete 50 old records from the users table")  # 4 events
        body = assert_problem(c.get("/ready"), 503)
        assert body["detail"] == "projections more than 3 events behind the log: " + \
            ", ".join(p["name"] for p in body["projections"])
        assert {p["lag"] for p in body["projections"]} == {4}
        assert c.get("/health").status_code == 200


@pytest.mark.e2e
@pytest.mark.postgres
def test_not_ready_while_the_store_is_down(pg_bin: Path, tmp_path: Path) -> None:
    """A PostgreSQL server of its own, crash-stopped under the running service, then
    started again: 503 while it is down, ready again after."""
    with throwaway_postgres(pg_bin) as pg, \
            live_server(pg.url, tmp_path / "server.log") as server, server.client() as c:
        assert c.get("/ready").status_code == 200
        pg.stop_immediate()
        body = assert_problem(c.get("/ready"), 503)
        # Refused at once, or not answered in time (the pool waits to reconnect).
        assert body["detail"].startswith(("the event store does not answer",
                                          "the store did not answer within 2 s"))
        assert c.get("/ready").headers["retry-after"] == "1"
        pg.start()
        deadline = time.monotonic() + 20
        while (r := c.get("/ready")).status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert r.status_code == 200, r.text


# --------------------------------------------------------- committed only

def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_save_that_fails_counts_nothing(tmp_path: Path) -> None:
    """Two requests decide the same call at the same moment: one save commits, the other
    fails on the store's version check. One decision is counted, not two."""
    app = RunService(env=eventsourcing_env(Settings(database_url=f"sqlite:///{tmp_path}/s.db")))
    agents = load_agents(["agent.demo"])
    watch_commits(app, CommittedFacts({a.id: [t.name for t in a.tools]
                                       for a in agents.values()}))
    loop = AgentLoop(agents, OfflineModel())
    try:
        before = (_sample("signoff_decisions_total", agent="data_manager", kind="confirmed"),
                  _sample("signoff_runs_started_total", agent="data_manager"))
        run = Runs(app, loop).start("data_manager", "Delete 50 old records from the users table")
        [call] = run.pending_calls()
        first, second = app.get_run(run.id), app.get_run(run.id)  # both read version 4
        decision = Decision(call.tool_call_id, DecisionKind.CONFIRMED)
        first.confirm_tool(decision.tool_call_id, decided_by="ana")
        second.confirm_tool(decision.tool_call_id, decided_by="bob")
        app.save(first)
        with pytest.raises(IntegrityError):
            app.save(second)
        after = (_sample("signoff_decisions_total", agent="data_manager", kind="confirmed"),
                 _sample("signoff_runs_started_total", agent="data_manager"))
        assert (after[0] - before[0], after[1] - before[1]) == (1, 1)
    finally:
        loop.close()
        app.close()


def test_a_listener_that_fails_does_not_fail_a_committed_save(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = RunService(env=eventsourcing_env(Settings(database_url=f"sqlite:///{tmp_path}/s.db")))

    def broken(objs: object, recordings: object) -> None:
        raise RuntimeError("observability is down")

    watch_commits(app, broken)
    loop = AgentLoop(load_agents(["agent.demo"]), OfflineModel())
    try:
        run = Runs(app, loop).start("data_manager", "Delete 50 old records from the users table")
        assert app.get_run(run.id).version == 4  # saved, and the caller got its run
        assert "a commit listener failed" in caplog.text
    finally:
        loop.close()
        app.close()
