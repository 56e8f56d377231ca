"""``GET /inbox``: the reviewers' and auditors' web page, served by the service itself;
and ``GET /``, a small JSON that points to it and to the API's documentation (JSON rather
than a redirect: ``curl`` and a browser both read where things are).

Plain HTML, JavaScript modules and CSS from ``api/inbox/`` (no build step): the page at
``/inbox``, its files under ``/inbox/assets/``. Both are public: they hold no data, and
every request the page makes goes to the API with the caller's key in the
``Authorization`` header, the same routes and roles as everyone else (docs/inbox.md).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

from api.auth import allow

PAGE = Path(__file__).resolve().parents[1] / "inbox"

router = APIRouter(tags=["Inbox"])
# A mount is not an API route: no OpenAPI entry, no authorization (public files).
router.mount("/inbox/assets", StaticFiles(directory=PAGE), name="inbox-assets")

# Only the page's own files may run; it talks to this origin only, and no site may frame it.
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@router.get("/", tags=["Operations"], dependencies=[allow()])
def root() -> dict[str, str]:
    """Where to go from here: the inbox (in a browser), the API's interactive
    documentation and its OpenAPI document, and the health check. Public: it holds no
    data."""
    return {"service": "signoff", "inbox": "/inbox", "docs": "/docs",
            "openapi": "/openapi.json", "health": "/health"}


@router.get("/inbox", response_class=HTMLResponse, dependencies=[allow()],
            responses={200: {"description": "the inbox page"}})
def inbox() -> HTMLResponse:
    """The inbox: paused runs to decide, one run's detail and history, the audit trail and
    decision analytics. Public (the page holds no data); what it shows depends on the API
    key pasted into it. ``HEAD`` answers the same, without the body."""
    return HTMLResponse((PAGE / "index.html").read_text(encoding="utf-8"), headers=HEADERS)


# HEAD is GET's twin (headers only), left out of the OpenAPI document like /health's.
router.add_api_route("/inbox", inbox, methods=["HEAD"], include_in_schema=False,
                     response_class=HTMLResponse, dependencies=[allow()])
