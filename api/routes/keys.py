"""API keys over HTTP (the admin role): list, issue, revoke."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, Field, ValidationInfo, field_validator, model_validator

from api.auth import ADMIN, allow
from api.deps import ContainerDep
from api.errors import ProblemError, problem_responses
from api.wire import Body
from domain.errors import KeyRevoked
from domain.keys import Role
from service.auth import ANONYMOUS, Identity
from service.keys import (
    KeyNameTaken,
    KeyNotFound,
    KeyRefused,
    create_key,
    empty_scope,
    key_view,
    list_keys,
    revoke_key,
)

router = APIRouter(tags=["Keys"])

_NAME = Field(min_length=1, max_length=200, pattern=r"^\S(.*\S)?$")


class KeyOut(BaseModel):
    id: str
    name: str
    role: Role
    hint: str = Field(description="the secret's first characters")
    agents: list[str] | None
    tools: list[str] | None
    groups: list[str] | None = Field(None, description="the groups of reviewers the holder "
                                     "is in: calls escalated to one of them are theirs")
    created_by: str
    created_at: datetime
    revoked: bool


class NewKey(Body):
    name: str = _NAME
    role: Role
    agents: list[Annotated[str, _NAME]] | None = Field(
        None, max_length=100, description="limit a reviewer to these agents (absent or "
        "null: all; an empty list is refused)")
    tools: list[Annotated[str, _NAME]] | None = Field(
        None, max_length=100, description="limit a reviewer to these tools (absent or "
        "null: all; an empty list is refused)")
    groups: list[Annotated[str, _NAME]] | None = Field(
        None, max_length=100, description="the reviewer's groups (decisions escalated to "
        "one of them: see the tool's escalate_to)")

    @field_validator("agents", "tools")
    @classmethod
    def _not_empty(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if value is not None and not value:
            raise ValueError(empty_scope(str(info.field_name)))
        return value

    @model_validator(mode="after")
    def _scope_for_reviewers(self) -> NewKey:
        if (self.agents or self.tools) and self.role != Role.REVIEWER:
            raise ValueError("agents and tools limit reviewers only")
        if self.groups and self.role != Role.REVIEWER:
            raise ValueError("groups are groups of reviewers")
        return self


class IssuedKey(BaseModel):
    secret: str = Field(description="shown this once: only its hash is kept")
    key: KeyOut


def _out(key: Any) -> KeyOut:
    return KeyOut.model_validate(key_view(key))


@router.get("/keys", response_model=list[KeyOut], dependencies=[allow(ADMIN)])
def get_keys(c: ContainerDep) -> list[KeyOut]:
    """Every key ever issued (never the secrets)."""
    return [_out(k) for k in list_keys(c.store)]


@router.post("/keys", status_code=201, response_model=IssuedKey,
             responses=problem_responses(400, 409, 422))
def post_key(body: NewKey, c: ContainerDep,
             caller: Annotated[Identity, allow(ADMIN)]) -> IssuedKey:
    """Issue a key. Its secret is in this answer only. A name held by a live key is 409;
    a name signoff records for itself or for a caller without authentication is 422."""
    try:
        secret, key = create_key(c.store, name=body.name, role=body.role,
                                 created_by=caller.name or ANONYMOUS,
                                 agents=body.agents, tools=body.tools, groups=body.groups)
    except KeyNameTaken as e:
        raise ProblemError(409, str(e)) from None
    except KeyRefused as e:
        raise ProblemError(422, str(e)) from None
    return IssuedKey(secret=secret, key=_out(key))


@router.post("/keys/{key_id}/revoke", response_model=KeyOut,
             responses=problem_responses(404, 409))
def post_revoke(key_id: str, c: ContainerDep,
                caller: Annotated[Identity, allow(ADMIN)]) -> KeyOut:
    """Revoke a key (by id): every server refuses it within seconds."""
    try:
        return _out(revoke_key(c.store, key_id, revoked_by=caller.name or ANONYMOUS))
    except KeyNotFound as e:
        raise ProblemError(404, str(e)) from None
    except KeyRevoked as e:
        raise ProblemError(409, str(e)) from None
