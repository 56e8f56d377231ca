"""Verification and anchors over HTTP, against a real server."""

from __future__ import annotations

import sqlite3
import time
from typing import Any
from uuid import UUID

import psycopg

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
        head = c.get("/health").json()["log_head"]
        # The position of the run's last event in the log (issue 16: it was null).
        first_end = report["head"]["position"]
        assert report["head"] == {"version": len(events), "hash": events[-1]["hash"],
                                  "position": first_end}
        assert isinstance(first_end, int) and 0 < first_end < head
        newest = c.get(f"/runs/{run_ids[-1]}/verify").json()
        assert newest["head"]["position"] == head  # the newest run wrote the log's last event

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


def test_a_damaged_run_is_named_at_its_log_position_over_http(server: LiveServer) -> None:
    """An event deleted from a run's middle: the run's own check names the next event,
    with its position in the log (issue 16: ``position`` was always null)."""
    with server.client() as c:
        run_id = _decided_run(c)
        _decided_run(c)
    url = server.database_url
    if url.startswith("sqlite"):
        conn: Any = sqlite3.connect(url.removeprefix("sqlite:///"))
        table, column, key, mark = "stored_events", "rowid", UUID(run_id).hex, "?"
    else:
        conn = psycopg.connect(url, autocommit=True)
        table, column, key, mark = "signoff_events", "notification_id", UUID(run_id), "%s"
    with conn:
        rows = conn.execute(f"SELECT originator_version, {column} FROM {table} WHERE "
                            f"originator_id = {mark}", (key,)).fetchall()
        conn.execute(f"DELETE FROM {table} WHERE originator_id = {mark} AND "
                     f"originator_version = 3", (key,))
    if url.startswith("sqlite"):
        conn.close()
    positions = dict(rows)
    with server.client() as c:
        report = c.get(f"/runs/{run_id}/verify").json()
    assert report["intact"] is False
    broken = report["first_broken"]
    assert (broken["version"], broken["position"]) == (4, positions[4])
    assert broken["problem"].startswith("version 3 of the run missing")
    assert report["head"]["position"] == positions[max(positions)]
