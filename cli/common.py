"""What the command groups share: the form of their help, the store option, the settings."""

from __future__ import annotations

import contextlib
import getpass
import os
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from eventsourcing.persistence import InterfaceError, OperationalError
from typer.core import TyperCommand

from bootstrap import build_projections
from service import config
from service.config import Settings

if TYPE_CHECKING:
    from projections.runner import Projections


class Command(TyperCommand):
    """Plain help that names each argument by its metavar alone (typer would add its Python
    type: ``RUN_ID <str>``). Options show their own metavar (URL, N, TIME), a flag none."""

    def format_options(self, ctx: Any, formatter: Any) -> None:  # typer's click is private
        arguments, options = [], []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                arguments.append((param.metavar or str(param.name).upper(), record[1]))
            else:
                options.append(record)
        for title, rows in (("Arguments", arguments), ("Options", options)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


def group(help: str, *, no_args_is_help: bool = True) -> typer.Typer:
    """A command group with plain help (rich help would show Python types as metavars)."""
    return typer.Typer(help=help, no_args_is_help=no_args_is_help, add_completion=False,
                       rich_markup_mode=None)


def setting(name: str, metavar: str) -> Any:
    """An option that sets SIGNOFF_<NAME> for this command, with the setting's own
    description and default (docs/configuration.md)."""
    field = Settings.model_fields[name]
    return typer.Option(metavar=metavar, show_default=False,
                        help=f"{field.description}  [env: SIGNOFF_{name.upper()}; default: "
                        f"{field.default}]")


DatabaseUrl = Annotated[str | None, setting("database_url", "URL")]
AsJson = Annotated[bool, typer.Option("--json", help="print JSON")]


def load_settings(**options: Any) -> Settings:
    """Settings from SIGNOFF_* variables, the options given (not None) winning: they are
    set in the environment first, for what this process starts too (uvicorn's workers, a
    group's subcommand). A bad value exits 2, naming its variable."""
    for key, value in options.items():
        if value is not None:
            os.environ[f"SIGNOFF_{key.upper()}"] = str(value)
    return config.load_settings()


def existing_store(database_url: str | None) -> Settings:
    """Settings for a command that needs the store to exist (it reads what is in it): a
    SQLite file that does not exist is refused, naming it, rather than created empty."""
    settings = load_settings(database_url=database_url)
    path = settings.sqlite_file()
    if path is not None and not path.exists():
        raise fail(f"no store at {path.resolve()} (SIGNOFF_DATABASE_URL="
                   f"{settings.database_url}): run this where the store is, or give "
                   "--database-url.")
    return settings


def projections(names: list[str] | None = None) -> Projections:
    """The projections named (or all) over the store the settings name."""
    return build_projections(load_settings(), names)


@contextlib.contextmanager
def read_projection(name: str, *, catch_up: bool = True) -> Iterator[Any]:
    """A read of one projection's view, brought up to date first unless ``catch_up`` is
    false; the projection and its reader are closed after."""
    opened = projections([name])
    try:
        if catch_up:
            opened.catch_up(name)
        with opened.views[name].read() as c:
            yield c
    finally:
        opened.close()
        opened.store.close()


def where(error: BaseException, settings: Settings) -> str:
    """For an error of the store that does not say which store it was (``build_app``'s
    do): which it was (never its password)."""
    address = settings.store_address()
    if isinstance(error, OperationalError | InterfaceError) and address not in str(error):
        return f" ({address})"
    return ""


@contextlib.contextmanager
def log_progress(head: int, label: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr over the log's positions, and the callback that moves it."""
    with typer.progressbar(length=max(head, 1), label=label, file=sys.stderr) as bar:
        done = [0]

        def progress(position: int, _head: int) -> None:
            bar.update(position - done[0])
            done[0] = position

        yield progress


def time_option(value: str | None, name: str) -> datetime | None:
    """An ISO 8601 time given as option ``name`` (UTC without a zone); exits 2 if not."""
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise fail(f"{name} {value!r} is not an ISO 8601 time", 2) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def cli_actor() -> str:
    """Who a command acts as in the record: the user running it."""
    return f"cli:{getpass.getuser()}"


def fail(message: str, status: int = 1) -> typer.Exit:
    """Say what went wrong on stderr; ``raise fail(...)`` ends the command with ``status``."""
    typer.echo(f"signoff: {message}", err=True)
    return typer.Exit(status)
