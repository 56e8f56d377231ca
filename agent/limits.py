"""How large what a run records may be: what is refused, and what is cut."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from domain.values import Decision


class TooLarge(Exception):
    """A message or a decision is larger than the limits allow (nothing was recorded)."""


# The key of the arguments that stand for a model's proposal too large to record.
CUT = "_cut"


@dataclass(frozen=True)
class Limits:
    """How large what a run records may be (``SIGNOFF_MAX_MESSAGE_CHARS``,
    ``SIGNOFF_MAX_ARGS_BYTES``); None: unbounded.

    A user's message and a decision's arguments, input or result over them are refused
    (``TooLarge``). What comes from elsewhere cannot be refused, so it is cut, and the
    cut value is what is recorded (a replay sees it, and never the original): tool
    arguments a model proposes become ``{"_cut": {"bytes": N, "head": "..."}}`` (the
    call is never run with them; a reviewer may confirm it with arguments of their own),
    a tool's result or error keeps its first bytes and ends with ``[cut: N bytes ...]``.
    """

    message_chars: int | None = None
    args_bytes: int | None = None

    def check_message(self, message: str) -> None:
        if self.message_chars is not None and len(message) > self.message_chars:
            raise TooLarge(f"the message has {len(message)} characters; at most "
                           f"{self.message_chars} are accepted")

    def check_decision(self, d: Decision) -> None:
        if self.args_bytes is None:
            return
        for what, value in (("tool_args", d.approved_args), ("user input", d.values),
                            ("result", d.result)):
            if value is not None and (size := json_size(value)) > self.args_bytes:
                raise TooLarge(f"{what} of {d.tool_call_id!r}: {size} bytes as JSON; at most "
                               f"{self.args_bytes} are accepted")

    def cut_args(self, args: dict[str, Any]) -> dict[str, Any]:
        if self.args_bytes is None or (size := json_size(args)) <= self.args_bytes:
            return args
        text = _compact(args)
        head = text[:self.args_bytes]
        while head:
            marked = {CUT: {"bytes": size, "head": head}}
            over = json_size(marked) - self.args_bytes
            if over <= 0:
                return marked
            head = head[:len(head) - max(over, 1)]
        return {CUT: {"bytes": size, "head": ""}}

    def cut_text(self, text: str) -> str:
        data = text.encode()
        if self.args_bytes is None or len(data) <= self.args_bytes:
            return text
        note = f" [cut: {len(data)} bytes, over the limit of {self.args_bytes}]"
        keep = max(0, self.args_bytes - len(note.encode()))
        return data[:keep].decode(errors="ignore") + note


def json_size(value: Any) -> int:
    """Bytes of ``value`` as compact JSON (UTF-8); a string counts as its own bytes."""
    return len((value if isinstance(value, str) else _compact(value)).encode())


def _compact(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    except (TypeError, ValueError, RecursionError):
        return str(value)
