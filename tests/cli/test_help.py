"""The ``signoff`` command's help, for every command and group: it opens, names each value
by what it is (never a Python type), and explains every option."""

from __future__ import annotations

import re
from typing import Any

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from cli.__main__ import signoff
from projections.runner import projection_names

# What typer shows for a value without a metavar: <str>, <bool>, <list[str]>, <integer range>.
PYTHON_TYPE = re.compile(r"<[a-z][a-z \[\]|,.]*>")


def _commands() -> list[tuple[list[str], Any]]:
    """Every command and group of ``signoff``, with the words that name it."""
    found: list[tuple[list[str], Any]] = []

    def walk(path: list[str], command: Any) -> None:
        found.append((path, command))
        for name, sub in getattr(command, "commands", {}).items():
            walk([*path, name], sub)

    walk([], get_command(signoff))
    return found


COMMANDS = _commands()
BY_PATH = {tuple(path): command for path, command in COMMANDS}
# The commands that open the store: all but the groups, `keys generate` and `audit
# public-key` (which read the settings only).
STORE_COMMANDS = [path for path, command in COMMANDS
                  if path and not hasattr(command, "commands")
                  and path not in (["keys", "generate"], ["audit", "public-key"])]


def _help(*path: str) -> str:
    result = CliRunner().invoke(signoff, [*path, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    return result.output


def test_the_walk_finds_every_command_group() -> None:
    groups = {path[0] for path, command in COMMANDS if len(path) == 1}
    assert groups == {"serve", "runs", "project", "audit", "keys", "webhooks"}
    assert len(STORE_COMMANDS) >= 15


@pytest.mark.parametrize(("path", "command"), COMMANDS,
                         ids=[" ".join(p) or "signoff" for p, _ in COMMANDS])
def test_help_names_each_value_and_explains_each_option(path: list[str],
                                                        command: Any) -> None:
    text = _help(*path)
    assert not PYTHON_TYPE.search(text), text
    assert (command.help or "").strip(), f"{' '.join(path)} has no description"
    for param in command.params:
        name = f"{' '.join(path)} {param.opts[0]}"
        assert param.help, f"{name} has no help"
        if param.param_type_name == "option":
            assert param.is_flag or param.metavar, f"{name} has no metavar"
        else:
            assert param.metavar, f"{name} has no metavar"


@pytest.mark.parametrize("path", [*STORE_COMMANDS, ["project"]], ids=" ".join)
def test_every_command_that_opens_the_store_takes_database_url_and_names_its_setting(
    path: list[str],
) -> None:
    options = {o for param in BY_PATH[tuple(path)].params for o in param.opts}
    assert "--database-url" in options
    assert "SIGNOFF_DATABASE_URL" in _help(*path)


def test_serve_describes_where_it_listens_and_shows_the_defaults() -> None:
    text = " ".join(_help("serve").split())
    assert "--host ADDRESS Address `signoff serve` listens on." in text
    assert "default: 127.0.0.1" in text
    assert "--port PORT Port `signoff serve` listens on." in text
    assert "default: 7777" in text
    assert "--database-url URL Where events are stored" in text
    assert "default: sqlite:///signoff.db" in text


def test_project_rebuild_names_every_projection() -> None:
    text = " ".join(_help("project", "rebuild").split())
    assert len(projection_names()) >= 4
    for name in projection_names():
        assert name in text
    assert f"the projection: {', '.join(projection_names())}" in text
