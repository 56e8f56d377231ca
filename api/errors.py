"""One error family, one handler: every error leaves as RFC 9457 problem details.

No library is used here: the candidates on PyPI (fastapi-problem, rfc9457,
fastapi-problem-details) are little used, and the whole job is the mapping below.

The event store out of reach (PostgreSQL down, restarting, or every connection busy for
too long) is a 503 with ``Retry-After``, never a 500; and while the ``StoreGuard`` sees
it out of reach, every request is answered so at once rather than left waiting for the
connection pool to give up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from http import HTTPStatus
from typing import Any

from eventsourcing.persistence import IntegrityError, InterfaceError, OperationalError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent.loop import AgentNotFound, TooLarge
from api.wire import JSONBody, NotText
from domain.errors import (
    InvalidDecision,
    RunError,
    ToolCallNotFound,
    ToolCallNotPending,
)
from service.access import Forbidden
from service.lifecycle import KeyReused, NothingDecided, RunBusy
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
    (Forbidden, 403),
    (KeyReused, 422),
    (NothingDecided, 422),
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

    @app.exception_handler(NotText)
    async def _not_text(request: Request, exc: NotText) -> JSONResponse:
        # Raised wherever text enters (api/wire.py): a body model, the tools field's JSON.
        return problem(request, 422, str(exc), errors=[
            {"loc": exc.loc, "msg": str(exc), "type": "string_unicode"}])

    async def _domain(request: Request, exc: Exception) -> JSONResponse:
        status = next(s for cls, s in _STATUS if isinstance(exc, cls))
        extra: dict[str, Any] = {}
        if isinstance(exc, ToolCallNotPending) and exc.decision is not None:
            extra["decision"] = exc.decision
        return problem(request, status, str(exc), **extra)

    for cls, _ in _STATUS:
        app.add_exception_handler(cls, _domain)

    app.state.store_guard = StoreGuard()

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


STORE_DOWN_DETAIL = "the event store is out of reach; try again shortly"


class StoreGuard:
    """Watches the event store, and says when it is out of reach.

    A thread reads the log's head through the application's own connection pool every
    ``interval`` seconds. A read that fails, or takes longer than ``timeout`` (the pool
    waits for a connection it cannot make), puts the guard ``down``: every request waiting
    for an answer is answered 503 at once, and so is every new one, rather than each
    waiting for eventsourcing's retries to give up (10 tries, each waiting up to
    ``POSTGRES_CONNECT_TIMEOUT`` for a connection). The guard lifts as soon as a read
    succeeds again: when the pool has its connections back, not merely when the server
    answers.
    """

    def __init__(self, interval: float = 0.5, timeout: float = 3.0) -> None:
        self.interval = interval
        self.timeout = timeout
        self._down = False
        self._lock = threading.Lock()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._probes = ThreadPoolExecutor(max_workers=1, thread_name_prefix="signoff-probe")

    @property
    def down(self) -> bool:
        return self._down

    def watch(self, probe: Callable[[], object]) -> None:
        """Start watching (again, after ``close``: an application may be started twice)."""
        self.close()
        self._down = False
        self._stop = threading.Event()
        self._probes = ThreadPoolExecutor(max_workers=1, thread_name_prefix="signoff-probe")
        self._thread = threading.Thread(target=self._watch, args=(probe,),
                                        name="signoff-store-guard", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.interval + 1)
        self._probes.shutdown(wait=False, cancel_futures=True)

    def tripped(self) -> asyncio.Future[None]:
        """A future of the running loop, done when the guard goes down (``forget`` it)."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self._down:  # went down since the caller looked
                waiter.set_result(None)
            else:
                self._waiters.add((loop, waiter))
        return waiter

    def forget(self, waiter: asyncio.Future[None]) -> None:
        with self._lock:
            self._waiters.discard((asyncio.get_running_loop(), waiter))

    def _watch(self, probe: Callable[[], object]) -> None:
        while not self._stop.is_set():
            future = self._probes.submit(probe)
            try:
                future.result(timeout=self.timeout)
            except FuturesTimeout:
                self._set_down(True, f"it did not answer within {self.timeout:g} s")
                while not future.done() and not self._stop.wait(0.05):
                    pass  # one read at a time: it ends when the pool gets a connection
                continue
            except Exception as e:
                self._set_down(True, f"{type(e).__name__}: {e}")
            else:
                self._set_down(False)
            self._stop.wait(self.interval)

    def _set_down(self, down: bool, why: str = "") -> None:
        with self._lock:
            if down == self._down:
                return
            self._down = down
            waiters, self._waiters = (self._waiters, set()) if down else (set(), self._waiters)
        if down:
            log.warning("the event store is out of reach (%s): answering 503 until it "
                        "answers again", why)
            for loop, waiter in waiters:
                with contextlib.suppress(RuntimeError):  # that loop has closed
                    loop.call_soon_threadsafe(_resolve, waiter)
        else:
            log.warning("the event store answers again")


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


# Served while the store is out of reach: they do not need it. (/metrics does: its gauges
# read the store and the read models, and would wait for them.)
_WITHOUT_STORE = ("/openapi.json", "/docs", "/redoc")


class StoreGuardMiddleware:
    """Answers 503 (a problem, ``Retry-After``) while ``app.state.store_guard`` is down:
    new requests at once, and requests waiting for an answer when it goes down (their
    work goes on in its thread; its answer is dropped). A response already started (a
    stream) is left to end as it will. Starts and stops the guard's watch with the
    application's lifespan (the probe reads the log's head of ``app.state.container``).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        guard: StoreGuard | None = getattr(scope["app"].state, "store_guard", None)
        if guard is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(guard, scope, receive, send)
        elif scope["type"] != "http" or scope["path"].startswith(_WITHOUT_STORE):
            await self.app(scope, receive, send)
        elif guard.down:
            await answer_early(scope, receive, send, 503, STORE_DOWN_DETAIL)
        else:
            await self._guarded(guard, scope, receive, send)

    async def _guarded(self, guard: StoreGuard, scope: Scope, receive: Receive,
                       send: Send) -> None:
        started = released = False

        async def send_unless_released(message: Message) -> None:
            nonlocal started
            if released:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        work = asyncio.ensure_future(self.app(scope, receive, send_unless_released))
        settled = guard.tripped()  # done when the guard goes down, or (below) the work ends
        work.add_done_callback(lambda _: _resolve(settled))
        try:
            await settled
        except asyncio.CancelledError:
            work.cancel()
            raise
        finally:
            guard.forget(settled)
        if work.done() or started:
            await work
            return
        released = True
        work.add_done_callback(_log_late_failure)
        await answer_early(scope, receive, send, 503, STORE_DOWN_DETAIL)

    async def _lifespan(self, guard: StoreGuard, scope: Scope, receive: Receive,
                        send: Send) -> None:
        async def watching(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                guard.watch(scope["app"].state.container.app.head)
            await send(message)

        async def closing() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                guard.close()
            return message

        await self.app(scope, closing, watching)


def _log_late_failure(work: asyncio.Future[None]) -> None:
    if not work.cancelled() and (e := work.exception()) is not None:
        log.warning("a request answered 503 (store out of reach) then failed: %r", e)


async def answer_early(scope: Scope, receive: Receive, send: Send, status: int,
                       detail: str, headers: dict[str, str] | None = None) -> None:
    """Answer a problem from a middleware, before routing; the route it would have gone
    to is still named (in ``scope["route"]``: metrics and logs count it under it)."""
    route = next((r for r in _routes(scope["app"].router.routes)
                  if r.matches(scope)[0] == Match.FULL), None)
    if route is not None:
        scope["route"] = route
    response = problem(Request(scope), status, detail)
    response.headers.update(headers or {})
    await response(scope, receive, send)


def _routes(routes: Iterable[BaseRoute]) -> Iterator[BaseRoute]:
    """The routes themselves, also those of included routers (FastAPI wraps them)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        yield from _routes(inner.routes) if inner is not None else (route,)
