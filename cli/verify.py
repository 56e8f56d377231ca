"""What ``signoff audit verify`` (and ``import``, ``export``) read beside the log: the
anchors recorded, the anchors kept, the public keys, the decision rows; and how a report
is printed."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from eventsourcing.persistence import PersistenceError

from cli.common import fail, log_progress, projections, read_projection
from domain import chain
from projections import anchors as anchoring
from projections import audit as decision_trail
from projections.auditproof import DecisionRowsCheck, named_lines
from service.audit import Report, verify_log, verify_run
from service.config import Settings
from service.runs import RunService

ANCHORS = anchoring.AnchorsProjection.name
DECISIONS = decision_trail.AuditProjection.name
Anchor = dict[str, Any]
SHOWN = 20  # rows and signatures named on the terminal (--json: up to 100)


def anchors_now() -> list[Anchor]:
    """The anchors projection's checkpoints and head, brought up to date first."""
    with read_projection(ANCHORS) as c:
        return anchoring.read_anchors(c)


def recorded() -> tuple[list[Anchor], int]:
    """The anchors recorded so far (not brought up to date), and the position they reach."""
    opened = projections([ANCHORS])
    try:
        view = opened.views[ANCHORS]
        with view.read() as c:
            found = anchoring.read_anchors(c)
        return found, view.position()
    finally:
        opened.close()
        opened.store.close()


def recorded_anchors() -> list[Anchor]:
    """The anchors brought up to date, or, when an event stops the projection, those
    recorded up to it (said on stderr)."""
    try:
        return anchors_now()
    except PersistenceError:
        raise
    except Exception as e:
        found, _ = recorded()
        typer.echo(f"signoff: the anchors cannot be brought up to date: an event cannot be "
                   f"read ({type(e).__name__}); using those recorded before it", err=True)
        return found


def kept_anchor(text: str) -> Anchor:
    try:
        anchor, deprecated = anchoring.parse_anchor(text)
    except ValueError:
        raise fail(f"--anchor {text!r} is not EVENTS:HASH[:RUNS]", 2) from None
    if deprecated:
        typer.echo(f"signoff: --anchor {text!r}: POSITION:EVENTS:HASH is deprecated; its "
                   "position is ignored (positions change on import): give EVENTS:HASH",
                   err=True)
    return anchor


def public_keys(option: list[str] | None, settings: Settings) -> list[Ed25519PublicKey]:
    """The keys given (``--public-key``), else those of the settings."""
    return given_keys(option) or settings.anchor_public_keys()


def given_keys(option: list[str] | None) -> list[Ed25519PublicKey]:
    """The keys given (``--public-key``, each may be comma-separated); exits 2 on one
    that is not an Ed25519 public key."""
    try:
        return [chain.public_key(k) for text in option or [] for k in text.split(",")
                if k.strip()]
    except ValueError as e:
        raise fail(f"--public-key: {e}", 2) from None


def _anchored(run: str | None = None) -> Any:
    """The run's head as the anchors saw it ({version, hash}), or every run's heads."""
    with read_projection(ANCHORS, catch_up=False) as c:
        return anchoring.anchored_run(c, run) if run else anchoring.anchored_runs(c)


def verify_one_run(store: RunService, run: str) -> Report:
    try:
        anchored = anchors_now() and _anchored(run)
    except PersistenceError:
        raise
    except Exception:  # an event the anchors projection cannot read past
        anchored = _anchored(run)
    return verify_run(store, run, anchored or None)


def verify_whole_log(store: RunService, kept: list[Anchor], keys: list[Ed25519PublicKey],
                     *, log_only: bool) -> Report:
    """Every chain, the log against the anchors (and their signatures, given ``keys``),
    and, unless ``log_only``, every decision row against the log."""
    try:
        found = anchors_now()
    except PersistenceError:
        raise
    except Exception as e:  # an event the anchors projection cannot read past
        found, position = recorded()
        typer.echo(f"signoff: the anchors cannot be brought up to date past position "
                   f"{position}: an event after it cannot be read ({type(e).__name__}); "
                   "verifying against the anchors recorded up to there", err=True)
    with contextlib.ExitStack() as stack:
        rows = None if log_only else stack.enter_context(_decision_rows())
        with log_progress(store.head(), "verifying") as progress:
            report = verify_log(store, [*found, *kept], runs=_anchored(), progress=progress,
                                public_keys=keys, observe=rows.add if rows else None)
        if rows is not None:
            report.read_models = rows.finish()
    return report


@contextlib.contextmanager
def _decision_rows() -> Iterator[DecisionRowsCheck]:
    """The check of the decision rows, over the audit projection brought up to date (or
    as far as it goes: an event it cannot read stops it, and the check there)."""
    opened = projections([DECISIONS])
    try:
        view = opened.views[DECISIONS]
        try:
            opened.catch_up(DECISIONS)
        except PersistenceError:
            raise
        except Exception as e:  # the event is named by the log's check
            typer.echo(f"signoff: the decision trail cannot be brought up to date past "
                       f"position {view.position()}: an event after it cannot be read "
                       f"({type(e).__name__}); its rows are checked up to there", err=True)
        check = DecisionRowsCheck(view.read, view.position(), view.position)
        try:
            yield check
        finally:
            check.close()
    finally:
        opened.close()
        opened.store.close()


def print_report(r: dict[str, Any], run: str | None) -> None:
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
    _print_signatures(r)
    _print_rows(r.get("read_models"))
    if not run and r["head"]:
        h = r["head"]
        typer.echo(f"  log head: {h['events']}:{h['hash']}:{h['runs']} (at position "
                   f"{h['position']})")


def _print_signatures(r: dict[str, Any]) -> None:
    bad = r.get("bad_signatures") or []
    if r.get("signatures_checked"):
        typer.echo(f"  signatures: {r['signatures_checked'] - len(bad)} of "
                   f"{r['signatures_checked']} anchors signed and verified")
    for s in bad[:SHOWN]:
        typer.echo(f"  anchor of {s['events']} events ({s['kind']}, position "
                   f"{s['position']}): {s['problem']}")


def _print_rows(rows: dict[str, Any] | None) -> None:
    if rows is None:
        return
    typer.echo(f"  decision rows: {rows['rows']} checked against the log up to position "
               f"{rows['upto']}" + (f"; {rows['differ']} differ" if rows["differ"] else ""))
    for line in list(named_lines(rows))[:SHOWN]:
        typer.echo(f"    {line}")
    if rows["differ"] > SHOWN:
        typer.echo(f"    ... and {rows['differ'] - SHOWN} more (--json names up to 100)")
    if rows["unbound"]:
        typer.echo(f"  {rows['unbound']} decision rows name no event version and hash "
                   "(projected before they were recorded): `signoff project rebuild audit`")
    if rows["stopped"]:
        typer.echo(f"  decision rows: {rows['stopped']}")
