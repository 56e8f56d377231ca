"""The store guard: while the event store is out of reach (PostgreSQL down, restarting,
or every connection busy for too long), every request is answered 503 at once, with
``Retry-After``, rather than left waiting for the connection pool to give up."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import STORE_DOWN_DETAIL, answer_early

log = logging.getLogger("signoff.api")


class StoreGuard:
    """Watches the event store, and says when it is out of reach.

    A thread reads the log's head through the application's own connection pool every
    ``interval`` seconds. A read that fails, or takes longer than ``timeout`` (the pool
    waits for a connection it cannot make), puts the guard ``down``: every request waiting
    for an answer is answered 503 at once, and so is every new one, rather than each
    waiting for eventsourcing's retries to give up (10 tries, each waiting up to
    ``POSTGRES_CONNECT_TIMEOUT`` for a connection). The guard lifts as soon as a read
    succeeds again: when the pool has its connections back, not merely when the server
    answers.
    """

    def __init__(self, interval: float = 0.5, timeout: float = 3.0) -> None:
        self.interval = interval
        self.timeout = timeout
        self._down = False
        self._lock = threading.Lock()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._probes = ThreadPoolExecutor(max_workers=1, thread_name_prefix="signoff-probe")

    @property
    def down(self) -> bool:
        return self._down

    def watch(self, probe: Callable[[], object]) -> None:
        """Start watching (again, after ``close``: an application may be started twice)."""
        self.close()
        self._down = False
        self._stop = threading.Event()
        self._probes = ThreadPoolExecutor(max_workers=1, thread_name_prefix="signoff-probe")
        self._thread = threading.Thread(target=self._watch, args=(probe,),
                                        name="signoff-store-guard", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.interval + 1)
        self._probes.shutdown(wait=False, cancel_futures=True)

    def tripped(self) -> asyncio.Future[None]:
        """A future of the running loop, done when the guard goes down (``forget`` it)."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self._down:  # went down since the caller looked
                waiter.set_result(None)
            else:
                self._waiters.add((loop, waiter))
        return waiter

    def forget(self, waiter: asyncio.Future[None]) -> None:
        with self._lock:
            self._waiters.discard((asyncio.get_running_loop(), waiter))

    def _watch(self, probe: Callable[[], object]) -> None:
        while not self._stop.is_set():
            future = self._probes.submit(probe)
            try:
                future.result(timeout=self.timeout)
            except FuturesTimeout:
                self._set_down(True, f"it did not answer within {self.timeout:g} s")
                while not future.done() and not self._stop.wait(0.05):
                    pass  # one read at a time: it ends when the pool gets a connection
                continue
            except Exception as e:
                self._set_down(True, f"{type(e).__name__}: {e}")
            else:
                self._set_down(False)
            self._stop.wait(self.interval)

    def _set_down(self, down: bool, why: str = "") -> None:
        with self._lock:
            if down == self._down:
                return
            self._down = down
            waiters, self._waiters = (self._waiters, set()) if down else (set(), self._waiters)
        if down:
            log.warning("the event store is out of reach (%s): answering 503 until it "
                        "answers again", why)
            for loop, waiter in waiters:
                with contextlib.suppress(RuntimeError):  # that loop has closed
                    loop.call_soon_threadsafe(_resolve, waiter)
        else:
            log.warning("the event store answers again")


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


# Served while the store is out of reach: they do not need it. (/metrics does: its gauges
# read the store and the read models, and would wait for them.)
_WITHOUT_STORE = ("/openapi.json", "/docs", "/redoc")


class StoreGuardMiddleware:
    """Answers 503 (a problem, ``Retry-After``) while ``app.state.store_guard`` is down:
    new requests at once, and requests waiting for an answer when it goes down (their
    work goes on in its thread; its answer is dropped). A response already started (a
    stream) is left to end as it will. Starts and stops the guard's watch with the
    application's lifespan (the probe reads the log's head of ``app.state.container``).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        guard: StoreGuard | None = getattr(scope["app"].state, "store_guard", None)
        if guard is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(guard, scope, receive, send)
        elif scope["type"] != "http" or scope["path"].startswith(_WITHOUT_STORE):
            await self.app(scope, receive, send)
        elif guard.down:
            await answer_early(scope, receive, send, 503, STORE_DOWN_DETAIL)
        else:
            await self._guarded(guard, scope, receive, send)

    async def _guarded(self, guard: StoreGuard, scope: Scope, receive: Receive,
                       send: Send) -> None:
        started = released = False

        async def send_unless_released(message: Message) -> None:
            nonlocal started
            if released:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        work = asyncio.ensure_future(self.app(scope, receive, send_unless_released))
        settled = guard.tripped()  # done when the guard goes down, or (below) the work ends
        work.add_done_callback(lambda _: _resolve(settled))
        try:
            await settled
        except asyncio.CancelledError:
            work.cancel()
            raise
        finally:
            guard.forget(settled)
        if work.done() or started:
            await work
            return
        released = True
        work.add_done_callback(_log_late_failure)
        await answer_early(scope, receive, send, 503, STORE_DOWN_DETAIL)

    async def _lifespan(self, guard: StoreGuard, scope: Scope, receive: Receive,
                        send: Send) -> None:
        async def watching(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                guard.watch(scope["app"].state.container.store.head)
            await send(message)

        async def closing() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                guard.close()
            return message

        await self.app(scope, closing, watching)


def _log_late_failure(work: asyncio.Future[None]) -> None:
    if not work.cancelled() and (e := work.exception()) is not None:
        log.warning("a request answered 503 (store out of reach) then failed: %r", e)
