"""``signoff audit``: prove the record intact (verify, anchor); export it and import it."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from datetime import datetime
from typing import IO, Annotated, Any

import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from eventsourcing.persistence import PersistenceError

from bootstrap import build_app
from cli.common import (
    Command,
    DatabaseUrl,
    existing_store,
    fail,
    group,
    load_settings,
    log_progress,
    projections,
    time_option,
)
from cli.verify import (
    DECISIONS,
    Anchor,
    anchors_now,
    given_keys,
    kept_anchor,
    print_report,
    public_keys,
    recorded_anchors,
    verify_one_run,
    verify_whole_log,
)
from domain import chain
from projections import anchors as anchoring
from projections import audit as decision_trail
from projections.csvfile import decisions_csv
from service.archive import ImportError_, check_export, export_events, import_events
from service.audit import Report, verify_log
from service.config import Settings
from service.runs import RunDamaged, RunNotFound

audit = group("Prove the record intact; export and import it.")

PublicKeys = Annotated[list[str] | None, typer.Option(
    "--public-key", metavar="KEY",
    help="an Ed25519 public key the anchors' signatures must verify with (PEM or base64 "
    "of its 32 raw bytes; `signoff audit public-key` prints it); may be repeated")]


@audit.command("verify", cls=Command)
def verify(
    run: Annotated[str | None, typer.Option(metavar="RUN_ID",
                                            help="verify this run only")] = None,
    anchor: Annotated[list[str] | None, typer.Option(
        metavar="EVENTS:HASH[:RUNS]",
        help="an anchor you kept (as `signoff audit anchor` printed it); may be repeated "
        "(POSITION:EVENTS:HASH is accepted too, its position ignored)")
    ] = None,
    public_key: PublicKeys = None,
    log_only: Annotated[bool, typer.Option(
        "--log-only", help="check the log and its anchors only, not the decision rows")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Recompute every hash: each run's chain, the whole log against its anchors (and
    their signatures, with a public key: SIGNOFF_ANCHOR_PUBLIC_KEY or --public-key), and
    every decision row against the event it came from.

    Exits 0 when all is intact, 1 naming the first broken event or anchor, each anchor
    whose signature fails and each decision row that differs (an event that cannot be
    read is a broken one: verification goes on past it)."""
    kept = [kept_anchor(a) for a in anchor or []]
    settings = existing_store(database_url)
    keys = public_keys(public_key, settings)
    store = build_app(settings)
    try:
        report = (verify_one_run(store, run) if run else
                  verify_whole_log(store, kept, keys, log_only=log_only))
    except RunNotFound as e:
        raise fail(str(e)) from None
    finally:
        store.close()
    result = report.as_dict()
    if as_json:
        typer.echo(json.dumps(result, default=str, indent=2))
    else:
        print_report(result, run)
    raise typer.Exit(0 if report.intact else 1)


@audit.command("public-key", cls=Command)
def print_public_key(
    pem: Annotated[bool, typer.Option("--pem", help="print it as PEM")] = False,
) -> None:
    """Print the public key of SIGNOFF_ANCHOR_SIGNING_KEY (base64 of its 32 raw bytes),
    to give to whoever checks the anchors' signatures (`signoff audit verify
    --public-key`, `signoff audit import --public-key`)."""
    signer = load_settings().anchor_signer()
    if signer is None:
        raise fail("SIGNOFF_ANCHOR_SIGNING_KEY is not set: the anchors are not signed")
    key = signer.public_key()
    typer.echo(chain.public_pem(key).strip() if pem else chain.public_text(key))


@audit.command("anchor", cls=Command)
def print_anchor(database_url: DatabaseUrl = None) -> None:
    """Print the log's current anchor (EVENTS:HASH:RUNS): keep it outside signoff;
    `signoff audit verify --anchor ...` later proves nothing before it changed."""
    existing_store(database_url)
    found = [a for a in anchors_now() if a["kind"] == "head"]
    if not found:
        raise fail("the log is empty")
    a = found[0]
    typer.echo(anchoring.anchor_text(a))
    typer.echo(f"signoff: anchored at {a['anchored_at']:%Y-%m-%d %H:%M:%S%z} (log position "
               f"{a['position']})", err=True)


@audit.command("export", cls=Command)
def export(
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
    if format not in ("jsonl", "csv"):
        raise fail("--format is jsonl or csv", 2)
    start, end = time_option(since, "--since"), time_option(until, "--until")
    settings = existing_store(database_url)
    out = sys.stdout if output == "-" else open(output, "w", encoding="utf-8")  # noqa: SIM115
    left: list[RunDamaged] = []  # the first 1,000 left out are named
    try:
        if format == "csv":
            count, left_out = _export_decisions(out, output, start, end), 0
        else:
            count, left_out = _export_events(settings, out, start, end, left)
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


def _export_events(settings: Settings, out: IO[str], since: datetime | None, until: datetime | None,
                   left: list[RunDamaged]) -> tuple[int, int]:
    """Every event (with the anchors, for a whole log); those that cannot be read are left
    out, the first 1,000 of them kept in ``left``. Returns (written, left out)."""
    anchors = recorded_anchors() if since is None and until is None else []
    left_out = 0

    def leave_out(damaged: RunDamaged) -> None:
        nonlocal left_out
        left_out += 1
        if len(left) < 1000:
            left.append(damaged)

    store = build_app(settings)
    count = 0
    try:
        with log_progress(store.head(), "exporting") as progress:
            for line in export_events(store, since=since, until=until, progress=progress,
                                      left_out=leave_out, anchors=anchors):
                out.write(line)
                count += line.startswith('{"position"')
    finally:
        store.close()
    return count, left_out


def _export_decisions(out: IO[str], output: str, since: datetime | None,
                      until: datetime | None) -> int:
    """The decision audit trail as CSV, brought up to date first. Returns the rows
    written; when an event stops the trail, exits 1 and removes the file begun."""
    try:
        return _write_decisions(out, since, until)
    except PersistenceError:
        raise
    except Exception as e:  # an event the decision trail cannot read past
        typer.echo(f"signoff: the decision trail cannot be brought up to date: an event "
                   f"cannot be read ({type(e).__name__}); `signoff audit verify` names it, "
                   "and `--format jsonl` exports every event but those that cannot be read",
                   err=True)
        if out is not sys.stdout:
            out.close()
            os.remove(output)
        raise typer.Exit(1) from None


def _write_decisions(out: IO[str], since: datetime | None, until: datetime | None) -> int:
    opened = projections([DECISIONS])
    try:
        opened.catch_up(DECISIONS)
        rows = decision_trail.iter_decisions(opened.views[DECISIONS].read, since=since,
                                        until=until)
        count = 0

        def counted() -> Iterator[Any]:
            nonlocal count
            for row in rows:
                count += 1
                yield row

        out.writelines(decisions_csv(counted()))
        return count
    finally:
        opened.close()
        opened.store.close()


@audit.command("import", cls=Command)
def import_(
    path: Annotated[str, typer.Argument(metavar="FILE",
                                        help="an export (jsonl); - for stdin")],
    anchor: Annotated[list[str] | None, typer.Option(
        metavar="EVENTS:HASH[:RUNS]",
        help="an anchor you kept: the export must match it; may be repeated")] = None,
    public_key: PublicKeys = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Check an export (every hash, every chain, the log chain against the anchors it
    carries and those given; with --public-key, every anchor it carries must be signed
    with that key), then load it into an empty store and verify it there. An export that
    does not check is refused: nothing is imported."""
    kept = [kept_anchor(a) for a in anchor or []]
    keys = given_keys(public_key)
    spool = None
    if path == "-":  # read twice: checked, then imported
        spool = tempfile.NamedTemporaryFile("w+", encoding="utf-8", suffix=".jsonl")  # noqa: SIM115
        shutil.copyfileobj(sys.stdin, spool)
        spool.flush()
        path = spool.name
    try:
        report, count = _import(path, kept, keys, database_url)
    finally:
        if spool is not None:
            spool.close()
    typer.echo(f"signoff: imported {count} events of {report.runs} runs", err=True)
    print_report(report.as_dict(), None)
    raise typer.Exit(0 if report.intact else 1)


def _import(path: str, kept: list[Anchor], keys: list[Ed25519PublicKey],
            database_url: str | None) -> tuple[Report, int]:
    """Check the export at ``path``, import it, and verify the store. Returns the report
    and the events imported."""
    try:
        with open(path, encoding="utf-8") as f:
            checked = check_export(f, kept, public_keys=keys)
    except ImportError_ as e:
        raise fail(f"refused: {e}") from None
    if checked.signed and not keys:
        typer.echo(f"signoff: {checked.signed} of the export's anchors are signed: give "
                   "--public-key to check their signatures", err=True)
    if not checked.anchors:
        typer.echo("signoff: warning: this export carries no anchors (a period, or written "
                   "by an older signoff): only its chains" + (" and the kept anchors"
                   if kept else "") + " were checked; a run removed whole would not show",
                   err=True)
    store = build_app(load_settings(database_url=database_url))
    try:
        with open(path, encoding="utf-8") as source, typer.progressbar(
                length=max(os.path.getsize(path), 1), label="importing",
                file=sys.stderr) as bar:

            def lines() -> Iterator[str]:
                for line in source:
                    bar.update(len(line))  # characters: close enough to bytes for a bar
                    yield line

            count = import_events(store, lines())
        return verify_log(store, [*checked.anchors, *kept]), count
    except ImportError_ as e:
        raise fail(str(e)) from None
    finally:
        store.close()
