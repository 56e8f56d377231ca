"""The browser tests' world: Debian's Chromium launched by Playwright, a real server
with API keys, and requests as one of its callers (the fixtures are in conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.flows import decided, form, pending
from tests.support.server import ROOT, LiveServer

CHROMIUM = Path("/usr/bin/chromium")
# As root and with no network but the registries: no sandbox, nothing in the background.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage"]
SEED = "Delete 50 old records from the users table"  # delete_records(users, 50)
KEYS = {"ann": "client", "rita": "reviewer", "audrey": "auditor"}


def launch(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                      args=CHROMIUM_ARGS)


def cli(url: str, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, check=True,
                         env={**os.environ, "SIGNOFF_DATABASE_URL": url},
                         capture_output=True, text=True, timeout=60)
    return out.stdout.strip()


class World:
    """The server, its keys, and requests as one of its callers."""

    def __init__(self, server: LiveServer, secrets: dict[str, str]) -> None:
        self.server = server
        self.secrets = secrets

    def as_(self, who: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.secrets[who]}"} if who else {}
        return self.server.client(headers=headers)

    def paused(self, message: str = SEED, agent: str = "data_manager",
               who: str | None = "ann") -> dict[str, Any]:
        """A run started (as the client) that pauses for a decision."""
        with self.as_(who) as c:
            r = c.post(f"/agents/{agent}/runs", files=form(message=message, stream="false"))
        assert r.status_code == 200, r.text
        run: dict[str, Any] = r.json()
        assert run["status"] == "PAUSED", run
        return run

    def decide(self, run: dict[str, Any], who: str | None = "rita", **decision: Any,
               ) -> dict[str, Any]:
        with self.as_(who) as c:
            r = c.post(f"/agents/{run['agent_id']}/runs/{run['run_id']}/continue",
                       files=form(tools=[decided(t, **decision) for t in pending(run)],
                                  stream="false"))
        assert r.status_code == 200, r.text
        out: dict[str, Any] = r.json()
        return out

    def events(self, run_id: str, who: str | None = "audrey") -> list[dict[str, Any]]:
        with self.as_(who) as c:
            r = c.get(f"/runs/{run_id}/events")
        assert r.status_code == 200, r.text
        out: list[dict[str, Any]] = r.json()
        return out

    def open_inbox(self, page: Any, who: str | None, hash_: str = "") -> None:
        """Open the inbox and paste the caller's key, as a person would."""
        page.goto(f"{self.server.url}/inbox{hash_}")
        if who:
            page.fill("#key", self.secrets[who])
            page.click("#who button[type=submit]")


def eventually(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll ``check`` until it returns something truthy (read models lag the log)."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"still not true after {timeout} s"
        time.sleep(0.05)
    return value
