"""The decision audit trail as CSV, one line per decision, streamed.

Values are written as the JSON pages show them: times in ISO 8601, arguments (objects)
as JSON text, null as an empty cell. A cell that a spreadsheet would run as a formula
(it starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return) is prefixed with
``'``, as OWASP advises: a tool argument or a reviewer's note must not become a formula
in an auditor's spreadsheet. The JSON and JSON Lines exports are never altered.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from typing import Any

import pydantic_core

from projections import audit

_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        value = pydantic_core.to_json(value, inf_nan_mode="null", fallback=str).decode()
    if isinstance(value, str) and value.startswith(_FORMULA):
        return "'" + value
    return value


def decisions_csv(rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    """The CSV text, a line at a time (the header first)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(audit.COLUMNS))
    writer.writeheader()
    for row in rows:
        values = pydantic_core.to_jsonable_python(row, inf_nan_mode="null", fallback=str)
        writer.writerow({k: _cell(v) for k, v in values.items()})
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()
