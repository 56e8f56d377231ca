"""Verification and anchors over HTTP, against a real server."""

from __future__ import annotations

import time

from tests.e2e.test_point_in_time import _decided_run
from tests.support.server import LiveServer


def test_a_run_and_the_log_verify_over_http(server: LiveServer) -> None:
    with server.client() as c:
        run_ids = [_decided_run(c) for _ in range(3)]
        events = c.get(f"/runs/{run_ids[0]}/events").json()
        assert all(len(e["hash"]) == 64 for e in events)

        report = c.get(f"/runs/{run_ids[0]}/verify").json()
        assert report["intact"] is True
        assert report["events"] == len(events)
        assert report["head"] == {"version": len(events), "hash": events[-1]["hash"]}

        head = c.get("/health").json()["log_head"]
        deadline = time.monotonic() + 10  # the inline anchors projection catches up
        while True:
            anchors = c.get("/audit/anchors").json()
            if anchors and anchors[-1]["position"] == head:
                break
            assert time.monotonic() < deadline, anchors
            time.sleep(0.05)
        assert anchors[-1]["kind"] == "head" and anchors[-1]["events"] == head

        log = c.get("/audit/verify").json()
        assert log["intact"] is True and log["runs"] == 3
        assert log["head"]["hash"] == anchors[-1]["hash"]
        assert log["anchors_checked"] == 1

        missing = c.get("/runs/7d0c6f43-96f3-4b5f-a0a5-2bd0b3e0a3f1/verify")
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"
