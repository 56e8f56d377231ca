"""Live streams over HTTP: one run's events and the queue's changes, resumed with
``Last-Event-ID`` without loss or duplicates."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx

from tests.e2e.flows import decided, form, pending
from tests.support.server import LiveServer

SEED = "Delete 50 old records from the users table"


def _messages(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """Parse server-sent events as they arrive (comments, i.e. pings, skipped)."""
    message: dict[str, Any] = {}
    for line in lines:
        if not line:
            if "data" in message:
                yield message
            message = {}
        elif not line.startswith(":"):
            field, _, value = line.partition(":")
            message[field] = value.removeprefix(" ")


def _paused(c: httpx.Client) -> dict[str, Any]:
    r = c.post("/agents/data_manager/runs", files=form(message=SEED, stream="false"))
    assert r.status_code == 200, r.text
    return r.json()


def _confirm(c: httpx.Client, run: dict[str, Any]) -> None:
    tools = [decided(t, confirmed=True) for t in pending(run)]
    r = c.post(f"/agents/data_manager/runs/{run['run_id']}/continue",
               files=form(tools=tools, stream="false"))
    assert r.status_code == 200, r.text


def test_a_run_stream_resumes_after_a_reconnect_without_loss_or_duplicates(
        server: LiveServer) -> None:
    with server.client() as c:
        run = _paused(c)
        got: list[dict[str, Any]] = []
        with c.stream("GET", f"/runs/{run['run_id']}/stream") as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            for m in _messages(r.iter_lines()):
                got.append(m)
                if m["event"] == "RunPaused":
                    break  # the client goes away while the run waits
        assert [int(m["id"]) for m in got] == list(range(1, len(got) + 1))

        _confirm(c, run)  # the run goes on while nobody listens
        with c.stream("GET", f"/runs/{run['run_id']}/stream",
                      headers={"Last-Event-ID": got[-1]["id"]}) as r:
            rest = list(_messages(r.iter_lines()))  # ends after the run's last event
        history = c.get(f"/runs/{run['run_id']}/events").json()
    assert [int(m["id"]) for m in got + rest] == [e["version"] for e in history]
    assert [m["event"] for m in got + rest] == [e["type"] for e in history]
    assert rest[-1]["event"] == "RunCompleted"
    assert json.loads(rest[-1]["data"])["hash"] == history[-1]["hash"]


def test_a_run_stream_shows_events_as_they_are_recorded(server: LiveServer) -> None:
    with server.client() as c:
        run = _paused(c)
        seen: list[str] = []
        opened = threading.Event()

        def listen() -> None:
            with server.client() as listener, listener.stream(
                    "GET", f"/runs/{run['run_id']}/stream",
                    params={"after": run_version(c, run)}) as r:
                opened.set()
                seen.extend(m["event"] for m in _messages(r.iter_lines()))

        t = threading.Thread(target=listen)
        t.start()
        assert opened.wait(10)
        _confirm(c, run)
        t.join(20)
    assert not t.is_alive()
    assert seen[0] == "ToolConfirmed" and seen[-1] == "RunCompleted"


def run_version(c: httpx.Client, run: dict[str, Any]) -> int:
    return int(c.get(f"/runs/{run['run_id']}").json()["version"])


def test_the_queue_stream_tells_of_pauses_and_departures(server: LiveServer) -> None:
    with server.client() as c:
        got: list[dict[str, Any]] = []
        opened = threading.Event()
        wanted = 4

        def listen() -> None:
            with server.client() as listener, listener.stream("GET", "/queue/stream") as r:
                opened.set()
                for m in _messages(r.iter_lines()):
                    got.append(m)
                    if len(got) == wanted:
                        return

        t = threading.Thread(target=listen)
        t.start()
        assert opened.wait(10)
        first, second = _paused(c), _paused(c)
        _confirm(c, first)
        assert c.post(f"/runs/{second['run_id']}/cancel").status_code == 200
        t.join(20)
        assert not t.is_alive()
        changes = [(m["event"], json.loads(m["data"])["run_id"]) for m in got]
        assert changes == [("paused", first["run_id"]), ("paused", second["run_id"]),
                           ("left", first["run_id"]), ("left", second["run_id"])]
        assert json.loads(got[0]["data"])["agent_id"] == "data_manager"

        # A reviewer who was away resumes after the last change seen: nothing twice.
        with c.stream("GET", "/queue/stream", headers={"Last-Event-ID": got[1]["id"]}) as r:
            resumed = []
            for m in _messages(r.iter_lines()):
                resumed.append(m)
                if len(resumed) == 2:
                    break
        assert [m["id"] for m in resumed] == [got[2]["id"], got[3]["id"]]
