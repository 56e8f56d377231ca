"""How a log record becomes a line: one JSON object (``JSONFormatter``), or one readable
line for a terminal (``TextFormatter``). The fields a record carries beyond logging's own
(the context's ``request_id``, ``run_id``, ``agent``, and whatever came in ``extra``) are
written as fields of the line."""

from __future__ import annotations

import json
import logging
import traceback
from datetime import UTC, datetime
from typing import Any

from pydantic_core import to_json

# The attributes every LogRecord has; anything else on a record came in ``extra``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "taskName", "color_message"}  # uvicorn's, with ANSI colours
# The context fields, in the order they are written.
FIELDS = ("request_id", "run_id", "agent")


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
        # pydantic's encoder: a quarter of json.dumps's time; a value it cannot encode
        # becomes its str.
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
