"""The server's sweeper (``service/sweeper.py``) reading what to settle from the queue
read model (the service and the projections do not import each other; this module,
above both, joins them)."""

from __future__ import annotations

from datetime import datetime

from projections import queue, sweeps
from projections.runner import Projections
from service.lifecycle import RunLifecycle
from service.sweeper import Sweeper


def sweeper(runs: RunLifecycle, projections: Projections, interval: float) -> Sweeper:
    """A sweeper over the queue's ``signoff_queue_deadlines`` and
    ``signoff_queue_running``; started unless ``interval`` is 0
    (``SIGNOFF_EXPIRY_INTERVAL``)."""
    view = projections.views[queue.QueueProjection.name]

    def due(now: datetime, limit: int) -> list[str]:
        with view.read(snapshot=False) as c:  # one statement
            return sweeps.due(c, now, limit)

    def stale(now: datetime, idle_before: datetime, limit: int) -> list[str]:
        with view.read(snapshot=False) as c:  # one statement
            return sweeps.stale(c, now, idle_before, limit)

    return Sweeper(runs, due, stale, interval=interval).start()
