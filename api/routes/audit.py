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
    position: int
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
        "position, event count and log hash")


class Anchor(BaseModel):
    kind: Literal["checkpoint", "head"]
    position: int
    events: int
    hash: str
    anchored_at: datetime


@router.get("/runs/{run_id}/verify", responses=problem_responses(404),
            response_model=VerifyReport, dependencies=[allow(A)])
def verify_run(run_id: str, c: ContainerDep) -> VerifyReport:
    """Recompute the run's hash chain from its stored events; name the first broken
    event, or report it intact. (A run removed whole, or its last events, only show in
    the whole log's check: ``GET /audit/verify``.)"""
    return VerifyReport.model_validate(audit.verify_run(c.app, run_id).as_dict())


@router.get("/audit/verify", response_model=VerifyReport, dependencies=[allow(A)])
async def verify_log(c: ContainerDep) -> VerifyReport:
    """Recompute every run's chain and the log chain, and compare it with every anchor.
    Reads the whole log (about 10,000 events a second): on a large store use
    ``signoff audit verify``, which shows its progress."""
    def run() -> VerifyReport:
        with c.projections.views[anchors.NAME].read() as cur:
            kept = anchors.read_anchors(cur)
        return VerifyReport.model_validate(audit.verify_log(c.app, kept).as_dict())

    return await run_in_threadpool(run)


@router.get("/audit/anchors", response_model=list[Anchor], dependencies=[allow(A)])
def get_anchors(c: ContainerDep) -> list[Anchor]:
    """The log's anchors: a checkpoint every 1,000 events, and the head (the newest).
    Keep one outside signoff (``POSITION:EVENTS:HASH``) to prove later that nothing
    before it was changed: ``signoff audit verify --anchor``."""
    with c.projections.views[anchors.NAME].read() as cur:
        return [Anchor.model_validate(a) for a in anchors.read_anchors(cur)]
