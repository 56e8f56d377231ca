"""The server's expiry sweeper: the agent loop's ``ExpirySweeper`` reading what is due
from the queue read model (agent and projections do not import each other; this
module, above both, joins them)."""

from __future__ import annotations

from datetime import datetime

from agent.expiry import Due, ExpirySweeper
from agent.loop import AgentLoop
from projections import queue
from projections.runner import Projections


def due_from(projections: Projections) -> Due:
    """Runs with a call past its deadline, from ``signoff_queue_deadlines``."""
    view = projections.views[queue.NAME]

    def due(now: datetime, limit: int) -> list[str]:
        with view.read(snapshot=False) as c:  # one statement
            return queue.due(c, now, limit)

    return due


def sweeper(loop: AgentLoop, projections: Projections, interval: float,
            ) -> ExpirySweeper | None:
    """A started sweeper, or None when ``interval`` is 0 (``SIGNOFF_EXPIRY_INTERVAL``)."""
    if interval <= 0:
        return None
    s = ExpirySweeper(loop, due_from(projections), interval=interval)
    s.start()
    return s
