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
open and actors come from the request as in Agno; but not to the web pages the developer
visits: open access refuses what a page of another site sends (``Sec-Fetch-Site:
cross-site``, an ``Origin`` that is not the request's ``Host``) and a request over the
network addressed to a name ``SIGNOFF_OPEN_HOSTS`` does not list (a page whose name was
pointed at this server: DNS rebinding).

A stream (server-sent events) is authorized again as it goes on: ``StillAllowed``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

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
        return await self.answer(request, c, _token(request))

    async def answer(self, request: Request, c: Container, token: str | None) -> Identity:
        """``_authorize``: on the event loop when it needs no store, else in the threadpool."""
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
            _refuse_other_sites(request, c.settings.open_hosts)
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
        request.state.allowed_by = self
        return caller


class StillAllowed:
    """Whether the caller of a request that goes on (a stream) would still be let in:
    ``await allowed()`` makes the request's authorization (its route's ``Allow``) again.

    False once the caller would be refused a new request, or would be someone else: its
    key revoked (as this process's key cache knows it, within its ``cache_seconds``),
    authentication turned on for an open caller, a JWT past its ``exp`` (by ``clock``:
    the service's, the lifecycle's; a JWT's signature and claims do not change, so the
    clock is all that is asked again). Each stream awaits it whenever it wakes, before it
    sends anything more, and ends when it is False."""

    def __init__(self, request: Request,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.request = request
        self.allow: Allow = request.state.allowed_by
        self.caller: Identity = request.state.caller
        self.token = _token(request)
        self.container: Container = request.app.state.container
        self.clock = clock or self.container.runs.clock
        self.expires = _expiry(self.token) if self.caller.via == "jwt" else None

    async def __call__(self) -> bool:
        if self.expires is not None:
            return self.clock() < self.expires
        try:
            again = await self.allow.answer(self.request, self.container, self.token)
        except ProblemError:
            return False
        return again == self.caller


def _expiry(token: str | None) -> datetime | None:
    """The ``exp`` of a JWT ``Authenticator.identify`` accepted (it verified it, and
    requires ``exp``)."""
    import jwt

    if token is None:
        return None
    exp = jwt.decode(token, options={"verify_signature": False}).get("exp")
    return datetime.fromtimestamp(exp, UTC) if isinstance(exp, int | float) else None


# ------------------------------------------------------------ open access

_DEFAULT_PORTS = {"http": 80, "https": 443}


def _refuse_other_sites(request: Request, open_hosts: str) -> None:
    """Open access is for programs (curl, Agno's client) and the pages this service
    serves, not for every web page the developer's browser visits. A browser sends what
    any page asks to 127.0.0.1 (a form needs no CORS preflight), and a page whose own
    name was pointed at 127.0.0.1 (DNS rebinding) may read the answers: ``ProblemError``
    (403) for a request a browser marks as sent by another site, or from an ``Origin``
    that is not the ``Host`` it is addressed to, and for a request over the network
    addressed to a name not in ``open_hosts`` (``SIGNOFF_OPEN_HOSTS``; by default the
    loopback names). Requests without these headers pass."""
    headers = request.headers
    host = headers.get("host")
    if headers.get("sec-fetch-site", "").strip().lower() == "cross-site":
        raise ProblemError(403, "no authentication: this server refuses a request a web page "
                           "of another site sent (Sec-Fetch-Site: cross-site); issue an API "
                           "key (`signoff keys create`) to call it from elsewhere")
    origin = headers.get("origin")
    if origin is not None and not _same_origin(origin, host):
        raise ProblemError(403, f"no authentication: this server refuses a request from the "
                           f"page of {origin[:100]!r}, which is not this server "
                           f"({(host or '')[:100]!r})")
    if host is not None and _over_network(request) and not _named(host, open_hosts):
        raise ProblemError(403, f"no authentication: this server answers requests addressed "
                           f"to {open_hosts} only (SIGNOFF_OPEN_HOSTS), not to "
                           f"{host[:100]!r} (a name of another site may point here)")


def _authority(host: str, scheme: str) -> tuple[str, int | None] | None:
    """A ``Host`` (or an origin's host and port) as (name, port), the port the scheme's
    default when it names none; None when it cannot be read."""
    try:
        parts = urlsplit("//" + host)
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    return parts.hostname, port if port is not None else _DEFAULT_PORTS.get(scheme)


def _same_origin(origin: str, host: str | None) -> bool:
    """Whether ``Origin`` names the host and port the request is addressed to (``Origin:
    null``, a page with no origin of its own, never does)."""
    parts = urlsplit(origin.strip())
    if parts.scheme.lower() not in _DEFAULT_PORTS or host is None:
        return False
    theirs = _authority(parts.netloc, parts.scheme.lower())
    return theirs is not None and theirs == _authority(host, parts.scheme.lower())


def _over_network(request: Request) -> bool:
    """Whether the request came over the network: the ASGI ``server`` (the address of the
    connection's socket) is an IP address; not a unix socket, nor an in-process client."""
    server = request.scope.get("server")
    if not server:
        return False
    try:
        ipaddress.ip_address(server[0])
    except ValueError:
        return False
    return True


def _named(host: str, names: str) -> bool:
    """Whether ``Host`` names one of ``names`` (comma-separated, as ``Host`` values), with
    any port."""
    found = _authority(host, "http")
    return found is not None and found[0] in {
        a[0] for n in names.split(",") if n.strip() and (a := _authority(n.strip(), "http"))}


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
