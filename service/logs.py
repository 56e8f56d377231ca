"""Logs: one JSON object per line (or one readable line on a terminal), each carrying the
request id, run id and agent it is about.

- ``configure(settings)`` sets up the root logger (``SIGNOFF_LOG_LEVEL``,
  ``SIGNOFF_LOG_FORMAT``) and routes uvicorn's loggers through it;
  ``uvicorn_log_config(settings)`` does the same in every process uvicorn starts. The
  lines are formatted by ``service/logformat.py`` in the thread that logs, and written
  by the standard library's ``QueueListener`` thread; ``held()`` keeps a block of them
  together.
- ``LogContext`` holds what a request is about; the API puts one in ``CONTEXT`` for each
  request, and every record logged while it is handled gets its fields.
- ``log_committed`` writes one line per committed event of a run. At info level a line
  names the facts (event, tool, decision, who decided, durations), never the values a run
  carries: tool arguments and results, model output, user input, notes. Those are added
  at debug level only.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from logging.handlers import QueueHandler, QueueListener
from typing import Any

from domain.decisions import DecisionEvent
from domain.run import Run
from service.config import Settings
from service.logformat import JSONFormatter, TextFormatter

log = logging.getLogger("signoff.runs")


@dataclass
class LogContext:
    """What the work in progress is about. Mutable on purpose: the request's context is
    copied into worker threads, and a run id found there (a run just started) is seen by
    the request's own last line too."""

    request_id: str | None = None
    run_id: str | None = None
    agent: str | None = None
    # The request's ASGI scope: its ``path_params`` (run_id, agent_id) once it is routed.
    scope: Mapping[str, Any] = field(default_factory=dict)

    def fields(self) -> dict[str, str]:
        params = self.scope.get("path_params") or {}
        found = {"request_id": self.request_id,
                 "run_id": self.run_id or _short(params.get("run_id")),
                 "agent": self.agent or _short(params.get("agent_id"))}
        return {k: v for k, v in found.items() if v}


CONTEXT: ContextVar[LogContext | None] = ContextVar("signoff_log_context", default=None)


def _short(value: Any) -> str | None:
    return value[:200] if isinstance(value, str) and value else None


class ContextFilter(logging.Filter):
    """Adds the current context's fields to each record that does not set them itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = CONTEXT.get()
        if ctx is not None:
            for key, value in ctx.fields().items():
                if getattr(record, key, None) is None:
                    setattr(record, key, value)
        return True


# Records queued at most. Past that the listener is behind (a slow or stuck stream): the
# thread that logs waits for room, as it would wait for the stream without a queue, and
# memory stays bounded.
MAX_QUEUED = 10_000


class _Handler(QueueHandler):
    """signoff's handler on the root logger: the standard queue handler. A record is
    formatted in the thread that logged it, and its line queued; the listener's thread
    writes the lines to the stream, in the order they were queued. ``flush()`` (called by
    ``logging.shutdown`` at exit) returns once every queued line is written; ``close()``
    (also when ``configure`` replaces the handler) writes them and stops the listener.

    Lines a thread logs inside ``held()`` are queued together, as one record, when the
    block ends: a save's lines are one write."""

    def __init__(self, stream: Any, formatter: logging.Formatter) -> None:
        # The listener's handler writes each record's message: the line, formatted here.
        self.writer = logging.StreamHandler(stream)
        self.records: queue.Queue[logging.LogRecord] = queue.Queue(MAX_QUEUED)
        super().__init__(self.records)
        self.setFormatter(formatter)
        self.addFilter(ContextFilter())
        self.held = threading.local()
        self.listening = False
        self._listen()

    def _listen(self) -> None:
        self.listener = QueueListener(self.records, self.writer)
        self.listener.start()
        self.listening = True

    def after_fork(self) -> None:
        """In a forked child: a queue of its own (the parent's may have been locked
        mid-put) and a listener thread, which a fork does not copy."""
        if self.listening:
            self.queue = self.records = queue.Queue(MAX_QUEUED)
            self._listen()

    def enqueue(self, record: logging.LogRecord) -> None:
        lines: list[str] | None = getattr(self.held, "lines", None)
        if lines is not None:
            lines.append(record.getMessage())
        elif self.listening:
            self.records.put(record)  # waits while the queue is full
        # Closed (replaced, or the process ending) yet still reached by a logger: no
        # listener drains the queue, so a line waiting for room would wait for ever.

    def enqueue_lines(self, lines: list[str]) -> None:
        if self.listening:
            self.records.put(logging.makeLogRecord({"msg": "\n".join(lines)}))

    def flush(self) -> None:
        """Return once the listener has written every line queued so far."""
        if self.listening:
            self.records.join()

    def close(self) -> None:
        if self.listening:
            self.flush()  # then the listener's stop marker finds room in the queue
            self.listener.stop()
            self.listening = False
        self.writer.close()
        super().close()


_handler: _Handler | None = None


def _after_fork() -> None:
    if _handler is not None:
        _handler.after_fork()


os.register_at_fork(after_in_child=_after_fork)


@contextmanager
def held() -> Iterator[None]:
    """Hold the lines this thread logs until the block ends, then queue them together
    (in order; the listener writes them in one piece)."""
    handler = _handler
    if handler is None or getattr(handler.held, "lines", None) is not None:
        yield  # not configured, or already held by an enclosing block
        return
    lines: list[str] = []
    handler.held.lines = lines
    try:
        yield
    finally:
        handler.held.lines = None
        if lines:
            handler.enqueue_lines(lines)


def flush() -> None:
    """Write every line logged so far (the listener would within moments)."""
    if _handler is not None:
        _handler.flush()


def _new_handler(log_format: str, stream: Any) -> _Handler:
    """signoff's handler on ``stream``, in ``log_format`` (json, text, auto); the one
    ``held()`` and ``flush()`` act on from now on."""
    # No record here says where it was logged from, or from which thread or process:
    # skip finding out (the logging HOWTO's "Optimization"; a stack walk per record).
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging.captureWarnings(True)  # a library's warning is a line like any other
    fmt = log_format
    if fmt == "auto":
        fmt = "text" if getattr(stream, "isatty", lambda: False)() else "json"
    global _handler
    _handler = _Handler(stream, JSONFormatter() if fmt == "json" else TextFormatter())
    return _handler


def uvicorn_handler(log_format: str) -> logging.Handler:
    """The handler ``uvicorn_log_config`` names (logging's dictConfig calls this, in the
    main thread of each process uvicorn starts, before it serves)."""
    handler = _new_handler(log_format, sys.stderr)
    if (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL):
        signal.signal(signal.SIGTERM, _write_lines_then_terminate)
    return handler


# Seconds a process stopped by SIGTERM waits for its queued lines to be written.
TERMINATE_WAIT = 2.0


def _write_lines_then_terminate(signum: int, frame: Any) -> None:
    """SIGTERM's default action, once the queued lines are written. uvicorn's server,
    stopped by SIGTERM, shuts down and then raises SIGTERM again under the handler it
    found at start: by default the process ends at once, without exit handlers, and its
    last lines ("Application shutdown complete.", "Finished server process") would still
    be queued. The wait is bounded: the signal may have come while this thread held
    the queue's lock."""
    writing = threading.Thread(target=flush, name="signoff-log-flush", daemon=True)
    writing.start()
    writing.join(TERMINATE_WAIT)
    signal.signal(signum, signal.SIG_DFL)
    signal.raise_signal(signum)


def uvicorn_log_config(settings: Settings) -> dict[str, Any]:
    """uvicorn's ``log_config`` for ``signoff serve``. uvicorn applies it in each process
    it starts (with ``--workers N``: the supervisor and every worker), before the app is
    loaded, so uvicorn's own lines ("Started parent process", "Waiting for child
    process", ...) go through signoff's handler, in its format, from the first one. Once
    loaded, the app's ``configure`` puts a handler of the same kind in its place."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"signoff": {"()": f"{__name__}.uvicorn_handler",
                                 "log_format": settings.log_format}},
        "root": {"handlers": ["signoff"], "level": settings.log_level.upper()},
        "loggers": {
            # uvicorn's loggers keep no handler of their own: the root's writes their lines.
            "uvicorn": {"handlers": [], "propagate": True, "level": "NOTSET"},
            "uvicorn.error": {"handlers": [], "propagate": True, "level": "NOTSET"},
            # Its access log is off (``access_log=False``): the API logs each request.
            "uvicorn.access": {"handlers": [], "propagate": False},
        },
    }


def configure(settings: Settings, stream: Any = None) -> None:
    """Root logger → one handler on stderr, in the configured format and level. uvicorn's
    loggers go through it too; its access log is replaced by the API's own request line
    (which carries the request id)."""
    handler = _new_handler(settings.log_format, stream or sys.stderr)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)  # configured again (another app in this process)
        old.close()
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(logging.NOTSET)
    access = logging.getLogger("uvicorn.access")
    access.handlers.clear()
    access.propagate = False
    access.disabled = True


# ------------------------------------------------------------- run facts


def log_committed(run: Any, event: Any, **facts: Any) -> None:
    """One line for one committed event of ``run``: its kind and the facts about it that
    carry no user or tool data (more facts, e.g. a duration, may be passed in)."""
    label = type(event).__name__  # the line names the event (data, not dispatch)
    level = logging.WARNING if isinstance(event, _WARNINGS) else logging.INFO
    if not log.isEnabledFor(level):
        return
    fields: dict[str, Any] = {"run_id": str(event.originator_id), "agent": run.agent_id,
                              "event": label, "version": event.originator_version, **facts}
    call_id = getattr(event, "tool_call_id", None)
    if call_id is not None:
        fields["tool_call_id"] = call_id
        call = run.calls.get(call_id)
        if call is not None:
            fields["tool"] = call.tool_name
    if isinstance(event, Run.RunStarted):
        fields.update(user_id=event.user_id, session_id=event.session_id)
    elif isinstance(event, Run.ModelResponded):
        fields.update(model=event.model, tool_calls=len(event.tool_calls),
                      input_tokens=event.input_tokens, output_tokens=event.output_tokens)
    elif isinstance(event, Run.ToolCallRequested):
        fields["requires"] = event.requires
        if event.policy is not None:
            fields.update(policy=event.policy["rule"], policy_outcome=event.policy["outcome"])
    elif isinstance(event, Run.RunPaused):
        fields["waiting_for"] = len(event.waiting_for)
    elif isinstance(event, DecisionEvent):
        fields.update(decision=str(event.decision_kind), decided_by=event.decided_by)
        if isinstance(event, Run.DecisionExpired):
            fields["action"] = event.action
    elif isinstance(event, Run.ToolExecutionStarted):
        fields["attempt"] = event.attempt
    elif isinstance(event, Run.ToolFailed):
        fields["error_type"] = event.error.split(":", 1)[0][:100]
    elif isinstance(event, Run.RunFailed):
        fields["error"] = event.error[:300]  # the service's own words (model error, turns)
    elif isinstance(event, Run.RunCancelled):
        fields["cancelled_by"] = event.cancelled_by
    message = _MESSAGES.get(type(event), label)
    log.log(level, "%s", message, extra=fields)
    if log.isEnabledFor(logging.DEBUG):
        # The whole event, values included: at debug level only (they may be secrets).
        payload = {k: v for k, v in vars(event).items()
                   if k not in ("originator_id", "originator_version", "timestamp",
                                "originator_topic")}
        log.debug("%s: payload", message, extra={**fields, "payload": payload})


_WARNINGS = (Run.ToolFailed, Run.ToolCallInDoubt, Run.RunFailed)
_MESSAGES: dict[type, str] = {
    Run.RunStarted: "run started",
    Run.ModelResponded: "model responded",
    Run.ToolCallRequested: "tool call requested",
    Run.RunPaused: "run paused for decisions",
    Run.ToolConfirmed: "tool call confirmed",
    Run.ToolRejected: "tool call rejected",
    Run.ExternalResultProvided: "external result provided",
    Run.UserInputProvided: "user input provided",
    Run.DecisionExpired: "decision expired",
    Run.RunContinued: "run continued",
    Run.ToolExecutionStarted: "tool started",
    Run.ToolExecuted: "tool executed",
    Run.ToolFailed: "tool failed",
    Run.ToolCallInDoubt: "tool call in doubt",
    Run.RunCompleted: "run completed",
    Run.RunFailed: "run failed",
    Run.RunCancelled: "run cancelled",
}
