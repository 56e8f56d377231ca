"""Who may do what: every route's roles in one table, and the checks on one run.

A request authenticates with ``Authorization: Bearer <API key or JWT>`` (or
``X-API-Key: <API key>``). ``POLICY`` names, for each route, the roles allowed; a route
missing from it is refused to everyone (a test checks every route is listed). The
caller's relation to one run (a client sees only the runs it started, a reviewer only
those of its agents and tools) is checked by the run's use cases
(``service/access.py``), before they write anything.

With authentication off (no key issued, no JWT key: local development) every route is
open and actors come from the request as in Agno.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool

from api.deps import Container
from api.errors import ProblemError
from domain.keys import Role
from service import tracing
from service.auth import OPEN, Identity, Unauthenticated

C, R, A, ADMIN = Role.CLIENT, Role.REVIEWER, Role.AUDITOR, Role.ADMIN
PUBLIC: frozenset[Role] = frozenset()  # no authentication needed
ANYONE = frozenset(Role)

POLICY: dict[tuple[str, str], frozenset[Role]] = {
    ("GET", "/"): PUBLIC,  # where things are: /inbox, /docs
    ("GET", "/health"): PUBLIC,
    ("GET", "/ready"): PUBLIC,
    ("GET", "/metrics"): PUBLIC,
    ("GET", "/agents"): ANYONE,
    ("GET", "/agents/{agent_id}"): ANYONE,
    ("POST", "/agents/{agent_id}/runs"): frozenset({C}),
    ("POST", "/agents/{agent_id}/runs/{run_id}/continue"): frozenset({C, R}),
    ("GET", "/agents/{agent_id}/runs/{run_id}"): frozenset({C, R, A}),
    ("POST", "/agents/{agent_id}/runs/{run_id}/cancel"): frozenset({C, R}),
    ("GET", "/runs/{run_id}"): frozenset({C, R, A}),
    ("GET", "/runs/{run_id}/events"): frozenset({C, R, A}),
    ("POST", "/runs/{run_id}/cancel"): frozenset({C, R}),
    ("GET", "/runs/{run_id}/verify"): frozenset({A}),
    ("GET", "/runs/{run_id}/stream"): frozenset({C, R, A}),
    ("GET", "/queue/stream"): frozenset({R, A}),
    ("GET", "/queue"): frozenset({R, A}),
    ("GET", "/audit/decisions"): frozenset({A}),
    ("GET", "/analytics/decisions"): frozenset({A}),
    ("GET", "/audit/verify"): frozenset({A}),
    ("GET", "/audit/anchors"): frozenset({A}),
    ("GET", "/projections"): frozenset({A, ADMIN}),
    ("GET", "/keys"): frozenset({ADMIN}),
    ("POST", "/keys"): frozenset({ADMIN}),
    ("POST", "/keys/{key_id}/revoke"): frozenset({ADMIN}),
    ("GET", "/webhooks"): frozenset({ADMIN}),
    ("POST", "/webhooks"): frozenset({ADMIN}),
    ("GET", "/webhooks/{webhook_id}"): frozenset({ADMIN}),
    ("DELETE", "/webhooks/{webhook_id}"): frozenset({ADMIN}),
    ("GET", "/webhooks/{webhook_id}/deliveries"): frozenset({ADMIN}),
    ("GET", "/inbox"): PUBLIC,  # the page only: what it shows comes from the routes above
}


def _token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ProblemError(401, "use 'Authorization: Bearer <API key or JWT>'")
        return token.strip()
    return request.headers.get("x-api-key") or None


async def authorize(request: Request) -> Identity:
    """The caller, allowed by ``POLICY`` for this route (401 / 403 otherwise).

    Answered on the event loop when nothing needs the store (whether authentication is
    required, and the caller's key, are known to this process's caches), else in the
    threadpool: a lookup must never hold up the event loop. The container is taken from
    the app, not as a dependency: every request runs this, and each dependency costs
    FastAPI's resolution a few dozen µs."""
    c: Container = request.app.state.container
    path = _route_path(request)
    tracing.name_request(request.method, path, request.path_params.get("run_id"))
    token = _token(request)
    if c.auth.settled() and (token is None or c.authenticator.settled(token)):
        return _authorize(request, c, token)
    return await run_in_threadpool(_authorize, request, c, token)


def _authorize(request: Request, c: Container, token: str | None) -> Identity:
    path = _route_path(request)
    allowed = POLICY.get((request.method if request.method != "HEAD" else "GET", path))
    if allowed == PUBLIC and token is None:
        return OPEN
    if token is None:
        if c.auth_required:
            raise ProblemError(401, "authentication required: send 'Authorization: Bearer "
                               "<API key or JWT>'")
        caller = OPEN
    else:
        try:
            caller = c.authenticator.identify(token)
        except Unauthenticated as e:
            raise ProblemError(401, str(e)) from None
    if allowed is None:
        raise ProblemError(403, "no role may use this route")
    if not caller.open and allowed and caller.role not in allowed:
        raise ProblemError(403, f"{_article(caller.role)} {caller.role} may not "
                           f"{request.method} {path} (allowed: {', '.join(sorted(allowed))})")
    request.state.caller = caller
    return caller


def _article(word: str) -> str:
    """"a client", "an admin", "an auditor"."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def _route_path(request: Request) -> str:
    """The route's template (``/runs/{run_id}``), or the raw path if none matched."""
    route = request.scope.get("route")
    return route.path if route is not None else str(request.scope["path"])


CallerDep = Annotated[Identity, Depends(authorize)]


def document(app: FastAPI) -> None:
    """Declare the bearer scheme, and 401 / 403 on every route that needs a caller."""
    from api.errors import problem_responses

    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        doc = build()
        doc.setdefault("components", {})["securitySchemes"] = {"bearer": {
            "type": "http", "scheme": "bearer",
            "description": "an API key (`signoff keys create`) or a JWT"}}
        for path, operations in doc.get("paths", {}).items():
            for method, op in operations.items():
                if POLICY.get((method.upper(), path), ANYONE) == PUBLIC:
                    continue
                # Optional in the document: required only once a key exists (auto mode).
                op["security"] = [{"bearer": []}, {}]
                for status, response in problem_responses(401, 403).items():
                    op.setdefault("responses", {}).setdefault(str(status), response)
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]


def policy_table() -> str:
    """``POLICY`` as a Markdown table (docs/security.md holds it; a test keeps it in step)."""
    roles = list(Role)
    rows = ["| route | " + " | ".join(roles) + " |", "|---|" + "---|" * len(roles)]
    for (method, path), allowed in POLICY.items():
        cells = ["public" if allowed == PUBLIC else ("yes" if r in allowed else "")
                 for r in roles]
        rows.append(f"| `{method} {path}` | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(policy_table(), end="")
