"""Approval policies end to end: ``signoff serve`` with ``SIGNOFF_POLICIES`` (the example
file of the docs) lets the calls its rules allow run at once, records why on the call,
and shows them in the audit trail and analytics; the seed's flow still pauses."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.flows import events, payloads, start
from tests.support.server import LiveServer, live_server

pytestmark = pytest.mark.e2e

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "policies.example.toml"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    with live_server(f"sqlite:///{tmp_path / 'signoff.db'}", tmp_path / "server.log",
                     SIGNOFF_POLICIES=str(EXAMPLE)) as s:
        yield s


def caught_up(c: httpx.Client) -> None:
    deadline = time.monotonic() + 10
    while not all(p["lag"] == 0 for p in c.get("/projections").json()):
        assert time.monotonic() < deadline, "projections lag"
        time.sleep(0.02)


def test_a_call_a_rule_allows_runs_at_once_and_is_in_the_audit_trail(
        server: LiveServer) -> None:
    with server.client() as c:
        run = start(c, "data_manager",
                    'call delete_records {"table_name": "logs", "count": 40}')
        assert run["status"] == "COMPLETED", run
        [requested] = payloads(events(c, run["run_id"]), "ToolCallRequested")
        assert requested["requires"] is None
        assert requested["policy"] == {
            "rule": "settings:log-cleanup", "outcome": "allowed",
            "reason": "Up to 1000 records of the logs table may be deleted without a person"}
        # The seed's flow: no rule matches 50 records of users; the tool's own True holds.
        seed = start(c, "data_manager", "Delete 50 old records from the users table")
        assert seed["status"] == "PAUSED"
        [held] = payloads(events(c, seed["run_id"]), "ToolCallRequested")
        assert held["requires"] == "confirmation" and held["policy"] is None

        caught_up(c)
        rows = c.get("/audit/decisions", params={"decision": "allowed"}).json()["items"]
        assert [(r["run_id"], r["actor"], r["note"]) for r in rows] == [
            (run["run_id"], "policy:settings:log-cleanup",
             "Up to 1000 records of the logs table may be deleted without a person")]
        [group] = c.get("/analytics/decisions", params={"group_by": "tool"}).json()["groups"]
        assert (group["group"], group["requested"], group["allowed"]) == ("delete_records", 2, 1)
        detail = c.get(f"/runs/{run['run_id']}").json()
        assert detail["tool_calls"][0]["policy"]["rule"] == "settings:log-cleanup"
