"""Request size limits at the edge: a body over ``SIGNOFF_MAX_BODY_BYTES`` is a 413 problem.

An ASGI middleware, so that the limit holds whoever reads the body (a form, JSON, a route
that reads it raw) and nothing larger is ever held in memory: a ``Content-Length`` over
the limit is refused before a byte of the body is read, and a body sent without one
(chunked) is counted as it streams in and refused as soon as it passes the limit.

The limits on what a run records (a message, a decision's arguments, what a model or a
tool returns) are the agent loop's (``agent.loop.Limits``); this module only builds them
from the settings.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent.limits import Limits
from api.errors import answer_early
from service.config import Settings

# Before a 413 is sent, what is left of the body is read and dropped (never kept), up to
# this much, so that a client still sending reads the answer rather than a reset
# connection (once a response is complete, the server reads no more of the request).
# A body declared larger than this is refused at once, and its connection closed.
DRAIN_BYTES = 16 * 1024 * 1024


class BodyTooLarge(HTTPException):
    """Raised by ``receive`` once the body passes the limit (an ``HTTPException``, so that
    FastAPI passes it through its body parsing and the problem handler answers it)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes")


class BodyLimit:
    """Refuse request bodies larger than ``max_bytes`` with a 413 problem."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            drained = declared <= DRAIN_BYTES and await _drain(receive, declared)
            await answer_early(scope, receive, send, 413, BodyTooLarge(self.max_bytes).detail,
                               headers=None if drained else {"connection": "close"})
            return
        received = 0
        close = False

        async def counted() -> Message:
            nonlocal received, close
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    if message.get("more_body", False):
                        close = not await _drain(receive, DRAIN_BYTES)
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def closing(message: Message) -> None:
            if close and message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"connection", b"close")]}
            await send(message)

        await self.app(scope, counted, closing)


async def _drain(receive: Receive, at_most: int) -> bool:
    """Read and drop the rest of the body; True when it ended (within ``at_most`` bytes)."""
    dropped = 0
    while dropped <= at_most:
        message = await receive()
        if message["type"] != "http.request":
            return False
        dropped += len(message.get("body", b""))
        if not message.get("more_body", False):
            return True
    return False


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def loop_limits(settings: Settings) -> Limits:
    """What the agent loop refuses or cuts (``SIGNOFF_MAX_MESSAGE_CHARS``,
    ``SIGNOFF_MAX_ARGS_BYTES``)."""
    return Limits(message_chars=settings.max_message_chars, args_bytes=settings.max_args_bytes)
