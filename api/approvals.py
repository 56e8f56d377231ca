"""Approvals at the edge, in Agno 3.1's shapes: ``ApprovalResponse`` (``approval_body``),
the paginated list, the count and the status (``GET /approvals...``). Times are epoch
seconds, as Agno's approvals carry them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal
from uuid import NAMESPACE_URL, uuid5

from pydantic import BaseModel, ConfigDict, Field

from api.agno import tool_execution
from domain.calls import ToolCall
from domain.values import CallState, Requirement
from projections.approvals import Approval

Status = Literal["pending", "approved", "rejected", "expired", "cancelled"]
# How deep a list reaches (page x limit), and how far its resolved approvals are counted.
MAX_WINDOW = 10_000


class ToolExecution(BaseModel):
    """Agno's ``ToolExecution`` (as the run's ``tools`` list it)."""

    model_config = ConfigDict(extra="allow")

    tool_call_id: str
    tool_name: str
    tool_args: Any


class ApprovalRequirement(BaseModel):
    """The call as the paused run listed it in ``requirements``."""

    id: str
    created_at: str
    tool_execution: ToolExecution


class ApprovalOut(BaseModel):
    """Agno's ``ApprovalResponse``. Times are epoch seconds."""

    id: str = Field(description="Derived from the run and the call: the same for good.")
    run_id: str
    session_id: str
    status: Status
    source_type: Literal["agent"]
    approval_type: Literal["required"]
    pause_type: Literal["confirmation"]
    tool_name: str
    tool_args: Any
    expires_at: int | None = Field(description="When a pending approval expires (its "
                                   "decision_timeout), or when an expired one did.")
    agent_id: str
    team_id: None
    workflow_id: None
    user_id: str | None
    schedule_id: None
    schedule_run_id: None
    source_name: str = Field(description="The agent's name.")
    requirements: list[ApprovalRequirement]
    context: dict[str, Any] = Field(description="`tool_names`, `source_name`.")
    resolution_data: dict[str, Any] | None = Field(
        description="`{\"note\": ...}`: the reviewer's note (an approval's) or reason (a "
        "rejection's), when one was given.")
    resolved_by: str | None = Field(description="Who decided: the authenticated caller; "
                                    "`system` for an expiry.")
    resolved_at: int | None
    created_at: int
    updated_at: int
    run_status: str | None = Field(description="The run's status now.")


class PageMeta(BaseModel):
    page: int
    limit: int
    total_pages: int
    total_count: int = Field(description=f"Resolved approvals are counted up to "
                             f"{MAX_WINDOW:,}: beyond, `total_exact` is false.")
    search_time_ms: float
    total_exact: bool = Field(description="False when more match than `total_count`.")


class ApprovalPage(BaseModel):
    data: list[ApprovalOut]
    meta: PageMeta


class ApprovalCount(BaseModel):
    count: int


class ApprovalStatus(BaseModel):
    approval_id: str
    status: Status
    run_id: str
    resolved_at: int | None
    resolved_by: str | None


def approval_body(a: Approval, source_name: str) -> dict[str, Any]:
    """An approval as Agno's ``ApprovalResponse``: the call as its paused run listed it
    (``requirements``), and the resolution. ``source_name``: the agent's name."""
    asked = ToolCall(tool_call_id=a.tool_call_id, tool_name=a.tool_name,
                     tool_args=a.tool_args, requires=Requirement.CONFIRMATION,
                     confirmation_message=None, user_input_schema=None,
                     stop_after_tool_call=False, editable_args=True,
                     state=CallState.PENDING, requested_at=a.requested_at)
    created = epoch(a.requested_at)
    return {
        "id": a.id, "run_id": a.run_id, "session_id": a.session_id, "status": a.status,
        "source_type": "agent", "approval_type": "required", "pause_type": "confirmation",
        "tool_name": a.tool_name, "tool_args": a.tool_args,
        "expires_at": epoch(a.expires_at), "agent_id": a.agent_id, "team_id": None,
        "workflow_id": None, "user_id": a.user_id, "schedule_id": None,
        "schedule_run_id": None, "source_name": source_name,
        "requirements": [{
            "id": requirement_id(a.run_id, a.tool_call_id),
            "created_at": a.requested_at.astimezone(UTC).isoformat(),
            "tool_execution": {**tool_execution(asked), "approval_type": "required"}}],
        "context": {"tool_names": [a.tool_name], "source_name": source_name},
        "resolution_data": {"note": a.note} if a.note is not None else None,
        "resolved_by": a.resolved_by, "resolved_at": epoch(a.resolved_at),
        "created_at": created, "updated_at": epoch(a.resolved_at) or created,
        "run_status": a.run_status,
    }


def requirement_id(run_id: str, tool_call_id: str) -> str:
    """The id the run gives the call's requirement (``api/agno.py``), so that a client
    matches the approval's requirement with the run's."""
    return str(uuid5(NAMESPACE_URL, f"signoff:{run_id}:{tool_call_id}"))


def epoch(ts: datetime | None) -> int | None:
    return int(ts.timestamp()) if ts is not None else None
