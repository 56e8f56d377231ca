"""One error family, one handler: every error leaves as RFC 9457 problem details.

No library is used here: the candidates on PyPI (fastapi-problem, rfc9457,
fastapi-problem-details) are little used, and the whole job is the mapping below.

The event store out of reach (PostgreSQL down, restarting, or every connection busy for
too long) is a 503 with ``Retry-After``, never a 500. After the first such failure the
``StoreGuard`` answers 503 at once, rather than letting each request wait for the
connection pool to give up, until the store answers again (checked in the background).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from eventsourcing.persistence import IntegrityError, InterfaceError, OperationalError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from agent.loop import AgentNotFound, RunBusy, TooLarge
from api.wire import JSONBody
from domain.errors import (
    InvalidDecision,
    RunError,
    ToolCallNotFound,
    ToolCallNotPending,
)
from service.runs import RunNotFound

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
    (TooLarge, 413),
    (ToolCallNotFound, 422),
    (InvalidDecision, 422),
    (ToolCallNotPending, 409),
    (RunError, 409),
    (RunBusy, 409),
    (IntegrityError, 409),
]
# The store out of reach: eventsourcing's errors for a lost or refused connection, a pool
# that gave none in time, a lock not had in time (psycopg's are wrapped into these).
STORE_DOWN = (OperationalError, InterfaceError)


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

    async def _domain(request: Request, exc: Exception) -> JSONResponse:
        status = next(s for cls, s in _STATUS if isinstance(exc, cls))
        extra: dict[str, Any] = {}
        if isinstance(exc, ToolCallNotPending) and exc.decision is not None:
            extra["decision"] = exc.decision
        return problem(request, status, str(exc), **extra)

    for cls, _ in _STATUS:
        app.add_exception_handler(cls, _domain)

    guard = app.state.store_guard = StoreGuard()

    async def _store_down(request: Request, exc: Exception) -> JSONResponse:
        log.warning("the event store is out of reach on %s %s: %s", request.method,
                    request.url.path, exc)
        container = getattr(request.app.state, "container", None)
        if container is not None:
            guard.trip(container.app.head)
        return problem(request, 503, "the event store is out of reach; try again shortly")

    for cls in STORE_DOWN:
        app.add_exception_handler(cls, _store_down)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return problem(request, 500, "an unexpected error happened; it was logged")


class StoreGuard:
    """Fails fast while the event store is out of reach.

    ``trip(probe)`` after a request failed to reach the store: until ``probe`` (a read
    through the application's own connection pool) succeeds again, ``down`` is true and
    ``StoreGuardMiddleware`` answers 503 at once. The probe runs in one background
    thread, ``interval`` seconds apart; it succeeds as soon as the pool has reconnected,
    so the guard lifts exactly when requests can be served again.
    """

    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        self._down = threading.Event()
        self._lock = threading.Lock()

    @property
    def down(self) -> bool:
        return self._down.is_set()

    def trip(self, probe: Callable[[], object]) -> None:
        with self._lock:
            if self._down.is_set():
                return
            self._down.set()
        log.warning("the event store is out of reach: answering 503 until it answers again")
        threading.Thread(target=self._probe, args=(probe,), name="signoff-store-probe",
                         daemon=True).start()

    def _probe(self, probe: Callable[[], object]) -> None:
        while True:
            threading.Event().wait(self.interval)
            try:
                probe()
            except Exception as e:
                log.debug("the event store is still out of reach: %s", e)
                continue
            self._down.clear()
            log.warning("the event store answers again")
            return


# Served while the store is out of reach: they do not need it, or bound their own reads.
_WITHOUT_STORE = ("/metrics", "/openapi.json", "/docs", "/redoc")


class StoreGuardMiddleware:
    """While ``app.state.store_guard`` is down, every request (but ``_WITHOUT_STORE``)
    gets a 503 problem with ``Retry-After`` at once."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        guard: StoreGuard | None = getattr(scope["app"].state, "store_guard", None) \
            if scope["type"] == "http" else None
        if guard is not None and guard.down and not scope["path"].startswith(_WITHOUT_STORE):
            await answer_early(scope, receive, send, 503,
                               "the event store is out of reach; try again shortly")
            return
        await self.app(scope, receive, send)


async def answer_early(scope: Scope, receive: Receive, send: Send, status: int,
                       detail: str, headers: dict[str, str] | None = None) -> None:
    """Answer a problem from a middleware, before routing; the route it would have gone
    to is still named (in ``scope["route"]``: metrics and logs count it under it)."""
    for route in scope["app"].router.routes:
        if route.matches(scope)[0] == Match.FULL:
            scope["route"] = route
            break
    response = problem(Request(scope), status, detail)
    response.headers.update(headers or {})
    await response(scope, receive, send)
