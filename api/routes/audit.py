"""Tamper evidence over HTTP: verify a run or the whole log, and read the anchors."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from api.auth import A, allow
from api.deps import ContainerDep
from api.errors import problem_responses
from projections import anchors
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
        description="where the check ended: the run's version and hash, or the log's "
        "position, event count, log hash and runs digest")
    anchored: dict[str, int | str | None] | None = Field(
        None, description="a run's check: its newest version and hash as the anchors saw "
        "them (a run whose stored head is older was truncated)")


class Anchor(BaseModel):
    kind: Literal["checkpoint", "head"]
    events: int = Field(description="the count of events the anchor was taken after")
    hash: str = Field(description="the log hash after those events")
    runs: str = Field(description="the digest of every stream's newest event then")
    position: int = Field(description="the log position it was taken at (information)")
    anchored_at: datetime
    text: str = Field(description="as `signoff audit anchor` prints it: EVENTS:HASH:RUNS")


@router.get("/runs/{run_id}/verify", responses=problem_responses(404),
            response_model=VerifyReport, dependencies=[allow(A)])
def verify_run(run_id: str, c: ContainerDep) -> VerifyReport:
    """Recompute the run's hash chain from its stored events; name the first broken
    event, or report it intact. (A run removed whole, or its last events, only show in
    the whole log's check: ``GET /audit/verify``.)"""
    with c.projections.views[anchors.AnchorsProjection.name].read() as cur:
        anchored = anchors.anchored_run(cur, run_id)
    return VerifyReport.model_validate(audit.verify_run(c.app, run_id, anchored).as_dict())


@router.get("/audit/verify", response_model=VerifyReport, dependencies=[allow(A)])
async def verify_log(c: ContainerDep) -> VerifyReport:
    """Recompute every run's chain and the log chain, and compare it with every anchor.
    Reads the whole log (about 10,000 events a second): on a large store use
    ``signoff audit verify``, which shows its progress."""
    def run() -> VerifyReport:
        with c.projections.views[anchors.AnchorsProjection.name].read() as cur:
            kept = anchors.read_anchors(cur)
            runs = anchors.anchored_runs(cur)
        return VerifyReport.model_validate(audit.verify_log(c.app, kept, runs=runs).as_dict())

    return await run_in_threadpool(run)


@router.get("/audit/anchors", response_model=list[Anchor], dependencies=[allow(A)])
def get_anchors(c: ContainerDep) -> list[Anchor]:
    """The log's anchors: a checkpoint every 1,000 events, and the head (the newest).
    Keep one outside signoff (``EVENTS:HASH:RUNS``, its ``text``) to prove later that
    nothing before it was changed: ``signoff audit verify --anchor``."""
    with c.projections.views[anchors.AnchorsProjection.name].read() as cur:
        return [Anchor.model_validate({**a, "text": anchors.anchor_text(a)})
                for a in anchors.read_anchors(cur)]
