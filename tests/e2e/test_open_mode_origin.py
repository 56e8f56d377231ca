"""Without authentication (no key issued) every route is open to the programs of this
machine, and to the pages signoff serves, but not to a web page of another site that the
developer visits: a browser sends such a page's form to 127.0.0.1 without asking
(no CORS preflight), and a page whose name an attacker pointed at 127.0.0.1 (DNS
rebinding) reads the answers. signoff refuses (403) a request a browser marks as sent by
another site, from an ``Origin`` that is not the request's ``Host``, or over the network
addressed to a ``Host`` not in ``SIGNOFF_OPEN_HOSTS`` (by default the loopback names),
wherever the server listens (in a container too, reached through a published port).

Requests without these headers (curl, Agno's client, the tests' clients) are answered as
before.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.flows import assert_problem, decided, form, pending
from tests.support.server import LiveServer, live_server

pytestmark = pytest.mark.e2e

DELETE = "Delete 50 old records from the users table"
START = "/agents/data_manager/runs"
EVIL = "https://evil.example"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("open_mode")
    with live_server(f"sqlite:///{tmp / 'open.db'}", tmp / "server.log",
                     SIGNOFF_EXPIRY_INTERVAL="0") as s:
        yield s


def _form_post(c: httpx.Client, headers: dict[str, str]) -> httpx.Response:
    """What an HTML form sends: urlencoded, no preflight."""
    return c.post(START, headers=headers, data={"message": DELETE, "stream": "false"})


def _waiting(c: httpx.Client) -> int:
    """How many runs wait for a decision (each run started here does)."""
    r = c.get("/queue")
    assert r.status_code == 200, r.text
    return int(r.json()["total"])


@pytest.mark.parametrize("headers", [
    {"Origin": EVIL, "Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "cross-site"},
    {"Origin": EVIL},
    {"Origin": "null"},  # a sandboxed frame, a page of no origin
    {"Origin": "http://localhost:3000", "Sec-Fetch-Site": "same-site"},  # another port
], ids=["cross-site", "sec-fetch-site-only", "origin-only", "origin-null", "other-port"])
def test_a_form_another_site_posts_starts_no_run(server: LiveServer,
                                                 headers: dict[str, str]) -> None:
    with server.client() as c:
        before = _waiting(c)
        body = assert_problem(_form_post(c, headers), 403)
        assert "no authentication" in body["detail"]
        assert _waiting(c) == before


def test_a_page_whose_name_points_here_reads_nothing(server: LiveServer) -> None:
    """DNS rebinding: the browser addresses the page's own name, and its fetches look
    same-origin; the ``Host`` is the attacker's name."""
    rebound = f"rebind.evil.example:{server.port}"
    same_origin = {"Host": rebound, "Origin": f"http://{rebound}",
                   "Sec-Fetch-Site": "same-origin"}
    with server.client() as c:
        run = c.post(START, files=form(message=DELETE, stream="false")).json()
        for path in ("/queue", f"/runs/{run['run_id']}", "/queue/stream"):
            body = assert_problem(c.get(path, headers={"Host": rebound}), 403)
            assert rebound in body["detail"]
        assert_problem(c.get("/queue", headers=same_origin), 403)
        assert_problem(_form_post(c, same_origin), 403)


def test_local_programs_and_signoffs_own_pages_are_answered(server: LiveServer) -> None:
    here = f"127.0.0.1:{server.port}"
    inbox = {"Origin": f"http://{here}", "Sec-Fetch-Site": "same-origin"}  # its fetch()
    with server.client() as c:
        r = _form_post(c, {})  # curl, Agno's client: none of these headers
        assert r.status_code == 200, r.text
        run: dict[str, Any] = r.json()
        assert _form_post(c, inbox).status_code == 200
        assert _form_post(c, {"Sec-Fetch-Site": "none"}).status_code == 200  # typed in
        for host in (here, f"localhost:{server.port}", f"[::1]:{server.port}", "localhost"):
            r = c.get("/queue", headers={"Host": host})
            assert r.status_code == 200, (host, r.text)
        r = c.post(f"/agents/data_manager/runs/{run['run_id']}/continue", headers=inbox,
                   files=form(tools=[decided(t, confirmed=True) for t in pending(run)],
                              stream="false"))
        assert r.status_code == 200, r.text
        assert c.get("/health", headers={"Host": "rebind.evil.example"}).status_code == 200


def _address_of_this_machine() -> str | None:
    """An address of this machine that is not a loopback one (None if it has none)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: the route picks an address
            address = str(s.getsockname()[0])
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_a_server_reached_on_another_address_takes_the_open_hosts_only(
        tmp_path: Path) -> None:
    """As in docker-compose: listening on 0.0.0.0 (``SIGNOFF_ALLOW_OPEN``), reached on
    the container's own address through a port published on the host's loopback, with
    ``Host: localhost:7777``. A page whose name was pointed at it is refused, unless its
    name is one ``SIGNOFF_OPEN_HOSTS`` lists; another site's page is refused."""
    address = _address_of_this_machine()
    if address is None:
        pytest.skip("this machine has no address but loopback ones")
    with live_server(f"sqlite:///{tmp_path / 'open.db'}", tmp_path / "server.log",
                     SIGNOFF_EXPIRY_INTERVAL="0", SIGNOFF_HOST="0.0.0.0",
                     SIGNOFF_ALLOW_OPEN="true",
                     SIGNOFF_OPEN_HOSTS="localhost,signoff.internal") as server, \
            httpx.Client(base_url=f"http://{address}:{server.port}", timeout=30) as c:
        for host in ("localhost:7777", f"signoff.internal:{server.port}"):
            r = c.get("/queue", headers={"Host": host})
            assert r.status_code == 200, r.text
            assert _form_post(c, {"Host": host}).status_code == 200
        assert "SIGNOFF_OPEN_HOSTS" in assert_problem(
            c.get("/queue", headers={"Host": "rebind.evil.example:7777"}), 403)["detail"]
        assert_problem(c.get("/queue", headers={"Host": f"{address}:{server.port}"}), 403)
        assert_problem(_form_post(c, {"Host": "localhost:7777", "Origin": EVIL,
                                      "Sec-Fetch-Site": "cross-site"}), 403)
