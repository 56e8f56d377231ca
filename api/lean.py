"""A route answered without FastAPI's per-request dependency solving.

The two Agno routes a HITL cycle is made of (start a run, continue it) carry most of the
traffic, and FastAPI's resolution of their parameters (the path, the request, the
container, the caller, a header) cost about a tenth of the server's CPU there (py-spy).
``LeanRoute`` is FastAPI's own extension point (a custom ``APIRoute`` class, its
``get_route_handler``): the route is declared, validated at import and documented from
its endpoint's signature exactly as any other, and each request calls the endpoint with
its arguments taken directly: path parameters, the ``Request``, the container
(``c``), the authorized caller (``caller``: ``api.auth.authorize``, as the app's own
dependency does for every other route), and its declared ``Header`` parameters (optional
strings, their ``max_length`` checked as FastAPI would).

An endpoint with any other parameter is refused when the route is declared, so nothing
is ever silently left unresolved.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from typing import Any

from annotated_types import MaxLen
from fastapi import Request, Response
from fastapi.routing import APIRoute

from api.auth import authorize
from api.errors import ProblemError


class LeanRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint = self.endpoint
        names = list(inspect.signature(endpoint).parameters)
        headers = [_header(p) for p in self.dependant.header_params]
        known = set(self.param_convertors) | {"request", "c", "caller"} | {
            name for name, _, _ in headers}
        unknown = [n for n in names if n not in known]
        if unknown or not inspect.iscoroutinefunction(endpoint):
            raise TypeError(f"{endpoint.__name__}: a LeanRoute endpoint is async and takes "
                            f"path parameters, request, c, caller and optional string "
                            f"headers only (not {unknown})")
        wants = {n: n in names for n in ("request", "c", "caller")}

        async def handle(request: Request) -> Response:
            kwargs: dict[str, Any] = dict(request.path_params)
            caller = await authorize(request)  # every route's check (api/app.py)
            if wants["caller"]:
                kwargs["caller"] = caller
            if wants["request"]:
                kwargs["request"] = request
            if wants["c"]:
                kwargs["c"] = request.app.state.container
            for name, header, max_length in headers:
                value = request.headers.get(header)
                if value is not None and max_length is not None and len(value) > max_length:
                    raise ProblemError(422, "the request is not valid", errors=[{
                        "loc": ["header", header],
                        "msg": f"String should have at most {max_length} characters",
                        "type": "string_too_long"}])
                kwargs[name] = value
            response: Response = await endpoint(**kwargs)
            return response

        return handle


def _header(param: Any) -> tuple[str, str, int | None]:
    """(parameter, header, max length) of a declared ``Header`` parameter: an optional
    string, at most ``max_length`` long (whatever else it declared would go unchecked
    here, so it is refused)."""
    info = param.field_info
    rest = [m for m in info.metadata if not isinstance(m, MaxLen)]
    if info.annotation != (str | None) or rest:
        raise TypeError(f"header {param.alias!r}: a LeanRoute header is an optional "
                        f"string with at most a max_length (not {info.annotation}, {rest})")
    lengths = [m.max_length for m in info.metadata if isinstance(m, MaxLen)]
    return param.name, param.alias, lengths[0] if lengths else None
