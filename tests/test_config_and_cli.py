"""Settings, the generated configuration reference, and the ``signoff`` command run as a
process (its help and the store it reads: tests/cli/)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.config import Settings, eventsourcing_env, reference_table

ROOT = Path(__file__).resolve().parents[1]


def signoff(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=60, env={**os.environ, **env})


def test_the_configuration_reference_is_generated_from_the_settings() -> None:
    assert reference_table() in (ROOT / "docs" / "configuration.md").read_text()


def test_sqlite_and_postgresql_urls_map_onto_eventsourcing_settings() -> None:
    env = eventsourcing_env(Settings(database_url="sqlite:///data/s.db"))
    assert env["PERSISTENCE_MODULE"] == "eventsourcing.sqlite"
    assert env["SQLITE_DBNAME"] == "data/s.db"
    env = eventsourcing_env(Settings(database_url="sqlite:////abs/s.db"))
    assert env["SQLITE_DBNAME"] == "/abs/s.db"
    env = eventsourcing_env(Settings(database_url="postgresql://al%40x:p%2Fw@db.local:6543/runs"))
    assert env["PERSISTENCE_MODULE"] == "eventsourcing.postgres"
    assert (env["POSTGRES_USER"], env["POSTGRES_PASSWORD"]) == ("al@x", "p/w")
    assert (env["POSTGRES_HOST"], env["POSTGRES_PORT"], env["POSTGRES_DBNAME"]) == (
        "db.local", "6543", "runs")


@pytest.mark.parametrize(("variable", "value"), [
    ("SIGNOFF_DATABASE_URL", "mysql://x"),
    ("SIGNOFF_PORT", "seventy"),
    ("SIGNOFF_MODEL", "anthropic:claude"),
    ("SIGNOFF_TOOL_TIMEOUT", "-1"),
])
def test_starting_with_an_invalid_setting_exits_with_a_message_naming_the_variable(
    variable: str, value: str
) -> None:
    result = signoff("serve", **{variable: value})
    assert result.returncode == 2
    assert variable in result.stderr


def test_serving_agents_from_a_module_that_does_not_exist_exits_with_a_message() -> None:
    result = signoff("serve", "--agents", "no_such_module_here")
    assert result.returncode == 2
    assert "no_such_module_here" in result.stderr


def test_runs_show_prints_a_runs_history_and_its_state_at_a_version(tmp_path: Path) -> None:
    from agent.loop import AgentLoop, load_agents
    from agent.models.offline import OfflineModel
    from service.runs import RunService
    from tests.support.runs import Runs

    url = f"sqlite:///{tmp_path / 's.db'}"
    app = RunService(env=eventsourcing_env(Settings(database_url=url)))
    loop = AgentLoop(load_agents(["agent.demo"]), OfflineModel())
    run = Runs(app, loop).start("data_manager", "Delete 50 old records from the users table",
                                user_id="u1")
    second = app.run_events(run.run_id)[1].timestamp
    loop.close()
    app.close()

    result = signoff("runs", "show", run.run_id, SIGNOFF_DATABASE_URL=url)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "status PAUSED" in lines[0]
    assert [line.split()[3] for line in lines[1:]] == [
        "RunStarted", "ModelResponded", "ToolCallRequested", "RunPaused"]

    result = signoff("runs", "show", run.run_id, "--at-version", "2",
                     SIGNOFF_DATABASE_URL=url)
    assert "status RUNNING  version 2" in result.stdout
    result = signoff("runs", "show", run.run_id, "--as-of", second.isoformat(),
                     SIGNOFF_DATABASE_URL=url)
    assert "status RUNNING  version 2" in result.stdout
    assert len(result.stdout.splitlines()) == 3  # the header and the first two events
    result = signoff("runs", "show", run.run_id, "--as-of", "not a time",
                     SIGNOFF_DATABASE_URL=url)
    assert result.returncode == 2

    result = signoff("runs", "show", "00000000-0000-0000-0000-000000000000",
                     SIGNOFF_DATABASE_URL=url)
    assert result.returncode == 1
    assert "no run" in result.stderr


def test_signoff_serve_serves_your_own_agents_module_from_the_working_directory(
    tmp_path: Path,
) -> None:
    import httpx

    from tests.support.server import free_port

    (tmp_path / "my_agents.py").write_text(
        "from agent.tools import Agent, tool\n\n"
        "@tool(stop_before_execution=True, execution_message='Really pay?')\n"
        "def send_payment(to: str, amount: float) -> str:\n"
        "    '''Send a payment.'''\n"
        "    return f'paid {amount} to {to}'\n\n"
        "payments = Agent(id='payments', name='Payments', tools=[send_payment])\n")
    port = free_port()
    env = {**os.environ, "SIGNOFF_DATABASE_URL": f"sqlite:///{tmp_path / 's.db'}",
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "serve", "--agents", "my_agents", "--port", str(port)],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        agents = None
        for _ in range(200):
            try:
                agents = httpx.get(f"http://127.0.0.1:{port}/agents", timeout=1).json()
                break
            except httpx.HTTPError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                import time

                time.sleep(0.05)
        assert agents is not None
        assert [a["id"] for a in agents] == ["payments"]
        tool = agents[0]["tools"]["tools"][0]
        assert (tool["name"], tool["requires_confirmation"]) == ("send_payment", True)
        r = httpx.post(f"http://127.0.0.1:{port}/agents/payments/runs",
                       data={"message": "call send_payment {\"to\": \"bob\", \"amount\": 5}",
                             "stream": "false"})
        paused = r.json()
        assert paused["status"] == "PAUSED"
        run = httpx.get(f"http://127.0.0.1:{port}/runs/{paused['run_id']}").json()
        assert run["pending"][0]["confirmation_message"] == "Really pay?"
    finally:
        proc.terminate()
        proc.wait(10)


# The command's help and the store it reads: tests/cli/.


def test_store_errors_name_the_store_but_never_its_password() -> None:
    from eventsourcing.persistence import OperationalError

    from cli.common import where

    settings = Settings(database_url="postgresql://al:s3cret@db.example:6543/runs")
    found = where(OperationalError("couldn't get a connection after 5.00 sec"), settings)
    assert found == " (PostgreSQL at db.example:6543, database runs, user al)"
    assert where(ValueError("x"), settings) == ""
    assert "s3cret" not in Settings(database_url="postgresql://al:s3cret@h/d").store_address()
    local = Settings(database_url="sqlite:///data/s.db")
    assert local.store_address() == f"SQLite file {Path('data/s.db').resolve()}"
