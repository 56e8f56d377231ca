"""JSON on the wire: strict in, always encodable out.

In: RFC 8259 JSON only. Python's ``json`` also reads ``NaN``, ``Infinity`` and
``-Infinity``; such a number in a decision's arguments was recorded, and then every JSON
response showing it failed (a 500). ``loads`` refuses them (a ``ValueError``, like any
other parse error), and ``depth`` lets a caller refuse values nested deeper than the
service can send back.

Text: a string UTF-8 cannot encode (a lone surrogate: JSON's ``"\ud800"``, or a form
field in a charset such as UTF-7) could be neither recorded nor sent back. ``loads``
refuses one anywhere in what it reads, and so does every request body model built on
``Body`` (the JSON bodies FastAPI parses): ``NotText``, a 422.

Out: ``dumps`` and ``JSONBody`` encode as FastAPI's own route serialization does
(pydantic): a non-finite number that got into a run some other way (a model's proposal)
becomes ``null`` instead of failing the response; anything else unknown becomes its
``str``.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Annotated, Any

import pydantic_core
from fastapi.responses import JSONResponse
from pydantic import BaseModel, BeforeValidator, model_validator

# Deeper values are refused on the way in: pydantic serializes at most ~250 levels, and a
# decision's values sit a few levels down in the views of a run.
MAX_DEPTH = 32


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads(raw: str | bytes) -> Any:
    """Parse strict JSON: ``ValueError`` (or ``RecursionError``) when it is not;
    ``NotText`` when a string in it is not text UTF-8 can encode."""
    value = json.loads(raw, parse_constant=_no_constant)
    if isinstance(raw, str):
        suspect = _SURROGATE_OR_ESCAPE.search(raw) is not None
    else:
        suspect = _SURROGATE_ESCAPE.search(raw) is not None
    if suspect:
        check_text(value)
    return value


class NotText(Exception):
    """A string UTF-8 cannot encode: it holds a surrogate code point (U+D800 to U+DFFF).
    In JSON, a pair of surrogate escapes is read as the one character it stands for; a
    lone one stands for none. ``loc``: where, as keys and indexes into the value checked."""

    def __init__(self, loc: list[str | int]) -> None:
        where = "".join(f"[{part!r}]" for part in loc)
        super().__init__(f"a string{' at ' + where if where else ''} is not valid Unicode "
                         "text: it holds a lone surrogate (such as \\ud800), which UTF-8 "
                         "cannot encode")
        self.loc = loc


_SURROGATE = re.compile("[\ud800-\udfff]")
# Where a surrogate may come from in JSON text: an escape in the surrogate range (a pair
# of them is one character, a lone one is none), or, in a str, a character (UTF-8 bytes
# decode to none). JSON text with neither needs no ``check_text`` (a walk of the value).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE_OR_ESCAPE = re.compile("[\ud800-\udfff]|\\\\u[dD][89a-fA-F]")


def _shown(text: str) -> str:
    """``text`` as an error may show it (its surrogates as escapes)."""
    return text.encode("utf-8", "backslashreplace").decode()


def check_text(value: Any) -> None:
    """Raise ``NotText`` for the first string in ``value`` (lists and dicts at any depth,
    their keys too) that UTF-8 cannot encode."""
    stack: list[tuple[Any, list[str | int]]] = [(value, [])]
    while stack:
        item, loc = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item) is not None:
                raise NotText(loc)
        elif isinstance(item, dict):
            for key, v in item.items():
                if isinstance(key, str) and _SURROGATE.search(key) is not None:
                    raise NotText([*loc, _shown(key)])
                stack.append((v, [*loc, key]))
        elif isinstance(item, list | tuple):
            stack.extend((v, [*loc, i]) for i, v in enumerate(item))


def _iso_time(value: Any) -> Any:
    """A time in a query is ISO 8601 text (``2026-12-03T15:00:00Z``): pydantic would also
    take a number as seconds since 1970, which the API does not document."""
    if isinstance(value, str):
        try:
            datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise ValueError("an ISO 8601 date and time, e.g. 2026-12-03T15:00:00Z") from None
    return value


# A date and time in a query parameter: ISO 8601 only (no zone: UTC, where the route says).
IsoTime = Annotated[datetime, BeforeValidator(_iso_time)]


class Body(BaseModel):
    """A request body: whatever it is validated from (FastAPI's parse of a JSON body, a
    form's fields) may hold no string UTF-8 cannot encode, in any member, the members the
    model ignores included (``check_text``: ``NotText``, a 422)."""

    @model_validator(mode="before")
    @classmethod
    def _text(cls, data: Any) -> Any:
        check_text(data)
        return data


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


def dumps(content: Any) -> str:
    return to_bytes(content).decode()


def to_bytes(content: Any) -> bytes:
    return pydantic_core.to_json(content, inf_nan_mode="null", fallback=str)


class JSONBody(JSONResponse):
    """A JSON response that can always be encoded (see ``dumps``)."""

    def render(self, content: Any) -> bytes:
        return to_bytes(content)
