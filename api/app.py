"""The FastAPI application: ``create_app()`` wires settings, store, loop and routes."""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from api import auth, errors, limits, metrics, storeguard, sweeper
from api.deps import Container
from api.routes import (
    agno,
    agno_os,
    analytics,
    approvals,
    audit,
    inbox,
    keys,
    reviews,
    runs,
    sessions,
    streams,
    webhooks,
)
from bootstrap import (
    build_app,
    build_auth_policy,
    build_authenticator,
    build_dispatcher,
    build_lifecycle,
    build_loop,
    build_projections,
    write_inline,
)
from service import logs, tracing
from service.config import Settings, load_settings, unknown_variables
from service.metrics import CommittedFacts, watch_commits

log = logging.getLogger("signoff")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()  # a bad SIGNOFF_* value exits, naming it
    logs.configure(settings)
    for name in unknown_variables():
        log.warning("%s is not a signoff setting; it is ignored", name)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Streamed runs are driven in the default executor: give it the request's context
        # (request id, run id), as FastAPI's threadpool already does.
        asyncio.get_running_loop().set_default_executor(ContextExecutor())
        store = build_app(settings)
        loop = build_loop(settings)
        loop.limits = limits.loop_limits(settings)
        runs = build_lifecycle(settings, store, loop)
        metrics.instrument_models(loop)
        store.on_commit.append(tracing.record_commit)
        watch_commits(store, CommittedFacts(
            {a.id: [t.name for t in a.tools] for a in loop.agents.values()}))
        projections = build_projections(settings)
        dispatcher = None
        if settings.projections == "inline":
            write_inline(store, projections)
            projections.start()
            dispatcher = build_dispatcher(settings, projections).start()
        sweeps = sweeper.sweeper(runs, projections, settings.expiry_interval)
        authenticator = build_authenticator(settings, store)
        policy = build_auth_policy(settings, store)
        app.state.container = Container(settings=settings, store=store, agent_loop=loop, runs=runs,
                                        projections=projections, authenticator=authenticator,
                                        auth=policy)
        if not policy.required:
            log.warning("signoff: no authentication (SIGNOFF_AUTH=%s and no API key issued): "
                        "anyone who can reach %s:%s can act as anyone", settings.auth,
                        settings.host, settings.port)
        log.info("signoff serving agents %s, model %s, store %s",
                 ", ".join(loop.agents), loop.default_model.name,
                 store.describe()["persistence"])
        try:
            yield
        finally:
            metrics.mark_process_dead()
            sweeps.close()
            loop.close()
            if dispatcher is not None:
                dispatcher.close()
            projections.close()
            projections.store.close()
            store.close()

    app = FastAPI(
        title="signoff",
        version="0.1.0",
        description="Event-sourced run state for human-in-the-loop AI agents. "
        "Agno AgentOS-compatible HITL endpoints, plus signoff's own run history.",
        lifespan=lifespan,
    )
    errors.install(app)
    auth.document(app)
    app.add_middleware(limits.BodyLimit, max_bytes=settings.max_body_bytes)
    app.state.store_guard = storeguard.StoreGuard()
    app.add_middleware(storeguard.StoreGuardMiddleware)
    if tracing.configure(settings.traces):
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        app.add_middleware(OpenTelemetryMiddleware)
    app.add_middleware(metrics.RequestObserver)  # outermost: it sees every answer
    app.include_router(agno.router)
    app.include_router(agno_os.router)
    app.include_router(approvals.router)
    app.include_router(sessions.router)
    app.include_router(runs.router)
    app.include_router(reviews.router)
    app.include_router(analytics.router)
    app.include_router(audit.router)
    app.include_router(keys.router)
    app.include_router(streams.router)
    app.include_router(metrics.router)
    app.include_router(inbox.router)
    app.include_router(webhooks.router)
    return app


class ContextExecutor(ThreadPoolExecutor):
    """A thread pool that runs each function in a copy of its submitter's context."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        return super().submit(contextvars.copy_context().run, fn, *args, **kwargs)
