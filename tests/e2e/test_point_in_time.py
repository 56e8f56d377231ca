"""A run as it was: after N events (``at_version``) or at a moment (``as_of``)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import httpx

from tests.support.server import LiveServer

SEED = "Delete 50 old records from the users table"


def _decided_run(c: httpx.Client) -> str:
    paused = c.post("/agents/data_manager/runs", data={
        "message": SEED, "user_id": "ann", "stream": "false"}).json()
    tools = paused["tools"]
    tools[0]["confirmed"] = True
    done = c.post(f"/agents/data_manager/runs/{paused['run_id']}/continue",
                  data={"tools": json.dumps(tools), "stream": "false"}).json()
    assert done["status"] == "COMPLETED"
    return str(paused["run_id"])


def test_a_run_can_be_read_as_it_was_after_n_events_and_at_any_moment(
    server: LiveServer,
) -> None:
    with server.client() as c:
        run_id = _decided_run(c)
        events = c.get(f"/runs/{run_id}/events").json()
        paused_at = next(e for e in events if e["type"] == "RunPaused")

        # After its 4th event (RunPaused) the run waited for the confirmation.
        then = c.get(f"/runs/{run_id}", params={"at_version": paused_at["version"]}).json()
        assert (then["status"], then["version"]) == ("PAUSED", paused_at["version"])
        assert [p["tool_name"] for p in then["pending"]] == ["delete_records"]

        # As of the RunPaused event's time: the same state; as of the last event's: now.
        then = c.get(f"/runs/{run_id}", params={"as_of": paused_at["timestamp"]}).json()
        assert (then["status"], then["version"]) == ("PAUSED", paused_at["version"])
        now = c.get(f"/runs/{run_id}", params={"as_of": events[-1]["timestamp"]}).json()
        assert (now["status"], now["version"]) == ("COMPLETED", len(events))
        assert now == c.get(f"/runs/{run_id}").json()

        # A time without a zone is UTC.
        naive = datetime.fromisoformat(paused_at["timestamp"]).replace(tzinfo=None)
        then = c.get(f"/runs/{run_id}", params={"as_of": naive.isoformat()}).json()
        assert then["version"] == paused_at["version"]

        # Before the run existed, or past its last event: 404; both at once: 422.
        before = datetime.fromisoformat(events[0]["timestamp"]) - timedelta(seconds=1)
        for params, status in (({"as_of": before.isoformat()}, 404),
                               ({"at_version": len(events) + 1}, 404),
                               ({"at_version": 1, "as_of": before.isoformat()}, 422),
                               ({"as_of": "yesterday"}, 422)):
            r = c.get(f"/runs/{run_id}", params=params)
            assert r.status_code == status, (params, r.text)
            assert r.headers["content-type"] == "application/problem+json"
