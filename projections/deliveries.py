"""The webhook dispatcher: sends the deliveries the webhooks projection made due, signs
them, records every attempt, and retries with exponential backoff.

It runs wherever the projections run (``signoff serve`` with SIGNOFF_PROJECTIONS=inline,
or ``signoff project``), in threads of its own: one claims due deliveries, a pool of
``SIGNOFF_WEBHOOK_CONCURRENCY`` threads sends them, each request bounded by
``SIGNOFF_WEBHOOK_TIMEOUT``. No transaction is open while a request is in flight, and
nothing a request thread does waits for a subscriber: a slow or dead one only ever holds
a sending thread. Several dispatchers (processes) may share one store: a claimed delivery
is leased to its dispatcher, and on PostgreSQL claiming skips rows another is claiming.

A delivery is sent once per attempt; a crash between a subscriber's answer and its
record sends it again when the lease ends (receivers dedupe on ``Signoff-Delivery``).
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import httpx
import psycopg
from eventsourcing.persistence import InterfaceError, OperationalError

from domain.webhooks import backoff, signature
from projections import webhooks
from projections.store import ViewMixin
from service.webhooks import HostNotAllowed, allowed_hosts, check_host, payload

if TYPE_CHECKING:
    from projections.runner import Projections
    from service.config import Settings
    from service.runs import RunService

log = logging.getLogger("signoff.webhooks")


class _QuietSends(logging.Filter):
    """httpx logs every request with its URL at info; a webhook URL may carry a token in
    its path (chat services' incoming webhooks do): not from the sending threads. Each
    attempt is recorded (and logged by webhook id when it fails) instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.threadName or not record.threadName.startswith(THREADS)


THREADS = "signoff-webhook"
logging.getLogger("httpx").addFilter(_QuietSends())

Clock = Callable[[], datetime]
USER_AGENT = "signoff-webhooks/0.1"


def _now() -> datetime:
    return datetime.now(UTC)


class Dispatcher:
    def __init__(self, store: RunService, view: ViewMixin, *, attempts: int = 8,
                 backoff_base: float = 10.0, backoff_max: float = 3600.0,
                 timeout: float = 10.0, concurrency: int = 8, hosts: str = "",
                 poll: float = 1.0, clock: Clock = _now,
                 jitter: Callable[[], float] = lambda: random.uniform(0.5, 1.0),
                 http: httpx.Client | None = None) -> None:
        self.store = store
        self.view = view
        self.attempts = attempts
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.timeout = timeout
        self.hosts = allowed_hosts(hosts)
        self.poll = poll
        self.clock = clock
        self.jitter = jitter
        # A claim is this dispatcher's until a request surely ended (httpx's timeout
        # bounds each phase of it), with a margin.
        self.lease = timedelta(seconds=3 * timeout + 30)
        self.http = http or httpx.Client(
            timeout=httpx.Timeout(timeout), follow_redirects=False,
            limits=httpx.Limits(max_connections=concurrency),
            headers={"User-Agent": USER_AGENT})
        self.free = threading.Semaphore(concurrency)
        self.concurrency = concurrency
        self.pool = ThreadPoolExecutor(concurrency, thread_name_prefix=THREADS)
        self._wake = threading.Event()
        self._made = 0  # the webhooks read model's deliveries_made when last woken
        self._idle = threading.Condition()
        self._in_flight = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def for_settings(cls, settings: Settings, projections: Projections) -> Dispatcher:
        dispatcher = cls(projections.store, projections.views[webhooks.WebhooksProjection.name],
                         attempts=settings.webhook_attempts,
                         backoff_base=settings.webhook_backoff,
                         backoff_max=settings.webhook_backoff_max,
                         timeout=settings.webhook_timeout,
                         concurrency=settings.webhook_concurrency,
                         hosts=settings.webhook_hosts)
        projections.on_applied.append(dispatcher.applied)
        return dispatcher

    # ------------------------------------------------------------- running

    def start(self) -> Dispatcher:
        self._thread = threading.Thread(target=self._run, name="signoff-webhooks",
                                        daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.http.close()

    def wake(self) -> None:
        self._wake.set()

    def applied(self, name: str) -> None:
        """A projection applied a page: when the webhooks one wrote deliveries, look for
        due ones now (a page that wrote none leaves it to the poll; so does one whose
        wake-up another thread took before this page committed: it is sent at most a
        poll later)."""
        if name == webhooks.WebhooksProjection.name:
            made = self.view.model.deliveries_made  # type: ignore[attr-defined]
            if made != self._made:
                self._made = made
                self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                wait = self.step()
            except (OperationalError, InterfaceError, psycopg.OperationalError) as err:
                log.warning("webhooks could not read or write the store (%s); retrying", err)
                wait = 1.0
            except Exception:
                log.exception("webhook dispatcher failed; retrying")
                wait = 1.0
            if wait:
                self._wake.wait(wait)

    def step(self) -> float:
        """Claim what is due (as many as there are free sending threads) and send each
        in the pool. Returns how long to wait before the next step (a wake-up, or a
        sending thread coming free, cuts it short). Nothing is written unless something
        is due: on SQLite every write takes the store's one write lock."""
        now = self.clock()
        with self.view.read(snapshot=False) as c:
            at = webhooks.next_due(c)
        if at is None:
            return self.poll
        if at > now:
            return min(self.poll, max(0.01, (at - now).total_seconds()))
        slots = 0
        while self.free.acquire(blocking=False):
            slots += 1
        if not slots:
            return self.poll  # every thread is sending: the first to end wakes us
        token = uuid.uuid4().hex
        try:
            with self.view.write_transaction() as c:
                due = webhooks.claim(c, now=now, lease_until=now + self.lease, limit=slots,
                                     token=token)
        except BaseException:
            for _ in range(slots):
                self.free.release()
            raise
        for _ in range(slots - len(due)):
            self.free.release()
        with self._idle:
            self._in_flight += len(due)
        for item in due:
            self.pool.submit(self._attempt_and_release, item, token)
        # Claimed some: more may be due. None, though one was due: another dispatcher
        # is claiming it (PostgreSQL skips the rows it locks).
        return 0.0 if due else 0.05

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until no attempt is in flight."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)

    def _attempt_and_release(self, due: webhooks.Due, token: str) -> None:
        try:
            self.attempt(due, token)
        except Exception:
            log.exception("webhook delivery %s: the attempt could not be recorded; it is "
                          "retried when its lease ends", due.delivery_id)
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()
            self.free.release()
            self._wake.set()

    # ------------------------------------------------------------- one attempt

    def attempt(self, due: webhooks.Due, token: str) -> None:
        if due.url is None:  # its subscription is being rebuilt: later
            with self.view.write_transaction() as c:
                webhooks.release(c, due, token=token, at=self.clock() + timedelta(seconds=1))
            return
        body = due.body.encode() if due.body is not None else payload(
            self.store, delivery_id=due.delivery_id, event_type=due.event_type,
            position=due.position)
        started = self.clock()
        t0 = time.monotonic()
        status_code, error = self._send(due, body, int(started.timestamp()))
        duration_ms = (time.monotonic() - t0) * 1000
        n = due.attempts + 1
        if status_code is not None and 200 <= status_code < 300:
            status, next_at = "delivered", None
        elif n >= self.attempts:
            status, next_at = "failed", None
        else:
            status = "pending"
            next_at = self.clock() + timedelta(seconds=backoff(
                n, base=self.backoff_base, cap=self.backoff_max, jitter=self.jitter()))
        with self.view.write_transaction() as c:
            recorded = webhooks.record(c, due, token=token, started_at=started,
                                       duration_ms=duration_ms, status_code=status_code,
                                       error=error, status=status, next_attempt_at=next_at,
                                       body=body.decode())
        if not recorded:
            log.warning("webhook delivery %s: its lease ran out before attempt %d was "
                        "recorded", due.delivery_id, n)
        elif status != "delivered":
            then = "no more attempts" if next_at is None else f"next at {next_at.isoformat()}"
            log.info("webhook delivery %s (webhook %s, %s): attempt %d failed (%s); %s",
                     due.delivery_id, due.webhook_id, due.event_type, n,
                     error or status_code, then)

    def _send(self, due: webhooks.Due, body: bytes, t: int) -> tuple[int | None, str | None]:
        assert due.url is not None
        if due.secret is None:
            return None, "no secret is kept for this webhook (create it again)"
        try:
            check_host(due.url, self.hosts)
        except HostNotAllowed as e:
            return None, str(e)
        headers = {"Content-Type": "application/json",
                   "Signoff-Signature": signature(due.secret, t, body),
                   "Signoff-Delivery": due.delivery_id,
                   "Signoff-Event": due.event_type,
                   "Signoff-Attempt": str(due.attempts + 1)}
        try:
            # The answer's status is all that counts: its body is never read.
            with self.http.stream("POST", due.url, content=body, headers=headers) as r:
                return r.status_code, None
        except httpx.TimeoutException as e:
            return None, f"timeout ({type(e).__name__}, {self.timeout:g} s)"
        except httpx.HTTPError as e:
            return None, f"{type(e).__name__}: {e}"[:500]
