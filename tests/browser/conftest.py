"""Browser tests: Playwright for Python driving Debian's Chromium (``/usr/bin/chromium``,
headless; ``playwright install`` is not used). Under ``CI=true`` a missing browser fails
the tests; elsewhere it skips them.

``world``: one real ``signoff serve`` (SQLite) for the module, with API keys for a client
(``ann``), a reviewer (``rita``) and an auditor (``audrey``). ``page``: a fresh browser
context (empty sessionStorage) whose page errors fail the test.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.world import CHROMIUM, KEYS, World, cli, launch
from tests.support.server import live_server


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    # Module scope, not session: Playwright's sync API keeps an event loop running in
    # this thread while it is open, and the tests after these may call asyncio.run.
    if not CHROMIUM.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and no {CHROMIUM}: the browser tests must run in CI "
                        "(apt-get install chromium)", pytrace=False)
        pytest.skip(f"no {CHROMIUM} (Debian's chromium package)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = launch(p)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(10_000)
    p = context.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda e: errors.append(str(e)))
    yield p
    context.close()
    assert not errors, errors


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("inbox")
    url = f"sqlite:///{tmp / 'signoff.db'}"
    admin = cli(url, "keys", "create", "--name", "adm", "--role", "admin")
    with live_server(url, tmp / "server.log") as server:
        secrets = {"adm": admin}
        with server.client(headers={"Authorization": f"Bearer {admin}"}) as c:
            for name, role in KEYS.items():
                r = c.post("/keys", json={"name": name, "role": role})
                assert r.status_code == 201, r.text
                secrets[name] = r.json()["secret"]
        yield World(server, secrets)
