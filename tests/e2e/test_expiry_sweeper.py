"""The server's expiry sweeper, end to end: ``signoff serve`` sweeps every
``SIGNOFF_EXPIRY_INTERVAL`` seconds and records the expiry of a call nobody decided in
time; the run goes on, the audit trail and the queue show it, and a late decision gets
409 with the expiry as the decision that stands.

The sweeper's own behaviour is tested with an injected clock (tests/agent/test_expiry.py);
here the server's real clock runs, and the test polls (with a deadline) for what the
sweeper records, as other end-to-end tests poll for the projections.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.flows import decided, events, payloads, pending, post_continue, start
from tests.support.server import LiveServer, live_server

pytestmark = pytest.mark.e2e


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    with live_server(f"sqlite:///{tmp_path / 'signoff.db'}", tmp_path / "server.log",
                     SIGNOFF_AGENTS="agent.demo,tests.support.expiring",
                     SIGNOFF_EXPIRY_INTERVAL="0.05") as s:
        yield s


def eventually(what: str, check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.02)
    return found


def test_the_server_expires_an_undecided_call_and_the_run_goes_on(server: LiveServer) -> None:
    with server.client() as c:
        run = start(c, "expiring", 'call drop_cache {"name": "home"}')
        [call] = pending(run)
        [requested] = payloads(events(c, run["run_id"]), "ToolCallRequested")
        assert requested["expires_at"] is not None and requested["on_timeout"] == "reject"

        done = eventually("the run completes after its expiry", lambda: (
            r := c.get(f"/runs/{run['run_id']}").json())["status"] == "COMPLETED" and r)
        [expired] = payloads(events(c, run["run_id"]), "DecisionExpired")
        assert (expired["decided_by"], expired["action"]) == ("system", "reject")
        assert "No decision was made in time" in done["content"]

        # Too late: the expiry is the decision that stands.
        r = post_continue(c, "expiring", run["run_id"], tools=[decided(call, confirmed=True)],
                          user_id="late", session_id=run["session_id"], stream="false")
        assert r.status_code == 409, r.text
        assert r.headers["content-type"].startswith("application/problem+json")

        row = eventually("the expiry is in the audit trail", lambda: c.get(
            "/audit/decisions", params={"run_id": run["run_id"]}).json()["items"])
        assert [(d["decision"], d["actor"], d["note"]) for d in row] == [
            ("expired", "system", "reject")]


def test_an_escalated_call_shows_its_group_in_the_queue(server: LiveServer) -> None:
    with server.client() as c:
        run = start(c, "expiring", 'call grant_access {"user": "ann"}')
        escalated = eventually("the call is escalated", lambda: [
            e for e in payloads(events(c, run["run_id"]), "DecisionExpired")
            if e["action"] == "escalate"])
        assert escalated[0]["escalated_to"] == "leads"
        # ... and a millisecond later rejected: the run completes.
        eventually("the escalated call expires too", lambda: c.get(
            f"/runs/{run['run_id']}").json()["status"] == "COMPLETED")
        actions = [e["action"] for e in payloads(events(c, run["run_id"]), "DecisionExpired")]
        assert actions == ["escalate", "reject"]
