"""The sweeper: settles what nobody is waiting on, without anyone touching the runs.

Each pass (every ``SIGNOFF_EXPIRY_INTERVAL`` seconds, in every API process):

- **Expiry**: the calls whose decision is past its deadline get ``DecisionExpired``
  (``RunLifecycle.expire``), and the runs it lets go on are driven on.
- **Stale runs**: a run left ``RUNNING`` by a process that died (a tool whose deadline
  passed with no outcome recorded, or a run with nothing recorded for longer than the
  tool timeout) is settled (``RunLifecycle.settle``): the call goes in doubt and the run
  into the queue for a person, or an idempotent tool runs again.

Which runs to look at comes in as functions (``due``, ``stale``): the server reads
the queue read model (``projections.sweeps.due`` / ``stale``), so a pass costs two
indexed queries however many runs there are. The read model may lag: a run it names
that has moved on meanwhile is left as it is (the lifecycle reloads it and checks the
clock itself), and one that just became due is found by a later pass.

Several sweepers (one per API worker) may run at once, and a reviewer may decide the
same call at the same moment: each saves the run at the version it loaded, so exactly
one wins. The clock is the lifecycle's (injected): tests move a fake clock and call
``sweep()``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from domain.run import Run
from service.lifecycle import RunLifecycle

log = logging.getLogger("signoff.sweeper")

# (now, at most this many) -> ids of runs with a call due at or before now
Due = Callable[[datetime, int], list[str]]
# (now, idle before, at most this many) -> ids of running runs that may be stale
Stale = Callable[[datetime, datetime, int], list[str]]


class Sweeper:
    def __init__(self, runs: RunLifecycle, due: Due, stale: Stale, *,
                 interval: float = 5.0, batch: int = 100) -> None:
        self.runs = runs
        self.due = due
        self.stale = stale
        self.interval = interval
        self.batch = batch
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sweep(self) -> list[Run]:
        """One pass: up to ``batch`` runs of each kind, by the lifecycle's clock; returns
        the runs as they are after it. A run that fails (its agent is no longer served,
        the store is unreachable) is logged and left for the next pass."""
        now = self.runs.clock()
        idle_before = now - timedelta(seconds=self.runs.tool_timeout)
        work: list[tuple[str, Callable[[str], Run]]] = [
            *((run_id, self.runs.expire) for run_id in self.due(now, self.batch)),
            *((run_id, self.runs.settle) for run_id in self.stale(now, idle_before,
                                                                     self.batch))]
        runs = []
        for run_id, settle in work:
            try:
                runs.append(settle(run_id))
            except Exception:
                log.exception("could not settle run %s", run_id)
        return runs

    def start(self) -> Sweeper:
        if self._thread is None and self.interval > 0:
            self._thread = threading.Thread(target=self._follow, name="signoff-sweeper",
                                            daemon=True)
            self._thread.start()
        return self

    def _follow(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sweep()
            except Exception:  # the read model unreachable, say: try again next time
                log.exception("sweep failed")

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
