"""One error family, one handler: every error leaves as RFC 9457 problem details.

No library is used here: the candidates on PyPI (fastapi-problem, rfc9457,
fastapi-problem-details) are little used, and the whole job is the mapping below.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from eventsourcing.persistence import IntegrityError
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from agent.loop import AgentNotFound, RunBusy
from domain.errors import (
    InvalidDecision,
    RunError,
    ToolCallNotFound,
    ToolCallNotPending,
)
from service.runs import RunNotFound

log = logging.getLogger("signoff.api")

PROBLEM = "application/problem+json"


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
    return JSONResponse(jsonable_encoder(body), status_code=status, media_type=PROBLEM,
                        headers=headers)


# Domain and application errors → status. Order matters: subclasses first.
_STATUS: list[tuple[type[Exception], int]] = [
    (RunNotFound, 404),
    (AgentNotFound, 404),
    (ToolCallNotFound, 422),
    (InvalidDecision, 422),
    (ToolCallNotPending, 409),
    (RunError, 409),
    (RunBusy, 409),
    (IntegrityError, 409),
]


def install(app: FastAPI) -> None:
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

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return problem(request, 500, "an unexpected error happened; it was logged")
