"""Logs: one JSON object per line (or one readable line on a terminal), each carrying the
request id, run id and agent it is about.

- ``configure(settings)`` sets up the root logger (``SIGNOFF_LOG_LEVEL``,
  ``SIGNOFF_LOG_FORMAT``) and routes uvicorn's loggers through it;
  ``uvicorn_log_config(settings)`` does the same in every process uvicorn starts.
- ``LogContext`` holds what a request is about; the API puts one in ``CONTEXT`` for each
  request, and every record logged while it is handled gets its fields.
- ``log_committed`` writes one line per committed event of a run. At info level a line
  names the facts (event, tool, decision, who decided, durations), never the values a run
  carries: tool arguments and results, model output, user input, notes. Those are added
  at debug level only.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic_core import to_json

from domain.run import DecisionEvent, Run
from service.config import Settings

log = logging.getLogger("signoff.runs")

# The attributes every LogRecord has; anything else on a record came in ``extra``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "taskName", "color_message"}  # uvicorn's, with ANSI colours
# The context fields, in the order they are written.
FIELDS = ("request_id", "run_id", "agent")


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


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and v is not None}


class JSONFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", request_id?, run_id?, agent?, ...extra,
    "exception"?}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        extras = _extras(record)
        for key in FIELDS:
            if key in extras:
                line[key] = extras.pop(key)
        line.update(extras)
        if record.exc_info:
            line["exception"] = "".join(traceback.format_exception(*record.exc_info))
        # pydantic's encoder: a quarter of json.dumps's time, and a value it cannot
        # encode becomes its str, as before.
        return to_json(line, fallback=str, inf_nan_mode="null").decode()


# Fields a text line's message already says (the event, the request's method, route and
# status): JSON lines keep them, to be queried.
_SAID = frozenset({"event", "method", "route", "status"})


class TextFormatter(logging.Formatter):
    """``HH:MM:SS.mmm LEVEL logger: message key=value ...`` for people at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created).strftime("%H:%M:%S.%f")[:-3]
        extras = {k: v for k, v in _extras(record).items() if k not in _SAID}
        keys = [k for k in FIELDS if k in extras] + [k for k in extras if k not in FIELDS]
        pairs = " ".join(f"{k}={_text(extras[k])}" for k in keys)
        text = f"{when} {record.levelname:<7} {record.name}: {record.getMessage()}"
        text = f"{text}  {pairs}" if pairs else text
        if record.exc_info:
            text += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
        return text


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if text.isprintable() and " " not in text and text else json.dumps(text)


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]  # generic in typeshed only
    """signoff's own handler on the root logger: a thread formats its records, and one
    writer thread writes them.

    Every ``write`` to stderr drops the GIL and takes it back; among dozens of busy
    request threads and the event loop that costs far more than the line's formatting
    (measured: about half a millisecond of server CPU per HITL cycle). So a record is
    formatted in the thread that logged it (outside any lock) and put on a queue; the
    writer wakes, lets a few milliseconds of lines gather, and writes them in one
    ``write``. Lines keep the order they were put in. ``flush()`` (called by
    ``logging.shutdown`` at exit, and by ``configure`` when it replaces the handler)
    writes what is queued before it returns.

    Lines a thread logs inside ``held()`` are put together when the block ends: a save's
    lines stay one block."""

    LINGER = 0.005  # seconds the writer waits, once woken, for more lines
    # Pieces queued at most: past that the writer is behind (a slow or stuck stream), and
    # the thread that logs writes the queue itself (waiting for the stream, as a handler
    # without a writer would) rather than let the queue grow without bound.
    MAX_QUEUED = 10_000

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self.held = threading.local()
        self._queue: deque[str] = deque()
        self._wake = threading.Event()
        self._closed = False
        self._start()
        os.register_at_fork(after_in_child=self._start)  # a fork has no writer thread

    def _start(self) -> None:
        if self._closed:
            return
        self._queue.clear()  # (in a forked child: the parent writes its own lines)
        threading.Thread(target=self._write_forever, name="signoff-log-writer",
                         daemon=True).start()

    def handle(self, record: logging.LogRecord) -> bool:
        if not self.filter(record):
            return False
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except RecursionError:  # as StreamHandler.emit
            raise
        except Exception:
            self.handleError(record)
            return
        lines: list[str] | None = getattr(self.held, "lines", None)
        if lines is None:
            self.put(line)
        else:
            lines.append(line)

    def put(self, text: str) -> None:
        """Queue ``text`` (whole lines) for the writer."""
        self._queue.append(text)
        if len(self._queue) > self.MAX_QUEUED:
            self._write_queued()
        elif not self._wake.is_set():  # the writer clears it before it takes the queue
            self._wake.set()

    def _write_forever(self) -> None:
        while not self._closed:
            self._wake.wait()
            time.sleep(self.LINGER)
            self._wake.clear()
            try:
                self._write_queued()
            except Exception:  # never end the writer: the queue would only grow
                self.handleError(logging.makeLogRecord({"msg": "queued log lines"}))

    def _write_queued(self) -> None:
        with self.lock:  # type: ignore[union-attr]  # one taker at a time: order is kept
            texts = []
            while self._queue:
                texts.append(self._queue.popleft())
            if not texts:
                return
            try:
                self.stream.write("".join(texts))
                self.stream.flush()
            except Exception:  # as StreamHandler.emit: a broken stream is reported only
                self.handleError(logging.makeLogRecord({"msg": "queued log lines"}))

    def flush(self) -> None:
        """Write what is queued, now."""
        self._write_queued()

    def close(self) -> None:
        self._write_queued()
        self._closed = True
        self._wake.set()
        super().close()


_handler: _Handler | None = None


@contextmanager
def held() -> Iterator[None]:
    """Hold the lines this thread logs until the block ends, then queue them together
    (in order; the writer writes them a few milliseconds later, in one piece)."""
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
            handler.put("".join(lines))


def flush() -> None:
    """Write every line logged so far (the writer thread would within milliseconds)."""
    if _handler is not None:
        _handler.flush()


def _new_handler(log_format: str, stream: Any) -> _Handler:
    """signoff's handler on ``stream``, in ``log_format`` (json, text, auto); the one
    ``held()`` and ``flush()`` act on from now on."""
    # No record here says where it was logged from, or from which thread or process:
    # skip finding out (the logging HOWTO's "Optimization"; a stack walk per record).
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    fmt = log_format
    if fmt == "auto":
        fmt = "text" if getattr(stream, "isatty", lambda: False)() else "json"
    global _handler
    handler = _handler = _Handler(stream)
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    return handler


def uvicorn_handler(log_format: str) -> logging.Handler:
    """The handler ``uvicorn_log_config`` names (logging's dictConfig calls this)."""
    return _new_handler(log_format, sys.stderr)


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
            fields["tool"] = call["tool_name"]
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
