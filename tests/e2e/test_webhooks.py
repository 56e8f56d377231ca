"""Webhooks over HTTP against a real server and a real receiver on 127.0.0.1: deliveries
that fail first and then succeed, signed as docs/webhooks.md says; a receiver that hangs
while runs go on; exactly one delivery per event across a restart and a rebuild."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.flows import assert_problem, decided, form, pending
from tests.support.receiver import Receiver, verify_function
from tests.support.server import ROOT, live_server

SEED = "Delete 50 old records from the users table"
FAST = {"SIGNOFF_WEBHOOK_BACKOFF": "0.05", "SIGNOFF_WEBHOOK_BACKOFF_MAX": "0.2",
        "SIGNOFF_WEBHOOK_TIMEOUT": "2"}


def _subscribe(c: httpx.Client, url: str, event_types: list[str]) -> dict[str, Any]:
    r = c.post("/webhooks", json={"url": url, "event_types": event_types})
    assert r.status_code == 201, r.text
    created: dict[str, Any] = r.json()
    assert created["secret"].startswith("whsec_")
    assert created["webhook"]["hint"] == created["secret"][:10]
    return created


def _hitl_cycle(c: httpx.Client) -> dict[str, Any]:
    r = c.post("/agents/data_manager/runs", files=form(message=SEED, stream="false"))
    assert r.status_code == 200, r.text
    run = r.json()
    tools = [decided(t, confirmed=True) for t in pending(run)]
    r = c.post(f"/agents/data_manager/runs/{run['run_id']}/continue",
               files=form(tools=tools, stream="false"))
    assert r.status_code == 200, r.text
    done: dict[str, Any] = r.json()
    assert done["status"] == "COMPLETED"
    return done


def _deliveries(c: httpx.Client, webhook_id: str, until: Callable[[list[Any]], bool],
                timeout: float = 30.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        r = c.get(f"/webhooks/{webhook_id}/deliveries")
        assert r.status_code == 200, r.text
        rows: list[dict[str, Any]] = r.json()
        if until(rows):
            return rows
        assert time.monotonic() < deadline, json.dumps(rows, indent=1)[:3000]
        time.sleep(0.05)


def _caught_up(c: httpx.Client) -> None:
    deadline = time.monotonic() + 10
    while any(p["lag"] for p in c.get("/projections").json()):
        assert time.monotonic() < deadline
        time.sleep(0.02)


def _all(status: str, count: int) -> Callable[[list[Any]], bool]:
    return lambda rows: len(rows) == count and all(d["status"] == status for d in rows)


def test_deliveries_fail_first_then_succeed_signed_and_once_each(
        store_url: str, tmp_path: Path) -> None:
    verify = verify_function()
    with Receiver(failures=2) as receiver, \
            live_server(store_url, tmp_path / "server.log", **FAST) as server, \
            server.client() as c:
        before = _hitl_cycle(c)  # before the subscription: never sent
        created = _subscribe(c, receiver.url, ["run.paused", "decision.made",
                                               "run.completed"])
        webhook_id, secret = created["webhook"]["id"], created["secret"]
        assert [w["id"] for w in c.get("/webhooks").json()] == [webhook_id]
        run = _hitl_cycle(c)

        rows = _deliveries(c, webhook_id, _all("delivered", 3))

    # Each event of the run, once, newest first; three attempts each: 500, 500, 200.
    assert [d["event_type"] for d in rows] == ["run.completed", "decision.made",
                                               "run.paused"]
    assert {d["run_id"] for d in rows} == {run["run_id"]} != {before["run_id"]}
    for d in rows:
        assert [a["status_code"] for a in d["attempts"]] == [500, 500, 200]
        assert [a["attempt"] for a in d["attempts"]] == [1, 2, 3]
        starts = [datetime.fromisoformat(a["started_at"]) for a in d["attempts"]]
        # Backoff: at least half of 0.05 s, then of 0.1 s (the jitter takes up to half).
        assert (starts[1] - starts[0]).total_seconds() >= 0.025
        assert (starts[2] - starts[1]).total_seconds() >= 0.05
        assert d["next_attempt_at"] is None

    # The receiver saw exactly those attempts, each signed with the secret, the same
    # body every time.
    assert len(receiver.requests) == 9
    assert len(receiver.delivered()) == 3
    by_id: dict[str, list[dict[str, Any]]] = {}
    for req in receiver.requests:
        by_id.setdefault(req["delivery"], []).append(req)
        assert verify(secret, req["headers"]["Signoff-Signature"], req["body"])
        assert not verify("whsec_another-secret-entirely", req["headers"]["Signoff-Signature"],
                          req["body"])
        assert not verify(secret, req["headers"]["Signoff-Signature"], req["body"] + b" ")
    assert set(by_id) == {d["id"] for d in rows}
    for d in rows:
        sent = by_id[d["id"]]
        assert {r["body"] for r in sent} == {d["body"].encode()}
        assert [r["headers"]["Signoff-Attempt"] for r in sent] == ["1", "2", "3"]
        assert {r["headers"]["Signoff-Event"] for r in sent} == {d["event_type"]}

    bodies = {d["event_type"]: json.loads(d["body"]) for d in rows}
    paused = bodies["run.paused"]
    assert paused["run_id"] == run["run_id"] and paused["agent_id"] == "data_manager"
    assert paused["status"] == "PAUSED"
    assert [w["tool_name"] for w in paused["data"]["waiting"]] == ["delete_records"]
    assert paused["data"]["waiting"][0]["tool_args"] == {"table_name": "users", "count": 50}
    decision = bodies["decision.made"]["data"]
    assert decision["decision"] == "confirmed" and decision["tool_name"] == "delete_records"
    assert decision["decided_by"]
    assert bodies["run.completed"]["status"] == "COMPLETED"
    assert [b["position"] for b in (paused, bodies["decision.made"],
                                    bodies["run.completed"])] == sorted(
        d["position"] for d in rows)
    assert all(b["id"] == d["id"] for d in rows for b in [json.loads(d["body"])])


def test_a_hanging_subscriber_does_not_hold_runs_back(tmp_path: Path) -> None:
    with Receiver(hang=True) as receiver, live_server(
            f"sqlite:///{tmp_path / 'signoff.db'}", tmp_path / "server.log",
            **{**FAST, "SIGNOFF_WEBHOOK_TIMEOUT": "0.3", "SIGNOFF_WEBHOOK_ATTEMPTS": "2",
               "SIGNOFF_WEBHOOK_CONCURRENCY": "2"}) as server, server.client() as c:
        webhook_id = _subscribe(c, receiver.url, ["*"])["webhook"]["id"]
        # Both sending threads are held by the subscriber while the runs go on.
        runs = [_hitl_cycle(c) for _ in range(3)]  # each asserts its run completed
        assert len({r["run_id"] for r in runs}) == 3
        rows = _deliveries(c, webhook_id, _all("failed", 9))
        metrics = c.get("/metrics").text
    assert "signoff_webhook_deliveries_failed 9.0" in metrics
    assert "signoff_webhook_deliveries_pending 0.0" in metrics
    for d in rows:
        assert [a["status_code"] for a in d["attempts"]] == [None, None]
        assert all(a["error"].startswith("timeout") for a in d["attempts"])
    assert receiver.requests  # it was called, and never answered


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, check=True,
                          env={**os.environ, "SIGNOFF_DATABASE_URL": url}, text=True,
                          capture_output=True, timeout=60)


def test_exactly_one_delivery_per_event_across_a_restart_and_a_rebuild(
        tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'signoff.db'}"
    with Receiver() as receiver:
        # A subscription made from the command line, before the server starts.
        made = _cli(url, "webhooks", "create", receiver.url, "--event", "run.completed")
        secret = made.stdout.strip()
        webhook_id = made.stderr.split()[2]  # "signoff: webhook ID to URL ..."
        with live_server(url, tmp_path / "server.log", **FAST) as server:
            with server.client() as c:
                _hitl_cycle(c)
                _deliveries(c, webhook_id, _all("delivered", 1))
            server.stop()
            # Rebuilt from the log while the server is down: the delivery is still owed
            # once, and was made.
            _cli(url, "project", "rebuild", "webhooks")
            server.start()
            with server.client() as c:
                _hitl_cycle(c)
                rows = _deliveries(c, webhook_id, _all("delivered", 2))
        listed = _cli(url, "webhooks", "deliveries", webhook_id).stdout
    assert listed.count("delivered") == 2
    assert sorted(r["delivery"] for r in receiver.requests) == sorted(d["id"] for d in rows)
    verify = verify_function()
    assert all(verify(secret, r["headers"]["Signoff-Signature"], r["body"])
               for r in receiver.requests)


def test_bad_subscriptions_are_refused_and_a_deleted_one_is_told_nothing(
        tmp_path: Path) -> None:
    with Receiver() as receiver, live_server(
            f"sqlite:///{tmp_path / 'signoff.db'}", tmp_path / "server.log",
            SIGNOFF_WEBHOOK_HOSTS="127.0.0.1,*.example.com", **FAST) as server, \
            server.client() as c:
        for body in [{"url": "ftp://127.0.0.1/x"}, {"url": "not a url"}, {"url": ""},
                     {"url": receiver.url, "event_types": ["run.exploded"]},
                     {"url": receiver.url, "event_types": []},
                     {"url": receiver.url, "secret": "short"},
                     {"url": "http://169.254.169.254/latest/meta-data"},
                     {"url": "https://example.com.evil.test/hook"}]:
            assert_problem(c.post("/webhooks", json=body), 422)
        # An allowed host (under *.example.com): deleted at once, so nothing is ever
        # sent off this machine.
        allowed = c.post("/webhooks", json={"url": "https://hooks.example.com/x"})
        assert allowed.status_code == 201, allowed.text
        assert c.delete(f"/webhooks/{allowed.json()['webhook']['id']}").status_code == 200
        assert_problem(c.get("/webhooks/not-an-id/deliveries"), 404)
        assert_problem(c.delete("/webhooks/00000000-0000-0000-0000-000000000000"), 404)

        created = c.post("/webhooks", json={"url": receiver.url, "event_types": ["*"],
                                            "secret": "my-own-secret-of-some-length"}).json()
        webhook_id = created["webhook"]["id"]
        assert created["secret"] == "my-own-secret-of-some-length"
        r = c.delete(f"/webhooks/{webhook_id}")
        assert r.status_code == 200 and r.json()["deleted"] is True
        assert_problem(c.delete(f"/webhooks/{webhook_id}"), 409)
        _hitl_cycle(c)
        _caught_up(c)  # the webhooks projection has seen the run: it was owed nothing
        assert c.get(f"/webhooks/{webhook_id}/deliveries").json() == []
        assert [w["deleted"] for w in c.get("/webhooks").json()] == [True, True]
    assert receiver.requests == []
