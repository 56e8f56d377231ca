"""A tiny parser of a ``text/event-stream`` body (no dependency: httpx-sse is not installed).

``parse(text)`` gives the events in order as ``(event name, data)`` pairs, the data parsed
as JSON. It follows the WHATWG rules the server needs: ``field: value`` lines (one space
after the colon is dropped), ``data`` lines joined by newlines, comment lines (``:``)
ignored, a blank line ends an event, and an event without ``event:`` is a ``message``.
"""

from __future__ import annotations

import json
from typing import Any

Event = tuple[str, dict[str, Any]]


def parse(text: str) -> list[Event]:
    events: list[Event] = []
    name, data = "", []
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if not line:
            if data:
                events.append((name or "message", json.loads("\n".join(data))))
            name, data = "", []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)
    if data:
        events.append((name or "message", json.loads("\n".join(data))))
    return events


def names(events: list[Event]) -> list[str]:
    return [name for name, _ in events]
