"""A real ``signoff serve`` driven by the openai adapter (the real SDK) against a local
OpenAI-compatible server that the test starts."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.fake_openai import FakeOpenAI, slowly, text_reply, tool_call_reply
from tests.support.server import live_server


def test_a_run_driven_by_an_openai_compatible_model_pauses_and_completes(
    fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    fake_openai.script(
        tool_call_reply([("call_abc", "delete_records", {"table_name": "users", "count": 50})]),
        text_reply("All done: 50 records deleted."),
    )
    with live_server(f"sqlite:///{tmp_path / 's.db'}", tmp_path / "log",
                     SIGNOFF_MODEL="openai:fake-model", OPENAI_API_KEY="sk-test",
                     OPENAI_BASE_URL=fake_openai.base_url) as server, server.client() as c:
        r = c.post("/agents/data_manager/runs",
                   data={"message": "Delete 50 old records from the users table",
                         "stream": "false"})
        assert r.status_code == 200, r.text
        paused = r.json()
        assert paused["status"] == "PAUSED"
        assert paused["model"] == "fake-model"
        assert paused["tools"][0]["tool_call_id"] == "call_abc"

        # The model was asked with the agent's instructions, the message and the tools.
        first = fake_openai.requests[0]
        assert first["model"] == "fake-model"
        assert first["messages"][0] == {"role": "system",
                                        "content": "You help users manage data operations"}
        assert first["messages"][1]["content"] == "Delete 50 old records from the users table"
        assert {t["function"]["name"] for t in first["tools"]} == {
            "delete_records", "send_notification"}

        tools = paused["tools"]
        tools[0]["confirmed"] = True
        r = c.post(f"/agents/data_manager/runs/{paused['run_id']}/continue",
                   data={"tools": json.dumps(tools), "stream": "false"})
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "COMPLETED"
        assert r.json()["content"] == "All done: 50 records deleted."

        # The second request carried the tool's result back to the model.
        second = fake_openai.requests[1]["messages"]
        assert second[-1] == {"role": "tool", "tool_call_id": "call_abc",
                              "content": "Deleted 50 records from users"}
        assert second[-2]["tool_calls"][0]["id"] == "call_abc"
        assert len(fake_openai.requests) == 2

        # Replaying the run's history does not call the model again.
        events = c.get(f"/runs/{paused['run_id']}/events").json()
        assert [e["type"] for e in events].count("ModelResponded") == 2
        assert len(fake_openai.requests) == 2


def test_a_model_that_fails_ends_the_run_in_error_not_a_500(
    fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    from tests.support.fake_openai import error_reply

    fake_openai.script(*[error_reply(500, "boom")] * 5)
    with live_server(f"sqlite:///{tmp_path / 's.db'}", tmp_path / "log",
                     SIGNOFF_MODEL="openai:fake-model", OPENAI_API_KEY="sk-test",
                     OPENAI_BASE_URL=fake_openai.base_url) as server, server.client() as c:
        r = c.post("/agents/data_manager/runs", data={"message": "hello", "stream": "false"})
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "ERROR"
        assert "HTTP 500" in r.json()["content"]
        events = c.get(f"/runs/{r.json()['run_id']}/events").json()
        assert [e["type"] for e in events] == ["RunStarted", "RunFailed"]


def test_a_server_that_refuses_stream_options_still_streams(
    fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    """An OpenAI-compatible server that answers ``stream_options`` with 400: the
    adapter asks again without it (once: then it remembers), and the run streams as
    with any other server, its text as ``RunContent`` pieces."""
    from tests.e2e.sse import names, parse

    fake_openai.refuses_stream_options = True
    # The first reply's chunks a little apart: pieces that arrive together may go out
    # as one.
    fake_openai.script(
        slowly(tool_call_reply([("call_abc", "delete_records",
                                 {"table_name": "users", "count": 50})],
                               content="Deleting them now."), 0.0, 0.01),
        text_reply("All done: 50 records deleted."),
    )
    with live_server(f"sqlite:///{tmp_path / 's.db'}", tmp_path / "log",
                     SIGNOFF_MODEL="openai:fake-model", OPENAI_API_KEY="sk-test",
                     OPENAI_BASE_URL=fake_openai.base_url) as server, server.client() as c:
        r = c.post("/agents/data_manager/runs",
                   data={"message": "Delete 50 old records from the users table"})
        assert r.status_code == 200, r.text
        started = parse(r.text)
        assert names(started)[-1] == "RunPaused", names(started)
        pieces = [d["content"] for n, d in started if n == "RunContent"]
        assert len(pieces) > 1 and "".join(pieces) == "Deleting them now."
        paused = started[-1][1]
        tools = paused["tools"]
        tools[0]["confirmed"] = True
        r = c.post(f"/agents/data_manager/runs/{paused['run_id']}/continue",
                   data={"tools": json.dumps(tools)})
        assert r.status_code == 200, r.text
        continued = parse(r.text)
        assert names(continued)[-1] == "RunCompleted", names(continued)
        assert "".join(d["content"] for n, d in continued if n == "RunContent") == \
            "All done: 50 records deleted."
        # Refused once; every request after it asked without stream_options.
        assert [("stream_options" in b, b.get("stream")) for b in fake_openai.requests] == [
            (True, True), (False, True), (False, True)]
    # Once the server has stopped, its log holds every line (written by a thread of its
    # own, moments after it was logged).
    assert "the server refused stream_options" in (tmp_path / "log").read_text()
