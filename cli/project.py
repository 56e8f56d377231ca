"""``signoff project``: keep the projections (read models) up to date in a process of their
own; their status; rebuilding one."""

from __future__ import annotations

import signal
import threading
from typing import Annotated

import typer

from bootstrap import build_dispatcher
from cli.common import (
    Command,
    DatabaseUrl,
    existing_store,
    fail,
    group,
    load_settings,
    log_progress,
    projections,
)
from projections.runner import projection_names
from service import logs

NAMES = ", ".join(projection_names())

project = group("Run the projections (read models) as their own process.",
                no_args_is_help=False)


@project.callback(invoke_without_command=True)
def follow(ctx: typer.Context, database_url: DatabaseUrl = None) -> None:
    """Follow the event log and keep every projection up to date, until interrupted.

    Run one such process beside API workers started with SIGNOFF_PROJECTIONS=off.
    """
    if database_url is not None:
        load_settings(database_url=database_url)  # for the subcommand too
    if ctx.invoked_subcommand is not None:
        return
    settings = load_settings()
    logs.configure(settings)
    following = projections()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    for s in following.status():
        typer.echo(f"signoff project: {s.name} at {s.position}, log head {s.head}", err=True)
    dispatcher = build_dispatcher(settings, following).start()  # webhooks
    try:
        following.follow(stop)
    finally:
        dispatcher.close()
        following.close()


@project.command("status", cls=Command)
def status(database_url: DatabaseUrl = None) -> None:
    """Each projection's position, the log's head, and the lag. Exits 0 when the store
    and every projection answer (a health check for the `signoff project` process)."""
    existing_store(database_url)
    opened = projections()
    try:
        for s in opened.status():
            typer.echo(f"{s.name:<8} position {s.position:>10}  head {s.head:>10}  "
                       f"lag {s.lag:>8}")
    finally:
        opened.close()


@project.command("rebuild", cls=Command,
                 help=f"Rebuild one projection from the start of the log: {NAMES}.")
def rebuild(
    name: Annotated[str, typer.Argument(metavar="NAME", help=f"the projection: {NAMES}")],
    database_url: DatabaseUrl = None,
) -> None:
    if name not in projection_names():
        raise fail(f"no projection {name!r} (there are: {NAMES})", 2)
    existing_store(database_url)
    opened = projections([name])
    head = opened.store.head()
    try:
        with log_progress(head, f"rebuilding {name}") as progress:
            count = opened.rebuild(name, progress)
        typer.echo(f"signoff: {name} rebuilt from {count} events", err=True)
    finally:
        opened.close()
