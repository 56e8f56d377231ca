"""Running the projections: catch up with the event log in batches, then follow it.

Each projection reads the log from its tracked position in pages (``batch_size`` events)
and writes each page's rows and the page's last position in one transaction: a page is
applied exactly once, and a crash loses nothing but the page in flight, which is applied
again on restart. Pages make catch-up and rebuilds fast (one transaction per page, not
per event).

Following new events:

- PostgreSQL: ``LISTEN`` on eventsourcing's channel for the events table (every insert
  transaction ``NOTIFY``s it), so new events are applied as soon as they are committed.
  eventsourcing's insert takes a table lock, so commit order equals position order and
  reading ``position > last`` never skips an event committed late.
- One thread follows for every projection (on PostgreSQL beside one that listens).
  Woken, while every projection is at the same position (as they are while following),
  it applies the next page to all of them in ONE transaction (``write_together``): a
  commit wakes one write, not one per read model. Otherwise (one is new, rebuilding or
  behind) it applies at most one page to each in turn (the queue first), and goes round
  again at once while any had a full page: the queue is never held back by more than one
  page of another projection, and a projection far behind catches up a page per round.
  One thread rather than one per projection: followers woken by every commit compete
  with the request threads for the interpreter (docs/performance.md).
- SQLite has no notifications: the log is checked once a second, and whenever the
  projections are prompted.
- In the server with inline read models (``projections/inline.py``), each save writes
  them itself; the follower does not listen, it checks the log once a second (and when
  prompted: a save that left a read model to it prompts), to apply what no save of this
  process wrote: the anchors, events written by another process, a rebuild.

While following, the projections share the log's newest events (``projections/tail.py``): a page is
read and decoded once, not once per projection, and the log is read again only after a
notification (or a prompt, or the once-a-second check) says something may have been
committed since. Each follower remembers its position between pages instead of reading
it back; the write's check under the projection's lock (``ViewMixin.write``) still
refuses a page that is not applied after the recorded position, so a stale memory costs
one retry, never an event applied twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
from eventsourcing.persistence import InterfaceError, OperationalError

from projections.anchors import AnchorsProjection
from projections.audit import AuditProjection
from projections.queue import QueueProjection
from projections.readmodel import ReadModel
from projections.sessions import SessionsProjection
from projections.store import PositionMoved, ViewMixin, open_view, same_database, write_together
from projections.tail import Tail
from projections.webhooks import WebhooksProjection

if TYPE_CHECKING:  # projections depend on the domain only; the log comes in
    from service.runs import RunService

log = logging.getLogger("signoff.projections")

# Every read model, in the order they are applied (the queue first).
READ_MODELS: tuple[type[ReadModel[Any]], ...] = (
    QueueProjection, AuditProjection, AnchorsProjection, WebhooksProjection, SessionsProjection)

Progress = Callable[[int, int], None]  # (position reached, head)


def projection_names() -> list[str]:
    """The read models, in the order they are applied."""
    return [model.name for model in READ_MODELS]


@dataclass
class ProjectionStatus:
    name: str
    position: int
    head: int

    @property
    def lag(self) -> int:
        return max(0, self.head - self.position)


class Projections:
    """The projections of one store: their views, catching up, following, rebuilding."""

    def __init__(self, store: RunService, env: dict[str, str], *, batch_size: int = 500,
                 names: list[str] | None = None) -> None:
        self.store = store
        self.env = env
        self.batch_size = batch_size
        self.views: dict[str, ViewMixin] = {}
        models = {model.name: model for model in READ_MODELS}
        for name in names or list(models):
            self.views[name] = open_view(models[name](), env)
        self._prompt = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._tail = Tail(store, keep=max(2_000, 4 * batch_size))
        self._positions: dict[str, int] = {}  # where each follower last wrote
        self._together = same_database(env)  # one transaction can write every view
        self.listen = True  # PostgreSQL: woken by every commit (else: once a second)
        self.saves_write: set[str] = set()  # the read models this process's saves write
        self.on_applied: list[Callable[[str], None]] = []  # (name) after each page written

    # ------------------------------------------------------------- catch-up

    def catch_up(self, name: str, progress: Progress | None = None) -> int:
        """Apply every event past the projection's position. Returns how many."""
        view = self.views[name]
        recorder, mapper = self.store.recorder, self.store.mapper
        applied = 0
        head = self.store.head() if progress else 0
        position = view.position()
        while True:
            page = recorder.select_notifications(position + 1, self.batch_size)
            if not page:
                return applied
            batch = [(n.id, mapper.to_domain_event(n)) for n in page]
            try:
                view.write(batch, after=position)
            except PositionMoved:
                # Another runner applied events meanwhile (or a rebuild reset the
                # projection): what it wrote stands; go on from where it is now. Any
                # other error (a constraint of our own tables) is raised, not retried
                # for ever on the same page.
                position = view.position()
                continue
            position = page[-1].id
            applied += len(page)
            for listener in self.on_applied:
                listener(name)
            if progress:
                progress(position, max(head, position))

    def catch_up_all(self) -> int:
        return sum(self.catch_up(name) for name in self.views)

    def follow_up(self, name: str, stop: Callable[[], bool] | None = None,
                  pages: int | None = None) -> int:
        """What following does when woken: apply what is new, from the remembered
        position, reading through the shared tail, until caught up, or ``pages`` pages
        are applied, or ``stop()`` says to stop (checked between pages: a projection far
        behind, such as a new one on a large store, must not hold a shutdown up).
        Returns how many events."""
        view = self.views[name]
        position = self._positions.get(name)
        if position is None:
            position = view.position()
        applied = written = 0
        try:
            while not (stop and stop()) and (pages is None or written < pages):
                batch = self._tail.page(position + 1, self.batch_size)
                if not batch:
                    return applied
                if name in self.saves_write and (moved := view.position()) > position:
                    position = moved  # a save wrote it meanwhile: no lock taken from it
                    continue
                try:
                    view.write(batch, after=position)
                except PositionMoved:  # as in catch_up
                    position = view.position()
                    continue
                position = batch[-1][0]
                applied += len(batch)
                written += 1
                for listener in self.on_applied:
                    listener(name)
            return applied
        finally:
            self._positions[name] = position

    def rebuild(self, name: str, progress: Progress | None = None) -> int:
        """Empty the projection and apply the whole log again. Until it has applied the
        log as it was when the rebuild began, the projection says it is ``rebuilding``
        (its answers are partial)."""
        view = self.views[name]
        view.reset(target=self.store.head())
        self._positions.pop(name, None)
        applied = self.catch_up(name, progress)
        view.rebuilt()
        return applied

    def status(self) -> list[ProjectionStatus]:
        head = self.store.head()
        return [ProjectionStatus(name, view.position(), head)
                for name, view in self.views.items()]

    def wait(self, position: int, timeout: float = 5.0) -> bool:
        """Block until every projection has applied ``position`` (read-your-writes)."""
        deadline = time.monotonic() + timeout
        while not all(v.position() >= position for v in self.views.values()):
            if time.monotonic() > deadline:
                return False
            self._prompt.set()
            time.sleep(0.005)
        return True

    # ------------------------------------------------------------- following

    def applied_inline(self, names: Sequence[str], position: int,
                       events: Sequence[tuple[int, Any]] = ()) -> None:
        """A save's transaction wrote ``names`` up to ``position`` and committed: their
        followers go on from there, and whoever waits for a page is told. ``events``,
        the save's own, are offered to the tail the followers read."""
        self._tail.offer(events)
        for name in names:
            self._positions[name] = max(self._positions.get(name) or 0, position)
            for listener in self.on_applied:
                listener(name)

    def prompt(self) -> None:
        """New events were saved (called by the application after each save)."""
        self._tail.signal()
        self._prompt.set()

    def follow(self, stop: threading.Event | None = None) -> None:
        """Apply new events as they are committed, until ``stop`` is set."""
        stop = stop or self._stop
        if is_postgres(self.env) and self.listen:
            self._follow_postgres(stop)
        else:
            self._follow_polling(stop)

    def start(self) -> None:
        """Follow in a background thread of this process (the embedded default)."""
        self._thread = threading.Thread(target=self._run_guarded, name="signoff-projections",
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._prompt.set()
        if self._thread is not None:
            self._thread.join(10)
        for view in self.views.values():
            view.datastore.close()  # type: ignore[attr-defined]

    def _run_guarded(self) -> None:
        while not self._stop.is_set():
            try:
                self.follow(self._stop)
            except Exception:
                log.exception("projections stopped on an error; resuming from their positions")
                self._stop.wait(1.0)

    def _round(self, stop: threading.Event) -> bool:
        """At most one page for each projection in turn; whether any had a full page
        (more may be waiting: go round again without waiting). A transient error of the
        store (eventsourcing's ``OperationalError`` or ``InterfaceError``: "database is
        locked", a lost connection, a server restarting) is logged, and the round is
        tried again a second later from the tracked positions; any other error ends
        following."""
        more = failed = False
        try:
            together = self._follow_together()
        except (OperationalError, InterfaceError, psycopg.OperationalError) as err:
            log.warning("projections could not read or write the store (%s); retrying", err)
            stop.wait(1.0)
            return False
        if together is not None:
            return together
        for name in self.views:
            try:
                more |= self.follow_up(name, stop.is_set, pages=1) >= self.batch_size
            except (OperationalError, InterfaceError, psycopg.OperationalError) as err:
                log.warning("projection %s could not read or write the store (%s); "
                            "retrying", name, err)
                failed = True
        if failed:
            stop.wait(1.0)
            return False
        return more

    def _follow_together(self) -> bool | None:
        """When every projection is at the same remembered position (as they are while
        following), the next page for all of them in one transaction
        (``write_together``): one commit per page, not one per projection. Returns
        whether the page was full, or None when they are not together (one is new,
        rebuilding, or behind): then each goes on by itself."""
        positions = {self._positions.get(name) for name in self.views}
        if len(self.views) < 2 or len(positions) != 1 or not self._together:
            return None
        (position,) = positions
        if position is None:
            return None
        batch = self._tail.page(position + 1, self.batch_size)
        if not batch:
            return False
        try:
            write_together(list(self.views.values()), batch, after=position)
        except PositionMoved:  # another runner or a rebuild moved one: read them again
            self._positions.clear()
            return None
        for name in self.views:
            self._positions[name] = batch[-1][0]
            for listener in self.on_applied:
                listener(name)
        return len(batch) >= self.batch_size

    def _follow_polling(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self._tail.signal()  # prompted, or a second passed: read the log again
            if self._round(stop):
                continue
            self._prompt.wait(1.0)
            self._prompt.clear()

    def _follow_postgres(self, stop: threading.Event) -> None:
        """Rounds whenever a notification comes (and once a second regardless); a
        thread of its own listens, so that a lost connection is seen at once."""
        wake, done = threading.Event(), threading.Event()
        listener = threading.Thread(target=self._listen, args=(stop, done, wake),
                                    name="signoff-projections-listen", daemon=True)
        listener.start()
        try:
            while not stop.is_set():
                wake.clear()  # before the round: a notification meanwhile wakes it again
                self._tail.signal()
                if not self._round(stop):
                    wake.wait(1.0)
        finally:
            done.set()
            listener.join(5)

    def _listen(self, stop: threading.Event, done: threading.Event,
                wake: threading.Event) -> None:
        e = self.env
        channel = f"{self.store.name.lower()}_events"
        while not (stop.is_set() or done.is_set()):
            try:
                with psycopg.connect(
                    host=e["POSTGRES_HOST"], port=int(e["POSTGRES_PORT"]),
                    dbname=e["POSTGRES_DBNAME"], user=e["POSTGRES_USER"],
                    password=e.get("POSTGRES_PASSWORD", ""), autocommit=True,
                    connect_timeout=5,
                ) as conn:
                    conn.execute(f'LISTEN "{channel}"')
                    wake.set()  # listening: whatever commits from now on notifies
                    while not (stop.is_set() or done.is_set()):
                        # Wakes on the first NOTIFY; the timeout lets `stop` be seen.
                        for _ in conn.notifies(timeout=1.0, stop_after=1):
                            wake.set()
            except psycopg.OperationalError as err:
                # A restart or failover of the server must not end `signoff project`:
                # it goes on from the tracked positions.
                log.warning("projections lost PostgreSQL (%s); reconnecting", err)
                done.wait(1.0)


def is_postgres(env: dict[str, str]) -> bool:
    return env["PERSISTENCE_MODULE"].endswith("postgres")
