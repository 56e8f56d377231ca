"""Live streams: one run's events, and the queue's changes, as server-sent events.

Both resume without loss or duplicates: every message carries an ``id`` (the event's
version in its run, or its position in the log), and a client that reconnects with
``Last-Event-ID`` gets what came after it.

New events are noticed by one ``LogWatcher`` per process: woken at once by this
process's saves, and checking the log's head four times a second for the saves of
other workers and machines. A stream reads the store only when the head has moved.

What is not an event of the log, a model turn under way on a run this process drives for
a streamed response (its start, its text as it comes), reaches the streams that follow
the run in this process through ``LiveTurns``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from api.errors import ProblemError
from domain.run import Run
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


# ------------------------------------------------------------- live turns

@dataclass(frozen=True)
class TurnStarted:
    """A model is being asked; its answer will be the run's event ``version``."""

    version: int
    model: str
    provider: str
    at: datetime


@dataclass(frozen=True)
class TurnText:
    """A piece of that answer's text: the characters from ``start`` on."""

    version: int
    start: int
    delta: str


Notice = TurnStarted | TurnText


class Follower:
    """One stream's notices of a run's model turns, in order (``take``), and a wake-up
    (``ready``) set when one arrives, or when the run is committed here."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._notices: deque[Notice] = deque()
        self.ready = asyncio.Event()

    def put(self, notice: Notice | None) -> None:  # from any thread; None: only wake
        if notice is not None:
            self._notices.append(notice)
        with contextlib.suppress(RuntimeError):  # the loop is closing
            self._loop.call_soon_threadsafe(self.ready.set)

    def take(self) -> list[Notice]:
        self.ready.clear()
        out = []
        while self._notices:
            out.append(self._notices.popleft())
        return out


class LiveTurns:
    """The model turns under way on runs this process drives for a streamed response,
    told to the streams that follow each run here (and woken by the drive's commits). A
    stream that starts following in the middle of a turn is told of the turn so far
    first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._turns: dict[str, tuple[TurnStarted, str]] = {}  # the turn and its text
        self._followers: dict[str, list[Follower]] = {}

    def live(self, run_id: str) -> RunLive:
        """The lifecycle's ``Live`` for a drive of this run."""
        return RunLive(self, run_id)

    def _tell(self, run_id: str, notice: Notice | None) -> None:  # under the lock
        for f in self._followers.get(run_id, ()):
            f.put(notice)

    def started(self, run_id: str, notice: TurnStarted) -> None:
        with self._lock:
            self._turns[run_id] = (notice, "")
            self._tell(run_id, notice)

    def text(self, run_id: str, delta: str) -> None:
        with self._lock:
            if run_id not in self._turns:
                return
            turn, text = self._turns[run_id]
            self._turns[run_id] = (turn, text + delta)
            self._tell(run_id, TurnText(turn.version, len(text), delta))

    def committed(self, run_id: str) -> None:
        """The run's drive here committed: its followers read the store."""
        with self._lock:
            self._tell(run_id, None)

    def ended(self, run_id: str) -> None:
        """The drive is over: no turn is under way."""
        with self._lock:
            self._turns.pop(run_id, None)

    @contextlib.contextmanager
    def follow(self, run_id: str) -> Iterator[Follower]:
        follower = Follower()
        with self._lock:
            if run_id in self._turns:
                turn, text = self._turns[run_id]
                follower.put(turn)
                if text:
                    follower.put(TurnText(turn.version, 0, text))
            self._followers.setdefault(run_id, []).append(follower)
        try:
            yield follower
        finally:
            with self._lock:
                self._followers[run_id].remove(follower)
                if not self._followers[run_id]:
                    del self._followers[run_id]


class RunLive:
    """The lifecycle's ``Live`` (service/lifecycle.py) for one run: what the loop tells
    goes to ``LiveTurns``."""

    def __init__(self, turns: LiveTurns, run_id: str) -> None:
        self.turns = turns
        self.run_id = run_id

    def model_started(self, run: Run, model: str, provider: str) -> None:
        self.turns.started(self.run_id, TurnStarted(run.version + 1, model, provider,
                                                    datetime.now(UTC)))

    def model_text(self, run: Run, delta: str) -> None:
        self.turns.text(self.run_id, delta)


def live_turns(app: FastAPI) -> LiveTurns:
    existing: LiveTurns | None = getattr(app.state, "live_turns", None)
    if existing is None:
        existing = app.state.live_turns = LiveTurns()
    return existing
