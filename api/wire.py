"""JSON on the wire: strict in, always encodable out.

In: RFC 8259 JSON only. Python's ``json`` also reads ``NaN``, ``Infinity`` and
``-Infinity``; such a number in a decision's arguments was recorded, and then every JSON
response showing it failed (a 500). ``loads`` refuses them (a ``ValueError``, like any
other parse error), and ``depth`` lets a caller refuse values nested deeper than the
service can send back.

Forms: ``form_fields`` reads a urlencoded body.

Out: ``dumps`` and ``JSONBody`` encode as FastAPI's own route serialization does
(pydantic): a non-finite number that got into a run some other way (a model's proposal)
becomes ``null`` instead of failing the response; anything else unknown becomes its
``str``.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

import pydantic_core
from fastapi.responses import JSONResponse

# Deeper values are refused on the way in: pydantic serializes at most ~250 levels, and a
# decision's values sit a few levels down in the views of a run.
MAX_DEPTH = 32


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads(raw: str | bytes) -> Any:
    """Parse strict JSON: ``ValueError`` (or ``RecursionError``) when it is not."""
    return json.loads(raw, parse_constant=_no_constant)


def depth(value: Any) -> int:
    """How deeply ``value`` nests lists and objects (a scalar is 0)."""
    deepest = 0
    stack = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, level + 1)
            stack.extend((v, level + 1) for v in item)
    return deepest


def form_fields(body: bytes, max_fields: int = 1000) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body's fields, as Starlette's form parser
    reads them (names and values percent-decoded as UTF-8 from the body read as latin-1;
    a repeated name: its last value; a name without ``=``: an empty value), in a third of
    its time. More than ``max_fields`` fields: ``ValueError``."""
    return dict(parse_qsl(body.decode("latin-1"), keep_blank_values=True,
                          max_num_fields=max_fields))


def dumps(content: Any) -> str:
    return to_bytes(content).decode()


def to_bytes(content: Any) -> bytes:
    return pydantic_core.to_json(content, inf_nan_mode="null", fallback=str)


class JSONBody(JSONResponse):
    """A JSON response that can always be encoded (see ``dumps``)."""

    def render(self, content: Any) -> bytes:
        return to_bytes(content)
