"""Live streams: one run's events, and the queue's changes, as server-sent events.

Both resume without loss or duplicates: every message carries an ``id`` (the event's
version in its run, or its position in the log), and a client that reconnects with
``Last-Event-ID`` gets what came after it.

New events are noticed by one ``LogWatcher`` per process: woken at once by this
process's saves, and checking the log's head four times a second for the saves of
other workers and machines. A stream reads the store only when the head has moved.
"""

from __future__ import annotations

import asyncio
import contextlib

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from api.errors import ProblemError
from service.runs import RunService

POLL_SECONDS = 0.25


class LogWatcher:
    """Tells waiting streams when the event log's head moves."""

    def __init__(self, app: RunService) -> None:
        self.app = app
        self.head = app.head()
        self._moved = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._poll())
        app.after_save.append(self._poke)

    def _poke(self) -> None:  # called in the saving thread
        with contextlib.suppress(RuntimeError):  # the loop is closing
            self._loop.call_soon_threadsafe(self._check_soon)

    def _check_soon(self) -> None:
        self._loop.create_task(self._check())

    async def _check(self) -> None:
        head = await run_in_threadpool(self.app.head)
        if head > self.head:
            self.head = head
            moved, self._moved = self._moved, asyncio.Event()
            moved.set()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(POLL_SECONDS)
            with contextlib.suppress(Exception):  # the store is away: try again later
                await self._check()

    async def wait(self, seen: int, timeout: float) -> int:
        """The head, once it is past ``seen`` (or when ``timeout`` passes)."""
        if self.head <= seen:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._moved.wait(), timeout)
        return self.head

    def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(ValueError):
            self.app.after_save.remove(self._poke)


def watcher(app: FastAPI, store: RunService) -> LogWatcher:
    existing: LogWatcher | None = getattr(app.state, "log_watcher", None)
    if existing is None or existing.app is not store:
        existing = app.state.log_watcher = LogWatcher(store)
    return existing


# The largest version or log position a stream resumes after (both are 64-bit integers in
# the store; ``after`` has the same bound).
MAX_POSITION = 2**62


def last_event_id(header: str | None, query: int | None) -> int | None:
    """Where to resume: after ``Last-Event-ID`` (a reconnect), else after ``query``; None
    when neither says (an empty header is none: a stream whose ids were all empty).

    The header must be an id this service sent: a decimal number up to ``MAX_POSITION``.
    Anything else is refused (``ProblemError``, 422) before the stream starts, rather than
    resuming from somewhere else, or failing once the stream has begun."""
    value = header.strip() if header is not None else ""
    if not value:
        return query
    if not (value.isascii() and value.isdigit()) or int(value) > MAX_POSITION:
        raise ProblemError(422, f"Last-Event-ID {value[:40]!r} is not an id of this stream "
                           f"(a number from 0 to {MAX_POSITION})", errors=[{
                               "loc": ["header", "Last-Event-ID"], "type": "value_error",
                               "msg": f"a number from 0 to {MAX_POSITION}"}])
    return int(value)
