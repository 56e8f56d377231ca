"""What the routes need, built once per process and reached through ``Annotated`` aliases."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from agent.loop import AgentLoop
from projections.runner import Projections
from service.auth import Authenticator, AuthPolicy
from service.config import Settings
from service.lifecycle import RunLifecycle
from service.runs import RunService


@dataclass
class Container:
    settings: Settings
    store: RunService
    agent_loop: AgentLoop
    runs: RunLifecycle
    projections: Projections
    authenticator: Authenticator
    auth: AuthPolicy

    @property
    def auth_required(self) -> bool:
        return self.auth.required


async def get_container(request: Request) -> Container:
    # async: a plain ``def`` dependency costs every request a hop to the threadpool.
    container: Container = request.app.state.container
    return container


ContainerDep = Annotated[Container, Depends(get_container)]
