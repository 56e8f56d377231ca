"""Who may do what: each route declares, as a dependency, the roles that may call it.

A route's signature says it: ``caller: Annotated[Identity, allow(C, R)]``, or
``dependencies=[allow(ADMIN)]`` on a route that does not need the caller; ``allow()``
with no role is a public route. ``policy(app)`` reads the table back from the routes
(docs/security.md holds it, ``python -m api.reference roles``), and refuses a route that declares
no authorization, or more than one: tests/e2e/test_roles.py calls it, and sends every
route as every role.

A request authenticates with ``Authorization: Bearer <API key or JWT>`` (or
``X-API-Key: <API key>``). The caller's relation to one run (a client sees only the runs
it started, a reviewer only those of its agents and tools) is checked by the run's use
cases (``service/access.py``), before they write anything.

With authentication off (no key issued, no JWT key: local development) every route is
open and actors come from the request as in Agno.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from api.deps import Container
from api.errors import ProblemError, routes_of
from domain.keys import Role
from service import tracing
from service.auth import OPEN, Identity, Unauthenticated

C, R, A, ADMIN = Role.CLIENT, Role.REVIEWER, Role.AUDITOR, Role.ADMIN
EVERY_ROLE = tuple(Role)


def _token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ProblemError(401, "use 'Authorization: Bearer <API key or JWT>'")
        return token.strip()
    return request.headers.get("x-api-key") or None


class Allow:
    """A route's authorization: the caller, if it may call the route (401 / 403
    otherwise). ``roles``: who may; none: the route is public (no credentials needed).

    Answered on the event loop when nothing needs the store (whether authentication is
    required, and the caller's key, are known to this process's caches), else in the
    threadpool: a lookup must never hold up the event loop. The container is taken from
    the app, not as a dependency of its own: every request runs this."""

    def __init__(self, *roles: Role) -> None:
        self.roles = frozenset(roles)

    async def __call__(self, request: Request) -> Identity:
        c: Container = request.app.state.container
        tracing.name_request(request.method, _route_path(request),
                             request.path_params.get("run_id"))
        token = _token(request)
        if c.auth.settled() and (token is None or c.authenticator.settled(token)):
            return self._authorize(request, c, token)
        return await run_in_threadpool(self._authorize, request, c, token)

    def _authorize(self, request: Request, c: Container, token: str | None) -> Identity:
        if not self.roles and token is None:
            return OPEN
        if token is None:
            if c.auth_required:
                raise ProblemError(401, "authentication required: send 'Authorization: "
                                   "Bearer <API key or JWT>'")
            caller = OPEN
        else:
            try:
                caller = c.authenticator.identify(token)
            except Unauthenticated as e:
                raise ProblemError(401, str(e)) from None
        if not caller.open and self.roles and caller.role not in self.roles:
            raise ProblemError(403, f"{_article(caller.role)} {caller.role} may not "
                               f"{request.method} {_route_path(request)} (allowed: "
                               f"{', '.join(sorted(self.roles))})")
        request.state.caller = caller
        return caller


def allow(*roles: Role) -> Any:
    """The dependency a route declares: ``Depends(Allow(*roles))``."""
    return Depends(Allow(*roles))


def policy(app: FastAPI) -> dict[tuple[str, str], frozenset[Role]]:
    """Each route's roles (an empty set: public), read from the ``Allow`` it declares.
    ``ValueError`` for a route that declares none, or more than one."""
    table: dict[tuple[str, str], frozenset[Role]] = {}
    for route in routes_of(app.routes):
        if not isinstance(route, APIRoute):
            continue  # a mount (the inbox's static files): public files
        found = [d.call for d in _dependants(route.dependant) if isinstance(d.call, Allow)]
        if len(found) != 1:
            raise ValueError(f"{sorted(route.methods)} {route.path} declares "
                             f"{len(found)} authorizations (api/auth.py: allow)")
        for method in sorted(route.methods):
            if route.include_in_schema:
                table[(method, route.path)] = found[0].roles
    return table


def _dependants(dependant: Dependant) -> Iterator[Dependant]:
    for d in dependant.dependencies:
        yield d
        yield from _dependants(d)


def _article(word: str) -> str:
    """"a client", "an admin", "an auditor"."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def _route_path(request: Request) -> str:
    """The route's template (``/runs/{run_id}``), or the raw path if none matched."""
    route = request.scope.get("route")
    return route.path if route is not None else str(request.scope["path"])


def document(app: FastAPI) -> None:
    """Declare the bearer scheme, each operation's roles (``x-roles``; none: public), and
    401 / 403 on every route that needs a caller."""
    from api.errors import problem_responses

    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        doc = build()
        table = policy(app)
        doc.setdefault("components", {})["securitySchemes"] = {"bearer": {
            "type": "http", "scheme": "bearer",
            "description": "an API key (`signoff keys create`) or a JWT"}}
        for path, operations in doc.get("paths", {}).items():
            for method, op in operations.items():
                roles = table[(method.upper(), path)]
                op["x-roles"] = sorted(roles)  # none: public
                if not roles:
                    continue
                # Optional in the document: required only once a key exists (auto mode).
                op["security"] = [{"bearer": []}, {}]
                for status, response in problem_responses(401, 403).items():
                    op.setdefault("responses", {}).setdefault(str(status), response)
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
