"""One error family, one handler: every error leaves as RFC 9457 problem details.

No library is used here: the candidates on PyPI (fastapi-problem, rfc9457,
fastapi-problem-details) are little used, and the whole job is the mapping below.

The event store out of reach (PostgreSQL down, restarting, or every connection busy for
too long) is a 503 with ``Retry-After``, never a 500; and while the ``StoreGuard`` sees
it out of reach, every request is answered so at once rather than left waiting for the
connection pool to give up.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from http import HTTPStatus
from typing import Any

from eventsourcing.persistence import IntegrityError, InterfaceError, OperationalError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match
from starlette.types import Receive, Scope, Send

from agent.limits import TooLarge
from agent.loop import AgentNotFound
from api.wire import JSONBody, NotText
from domain.errors import (
    InvalidDecision,
    RunError,
    ToolCallNotFound,
    ToolCallNotPending,
)
from service.access import Forbidden
from service.idempotency import KeyReused
from service.lifecycle import NothingDecided, RunBusy
from service.runs import RunDamaged, RunNotFound

log = logging.getLogger("signoff.api")

PROBLEM = "application/problem+json"


class FieldError(BaseModel):
    """One reason a request is not valid (the ``errors`` of a 422)."""

    loc: list[str | int]
    msg: str | None = None
    type: str | None = None


class Problem(BaseModel):
    """An RFC 9457 problem: how every error leaves this service (``application/problem+json``).

    Some problems carry more members: ``errors`` (why a request is not valid, on 422) and
    ``decision`` (the decision that stands, on 409 for a call that was already decided).
    """

    model_config = ConfigDict(extra="allow")

    type: str = Field(examples=["https://signoff.dev/problems/not-found"])
    title: str = Field(examples=["Not Found"])
    status: int = Field(ge=400, le=599, examples=[404])
    detail: str = Field(examples=["no run '0b7e...'"])
    instance: str | None = Field(None, examples=["/runs/0b7e..."])
    errors: list[FieldError] | None = None
    decision: dict[str, Any] | None = None


_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for a route: these statuses, each an ``application/problem+json``."""
    return {s: {"description": HTTPStatus(s).phrase, "content": {PROBLEM: {"schema": _PROBLEM_REF}}}
            for s in statuses}


class ProblemError(Exception):
    """An error raised at the edge with its HTTP status (bad payload, unknown field)."""

    def __init__(self, status: int, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.extra = extra


def problem(request: Request, status: int, detail: str, **extra: Any) -> JSONResponse:
    phrase = HTTPStatus(status).phrase
    body = {
        "type": f"https://signoff.dev/problems/{phrase.lower().replace(' ', '-')}",
        "title": phrase,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        **extra,
    }
    headers = {"Retry-After": "1"} if status == 503 else None
    if status == 401:
        headers = {"WWW-Authenticate": 'Bearer realm="signoff"'}
    return JSONBody(body, status_code=status, media_type=PROBLEM, headers=headers)


# Domain and application errors → status. Order matters: subclasses first.
_STATUS: list[tuple[type[Exception], int]] = [
    (RunNotFound, 404),
    (AgentNotFound, 404),
    (Forbidden, 403),
    (KeyReused, 422),
    (NothingDecided, 422),
    (TooLarge, 413),
    (ToolCallNotFound, 422),
    (InvalidDecision, 422),
    (ToolCallNotPending, 409),
    (RunError, 409),
    (RunBusy, 409),
    (RunDamaged, 409),
    (IntegrityError, 409),
]
# The store out of reach: eventsourcing's errors for a lost or refused connection, a pool
# that gave none in time, a lock not had in time (psycopg's are wrapped into these).
STORE_DOWN = (OperationalError, InterfaceError)
STORE_DOWN_DETAIL = "the event store is out of reach; try again shortly"


def _document(app: FastAPI) -> None:
    """Describe errors as they are sent: ``Problem`` documents, not FastAPI's default 422.

    Routes declare their problem statuses with ``problem_responses``; a 422 FastAPI adds on
    its own (``HTTPValidationError``, as ``application/json``) is replaced by the problem the
    validation handler really sends.
    """
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        doc = build()
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        problem_schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(problem_schema.pop("$defs", {}))
        schemas["Problem"] = problem_schema
        default_422 = {"$ref": "#/components/schemas/HTTPValidationError"}
        for operation in (op for path in doc.get("paths", {}).values() for op in path.values()):
            responses = operation.setdefault("responses", {})
            content = responses.get("422", {}).get("content", {})
            if content.get("application/json", {}).get("schema") == default_422:
                responses["422"] = problem_responses(422)[422]
            # Any request may meet the store out of reach; any body may be too large.
            responses.setdefault("503", problem_responses(503)[503])
            if "requestBody" in operation:
                responses.setdefault("413", problem_responses(413)[413])
        if "HTTPValidationError" not in json.dumps(doc.get("paths", {})):
            schemas.pop("HTTPValidationError", None)
            schemas.pop("ValidationError", None)
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]


def install(app: FastAPI) -> None:
    _document(app)

    @app.exception_handler(ProblemError)
    async def _problem(request: Request, exc: ProblemError) -> JSONResponse:
        return problem(request, exc.status, exc.detail, **exc.extra)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(request, exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
                  for e in exc.errors()]
        return problem(request, 422, "the request is not valid", errors=errors)

    @app.exception_handler(NotText)
    async def _not_text(request: Request, exc: NotText) -> JSONResponse:
        # Raised wherever text enters (api/wire.py): a body model, the tools field's JSON.
        return problem(request, 422, str(exc), errors=[
            {"loc": exc.loc, "msg": str(exc), "type": "string_unicode"}])

    async def _domain(request: Request, exc: Exception) -> JSONResponse:
        status = next(s for cls, s in _STATUS if isinstance(exc, cls))
        extra: dict[str, Any] = {}
        if isinstance(exc, ToolCallNotPending) and exc.decision is not None:
            extra["decision"] = exc.decision.as_dict()  # the fields of its kind only
        return problem(request, status, str(exc), **extra)

    for cls, _ in _STATUS:
        app.add_exception_handler(cls, _domain)

    async def _store_down(request: Request, exc: Exception) -> JSONResponse:
        log.warning("the event store is out of reach on %s %s: %s", request.method,
                    request.url.path, exc)
        return problem(request, 503, STORE_DOWN_DETAIL)

    for cls in STORE_DOWN:
        app.add_exception_handler(cls, _store_down)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return problem(request, 500, "an unexpected error happened; it was logged")


async def answer_early(scope: Scope, receive: Receive, send: Send, status: int,
                       detail: str, headers: dict[str, str] | None = None) -> None:
    """Answer a problem from a middleware, before routing; the route it would have gone
    to is still named (in ``scope["route"]``: metrics and logs count it under it)."""
    route = next((r for r in routes_of(scope["app"].router.routes)
                  if r.matches(scope)[0] == Match.FULL), None)
    if route is not None:
        scope["route"] = route
    response = problem(Request(scope), status, detail)
    response.headers.update(headers or {})
    await response(scope, receive, send)


def routes_of(routes: Iterable[BaseRoute]) -> Iterator[BaseRoute]:
    """The routes themselves, also those of included routers (FastAPI wraps them)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        yield from routes_of(inner.routes) if inner is not None else (route,)
