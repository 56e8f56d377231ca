"""The expiry sweeper: finds the calls whose decision is past its deadline and records
their expiry through the agent loop (``AgentLoop.expire``), which continues the runs the
expiry lets go on.

Which runs to look at comes in as a function (``due``): the server reads the queue read
model's ``signoff_queue_deadlines`` (``projections.queue.due``), so a sweep costs one
indexed query however many runs are paused. The read model may lag: a run it names
whose call was decided meanwhile is left as it is (``expire`` reloads the run and checks
the deadline against the loop's clock), and a call that just passed its deadline is
found by a later sweep.

Several sweepers (one per API worker) may run at once, and a reviewer may decide the
same call at the same moment: every one of them saves the run at the version it loaded,
so eventsourcing's optimistic concurrency lets exactly one win; the others see the
winner's change on their next read.

The clock is the loop's (injected): tests move a fake clock and call ``sweep()``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime

from agent.loop import AgentLoop
from domain.run import Run

log = logging.getLogger("signoff.expiry")

# (now, at most this many) -> ids of runs with a call due at or before now
Due = Callable[[datetime, int], list[str]]


class ExpirySweeper:
    def __init__(self, loop: AgentLoop, due: Due, *, interval: float = 5.0,
                 batch: int = 100) -> None:
        self.loop = loop
        self.due = due
        self.interval = interval
        self.batch = batch
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sweep(self) -> list[Run]:
        """One pass: every run ``due`` names (up to ``batch``), expired where its calls
        are past their deadline by the loop's clock; returns those runs as they are
        after it. A run that fails (its agent is no longer served, its store is
        unreachable) is logged and left for the next pass."""
        now = self.loop.clock()
        runs = []
        for run_id in self.due(now, self.batch):
            try:
                runs.append(self.loop.expire(run_id))
            except Exception:
                log.exception("could not expire the decisions of run %s", run_id)
        return runs

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._follow, name="signoff-expiry",
                                            daemon=True)
            self._thread.start()

    def _follow(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sweep()
            except Exception:  # the read model unreachable, say: try again next time
                log.exception("expiry sweep failed")

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
