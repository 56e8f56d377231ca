"""A run as Agno's server-sent events, live and resumable (the Agno routes' ``stream=true``).

Every message is sent once what it shows is committed, except a model turn under way
(``api/streams.py``: ``LiveTurns``): its ``ModelRequestStarted`` as the model is asked,
and its text as ``RunContent`` pieces as they come. The committed answer then gives
what was not sent yet of the turn: its ``ModelRequestCompleted``, and the text (all of
it, for a stream that did not see the pieces).

Ids: ``<run_id>:<version>`` for the last message an event of that version gives,
``<run_id>:<version>.<part>`` for the ones before it (``part`` counts from 0), and
``<run_id>:<version>.1.<chars>`` for a ``RunContent``: the turn's text up to ``chars``
characters was sent. ``Last-Event-ID`` with one of them, on the route that sent it,
sends every message after it: the rest of the run's committed events, in the same form,
then the run as it goes on, until it pauses or ends. A turn's text cut off mid-way goes
on from the character it stopped at.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from fastapi.concurrency import run_in_threadpool

from api.agno import stream_event, stream_events
from api.errors import ProblemError
from api.streams import MAX_POSITION, Follower, LogWatcher, Notice, TurnStarted
from api.wire import dumps
from domain.run import Run
from domain.values import RunStatus

LAST = MAX_POSITION + 1  # the part of the last message of a version: after every other
STARTED, CONTENT = 0, 1  # the parts of a model turn's ModelRequestStarted and RunContent
WAIT_SECONDS = 15.0

Message = dict[str, str]


@dataclass(frozen=True, order=True)
class Position:
    """Where a stream is: after the message with this id (``LAST``: every message of
    ``version``; ``chars``: of a ``RunContent``, the turn's text sent so far)."""

    version: int
    part: int = LAST
    chars: int = 0

    def id(self, run_id: str) -> str:
        if self.part == LAST:
            return f"{run_id}:{self.version}"
        if self.part == CONTENT:
            return f"{run_id}:{self.version}.{self.part}.{self.chars}"
        return f"{run_id}:{self.version}.{self.part}"


_ID = re.compile(r"([0-9a-fA-F-]{32,36}):(\d{1,19})(?:\.(\d{1,19})(?:\.(\d{1,19}))?)?")


def resume_point(header: str | None) -> tuple[str, Position] | None:
    """The run and position a ``Last-Event-ID`` resumes after; None without one (an
    empty header is none). ``ProblemError`` (422) for one this service did not send."""
    value = header.strip() if header is not None else ""
    if not value:
        return None
    m = _ID.fullmatch(value)
    numbers = [int(n) for n in m.groups()[1:] if n is not None] if m else []
    try:
        run_id = str(UUID(m.group(1))) if m else ""
    except ValueError:
        run_id = ""
    if not run_id or max(numbers) > MAX_POSITION or (len(numbers) == 3 and numbers[1] != 1):
        raise ProblemError(422, f"Last-Event-ID {value[:60]!r} is not an id of an Agno "
                           "stream (<run_id>:<version>[.<part>[.<chars>]])", errors=[{
                               "loc": ["header", "Last-Event-ID"], "type": "value_error",
                               "msg": "an id this stream sent"}])
    version, part, chars = (numbers + [LAST, 0][len(numbers) - 1:])[:3]
    return run_id, Position(version, part, chars)


class Cursor:
    """A stream's place in one run: the run as folded from its events so far, and the
    last message sent. Each message it gives is after that one, and moves it on.
    ``model``: the agent's model (``model``, ``model_provider``), which ``RunStarted``
    names, as Agno's does (the run records its model with its first answer)."""

    def __init__(self, run_id: str, run: Run | None, position: Position,
                 model: dict[str, str] | None = None) -> None:
        self.run_id = run_id
        self.run = run
        self.version = run.version if run is not None else 0  # the events folded
        self.position = position
        self.model = model or {}

    def _message(self, at: Position, name: str, data: dict[str, Any]) -> Message:
        self.position = at
        return {"id": at.id(self.run_id), "event": name, "data": dumps(data)}

    def committed(self, events: list[Any]) -> list[Message]:
        """The messages of events just read from the store, after the position."""
        out = []
        for e in events:
            self.run = e.mutate(self.run)
            self.version = e.originator_version
            rendered = stream_events(self.run, [e])
            if isinstance(e, Run.RunStarted) and self.run.model is None:
                rendered = [(n, {**d, **self.model}) for n, d in rendered]
            for i, (name, data) in enumerate(rendered):
                text = data["content"] if name == "RunContent" else None
                at = Position(self.version, LAST if i == len(rendered) - 1 else i,
                              len(text) if text is not None else 0)
                if at <= self.position:
                    continue
                if text is not None and self.position > replace(at, chars=0):
                    data = {**data, "content": text[self.position.chars:]}  # the rest
                out.append(self._message(at, name, data))
        return out

    def notice(self, n: Notice) -> list[Message]:
        """The message of a model turn under way, if it comes next (the events before
        the turn folded, and nothing of it missed)."""
        if self.run is None or n.version != self.version + 1:
            return []
        started = Position(n.version, STARTED)
        if isinstance(n, TurnStarted):
            if started <= self.position:
                return []
            return [self._message(started, *stream_event(
                self.run, "ModelRequestStarted", n.at, model=n.model,
                model_provider=n.provider))]
        sent = self.position.chars if self.position.part == CONTENT else 0
        end = Position(n.version, CONTENT, n.start + len(n.delta))
        in_turn = self.position.version == n.version and self.position.part in (STARTED,
                                                                                 CONTENT)
        if not in_turn or end <= self.position or sent < n.start:
            return []
        return [self._message(end, *stream_event(
            self.run, "RunContent", datetime.now(UTC), content=n.delta[sent - n.start:],
            content_type="str"))]

    @property
    def stopped(self) -> bool:
        """The run, as far as it is folded, waits or has ended."""
        return self.run is not None and self.run.status != RunStatus.RUNNING


async def follow(cursor: Cursor, read: Callable[[int], list[Any]], watch: LogWatcher,
                 follower: Follower, drive: asyncio.Future[Any] | None,
                 allowed: Callable[[], Awaitable[bool]]) -> AsyncIterator[Message]:
    """The run's messages after the cursor: its committed events, read from the store
    when the run is committed, and the model turns ``follower`` hears of. With ``drive``
    (this request drives the run, and tells ``follower`` of each commit), until the drive
    is over and what it committed is sent; without, until the run waits or has ended,
    reading whenever the log's head moves (another request, worker or machine may be
    driving it). Either wakes at least every ``WAIT_SECONDS``, and, whenever it wakes,
    ends at once if the caller is no longer ``allowed`` (api/auth.py: ``StillAllowed``;
    a drive goes on without it)."""
    while await allowed():
        head = watch.head
        notices = follower.take()  # before the read: what each follows is committed
        over = drive is not None and drive.done()
        for m in cursor.committed(await run_in_threadpool(read, cursor.version)):
            yield m
        for n in notices:
            for m in cursor.notice(n):
                yield m
        if over and drive is not None:
            if (err := drive.exception()) is not None:
                yield {"id": cursor.position.id(cursor.run_id), "event": "RunError",
                       "data": dumps({"event": "RunError",
                                      "content": f"{type(err).__name__}: {err}"})}
            return
        if drive is None and cursor.stopped:
            return
        waits: list[Coroutine[Any, Any, Any]] = [follower.ready.wait()]
        if drive is None:
            waits.append(watch.wait(head, WAIT_SECONDS))
        await _next(waits, drive)


async def _next(waits: list[Coroutine[Any, Any, Any]],
                drive: asyncio.Future[Any] | None) -> None:
    """Until the first of ``waits`` is done, the drive is over (left to end on its own:
    the waits are cancelled, never the drive), or ``WAIT_SECONDS`` have passed."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait([*tasks, *([drive] if drive is not None else [])],
                           timeout=WAIT_SECONDS, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
