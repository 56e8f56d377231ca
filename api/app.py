"""The FastAPI application: ``create_app()`` wires settings, store, loop and routes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import errors
from api.deps import Container
from api.routes import agno, audit, reviews, runs
from service.bootstrap import build_app, build_loop, build_projections
from service.config import Settings

log = logging.getLogger("signoff")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = build_app(settings)
        loop = build_loop(settings, store)
        projections = build_projections(settings)
        if settings.projections == "inline":
            store.after_save.append(projections.prompt)
            projections.start()
        app.state.container = Container(settings=settings, app=store, loop=loop,
                                        projections=projections)
        log.info("signoff serving agents %s, model %s, store %s",
                 ", ".join(loop.agents), loop.default_model.name,
                 store.describe()["persistence"])
        try:
            yield
        finally:
            loop.close()
            projections.close()
            projections.app.close()
            store.close()

    app = FastAPI(
        title="signoff",
        version="0.1.0",
        description="Event-sourced run state for human-in-the-loop AI agents. "
        "Agno AgentOS-compatible HITL endpoints, plus signoff's own run history.",
        lifespan=lifespan,
    )
    errors.install(app)
    app.include_router(agno.router)
    app.include_router(runs.router)
    app.include_router(reviews.router)
    app.include_router(audit.router)
    return app
