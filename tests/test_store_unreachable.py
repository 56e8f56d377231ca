"""A PostgreSQL store out of reach is named wherever its error is told: host and port
(with the database and user, never the password). ``build_app`` opens the store for the
API's workers, ``signoff serve`` and every command, and says so in the error it raises.

Nothing listens on the port used (a free one on loopback); each process waits one second
for a connection instead of the five the settings give."""

from __future__ import annotations

import sys
from typing import Any

import pytest
from eventsourcing.persistence import OperationalError

import bootstrap
from bootstrap import build_app
from service.config import Settings, eventsourcing_env
from tests.support.server import free_port

PASSWORD = "s3cret-pw"


@pytest.fixture
def url(monkeypatch: pytest.MonkeyPatch) -> str:
    """An unreachable store's URL, given the way a user gives it; connections give up
    after a second."""

    def env(settings: Settings) -> dict[str, str]:
        return {**eventsourcing_env(settings), "POSTGRES_CONNECT_TIMEOUT": "1"}

    monkeypatch.setattr(bootstrap, "eventsourcing_env", env)
    url = f"postgresql://al:{PASSWORD}@127.0.0.1:{free_port()}/runs"
    monkeypatch.setenv("SIGNOFF_DATABASE_URL", url)
    return url


def port_of(url: str) -> str:
    return url.rsplit(":", 1)[1].split("/")[0]


def test_build_app_names_the_host_and_port_and_never_the_password(url: str) -> None:
    with pytest.raises(OperationalError) as caught:
        build_app(Settings(database_url=url))
    message = str(caught.value)
    assert f"PostgreSQL at 127.0.0.1:{port_of(url)}, database runs, user al" in message
    assert PASSWORD not in message


def signoff(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
            *args: str) -> tuple[Any, str]:
    """``signoff ARGS`` as the installed command runs it: its exit code and stderr."""
    from cli.__main__ import main

    monkeypatch.setattr(sys, "argv", ["signoff", *args])
    with pytest.raises(SystemExit) as done:
        main()
    return done.value.code, capsys.readouterr().err


@pytest.mark.parametrize("args", [["serve"], ["runs", "show", "some-run"],
                                  ["project", "status"]])
def test_the_cli_names_the_unreachable_store(
    url: str, args: list[str], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, err = signoff(monkeypatch, capsys, *args)
    assert code in (1, 2), err
    assert err.count(f"PostgreSQL at 127.0.0.1:{port_of(url)}, database runs, user al") == 1
    assert PASSWORD not in err
