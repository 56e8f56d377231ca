"""Which store a command reads: SIGNOFF_DATABASE_URL, or --database-url; and a store that
does not exist, which a command that reads refuses rather than creates."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.__main__ import signoff

ROOT = Path(__file__).resolve().parents[2]
NO_RUN = "00000000-0000-0000-0000-000000000000"

READING = [
    ["runs", "show", NO_RUN],
    ["project", "status"],
    ["project", "rebuild", "queue"],
    ["audit", "verify"],
    ["audit", "verify", "--run", NO_RUN],
    ["audit", "anchor"],
    ["audit", "export"],
    ["audit", "export", "--format", "csv"],
    ["keys", "list"],
    ["keys", "revoke", "someone"],
    ["webhooks", "list"],
    ["webhooks", "delete", NO_RUN],
    ["webhooks", "deliveries", NO_RUN],
]


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory, with no store in it and none named by the settings."""
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    # A command given --database-url sets it in the environment: restored after the test.
    monkeypatch.setenv("SIGNOFF_DATABASE_URL", "sqlite:///signoff.db")
    return cwd


@pytest.mark.parametrize("command", READING, ids=" ".join)
def test_a_command_that_reads_refuses_a_store_that_does_not_exist_and_creates_none(
    elsewhere: Path, command: list[str]
) -> None:
    result = CliRunner().invoke(signoff, command)
    assert result.exit_code == 1, result.output
    assert f"no store at {elsewhere / 'signoff.db'}" in result.stderr
    assert "SIGNOFF_DATABASE_URL=sqlite:///signoff.db" in result.stderr
    assert "--database-url" in result.stderr
    assert list(elsewhere.iterdir()) == []


def test_the_refusal_names_the_file_given_with_database_url(elsewhere: Path,
                                                            tmp_path: Path) -> None:
    missing = tmp_path / "data" / "runs.db"
    result = CliRunner().invoke(signoff, ["keys", "list", "--database-url",
                                          f"sqlite:///{missing}"])
    assert result.exit_code == 1, result.output
    assert f"no store at {missing}" in result.stderr
    assert not missing.parent.exists()
    assert list(elsewhere.iterdir()) == []


def test_signoff_outside_the_clone_refuses_the_default_store_without_creating_it(
    tmp_path: Path,
) -> None:
    """As a newcomer runs it: the installed command, no SIGNOFF_* variable set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNOFF_")}
    result = subprocess.run([sys.executable, "-m", "cli", "runs", "show", NO_RUN],
                            cwd=tmp_path, text=True, capture_output=True, timeout=60,
                            env={**env, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith(f"signoff: no store at {tmp_path / 'signoff.db'} "
                                    "(SIGNOFF_DATABASE_URL=sqlite:///signoff.db)")
    assert list(tmp_path.iterdir()) == []


def test_commands_that_read_read_the_store_database_url_names(elsewhere: Path,
                                                             tmp_path: Path) -> None:
    from agent.loop import AgentLoop, load_agents
    from agent.models.offline import OfflineModel
    from bootstrap import build_app
    from domain.keys import Role
    from service.config import Settings
    from service.keys import create_key
    from tests.support.runs import Runs

    url = f"sqlite:///{tmp_path / 'kept.db'}"
    store = build_app(Settings(database_url=url))
    loop = AgentLoop(load_agents(["agent.demo"]), OfflineModel())
    run = Runs(store, loop).start("data_manager", "Delete 50 old records from the users table",
                                  user_id="u1")
    create_key(store, name="rita", role=Role.REVIEWER, created_by="test")
    loop.close()
    store.close()

    shown = CliRunner().invoke(signoff, ["runs", "show", run.run_id, "--database-url", url])
    assert shown.exit_code == 0, shown.output
    assert f"run {run.run_id}" in shown.stdout and "status PAUSED" in shown.stdout
    listed = CliRunner().invoke(signoff, ["keys", "list", "--database-url", url])
    assert listed.exit_code == 0, listed.output
    assert "rita" in listed.stdout and "reviewer" in listed.stdout
    verified = CliRunner().invoke(signoff, ["audit", "verify", "--database-url", url])
    assert verified.exit_code == 0, verified.output
    assert verified.stdout.startswith("INTACT: 5 events")  # the run's 4 and the key's
    assert list(elsewhere.iterdir()) == []  # the store named was read, none made here
