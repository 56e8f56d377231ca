"""A local OpenAI-compatible chat-completions server, run for real, for tests.

It answers ``POST /v1/chat/completions`` from a script of canned replies the test sets,
and records every request body it received::

    def test_something(fake_openai):
        fake_openai.script(text_reply("hi"), tool_call_reply([("c1", "add", {"a": 1})]))
        model = OpenAIModel(base_url=fake_openai.base_url, api_key="test")
        ...
        assert fake_openai.requests[0]["model"] == "gpt-4o-mini"

When the script runs out it answers HTTP 400 (which the SDK does not retry).

A request with ``stream: true`` gets the same answer as chat-completion chunks
(server-sent events): the text a word at a time, each tool call's arguments in two
pieces, and the usage last when ``stream_options.include_usage`` asks for it. A reply's
``delay`` comes before the first chunk, its ``gap`` before each further one
(``slowly``). With ``refuses_stream_options`` set, a request that carries
``stream_options`` is answered HTTP 400 (as some OpenAI-compatible servers do), its
scripted reply kept for the next request.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import re
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse


@dataclass(frozen=True)
class Reply:
    """One canned HTTP answer: a status, a JSON body, extra headers, a delay in seconds
    (and, streamed, ``gap``: seconds between its chunks)."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    gap: float = 0.0


def slowly(reply: Reply, delay: float, gap: float = 0.0) -> Reply:
    """``reply`` answered after ``delay`` seconds, and streamed ``gap`` seconds apart."""
    return dataclasses.replace(reply, delay=delay, gap=gap)


def _usage(usage: tuple[int, int] | None) -> dict[str, Any]:
    if usage is None:
        return {}
    prompt, completion = usage
    return {
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
    }


def _completion(message: dict[str, Any], finish: str, usage: tuple[int, int] | None) -> Reply:
    choice = {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
    return Reply(200, {"object": "chat.completion", "choices": [choice], **_usage(usage)})


def text_reply(content: str, *, usage: tuple[int, int] | None = (10, 5)) -> Reply:
    """An assistant text answer; ``usage`` is (prompt_tokens, completion_tokens) or None."""
    return _completion({"role": "assistant", "content": content}, "stop", usage)


def tool_call_reply(
    calls: list[tuple[str, str, dict[str, Any] | str]],
    *,
    content: str | None = None,
    usage: tuple[int, int] | None = (10, 5),
) -> Reply:
    """An answer proposing tool calls ``(id, name, args)``; a str ``args`` is sent verbatim."""
    tool_calls = [
        {
            "id": cid,
            "type": "function",
            "function": {
                "name": name,
                "arguments": args if isinstance(args, str) else json.dumps(args),
            },
        }
        for cid, name, args in calls
    ]
    message = {"role": "assistant", "content": content, "tool_calls": tool_calls}
    return _completion(message, "tool_calls", usage)


def error_reply(status: int, message: str, *, retry_after_ms: int = 10) -> Reply:
    """An OpenAI-style error; ``retry-after-ms`` keeps any SDK retries fast."""
    body = {"error": {"message": message, "type": "fake_error", "param": None, "code": None}}
    return Reply(status, body, {"retry-after-ms": str(retry_after_ms)})


class FakeOpenAI:
    """The running server's state: where it listens, what it received, what it will answer."""

    def __init__(self) -> None:
        self.base_url = ""
        self.requests: list[dict[str, Any]] = []  # JSON bodies of chat-completion requests
        self.headers: list[dict[str, str]] = []  # their headers, names lower-cased
        self._replies: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.refuses_stream_options = False

    def script(self, *replies: Reply) -> None:
        """Queue replies, answered in order, one per chat-completion request."""
        with self._lock:
            self._replies.extend(replies)

    def _next(self, body: dict[str, Any], headers: dict[str, str]) -> Reply:
        with self._lock:
            self.requests.append(body)
            self.headers.append(headers)
            if self.refuses_stream_options and "stream_options" in body:
                return error_reply(400, "Unrecognized request argument supplied: "
                                   "stream_options")
            if self._replies:
                return self._replies.popleft()
        return error_reply(400, "fake_openai: no scripted reply left")

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def chat_completions(request: Request) -> Response:
            body = await request.json()
            reply = self._next(body, {k.lower(): v for k, v in request.headers.items()})
            content = dict(reply.body)
            if reply.status == 200:
                content.update(
                    id=f"chatcmpl-fake-{next(self._ids)}",
                    created=int(time.time()),
                    model=body.get("model", "fake"),
                )
                if body.get("stream"):
                    usage = (body.get("stream_options") or {}).get("include_usage", False)
                    return StreamingResponse(_streamed(reply, content, usage),
                                             media_type="text/event-stream")
            await asyncio.sleep(reply.delay)
            return JSONResponse(content, status_code=reply.status, headers=reply.headers)

        @app.get("/v1/models")
        async def models() -> dict[str, Any]:
            ids = sorted({"gpt-4o-mini", *(r["model"] for r in self.requests if "model" in r)})
            return {
                "object": "list",
                "data": [
                    {"id": i, "object": "model", "created": 0, "owned_by": "fake"} for i in ids
                ],
            }

        return app


def _chunks(completion: dict[str, Any], usage: bool) -> Iterator[dict[str, Any]]:
    """A completion as the chunks a streaming server sends."""
    head = {k: completion[k] for k in ("id", "created", "model")}
    choice = completion["choices"][0]
    message = choice["message"]

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**head, "object": "chat.completion.chunk", "choices": [
            {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}

    text = message.get("content")
    yield chunk({"role": "assistant", "content": "" if text is not None else None})
    for word in re.findall(r"\S+\s*|\s+", text or ""):
        yield chunk({"content": word})
    for i, call in enumerate(message.get("tool_calls") or []):
        fn, args = call["function"], call["function"]["arguments"]
        yield chunk({"tool_calls": [{"index": i, "id": call["id"], "type": "function",
                                     "function": {"name": fn["name"], "arguments": ""}}]})
        for piece in (args[:len(args) // 2], args[len(args) // 2:]):
            yield chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]})
    yield chunk({}, choice["finish_reason"])
    if usage:
        yield {**head, "object": "chat.completion.chunk", "choices": [],
               "usage": completion.get("usage")}


async def _streamed(reply: Reply, completion: dict[str, Any], usage: bool,
                    ) -> AsyncIterator[bytes]:
    await asyncio.sleep(reply.delay)
    for i, c in enumerate(_chunks(completion, usage)):
        if i and reply.gap:
            await asyncio.sleep(reply.gap)
        yield f"data: {json.dumps(c)}\n\n".encode()
    yield b"data: [DONE]\n\n"


@contextmanager
def run_fake_openai() -> Iterator[FakeOpenAI]:
    """Start a :class:`FakeOpenAI` on 127.0.0.1 at a free port; stop it on exit."""
    fake = FakeOpenAI()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(fake.app(), log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("fake OpenAI server did not start")
            time.sleep(0.01)
        fake.base_url = f"http://127.0.0.1:{port}/v1"
        yield fake
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """A running fake OpenAI server for one test (see :func:`run_fake_openai`)."""
    with run_fake_openai() as fake:
        yield fake
