"""``signoff runs``: read runs from the store."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from bootstrap import build_app
from cli.common import AsJson, Command, DatabaseUrl, existing_store, fail, group, time_option
from service.runs import RunNotFound
from service.views import event_view, run_view

runs = group("Read runs from the store.")


@runs.command("show", cls=Command)
def show(
    run_id: Annotated[str, typer.Argument(metavar="RUN_ID", help="the run's id")],
    at_version: Annotated[int | None, typer.Option(
        metavar="N", help="show the state after N events")] = None,
    as_of: Annotated[str | None, typer.Option(
        metavar="TIME", help="show the state at this time (ISO 8601; UTC without a zone)")
    ] = None,
    as_json: AsJson = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Print a run's history, event by event, and its state."""
    if at_version is not None and as_of is not None:
        raise fail("give --at-version or --as-of, not both", 2)
    when = time_option(as_of, "--as-of")
    store = build_app(existing_store(database_url))
    try:
        run = store.get_run_at(run_id, version=at_version, as_of=when)
        events = [e for e in store.run_events(run_id) if e.originator_version <= run.version]
    except RunNotFound as e:
        raise fail(str(e)) from None
    finally:
        store.close()
    if as_json:
        typer.echo(json.dumps({"run": run_view(run), "events": [event_view(e) for e in events]},
                              default=str, indent=2))
        return
    typer.echo(f"run {run.run_id}  agent {run.agent_id}  user {run.user_id}  "
               f"status {run.status}  version {run.version}")
    for event in events:
        view = event_view(event)
        payload = json.dumps(view["payload"], default=str)
        typer.echo(f"{view['version']:>4}  {view['timestamp']:%Y-%m-%d %H:%M:%S.%f}  "
                   f"{view['type']:<24} {payload}")
