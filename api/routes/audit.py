"""Tamper evidence over HTTP: verify a run or the whole log (and the decision rows
against it), read the anchors, and the public key their signatures verify with."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from api.auth import A, allow
from api.deps import ContainerDep
from api.errors import problem_responses
from domain import chain
from projections import anchors
from projections.audit import AuditProjection
from projections.auditproof import DecisionRowsCheck
from service import audit

router = APIRouter(tags=["Audit"])


class BrokenEvent(BaseModel):
    run_id: str
    version: int
    problem: str
    type: str | None = None
    position: int | None = Field(None, description="the event's position in the log")


class AnchorMismatch(BaseModel):
    position: int | None = Field(
        None, description="the log position the anchor was taken at (information only: "
        "anchors are checked after their count of events)")
    expected_events: int
    expected_hash: str
    found_events: int
    found_hash: str
    problem: str


class BadSignature(BaseModel):
    kind: Literal["checkpoint", "head"]
    events: int
    position: int | None
    problem: str


class DifferentRow(BaseModel):
    position: int | None = Field(description="the row's log position (null: the counter)")
    run_id: str | None
    tool_call_id: str | None
    version: int | None = Field(description="the version of the event the row came from")
    problem: str = Field(description="each column that is not what the event says, or why "
                         "the row or its event is missing")


class ReadModelsReport(BaseModel):
    table: str
    rows: int = Field(description="rows compared with the log")
    upto: int = Field(description="the log position the rows were checked up to")
    differ: int = Field(description="rows (and counters) that are not what the log says")
    unbound: int = Field(description="rows that name no event version and hash (projected "
                         "before they were recorded: `signoff project rebuild audit`)")
    named: list[DifferentRow] = Field(description="the first 100 that differ")
    stopped: str | None = Field(description="why the rows past ``upto`` were not checked")


class VerifyReport(BaseModel):
    intact: bool = Field(description="every hash recomputed matches, and every anchor")
    events: int
    runs: int
    unchained_events: int = Field(
        description="events recorded before the hash chain (covered by the anchors only)")
    broken_events: int = Field(description="runs with a broken event (one counted per run)")
    first_broken: BrokenEvent | None
    anchors_checked: int
    anchor_mismatch: AnchorMismatch | None
    head: dict[str, int | str | None] | None = Field(
        description="where the check ended: a run's newest version, its hash and its log "
        "position; or the log's position, event count, log hash and runs digest")
    anchored: dict[str, int | str | None] | None = Field(
        None, description="a run's check: its newest version and hash as the anchors saw "
        "them (a run whose stored head is older was truncated)")
    signatures_checked: int = Field(
        0, description="stored anchors whose signature was checked (a public key is set)")
    bad_signatures: list[BadSignature] = Field(
        default_factory=list, description="anchors unsigned, or whose signature fails")
    read_models: ReadModelsReport | None = Field(
        None, description="the decision rows against the log (null: not checked)")


class Anchor(BaseModel):
    kind: Literal["checkpoint", "head"]
    events: int = Field(description="the count of events the anchor was taken after")
    hash: str = Field(description="the log hash after those events")
    runs: str | None = Field(description="the digest of every stream's newest event then "
                             "(the head; null for a checkpoint taken since checkpoints "
                             "carry none: the log hash binds the same events)")
    position: int = Field(description="the log position it was taken at (information)")
    anchored_at: datetime
    text: str = Field(description="as `signoff audit anchor` prints it: EVENTS:HASH:RUNS")
    signature: str | None = Field(
        None, description="Ed25519 signature (base64) of EVENTS:HASH:RUNS for a "
        "checkpoint, EVENTS:HASH for the head; null: not signed (GET /audit/public-key)")


class PublicKey(BaseModel):
    algorithm: Literal["Ed25519"] = "Ed25519"
    public_keys: list[str] = Field(
        description="every key the anchors' signatures are verified with (base64 of the 32 "
        "raw bytes); the first is this service's signing key's when it signs")
    pem: list[str] = Field(description="the same keys as PEM")
    signing: bool = Field(description="whether this process signs the anchors it writes")


@router.get("/runs/{run_id}/verify", responses=problem_responses(404),
            response_model=VerifyReport, dependencies=[allow(A)])
def verify_run(run_id: str, c: ContainerDep) -> VerifyReport:
    """Recompute the run's hash chain from its stored events; name the first broken
    event (with its log position), or report it intact (``head``: the run's newest event,
    its hash and log position). A run cut short, rewritten or removed after the anchors
    saw it is named too (``anchored``: its newest event as they saw it). The whole log:
    ``GET /audit/verify``."""
    with c.projections.views[anchors.AnchorsProjection.name].read() as cur:
        anchored = anchors.anchored_run(cur, run_id)
    return VerifyReport.model_validate(audit.verify_run(c.store, run_id, anchored).as_dict())


@router.get("/audit/verify", response_model=VerifyReport, dependencies=[allow(A)])
async def verify_log(
    c: ContainerDep,
    log_only: bool = Query(False, description="the log and its anchors only, not the "
                           "decision rows"),
) -> VerifyReport:
    """Recompute every run's chain and the log chain, and compare it with every anchor
    (and its signature, when SIGNOFF_ANCHOR_PUBLIC_KEY or a signing key is set); then
    compare every decision row with the event it came from, naming each that differs.
    Reads the whole log (about 10,000 events a second): on a large store use
    ``signoff audit verify``, which shows its progress."""
    def run() -> VerifyReport:
        with c.projections.views[anchors.AnchorsProjection.name].read() as cur:
            kept = anchors.read_anchors(cur)
            runs = anchors.anchored_runs(cur)
        rows = None
        if not log_only:
            view = c.projections.views[AuditProjection.name]
            rows = DecisionRowsCheck(view.read, view.position(), view.position)
        try:
            report = audit.verify_log(c.store, kept, runs=runs,
                                      public_keys=c.settings.anchor_public_keys(),
                                      observe=rows.add if rows else None)
            if rows is not None:
                report.read_models = rows.finish()
        finally:
            if rows is not None:
                rows.close()
        return VerifyReport.model_validate(report.as_dict())

    return await run_in_threadpool(run)


@router.get("/audit/anchors", response_model=list[Anchor], dependencies=[allow(A)])
def get_anchors(c: ContainerDep) -> list[Anchor]:
    """The log's anchors: a checkpoint every 1,000 events, and the head (the newest).
    Keep one outside signoff (``EVENTS:HASH:RUNS``, its ``text``) to prove later that
    nothing before it was changed: ``signoff audit verify --anchor``."""
    with c.projections.views[anchors.AnchorsProjection.name].read() as cur:
        return [Anchor.model_validate({**a, "text": anchors.anchor_text(a)})
                for a in anchors.read_anchors(cur)]


@router.get("/audit/public-key", response_model=PublicKey, dependencies=[allow(A)])
def get_public_key(c: ContainerDep) -> PublicKey:
    """The Ed25519 public keys the anchors' signatures verify with: give one to whoever
    checks an export (``signoff audit import --public-key``). Empty when anchors are
    neither signed nor checked here."""
    keys = c.settings.anchor_public_keys()
    return PublicKey(public_keys=[chain.public_text(k) for k in keys],
                     pem=[chain.public_pem(k) for k in keys],
                     signing=c.settings.anchor_signer() is not None)
