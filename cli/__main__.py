"""The ``signoff`` command: serve the API, and read runs from the store."""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from pydantic import ValidationError

app = typer.Typer(help="signoff: event-sourced run state for human-in-the-loop AI agents.",
                  no_args_is_help=True, add_completion=False)
runs_app = typer.Typer(help="Read runs from the store.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")
project_app = typer.Typer(help="Run the projections (read models) as their own process.")
app.add_typer(project_app, name="project")


def _settings(**overrides: Any) -> Any:
    """Settings from SIGNOFF_* variables; CLI options win. Exits 2 naming a bad variable."""
    from service.config import Settings

    for key, value in overrides.items():
        if value is not None:
            os.environ[f"SIGNOFF_{key.upper()}"] = str(value)
    try:
        return Settings()
    except ValidationError as e:
        for err in e.errors():
            name = "SIGNOFF_" + str(err["loc"][0]).upper() if err["loc"] else "settings"
            typer.echo(f"signoff: invalid {name}: {err['msg']}", err=True)
        raise typer.Exit(2) from None


@app.command()
def serve(
    agents: Annotated[str | None, typer.Option(help="Modules with the Agent objects to serve "
                                               "(comma-separated). [SIGNOFF_AGENTS]")] = None,
    host: Annotated[str | None, typer.Option(help="[SIGNOFF_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="[SIGNOFF_PORT]")] = None,
    database_url: Annotated[str | None, typer.Option(help="[SIGNOFF_DATABASE_URL]")] = None,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes")] = 1,
) -> None:
    """Serve the API (Agno-compatible endpoints and signoff's own)."""
    import uvicorn

    sys.path.insert(0, os.getcwd())  # so --agents can name a module beside you
    settings = _settings(agents=agents, host=host, port=port, database_url=database_url)
    from service.bootstrap import build_loop

    try:  # fail fast: a bad agents module, a model that cannot be set up, a store unreachable
        loop = build_loop(settings)
        loop.close()
        loop.app.close()
    except Exception as e:
        typer.echo(f"signoff: cannot start: {type(e).__name__}: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"signoff: store {settings.database_url}, model "
               f"{settings.default_model_spec()}, agents from {settings.agents}", err=True)
    uvicorn.run("api.app:create_app", factory=True, host=settings.host, port=settings.port,
                workers=workers, log_level="info")


@runs_app.command("show")
def runs_show(
    run_id: str,
    at_version: Annotated[int | None, typer.Option(help="show the state after N events")] = None,
    as_of: Annotated[str | None, typer.Option(
        help="show the state at this time (ISO 8601; UTC without a zone)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Print a run's history, event by event, and its state."""
    from service.bootstrap import build_app
    from service.runs import RunNotFound
    from service.views import event_view, run_view

    if at_version is not None and as_of is not None:
        typer.echo("signoff: give --at-version or --as-of, not both", err=True)
        raise typer.Exit(2)
    store = build_app(_settings())
    try:
        when = datetime.fromisoformat(as_of) if as_of else None
    except ValueError:
        typer.echo(f"signoff: --as-of {as_of!r} is not an ISO 8601 time", err=True)
        raise typer.Exit(2) from None
    if when is not None and when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    try:
        run = store.get_run_at(run_id, version=at_version, as_of=when)
        events = [e for e in store.run_events(run_id) if e.originator_version <= run.version]
    except RunNotFound as e:
        typer.echo(f"signoff: {e}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps({"run": run_view(run), "events": [event_view(e) for e in events]},
                              default=str, indent=2))
        return
    typer.echo(f"run {run.run_id}  agent {run.agent_id}  user {run.user_id}  "
               f"status {run.status}  version {run.version}")
    for e in events:
        view = event_view(e)
        payload = json.dumps(view["payload"], default=str)
        typer.echo(f"{view['version']:>4}  {view['timestamp']:%Y-%m-%d %H:%M:%S.%f}  "
                   f"{view['type']:<24} {payload}")


def _projections(names: list[str] | None = None) -> Any:
    from projections.runner import Projections
    from service.bootstrap import build_app
    from service.config import eventsourcing_env

    settings = _settings()
    return Projections(build_app(settings), eventsourcing_env(settings), names=names,
                       batch_size=settings.projection_batch_size)


@project_app.callback(invoke_without_command=True)
def project(ctx: typer.Context) -> None:
    """Follow the event log and keep every projection up to date, until interrupted.

    Run one such process beside API workers started with SIGNOFF_PROJECTIONS=off.
    """
    if ctx.invoked_subcommand is not None:
        return
    import signal
    import threading

    projections = _projections()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    for s in projections.status():
        typer.echo(f"signoff project: {s.name} at {s.position}, log head {s.head}", err=True)
    try:
        projections.follow(stop)
    finally:
        projections.close()


@project_app.command("status")
def project_status() -> None:
    """Each projection's position, the log's head, and the lag."""
    projections = _projections()
    try:
        for s in projections.status():
            typer.echo(f"{s.name:<8} position {s.position:>10}  head {s.head:>10}  "
                       f"lag {s.lag:>8}")
    finally:
        projections.close()


@project_app.command("rebuild")
def project_rebuild(name: str) -> None:
    """Rebuild one projection from the start of the log (queue, audit)."""
    from projections.runner import MODULES

    if name not in MODULES:
        typer.echo(f"signoff: no projection {name!r} (there are: {', '.join(MODULES)})",
                   err=True)
        raise typer.Exit(2)
    projections = _projections([name])
    head = projections.app.head()
    try:
        with typer.progressbar(length=head, label=f"rebuilding {name}", file=sys.stderr) as bar:
            done = [0]

            def progress(position: int, _head: int) -> None:
                bar.update(position - done[0])
                done[0] = position

            count = projections.rebuild(name, progress)
        typer.echo(f"signoff: {name} rebuilt from {count} events", err=True)
    finally:
        projections.close()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
