"""``api.lean.LeanRoute`` resolves only what it knows: an endpoint asking for anything
else is refused when the route is declared, never left unresolved at request time."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import APIRouter, Request

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
