"""``signoff serve``: the API, started once the agents, the model and the store are ready."""

from __future__ import annotations

import ipaddress
import os
import sys
from typing import Annotated, Any

import typer

from bootstrap import build_app, build_auth_policy, build_loop
from cli.common import DatabaseUrl, fail, load_settings, setting, where
from service import logs
from service.config import Settings
from service.runs import RunService
from service.storekey import StoreKeyError


def serve(
    agents: Annotated[str | None, setting("agents", "MODULES")] = None,
    host: Annotated[str | None, setting("host", "ADDRESS")] = None,
    port: Annotated[int | None, setting("port", "PORT")] = None,
    database_url: DatabaseUrl = None,
    workers: Annotated[int, typer.Option(
        metavar="N", help="uvicorn worker processes (more than one: on PostgreSQL, "
        "docs/scaling.md)")] = 1,
) -> None:
    """Serve the API (Agno-compatible endpoints and signoff's own)."""
    import uvicorn

    sys.path.insert(0, os.getcwd())  # so --agents can name a module beside you
    settings = load_settings(agents=agents, host=host, port=port, database_url=database_url)
    try:  # fail fast: a bad agents module, a model that cannot be set up, a store unreachable
        build_loop(settings).close()
        store = build_app(settings)
    except StoreKeyError as e:  # no key, or not the store's key (service/storekey.py)
        raise fail(f"cannot start: {e}", 2) from None
    except Exception as e:
        raise fail(f"cannot start: {type(e).__name__}: {e}{where(e, settings)}", 2) from None
    try:
        ready = _auth_ready(settings, store)
    except Exception as e:
        raise fail(f"cannot start: {type(e).__name__}: {e}{where(e, settings)}", 2) from None
    finally:
        store.close()
    if not ready:
        raise typer.Exit(2)
    typer.echo(f"signoff: store {settings.store_address()}, model "
               f"{settings.default_model_spec()}, agents from {settings.agents}", err=True)
    uvicorn.run("api.app:create_app", factory=True, host=settings.host, port=settings.port,
                workers=workers, **_uvicorn_logging(settings))


def _uvicorn_logging(settings: Settings) -> dict[str, Any]:
    """uvicorn's logging in every process it starts: signoff's handler and format
    (``service.logs.uvicorn_log_config``), no access log (the API logs each request)."""
    return {"log_config": logs.uvicorn_log_config(settings), "log_level": settings.log_level,
            "access_log": False}


def _auth_ready(settings: Settings, store: RunService) -> bool:
    """Without authentication, listen on loopback only (unless SIGNOFF_ALLOW_OPEN)."""
    if build_auth_policy(settings, store).required:
        return True
    try:
        loopback = settings.host == "localhost" or ipaddress.ip_address(settings.host).is_loopback
    except ValueError:
        loopback = False
    if loopback:
        typer.echo(f"signoff: no authentication (no API key issued, SIGNOFF_AUTH="
                   f"{settings.auth}): listening on {settings.host} only. "
                   "`signoff keys create` turns it on.", err=True)
        return True
    if settings.allow_open:
        typer.echo(f"signoff: WARNING: no authentication, listening on {settings.host} "
                   "(SIGNOFF_ALLOW_OPEN): anyone who reaches it can act as anyone", err=True)
        return True
    typer.echo(f"signoff: refusing to listen on {settings.host} without authentication: "
               "issue an API key (`signoff keys create --role admin --name you`), set "
               "SIGNOFF_JWT_KEY, or set SIGNOFF_ALLOW_OPEN=true on a trusted network",
               err=True)
    return False
