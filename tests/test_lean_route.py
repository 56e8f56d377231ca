"""``api.lean.LeanRoute`` resolves only what it knows: an endpoint asking for anything
else is refused when the route is declared, never left unresolved at request time."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import pytest
from fastapi import APIRouter, Header, Request

from api.lean import LeanRoute
from api.routes import agno


def test_the_cycle_routes_are_lean() -> None:
    assert {(r.path, tuple(r.methods)) for r in agno.hot.routes} == {
        ("/agents/{agent_id}/runs", ("POST",)),
        ("/agents/{agent_id}/runs/{run_id}/continue", ("POST",))}
    assert all(isinstance(r, LeanRoute) for r in agno.hot.routes)


def test_an_endpoint_with_another_parameter_is_refused() -> None:
    router = APIRouter(route_class=LeanRoute)

    async def endpoint(agent_id: str, request: Request, page: int = 1) -> Any:
        return None

    with pytest.raises(TypeError, match="page"):
        router.post("/agents/{agent_id}/x")(endpoint)


def test_a_plain_function_is_refused() -> None:
    router = APIRouter(route_class=LeanRoute)

    def endpoint(agent_id: str) -> Any:
        return None

    with pytest.raises(TypeError, match="async"):
        router.post("/agents/{agent_id}/y")(endpoint)


def test_a_header_with_a_check_it_cannot_make_is_refused() -> None:
    router = APIRouter(route_class=LeanRoute)

    async def endpoint(agent_id: str,
                       key: Annotated[str | None, Header(pattern="^[a-z]+$")] = None) -> Any:
        return None

    with pytest.raises(TypeError, match="header 'key'"):
        router.post("/agents/{agent_id}/z")(endpoint)


def test_authorize_is_the_only_app_wide_dependency(tmp_path: Path) -> None:
    """A lean route calls ``authorize`` itself: another app-wide dependency added later
    would be skipped on the two hot routes, so this fails first."""
    from api.app import create_app
    from api.auth import authorize
    from service.config import Settings

    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'x.db'}"))
    assert [d.dependency for d in app.router.dependencies] == [authorize]
