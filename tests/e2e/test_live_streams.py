"""Live Agno streams over HTTP, with a slow model: a real ``signoff serve`` driven by the
openai adapter (the real SDK, ``stream=True``) against a local OpenAI-compatible server
that takes its time and streams its answer.

Each event is sent when it is committed (the first long before the model answers), the
model's text comes as ``RunContent`` pieces, a stream dropped mid-way resumes with
``Last-Event-ID`` with every event once, and the events committed are those of the
same run asked for without a stream."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.fake_openai import FakeOpenAI, slowly, text_reply, tool_call_reply
from tests.support.server import LiveServer, live_server

MESSAGE = "Delete 50 old records from the users table"
ARGS = {"table_name": "users", "count": 50}
ANSWER = "All done: fifty old records were deleted from the users table."
SLOW = 1.5  # seconds the model takes before the first piece of its answer
START = "/agents/data_manager/runs"


@pytest.fixture
def server(fake_openai: FakeOpenAI, tmp_path: Path) -> Iterator[LiveServer]:
    with live_server(f"sqlite:///{tmp_path / 's.db'}", tmp_path / "log",
                     SIGNOFF_MODEL="openai:fake-model", OPENAI_API_KEY="sk-test",
                     OPENAI_BASE_URL=fake_openai.base_url) as s:
        yield s


def proposal(delay: float = 0.0) -> Any:
    return slowly(tool_call_reply([("call_abc", "delete_records", ARGS)]), delay, 0.02)


def answer(delay: float = 0.0, gap: float = 0.0) -> Any:
    return slowly(text_reply(ANSWER), delay, gap)


class Message(dict[str, Any]):
    """One server-sent event: ``id``, ``event``, ``data`` (parsed), and ``at``: seconds
    from the request to its arrival."""


def messages(r: httpx.Response, sent: float) -> Iterator[Message]:
    """The events of a streamed response as they arrive (pings skipped)."""
    fields: dict[str, str] = {}
    for line in r.iter_lines():
        if line:
            if not line.startswith(":"):
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
            continue
        if "data" in fields:
            yield Message(id=fields.get("id"), event=fields["event"],
                          data=json.loads(fields["data"]), at=time.monotonic() - sent)
        fields = {}


def stream(c: httpx.Client, path: str, form: dict[str, str], *, last_id: str | None = None,
           until: Any = None) -> list[Message]:
    """POST a streamed request; its events until the stream ends, or until ``until``
    says so of the events so far (then the client goes away)."""
    got: list[Message] = []
    headers = {"Last-Event-ID": last_id} if last_id else {}
    sent = time.monotonic()
    with c.stream("POST", path, data={**form, "stream": "true"}, headers=headers) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        for m in messages(r, sent):
            got.append(m)
            if until is not None and until(got):
                break
    return got


def names(got: list[Message]) -> list[str]:
    return [m["event"] for m in got]


def text(got: list[Message]) -> str:
    return "".join(m["data"]["content"] for m in got if m["event"] == "RunContent")


def order(message_id: str) -> tuple[int, ...]:
    """An id as what it sorts by: (version, part, characters); a bare version last."""
    _, _, position = message_id.partition(":")
    numbers = [int(n) for n in position.split(".")]
    return (numbers[0], *(numbers[1:] or [2**63]), *([0] * (3 - len(numbers))))[:3]


def continue_form(paused: Message) -> dict[str, str]:
    tools = paused["data"]["tools"]
    for t in tools:
        t["confirmed"] = True
    return {"tools": json.dumps(tools)}


def history(c: httpx.Client, run_id: str) -> list[tuple[int, str, dict[str, Any]]]:
    """The run's committed events, their times (and the run's own id) aside."""
    return [(e["version"], e["type"], {k: v for k, v in e["payload"].items()
                                       if k not in {"deadline", "session_id"}})
            for e in c.get(f"/runs/{run_id}/events").json()]


def test_a_streamed_run_is_sent_as_it_is_committed_while_the_model_takes_its_time(
        server: LiveServer, fake_openai: FakeOpenAI) -> None:
    fake_openai.script(proposal(SLOW), answer(SLOW, gap=0.05), proposal(), answer())
    with server.client() as c:
        started = stream(c, START, {"message": MESSAGE})
        assert names(started) == ["RunStarted", "ModelRequestStarted",
                                  "ModelRequestCompleted", "RunContentCompleted", "RunPaused"]
        # The run's id, and that the model is being asked, come long before its answer.
        run_id = started[0]["data"]["run_id"]
        assert started[0]["at"] < SLOW / 2 and started[1]["at"] < SLOW / 2
        assert started[2]["at"] >= SLOW
        assert started[0]["data"]["model"] == "fake-model"

        # Someone follows the run's own stream (signoff's names, ids the versions).
        log: list[tuple[str, float]] = []
        opened = threading.Event()

        def listen() -> None:
            with server.client() as listener, listener.stream(
                    "GET", f"/runs/{run_id}/stream", params={"after": 4}) as r:
                opened.set()
                log.extend((m["event"], time.monotonic()) for m in messages(r, 0))

        follower = threading.Thread(target=listen)
        follower.start()
        assert opened.wait(10)
        sent = time.monotonic()
        went_on = stream(c, f"{START}/{run_id}/continue", continue_form(started[-1]))
        follower.join(10)
        pieces = [m for m in went_on if m["event"] == "RunContent"]
        assert names(went_on) == ["RunContinued", "ToolCallStarted", "ToolCallCompleted",
                                  "ModelRequestStarted", *["RunContent"] * len(pieces),
                                  "ModelRequestCompleted", "RunContentCompleted",
                                  "RunCompleted"]
        # The tool's outcome is sent before the model answers, its text as it comes.
        assert went_on[2]["at"] < SLOW / 2 and went_on[3]["at"] < SLOW / 2
        assert pieces[0]["at"] >= SLOW
        assert len(pieces) == len(ANSWER.split())
        assert text(went_on) == ANSWER == went_on[-1]["data"]["content"]
        assert pieces[-1]["at"] - pieces[0]["at"] > 0.2  # piece by piece, not at once
        at = {name: t - sent for name, t in log}
        assert list(at) == ["ToolConfirmed", "RunContinued", "ToolExecutionStarted",
                            "ToolExecuted", "ModelResponded", "RunCompleted"]
        assert at["ToolExecuted"] < SLOW / 2 and at["ModelResponded"] >= SLOW

        # Every event has an id, in order, each once.
        ids = [m["id"] for m in started + went_on]
        assert all(i.startswith(run_id + ":") for i in ids)
        assert [order(i) for i in ids] == sorted({order(i) for i in ids})

        # The same run without a stream commits the same events.
        r = c.post(START, data={"message": MESSAGE, "stream": "false"})
        paused = r.json()
        for t in paused["tools"]:
            t["confirmed"] = True
        r = c.post(f"{START}/{paused['run_id']}/continue",
                   data={"tools": json.dumps(paused["tools"]), "stream": "false"})
        assert r.json()["status"] == "COMPLETED"
        assert history(c, run_id) == history(c, paused["run_id"])
    assert [bool(q.get("stream")) for q in fake_openai.requests] == [True, True, False, False]


def test_a_dropped_stream_resumes_with_last_event_id_with_every_event_once(
        server: LiveServer, fake_openai: FakeOpenAI) -> None:
    fake_openai.script(proposal(0.5), answer(0.3, gap=0.15))
    with server.client() as c:
        # The client goes away while the model thinks, then comes back on the same route.
        first = stream(c, START, {"message": MESSAGE},
                       until=lambda got: got[-1]["event"] == "ModelRequestStarted")
        run_id = first[0]["data"]["run_id"]
        rest = stream(c, START, {"message": MESSAGE}, last_id=first[-1]["id"])
        started = first + rest
        assert names(started) == ["RunStarted", "ModelRequestStarted",
                                  "ModelRequestCompleted", "RunContentCompleted", "RunPaused"]

        # Again in the middle of the model's text, on the continue route: the text goes
        # on from where it stopped, live.
        form = continue_form(started[-1])
        path = f"{START}/{run_id}/continue"
        first = stream(c, path, form, until=lambda got: names(got).count("RunContent") == 2)
        rest = stream(c, path, form, last_id=first[-1]["id"])
        went_on = first + rest
        assert "RunContent" in names(rest[:1])  # the rest of the text comes on ...
        assert names(rest).count("RunContent") > 1  # ... piece by piece
        assert text(went_on) == ANSWER
        assert [n for i, n in enumerate(names(went_on))
                if n != "RunContent" or names(went_on)[i - 1] != "RunContent"] == [
            "RunContinued", "ToolCallStarted", "ToolCallCompleted", "ModelRequestStarted",
            "RunContent", "ModelRequestCompleted", "RunContentCompleted", "RunCompleted"]

        # Every event once: as the whole run's stream sent after its start (id ...:0).
        whole = stream(c, START, {"message": MESSAGE}, last_id=f"{run_id}:0")
        assert [m["id"] for m in whole if m["event"] != "RunContent"] == [
            m["id"] for m in started + went_on if m["event"] != "RunContent"]
        assert text(whole) == ANSWER
        ids = [order(m["id"]) for m in started + went_on]
        assert ids == sorted(set(ids))
        assert [e[1] for e in history(c, run_id)] == [
            "RunStarted", "ModelResponded", "ToolCallRequested", "RunPaused", "ToolConfirmed",
            "RunContinued", "ToolExecutionStarted", "ToolExecuted", "ModelResponded",
            "RunCompleted"]

        # An id this service did not send is refused before anything starts; another
        # run's id on a continue too; the run of an id nobody may see is not found.
        for bad in ("7", "not-an-id", f"{run_id}:3.2.1"):
            r = c.post(START, data={"message": MESSAGE}, headers={"Last-Event-ID": bad})
            assert r.status_code == 422, (bad, r.text)
        r = c.post(path, data=form, headers={"Last-Event-ID": f"{uuid.uuid4()}:3"})
        assert r.status_code == 422
        r = c.post(START, data={"message": MESSAGE}, headers={"Last-Event-ID": f"{uuid.uuid4()}:3"})
        assert r.status_code == 404
    assert len(fake_openai.requests) == 2  # a resumed stream asks the model nothing

