"""Metrics of what runs do, counted from the events this process has committed.

Only what was committed counts: a save that fails (a concurrent change, the store down)
moves nothing. Each process counts its own saves; with several workers the counts are
summed by prometheus_client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``; see
docs/operations.md), so a run is counted once whichever worker served it.

``watch_commits(app, listener)`` calls ``listener(runs, recordings)`` after each save
that committed; ``CommittedFacts`` is the listener: it counts, times tool calls (from the
start to the recorded outcome) and writes one log line per event (``service.logs``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from prometheus_client import Counter, Histogram

from domain.decisions import DecisionEvent
from domain.run import Run
from service.logs import CONTEXT, held, log_committed
from service.runs import RunService

# Seconds: from a few milliseconds to the default tool timeout (300 s).
TOOL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
MODEL_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120)

RUNS_STARTED = Counter("signoff_runs_started", "Runs started.", ["agent"])
RUNS_PAUSED = Counter("signoff_runs_paused",
                      "Times a run paused to wait for decisions (a run may pause again).",
                      ["agent"])
RUNS_COMPLETED = Counter("signoff_runs_completed", "Runs completed.", ["agent"])
RUNS_FAILED = Counter("signoff_runs_failed", "Runs that ended in an error.", ["agent"])
RUNS_CANCELLED = Counter("signoff_runs_cancelled", "Runs cancelled.", ["agent"])
DECISIONS = Counter("signoff_decisions",
                    "Decisions recorded on tool calls, by kind (confirmed, rejected, "
                    "external_result, user_input, expired).", ["agent", "kind"])
TOOL_SECONDS = Histogram("signoff_tool_call_duration_seconds",
                         "Tool calls run by signoff: seconds from the recorded start to the "
                         "recorded outcome (executed or failed).",
                         ["agent", "tool", "outcome"], buckets=TOOL_BUCKETS)
MODEL_SECONDS = Histogram("signoff_model_call_duration_seconds",
                          "Model calls: seconds until the model answered (ok) or failed "
                          "(error).", ["model", "provider", "outcome"], buckets=MODEL_BUCKETS)

_RUN_COUNTERS: dict[type, Counter] = {
    Run.RunStarted: RUNS_STARTED, Run.RunPaused: RUNS_PAUSED,
    Run.RunCompleted: RUNS_COMPLETED, Run.RunFailed: RUNS_FAILED,
    Run.RunCancelled: RUNS_CANCELLED}
_ENDS = (Run.RunCompleted, Run.RunFailed, Run.RunCancelled)

log = logging.getLogger("signoff.metrics")

Listener = Callable[[Sequence[Any], Sequence[Any]], None]


def watch_commits(app: RunService, listener: Listener) -> None:
    """Call ``listener(saved objects, recordings)`` after each of ``app``'s saves commits
    (a listener that fails never fails the save: ``RunService.save`` logs it)."""
    app.on_commit.append(listener)


class CommittedFacts:
    """Counts, times and logs the events of each committed save.

    ``tools``: each agent's tool names. A tool the model made up (no such tool: the call
    fails) is labelled ``unknown``, so a model cannot grow the label set.
    """

    def __init__(self, tools: dict[str, Iterable[str]]) -> None:
        self.tools = {agent: frozenset(names) for agent, names in tools.items()}
        self._started: dict[tuple[str, str], Any] = {}  # (run, call) → start timestamp
        self._lock = threading.Lock()

    def __call__(self, objs: Sequence[Any], recordings: Sequence[Any]) -> None:
        runs = {getattr(o, "id", None): o for o in objs}
        with held():  # the save's lines in one write
            for recording in recordings:
                event = recording.domain_event
                run = runs.get(event.originator_id)
                if run is not None and hasattr(run, "agent_id"):
                    self.event(run, event)

    def event(self, run: Any, event: Any) -> None:
        kind = type(event)
        agent = run.agent_id
        facts: dict[str, Any] = {}
        if kind in _RUN_COUNTERS:
            _RUN_COUNTERS[kind].labels(agent).inc()
        if isinstance(event, DecisionEvent):
            DECISIONS.labels(agent, str(event.decision_kind)).inc()
        if kind is Run.RunStarted:
            ctx = CONTEXT.get()
            if ctx is not None and ctx.run_id is None:  # this request started it
                ctx.run_id, ctx.agent = str(event.originator_id), agent
        key = (str(event.originator_id), getattr(event, "tool_call_id", ""))
        if kind is Run.ToolExecutionStarted:
            with self._lock:
                self._started[key] = event.timestamp
        elif kind in (Run.ToolExecuted, Run.ToolFailed):
            with self._lock:
                started = self._started.pop(key, None)
            if started is not None:  # else started by another (crashed) process
                seconds = max(0.0, (event.timestamp - started).total_seconds())
                outcome = "executed" if kind is Run.ToolExecuted else "failed"
                TOOL_SECONDS.labels(agent, self._tool(run, event), outcome).observe(seconds)
                facts["seconds"] = round(seconds, 6)
        elif kind in _ENDS:
            with self._lock:
                for k in [k for k in self._started if k[0] == key[0]]:
                    del self._started[k]
        log_committed(run, event, **facts)

    def _tool(self, run: Any, event: Any) -> str:
        call = run.calls.get(event.tool_call_id)
        name = call.tool_name if call else None
        return str(name) if name in self.tools.get(run.agent_id, ()) else "unknown"
