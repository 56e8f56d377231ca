"""The decision audit trail as CSV, one line per decision, streamed.

Values are written as the JSON pages show them: times in ISO 8601, arguments (objects)
as JSON text. Null is an empty field and an empty text a quoted one (``""``): a
decision with an empty note reads ``…,"",…``, one with no note ``…,,…`` (the
convention of PostgreSQL's ``COPY … CSV``, which loads them as '' and NULL). A field
holding a comma, a quote or a line break is quoted, as the csv module quotes it.

A cell that a spreadsheet would run as a formula (it starts with ``=``, ``+``, ``-``,
``@``, a tab or a carriage return) is prefixed with ``'``, as OWASP advises: a tool
argument or a reviewer's note must not become a formula in an auditor's spreadsheet.
The JSON and JSON Lines exports are never altered.
"""

from __future__ import annotations

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


def _field(value: Any) -> str:
    """One field: null empty, an empty text quoted, quoted when it must be."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    if not text or any(c in text for c in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def _line(values: Iterable[Any]) -> str:
    return ",".join(_field(v) for v in values) + "\r\n"


def decisions_csv(rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    """The CSV text, a line at a time (the header first)."""
    yield _line(audit.COLUMNS)
    for row in rows:
        values = pydantic_core.to_jsonable_python(row, inf_nan_mode="null", fallback=str)
        yield _line(_cell(values.get(k)) for k in audit.COLUMNS)
