"""The ``signoff`` command: serve the API, and read runs from the store."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from projections.runner import MODULES
from service.config import Settings

# Plain help (rich_markup_mode=None): each option shows its own metavar (URL, N, TIME),
# and a flag none, where rich help would show Python types (<bool>, <list[str]>).
PLAIN: Any = None
app = typer.Typer(help="signoff: event-sourced run state for human-in-the-loop AI agents.",
                  no_args_is_help=True, add_completion=False, rich_markup_mode=PLAIN)
runs_app = typer.Typer(help="Read runs from the store.", no_args_is_help=True,
                       rich_markup_mode=PLAIN)
app.add_typer(runs_app, name="runs")
project_app = typer.Typer(help="Run the projections (read models) as their own process.",
                          rich_markup_mode=PLAIN)
app.add_typer(project_app, name="project")
audit_app = typer.Typer(help="Prove the record intact; export and import it.",
                        no_args_is_help=True, rich_markup_mode=PLAIN)
app.add_typer(audit_app, name="audit")
keys_app = typer.Typer(help="API keys (create, list, revoke) and the cipher key (generate).",
                       no_args_is_help=True, rich_markup_mode=PLAIN)
app.add_typer(keys_app, name="keys")
webhooks_app = typer.Typer(help="Webhook subscriptions (create, list, delete) and their "
                           "deliveries.", no_args_is_help=True, rich_markup_mode=PLAIN)
app.add_typer(webhooks_app, name="webhooks")


def _setting(name: str, metavar: str) -> Any:
    """An option that sets SIGNOFF_<NAME> for this command: the setting's own description
    and default (docs/configuration.md)."""
    field = Settings.model_fields[name]
    return typer.Option(metavar=metavar, show_default=False,
                        help=f"{field.description}  [env: SIGNOFF_{name.upper()}; default: "
                        f"{field.default}]")


DatabaseUrl = Annotated[str | None, _setting("database_url", "URL")]
AsJson = Annotated[bool, typer.Option("--json", help="print JSON")]


def _reading(database_url: str | None) -> Any:
    """Settings for a command that needs the store to exist (it reads what is in it): a
    SQLite file that does not exist is refused, naming it, rather than created empty."""
    settings = _settings(database_url=database_url)
    path = settings.sqlite_file()
    if path is not None and not path.exists():
        typer.echo(f"signoff: no store at {path.resolve()} (SIGNOFF_DATABASE_URL="
                   f"{settings.database_url}): run this where the store is, or give "
                   "--database-url.", err=True)
        raise typer.Exit(1)
    return settings


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
    agents: Annotated[str | None, _setting("agents", "MODULES")] = None,
    host: Annotated[str | None, _setting("host", "ADDRESS")] = None,
    port: Annotated[int | None, _setting("port", "PORT")] = None,
    database_url: DatabaseUrl = None,
    workers: Annotated[int, typer.Option(
        metavar="N", help="uvicorn worker processes (more than one: on PostgreSQL, "
        "docs/scaling.md)")] = 1,
) -> None:
    """Serve the API (Agno-compatible endpoints and signoff's own)."""
    import uvicorn

    sys.path.insert(0, os.getcwd())  # so --agents can name a module beside you
    settings = _settings(agents=agents, host=host, port=port, database_url=database_url)
    from bootstrap import build_app, build_loop
    from service.storekey import StoreKeyError

    try:  # fail fast: a bad agents module, a model that cannot be set up, a store unreachable
        build_loop(settings).close()
        store = build_app(settings)
    except StoreKeyError as e:  # no key, or not the store's key (service/storekey.py)
        typer.echo(f"signoff: cannot start: {e}", err=True)
        raise typer.Exit(2) from None
    except Exception as e:
        typer.echo(f"signoff: cannot start: {type(e).__name__}: {e}{_where(e, settings)}",
                   err=True)
        raise typer.Exit(2) from None
    try:
        if not _auth_ready(settings, store):
            raise typer.Exit(2)
    except typer.Exit:
        raise
    except Exception as e:
        typer.echo(f"signoff: cannot start: {type(e).__name__}: {e}{_where(e, settings)}",
                   err=True)
        raise typer.Exit(2) from None
    finally:
        store.close()
    typer.echo(f"signoff: store {settings.store_address()}, model "
               f"{settings.default_model_spec()}, agents from {settings.agents}", err=True)
    uvicorn.run("api.app:create_app", factory=True, host=settings.host, port=settings.port,
                workers=workers, **_uvicorn_logging(settings))


def _where(error: BaseException, settings: Any) -> str:
    """For an error of the store: which store it was (never its password)."""
    from eventsourcing.persistence import InterfaceError, OperationalError

    if isinstance(error, OperationalError | InterfaceError):
        return f" ({settings.store_address()})"
    return ""


def _uvicorn_logging(settings: Any) -> dict[str, Any]:
    """uvicorn's logging in every process it starts: signoff's handler and format
    (``service.logs.uvicorn_log_config``), no access log (the API logs each request)."""
    from service import logs

    return {"log_config": logs.uvicorn_log_config(settings), "log_level": settings.log_level,
            "access_log": False}


def _auth_ready(settings: Any, store: Any) -> bool:
    """Without authentication, listen on loopback only (unless SIGNOFF_ALLOW_OPEN)."""
    import ipaddress

    from service.auth import AuthPolicy

    if AuthPolicy(store, settings.auth, bool(settings.jwt_key)).required:
        return True
    try:
        loopback = settings.host == "localhost" or ipaddress.ip_address(settings.host).is_loopback
    except ValueError:
        loopback = False
    if loopback:
        typer.echo(f"signoff: no authentication (no API key issued, SIGNOFF_AUTH="
                   f"{settings.auth}): listening on {settings.host} only. "
                   "`signoff keys create` turns it on.", err=True)
        return True
    if settings.allow_open:
        typer.echo(f"signoff: WARNING: no authentication, listening on {settings.host} "
                   "(SIGNOFF_ALLOW_OPEN): anyone who reaches it can act as anyone", err=True)
        return True
    typer.echo(f"signoff: refusing to listen on {settings.host} without authentication: "
               "issue an API key (`signoff keys create --role admin --name you`), set "
               "SIGNOFF_JWT_KEY, or set SIGNOFF_ALLOW_OPEN=true on a trusted network",
               err=True)
    return False


@runs_app.command("show")
def runs_show(
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
    from bootstrap import build_app
    from service.runs import RunNotFound
    from service.views import event_view, run_view

    if at_version is not None and as_of is not None:
        typer.echo("signoff: give --at-version or --as-of, not both", err=True)
        raise typer.Exit(2)
    store = build_app(_reading(database_url))
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


@contextlib.contextmanager
def _log_progress(head: int, label: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr over the log's positions, and the callback that moves it."""
    with typer.progressbar(length=max(head, 1), label=label, file=sys.stderr) as bar:
        done = [0]

        def progress(position: int, _head: int) -> None:
            bar.update(position - done[0])
            done[0] = position

        yield progress


def _projections(names: list[str] | None = None) -> Any:
    from bootstrap import build_projections

    return build_projections(_settings(), names)


@project_app.callback(invoke_without_command=True)
def project(ctx: typer.Context, database_url: DatabaseUrl = None) -> None:
    """Follow the event log and keep every projection up to date, until interrupted.

    Run one such process beside API workers started with SIGNOFF_PROJECTIONS=off.
    """
    if database_url is not None:
        _settings(database_url=database_url)  # for the subcommand too
    if ctx.invoked_subcommand is not None:
        return
    import signal
    import threading

    from projections.deliveries import Dispatcher
    from service import logs

    settings = _settings()
    logs.configure(settings)
    projections = _projections()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    for s in projections.status():
        typer.echo(f"signoff project: {s.name} at {s.position}, log head {s.head}", err=True)
    dispatcher = Dispatcher.for_settings(settings, projections).start()  # webhooks
    try:
        projections.follow(stop)
    finally:
        dispatcher.close()
        projections.close()


@project_app.command("status")
def project_status(database_url: DatabaseUrl = None) -> None:
    """Each projection's position, the log's head, and the lag. Exits 0 when the store
    and every projection answer (a health check for the `signoff project` process)."""
    _reading(database_url)
    projections = _projections()
    try:
        for s in projections.status():
            typer.echo(f"{s.name:<8} position {s.position:>10}  head {s.head:>10}  "
                       f"lag {s.lag:>8}")
    finally:
        projections.close()


@project_app.command("rebuild", help="Rebuild one projection from the start of the log: "
                     f"{', '.join(MODULES)}.")
def project_rebuild(
    name: Annotated[str, typer.Argument(metavar="NAME",
                                        help=f"the projection: {', '.join(MODULES)}")],
    database_url: DatabaseUrl = None,
) -> None:
    if name not in MODULES:
        typer.echo(f"signoff: no projection {name!r} (there are: {', '.join(MODULES)})",
                   err=True)
        raise typer.Exit(2)
    _reading(database_url)
    projections = _projections([name])
    head = projections.app.head()
    try:
        with _log_progress(head, f"rebuilding {name}") as progress:
            count = projections.rebuild(name, progress)
        typer.echo(f"signoff: {name} rebuilt from {count} events", err=True)
    finally:
        projections.close()


# ------------------------------------------------------------------ audit

def _anchors() -> list[dict[str, Any]]:
    """The anchors projection's checkpoints and head, brought up to date first."""
    from projections import anchors

    projections = _projections([anchors.NAME])
    try:
        projections.catch_up(anchors.NAME)
        with projections.views[anchors.NAME].read() as c:
            return anchors.read_anchors(c)
    finally:
        projections.close()
        projections.app.close()


def _recorded_anchors() -> list[dict[str, Any]]:
    """The anchors brought up to date, or, when an event stops the projection, those
    recorded up to it (said on stderr)."""
    from eventsourcing.persistence import PersistenceError

    from projections import anchors

    try:
        return _anchors()
    except PersistenceError:
        raise
    except Exception as e:
        projections = _projections([anchors.NAME])
        try:
            with projections.views[anchors.NAME].read() as c:
                found = anchors.read_anchors(c)
        finally:
            projections.close()
            projections.app.close()
        typer.echo(f"signoff: the anchors cannot be brought up to date: an event cannot be "
                   f"read ({type(e).__name__}); using those recorded before it", err=True)
        return found


def _kept_anchor(text: str) -> dict[str, Any]:
    from projections.anchors import parse_anchor

    try:
        anchor, deprecated = parse_anchor(text)
    except ValueError:
        typer.echo(f"signoff: --anchor {text!r} is not EVENTS:HASH[:RUNS]", err=True)
        raise typer.Exit(2) from None
    if deprecated:
        typer.echo(f"signoff: --anchor {text!r}: POSITION:EVENTS:HASH is deprecated; its "
                   "position is ignored (positions change on import): give EVENTS:HASH",
                   err=True)
    return anchor


def _anchored(run: str | None = None) -> Any:
    """The run's head as the anchors saw it ({version, hash}), or every run's heads."""
    from projections import anchors

    projections = _projections([anchors.NAME])
    try:
        with projections.views[anchors.NAME].read() as c:
            return anchors.anchored_run(c, run) if run else anchors.anchored_runs(c)
    finally:
        projections.close()
        projections.app.close()


@audit_app.command("verify")
def audit_verify(
    run: Annotated[str | None, typer.Option(metavar="RUN_ID",
                                            help="verify this run only")] = None,
    anchor: Annotated[list[str] | None, typer.Option(
        metavar="EVENTS:HASH[:RUNS]",
        help="an anchor you kept (as `signoff audit anchor` printed it); may be repeated "
        "(POSITION:EVENTS:HASH, the old spelling, is still accepted)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Recompute every hash: each run's chain, and the whole log against its anchors.

    Exits 0 when all is intact, 1 naming the first broken event or anchor (an event that
    cannot be read is one: verification goes on past it)."""
    from eventsourcing.persistence import PersistenceError

    from bootstrap import build_app
    from projections import anchors as anchoring
    from service import audit
    from service.runs import RunNotFound

    kept = [_kept_anchor(a) for a in anchor or []]
    store = build_app(_reading(database_url))
    try:
        if run:
            try:
                anchored = _anchors() and _anchored(run)
            except PersistenceError:
                raise
            except Exception:  # an event the anchors projection cannot read past
                anchored = _anchored(run)
            report = audit.verify_run(store, run, anchored or None)
        else:
            try:
                anchors = [*_anchors(), *kept]
            except PersistenceError:
                raise
            except Exception as e:  # an event the anchors projection cannot read past
                projections = _projections([anchoring.NAME])
                try:
                    view = projections.views[anchoring.NAME]
                    with view.read() as c:
                        anchors = [*anchoring.read_anchors(c), *kept]
                    typer.echo(f"signoff: the anchors cannot be brought up to date past "
                               f"position {view.position()}: an event after it cannot be "
                               f"read ({type(e).__name__}); verifying against the anchors "
                               "recorded up to there", err=True)
                finally:
                    projections.close()
                    projections.app.close()
            with _log_progress(store.head(), "verifying") as progress:
                report = audit.verify_log(store, anchors, runs=_anchored(),
                                          progress=progress)
    except RunNotFound as e:
        typer.echo(f"signoff: {e}", err=True)
        raise typer.Exit(1) from None
    finally:
        store.close()
    result = report.as_dict()
    if as_json:
        typer.echo(json.dumps(result, default=str, indent=2))
    else:
        _print_report(result, run)
    raise typer.Exit(0 if report.intact else 1)


def _print_report(r: dict[str, Any], run: str | None) -> None:
    what = f"run {run}" if run else f"{r['runs']} runs"
    typer.echo(f"{'INTACT' if r['intact'] else 'BROKEN'}: {r['events']} events of {what}"
               + (f", {r['anchors_checked']} anchors" if not run else ""))
    if r["unchained_events"]:
        typer.echo(f"  {r['unchained_events']} events were recorded before the hash chain "
                   "(covered by the log anchors only)")
    b = r["first_broken"]
    if b:
        where = f"position {b['position']}, " if b.get("position") else ""
        typer.echo(f"  first broken event: {where}run {b['run_id']} version {b['version']} "
                   f"({b['type']}): {b['problem']}")
        if r["broken_events"] > 1:
            typer.echo(f"  {r['broken_events']} runs have a broken event")
    m = r["anchor_mismatch"]
    if m:
        typer.echo(f"  anchor of {m['expected_events']} events does not match: {m['problem']} "
                   f"(anchored {m['expected_events']} events, hash {m['expected_hash']}; "
                   f"found {m['found_events']}, {m['found_hash']})")
    if not run and r["head"]:
        h = r["head"]
        typer.echo(f"  log head: {h['events']}:{h['hash']}:{h['runs']} (at position "
                   f"{h['position']})")


@audit_app.command("anchor")
def audit_anchor(database_url: DatabaseUrl = None) -> None:
    """Print the log's current anchor (EVENTS:HASH:RUNS): keep it outside signoff;
    `signoff audit verify --anchor ...` later proves nothing before it changed."""
    _reading(database_url)
    found = [a for a in _anchors() if a["kind"] == "head"]
    if not found:
        typer.echo("signoff: the log is empty", err=True)
        raise typer.Exit(1)
    a = found[0]
    from projections.anchors import anchor_text

    typer.echo(anchor_text(a))
    typer.echo(f"signoff: anchored at {a['anchored_at']:%Y-%m-%d %H:%M:%S%z} (log position "
               f"{a['position']})", err=True)


def _time_option(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        typer.echo(f"signoff: {name} {value!r} is not an ISO 8601 time", err=True)
        raise typer.Exit(2) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@audit_app.command("export")
def audit_export(
    since: Annotated[str | None, typer.Option(metavar="TIME",
                                              help="from this time (ISO 8601)")] = None,
    until: Annotated[str | None, typer.Option(
        metavar="TIME", help="up to, not including, this time")] = None,
    format: Annotated[str, typer.Option(
        metavar="jsonl|csv",
        help="jsonl: every event with its hash; csv: the decision audit trail")] = "jsonl",
    output: Annotated[str, typer.Option("--output", "-o", metavar="FILE",
                                        help="file (- for stdout)")] = "-",
    database_url: DatabaseUrl = None,
) -> None:
    """Stream the record, in constant memory, with a progress bar on stderr.

    An event that cannot be read is left out: the rest is written, what was left out is
    named on stderr (position, run, version, why), and the exit status is 3."""
    from eventsourcing.persistence import PersistenceError

    from bootstrap import build_app
    from service.archive import export_events
    from service.runs import RunDamaged

    if format not in ("jsonl", "csv"):
        typer.echo("signoff: --format is jsonl or csv", err=True)
        raise typer.Exit(2)
    start, end = _time_option(since, "--since"), _time_option(until, "--until")
    _reading(database_url)
    out = sys.stdout if output == "-" else open(output, "w", encoding="utf-8")  # noqa: SIM115
    left: list[RunDamaged] = []  # the first 1,000 left out are named
    left_out = 0

    def leave_out(damaged: RunDamaged) -> None:
        nonlocal left_out
        left_out += 1
        if len(left) < 1000:
            left.append(damaged)

    try:
        if format == "csv":
            try:
                count = _export_decisions(out, start, end)
            except PersistenceError:
                raise
            except Exception as e:  # an event the decision trail cannot read past
                typer.echo(f"signoff: the decision trail cannot be brought up to date: an "
                           f"event cannot be read ({type(e).__name__}); `signoff audit "
                           "verify` names it, and `--format jsonl` exports every event but "
                           "those that cannot be read", err=True)
                if out is not sys.stdout:
                    out.close()
                    os.remove(output)
                raise typer.Exit(1) from None
        else:
            anchors = _recorded_anchors() if start is None and end is None else []
            store = build_app(_settings())
            count = 0
            try:
                with _log_progress(store.head(), "exporting") as progress:
                    for line in export_events(store, since=start, until=end,
                                              progress=progress, left_out=leave_out,
                                              anchors=anchors):
                        out.write(line)
                        count += line.startswith('{"position"')
            finally:
                store.close()
    finally:
        if out is not sys.stdout:
            out.close()
    for d in left:
        typer.echo(f"signoff: left out position {d.position}: run {d.run_id} version "
                   f"{d.version} ({d.type}): {d.problem}", err=True)
    if left_out > len(left):
        typer.echo(f"signoff: ... and {left_out - len(left)} more left out", err=True)
    typer.echo(f"signoff: exported {count} {'decisions' if format == 'csv' else 'events'}"
               + (f"; left out {left_out} that cannot be read (above): `signoff audit "
                  "verify` names the damage" if left_out else ""), err=True)
    if left_out:
        raise typer.Exit(3)


def _export_decisions(out: Any, since: datetime | None, until: datetime | None) -> int:
    from projections import audit
    from projections.csvfile import decisions_csv

    projections = _projections([audit.NAME])
    try:
        projections.catch_up(audit.NAME)
        rows = audit.iter_decisions(projections.views[audit.NAME].read, since=since,
                                    until=until)
        count = 0

        def counted() -> Any:
            nonlocal count
            for row in rows:
                count += 1
                yield row

        out.writelines(decisions_csv(counted()))
        return count
    finally:
        projections.close()
        projections.app.close()


@audit_app.command("import")
def audit_import(
    path: Annotated[str, typer.Argument(metavar="FILE",
                                        help="an export (jsonl); - for stdin")],
    anchor: Annotated[list[str] | None, typer.Option(
        metavar="EVENTS:HASH[:RUNS]",
        help="an anchor you kept: the export must match it; may be repeated")] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Check an export (every hash, every chain, the log chain against the anchors it
    carries and those given), then load it into an empty store and verify it there.
    An export that does not check is refused: nothing is imported."""
    import shutil
    import tempfile

    from bootstrap import build_app
    from service import audit
    from service.archive import ImportError_, check_export, import_events

    kept = [_kept_anchor(a) for a in anchor or []]
    spool = None
    if path == "-":  # read twice: checked, then imported
        spool = tempfile.NamedTemporaryFile("w+", encoding="utf-8", suffix=".jsonl")  # noqa: SIM115
        shutil.copyfileobj(sys.stdin, spool)
        spool.flush()
        path = spool.name
    try:
        with open(path, encoding="utf-8") as f:
            checked = check_export(f, kept)
    except ImportError_ as e:
        typer.echo(f"signoff: refused: {e}", err=True)
        raise typer.Exit(1) from None
    if not checked.anchors:
        typer.echo("signoff: warning: this export carries no anchors (a period, or written "
                   "by an older signoff): only its chains" + (" and the kept anchors"
                   if kept else "") + " were checked; a run removed whole would not show",
                   err=True)
    store = build_app(_settings(database_url=database_url))
    source = open(path, encoding="utf-8")  # noqa: SIM115
    try:
        size = os.path.getsize(path)
        with typer.progressbar(length=max(size, 1), label="importing",
                               file=sys.stderr) as bar:

            def lines() -> Any:
                for line in source:
                    bar.update(len(line))  # characters: close enough to bytes for a bar
                    yield line

            count = import_events(store, lines())
        report = audit.verify_log(store, [*checked.anchors, *kept])
    except ImportError_ as e:
        typer.echo(f"signoff: {e}", err=True)
        raise typer.Exit(1) from None
    finally:
        source.close()
        if spool is not None:
            spool.close()
        store.close()
    typer.echo(f"signoff: imported {count} events of {report.runs} runs", err=True)
    _print_report(report.as_dict(), None)
    raise typer.Exit(0 if report.intact else 1)


def _cli_actor() -> str:
    import getpass

    return f"cli:{getpass.getuser()}"


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(metavar="NAME", help="who holds the key: recorded as "
                                      "the actor of everything done with it")],
    role: Annotated[str, typer.Option(metavar="ROLE",
                                      help="client, reviewer, auditor or admin")],
    agent: Annotated[list[str] | None, typer.Option(
        metavar="AGENT_ID", help="limit a reviewer to this agent (repeat for several)")
    ] = None,
    tool: Annotated[list[str] | None, typer.Option(
        metavar="TOOL", help="limit a reviewer to this tool (repeat for several)")] = None,
    group: Annotated[list[str] | None, typer.Option(
        metavar="GROUP", help="a group of reviewers the holder is in: decisions escalated "
        "to it are theirs (repeat for several)")] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Issue an API key and print its secret (shown this once; only its hash is kept)."""
    from bootstrap import build_app
    from domain.keys import Role
    from service.keys import create_key

    try:
        parsed = Role(role)
    except ValueError:
        typer.echo(f"signoff: --role must be one of {', '.join(Role)}", err=True)
        raise typer.Exit(2) from None
    if (agent or tool) and parsed != Role.REVIEWER:
        typer.echo("signoff: --agent and --tool limit reviewers only", err=True)
        raise typer.Exit(2)
    if group and (parsed != Role.REVIEWER or any(not g.strip() for g in group)):
        typer.echo("signoff: --group names a group of reviewers (--role reviewer)", err=True)
        raise typer.Exit(2)
    if not name.strip() or len(name) > 200:
        typer.echo("signoff: --name must be 1 to 200 characters", err=True)
        raise typer.Exit(2)
    store = build_app(_settings(database_url=database_url))
    try:
        secret, key = create_key(store, name=name.strip(), role=parsed,
                                 created_by=_cli_actor(), agents=agent, tools=tool,
                                 groups=[g.strip() for g in group] if group else None)
    finally:
        store.close()
    typer.echo(secret)
    typer.echo(f"signoff: key {key.id} for {key.name} ({key.role}) created; the secret above "
               "is not stored: keep it now", err=True)


@keys_app.command("list")
def keys_list(as_json: AsJson = False, database_url: DatabaseUrl = None) -> None:
    """Every key ever issued (never the secrets)."""
    from bootstrap import build_app
    from service.keys import key_view, list_keys

    store = build_app(_reading(database_url))
    try:
        keys = [key_view(k) for k in list_keys(store)]
    finally:
        store.close()
    if as_json:
        typer.echo(json.dumps(keys, default=str, indent=2))
        return
    for k in keys:
        scope = " ".join([*(f"agent={a}" for a in k["agents"] or []),
                          *(f"tool={t}" for t in k["tools"] or []),
                          *(f"group={g}" for g in k["groups"] or [])])
        typer.echo(f"{k['id']}  {k['hint']}…  {k['role']:<8} {k['name']:<20} "
                   f"{'REVOKED' if k['revoked'] else 'active':<8} {scope}")


@keys_app.command("revoke")
def keys_revoke(
    key: Annotated[str, typer.Argument(metavar="KEY", help="the key's id, hint or name")],
    database_url: DatabaseUrl = None,
) -> None:
    """Revoke a key: requests with it are refused within seconds, everywhere."""
    from bootstrap import build_app
    from domain.errors import KeyRevoked
    from service.keys import KeyNotFound, revoke_key

    store = build_app(_reading(database_url))
    try:
        revoked = revoke_key(store, key, revoked_by=_cli_actor())
    except (KeyNotFound, KeyRevoked) as e:
        typer.echo(f"signoff: {e}", err=True)
        raise typer.Exit(1) from None
    finally:
        store.close()
    typer.echo(f"signoff: revoked key {revoked.id} of {revoked.name}", err=True)


@keys_app.command("generate")
def keys_generate() -> None:
    """Print a new key for SIGNOFF_CIPHER_KEY (AES-256, base64)."""
    from eventsourcing.cryptography import AESCipher

    typer.echo(AESCipher.create_key(32))


# ------------------------------------------------------------------ webhooks

@contextlib.contextmanager
def _webhooks_read() -> Iterator[Any]:
    """A read of the webhooks projection, brought up to date first; closed after."""
    from projections import webhooks

    projections = _projections([webhooks.NAME])
    try:
        projections.catch_up(webhooks.NAME)
        with projections.views[webhooks.NAME].read() as c:
            yield c
    finally:
        projections.close()
        projections.app.close()


@webhooks_app.command("create")
def webhooks_create(
    url: Annotated[str, typer.Argument(metavar="URL",
                                       help="http or https URL deliveries are POSTed to")],
    event: Annotated[list[str] | None, typer.Option(
        metavar="EVENT_TYPE",
        help="an event type to be told of (repeat for several; default: * for all)")] = None,
    secret: Annotated[str | None, typer.Option(
        metavar="SECRET",
        help="sign with this secret (16 or more characters); default: a new one")] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Subscribe a URL to events and print its secret (shown this once)."""
    from urllib.parse import urlsplit

    from domain.webhooks import UnknownEventType
    from projections import webhooks
    from service.webhooks import HostNotAllowed, allowed_hosts, check_host, create_webhook

    _settings(database_url=database_url)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        typer.echo("signoff: the URL must be http:// or https:// with a host", err=True)
        raise typer.Exit(2)
    if secret is not None and len(secret) < 16:
        typer.echo("signoff: --secret must have 16 or more characters", err=True)
        raise typer.Exit(2)
    try:
        check_host(url, allowed_hosts(_settings().webhook_hosts))
    except HostNotAllowed as e:
        typer.echo(f"signoff: {e}", err=True)
        raise typer.Exit(2) from None
    projections = _projections([webhooks.NAME])
    view = projections.views[webhooks.NAME]

    def keep(webhook_id: str, value: str) -> None:
        with view.write_transaction() as c:
            webhooks.keep_secret(c, webhook_id, value)

    try:
        made, webhook, _ = create_webhook(projections.app, url=url, event_types=event or ["*"],
                                          secret=secret, created_by=_cli_actor(),
                                          keep_secret=keep)
    except UnknownEventType as e:
        typer.echo(f"signoff: {e}", err=True)
        raise typer.Exit(2) from None
    finally:
        projections.close()
        projections.app.close()
    typer.echo(made)
    typer.echo(f"signoff: webhook {webhook.id} to {webhook.url} "
               f"({', '.join(webhook.event_types)}) created; keep the secret above", err=True)


@webhooks_app.command("list")
def webhooks_list(as_json: AsJson = False, database_url: DatabaseUrl = None) -> None:
    """Every subscription (never the secrets)."""
    from projections import webhooks

    _reading(database_url)
    with _webhooks_read() as c:
        rows = webhooks.read_webhooks(c)
    if as_json:
        typer.echo(json.dumps(rows, default=str, indent=2))
        return
    for w in rows:
        typer.echo(f"{w['id']}  {'DELETED' if w['deleted'] else 'active':<8} "
                   f"{','.join(w['event_types']):<24} {w['url']}")


@webhooks_app.command("delete")
def webhooks_delete(
    webhook_id: Annotated[str, typer.Argument(metavar="WEBHOOK_ID",
                                              help="the subscription's id")],
    database_url: DatabaseUrl = None,
) -> None:
    """Delete a subscription: nothing more is sent to it."""
    from bootstrap import build_app
    from domain.webhooks import WebhookDeleted
    from service.webhooks import WebhookNotFound, delete_webhook

    store = build_app(_reading(database_url))
    try:
        delete_webhook(store, webhook_id, deleted_by=_cli_actor())
    except (WebhookNotFound, WebhookDeleted) as e:
        typer.echo(f"signoff: {e}", err=True)
        raise typer.Exit(1) from None
    finally:
        store.close()
    typer.echo(f"signoff: deleted webhook {webhook_id}", err=True)


@webhooks_app.command("deliveries")
def webhooks_deliveries(
    webhook_id: Annotated[str, typer.Argument(metavar="WEBHOOK_ID",
                                              help="the subscription's id")],
    status: Annotated[str | None, typer.Option(
        metavar="STATUS", help="pending, delivered, failed or cancelled")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, metavar="N",
                                       help="at most this many deliveries")] = 50,
    as_json: AsJson = False,
    database_url: DatabaseUrl = None,
) -> None:
    """A subscription's deliveries, newest first, with their attempts."""
    from projections import webhooks

    _reading(database_url)
    with _webhooks_read() as c:
        rows = webhooks.read_deliveries(c, webhook_id, status=status, limit=limit)
    if as_json:
        typer.echo(json.dumps(rows, default=str, indent=2))
        return
    for d in rows:
        typer.echo(f"{d['position']:>10}  {d['event_type']:<14} {d['status']:<9} "
                   f"run {d['run_id']}  {len(d['attempts'])} attempts")
        for a in d["attempts"]:
            typer.echo(f"{'':>12}#{a['attempt']} {a['started_at']:%Y-%m-%d %H:%M:%S} "
                       f"{a['duration_ms']:.0f} ms  {a['status_code'] or a['error']}")


def main() -> None:
    from eventsourcing.persistence import (
        InterfaceError,
        MapperDeserialisationError,
        OperationalError,
    )

    from service.storekey import StoreKeyError

    try:
        app()
    except StoreKeyError as e:  # any command that opens the store (build_app)
        typer.echo(f"signoff: cannot open the store: {e}", err=True)
        sys.exit(2)
    except MapperDeserialisationError as e:
        typer.echo(f"signoff: cannot read the stored events: {e}\nIs SIGNOFF_CIPHER_KEY the "
                   "key they were written with (and unset for a store never encrypted)?",
                   err=True)
        sys.exit(1)
    except (OperationalError, InterfaceError) as e:  # the store out of reach, or unusable
        typer.echo(f"signoff: cannot use the store: {type(e).__name__}: {e}"
                   f"{_where(e, _settings())}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
