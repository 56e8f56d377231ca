"""The offline model: a deterministic, rule-based stand-in for a language model.

The service uses it when no OpenAI key is configured, so runs work with no network.
It is pure: the same ``messages`` and ``tools`` always give the same :class:`ModelTurn`
(no randomness, no clock, no I/O). It answers in this order:

a. **Tool results.** If the last assistant message after the last user message proposed
   tool calls and tool messages (``role: "tool"``) answer them, it answers with text only:
   ``"Done. " + "; ".join(results in call order)``. A rejected call's tool message holds
   the reviewer's note, so a rejection "not today" gives ``"Done. not today"``.
b. **Explicit syntax.** Each line of the last user message of the form
   ``call TOOL_NAME {json object}`` ("call" in any case; the object may be left out,
   meaning ``{}``) or ``TOOL_NAME(key=value, ...)`` (Python literal values; positional
   values fill the schema's properties in order) proposes exactly that call when
   TOOL_NAME is one of the tools. Several such lines give several calls, in order.
   Arguments are checked against the schema (known names, JSON types; missing ones are
   allowed): on a mismatch it proposes nothing and answers text
   ``"(offline model) Cannot propose: <reason>"``.
c. **Heuristics.** The candidate tools are those whose name's first ``_``-separated word
   (the verb: "delete" for ``delete_records``) is a word of the message (case-insensitive;
   words differing only by a trailing "s" match). The candidate with the most of its
   other name words in the message wins; ties go to the first in ``tools``. Its arguments
   are filled from its JSON schema, property by property in schema order:

   - integer / number: the next unused number of the message outside quotes and emails
     (a decimal is truncated for an integer);
   - string, first match wins: (1) the word right after the parameter's stem (the name
     without a ``_name``/``_id`` suffix; "table" for ``table_name``), skipping
     the/a/an/named/called, else the word right before it ("the users table" and
     "table users" both give "users"); stopwords (the, a, an, from, to, of, ...) and
     the tool's own name words never count; (2) for recipient-like names (recipient,
     to, user, email, ...): the next email address, else the word after "to" (skipping
     the/a/an); (3) the next unused quoted string (``"..."`` or ``'...'``); (4) the next
     unused email address;
   - boolean: ``True`` when the name (underscores read as spaces) is in the message;
   - anything else, or nothing found: left out, so the user-input flow or the reviewer
     can supply it.

   ``Delete 50 old records from the users table`` gives
   ``delete_records(table_name="users", count=50)``.
d. **No match.** With no tools it answers ``"(offline model) You said: <message>"``; with
   tools but none matching, ``"(offline model) No tool matches <repr(message)>. Mention
   one of <tool names> by its verb, or write: call TOOL_NAME {json}"``.

Tool call ids are ``"call_" + sha256(messages JSON | assistant count | index)[:24]``, so
a replay of the same conversation gives the same ids. Token counts are reported as 0.
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import re
from typing import Any

from agent.models.base import ModelTurn, ToolCallProposal, ToolSpec

_STOP = {"the", "a", "an", "from", "to", "of", "in", "on", "at", "for", "with", "and", "or",
         "by", "into", "as", "is", "be", "this", "that", "my", "all", "some", "please"}
_SKIP_AFTER = {"the", "a", "an", "named", "called"}
_RECIPIENT = {"recipient", "to", "user", "email", "username", "address", "recipients"}
_QUOTED = re.compile(r'"([^"]*)"|(?<!\w)\'(.*?)\'(?!\w)')
# The lookbehind starts a match only where a run of address characters starts: without
# it, a long run with no "@" is tried from each of its characters (quadratic).
_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_NUMBER = re.compile(r"(?<![\w.])-?\d{1,30}(?:\.\d{1,30})?(?!\w)")
_WORD = re.compile(r"[\w.@+'-]*\w")
_CALL = re.compile(r"^[ \t]*(?i:call)[ \t]+([A-Za-z_]\w*)[ \t]*", re.MULTILINE)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return "" if content is None else json.dumps(content, sort_keys=True, default=str)


def _same(a: str, b: str) -> bool:
    return a == b or a == b + "s" or b == a + "s"


class OfflineModel:
    """A deterministic model that needs no network; see the module docstring."""

    name = "offline"
    provider = "signoff"

    def respond(self, messages: list[dict[str, Any]], tools: list[ToolSpec]) -> ModelTurn:
        last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"),
                        default=-1)
        done = _tool_results(messages[last_user + 1:])
        if done is not None:
            return ModelTurn(content="Done. " + "; ".join(done))
        text = _text(messages[last_user].get("content")) if last_user >= 0 else ""
        by_name = {t.name: t for t in tools}
        calls = _explicit(text, by_name)
        problems = [p for n, a in calls if (p := _mismatch(by_name[n], a))]
        if problems:
            return ModelTurn(content="(offline model) Cannot propose: " + "; ".join(problems))
        calls = calls or _heuristic(text, tools)
        if not calls:
            if not tools:
                return ModelTurn(content=f"(offline model) You said: {text}")
            names = ", ".join(t.name for t in tools)
            return ModelTurn(content=f"(offline model) No tool matches {text!r}. Mention one "
                             f"of {names} by its verb, or write: call TOOL_NAME {{json}}")
        seed = json.dumps(messages, sort_keys=True, default=str)
        turns = sum(1 for m in messages if m.get("role") == "assistant")
        return ModelTurn(content=None, tool_calls=[
            ToolCallProposal(id="call_" + hashlib.sha256(
                f"{seed}|{turns}|{i}".encode()).hexdigest()[:24], name=n, args=a)
            for i, (n, a) in enumerate(calls)])


def _tool_results(tail: list[dict[str, Any]]) -> list[str] | None:
    """Contents of the tool results answering the last assistant's calls, in call order."""
    idx = max((i for i, m in enumerate(tail) if m.get("role") == "assistant"), default=None)
    if idx is None or not tail[idx].get("tool_calls"):
        return None
    results = {m.get("tool_call_id"): _text(m.get("content"))
               for m in tail[idx + 1:] if m.get("role") == "tool"}
    ids = [c.get("id") for c in tail[idx]["tool_calls"]]
    found = [results[i] for i in ids if i in results]
    return found or None


def _explicit(text: str, tools: dict[str, ToolSpec]) -> list[tuple[str, dict[str, Any]]]:
    calls: list[tuple[int, str, dict[str, Any]]] = []
    for m in _CALL.finditer(text):
        name, rest = m.group(1), text[m.end():]
        if name not in tools:
            continue
        args: Any = {}
        if rest.startswith("{"):
            try:
                args, end = json.JSONDecoder().raw_decode(rest)
            except ValueError:
                continue
            rest = rest[end:]
        if isinstance(args, dict) and not rest.split("\n", 1)[0].strip():
            calls.append((m.start(), name, args))
    for line in re.finditer(r"^.*$", text, re.MULTILINE):
        parsed = _py_call(line.group().strip(), tools)
        if parsed:
            calls.append((line.start(), *parsed))
    return [(n, a) for _, n, a in sorted(calls, key=lambda c: c[0])]


def _mismatch(spec: ToolSpec, args: dict[str, Any]) -> str | None:
    problems = spec.problems(args)
    return problems[0] if problems else None


def _py_call(line: str, tools: dict[str, ToolSpec]) -> tuple[str, dict[str, Any]] | None:
    m = re.match(r"([A-Za-z_]\w*)\s*\(", line)
    if not m or m.group(1) not in tools or not line.endswith(")"):
        return None
    try:
        node = ast.parse(line, mode="eval").body
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
            return None
        props = list(tools[node.func.id].parameters.get("properties", {}))
        if len(node.args) > len(props) or any(k.arg is None for k in node.keywords):
            return None
        args = {props[i]: ast.literal_eval(a) for i, a in enumerate(node.args)}
        args.update({str(k.arg): ast.literal_eval(k.value) for k in node.keywords})
    except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
        return None
    return node.func.id, args


def _heuristic(text: str, tools: list[ToolSpec]) -> list[tuple[str, dict[str, Any]]]:
    quoted = [m.group(2) if m.group(1) is None else m.group(1) for m in _QUOTED.finditer(text)]
    rest = _QUOTED.sub(" ", text)
    emails = _EMAIL.findall(rest)
    plain = _EMAIL.sub(" ", rest)
    words = _WORD.findall(rest)
    lower = [w.lower() for w in words]
    spec = _best_tool(tools, lower)
    if spec is None:
        return []
    numbers = _NUMBER.findall(plain)
    args: dict[str, Any] = {}
    for pname, prop in spec.parameters.get("properties", {}).items():
        kind = prop.get("type") if isinstance(prop, dict) else None
        value: Any = None
        if kind in ("integer", "number") and numbers:
            value = _number(numbers.pop(0), kind)
        elif kind == "string":
            value = _string_arg(pname, words, quoted, emails, set(spec.name.lower().split("_")))
        elif kind == "boolean" and f" {pname.lower().replace('_', ' ')} " in f" {' '.join(lower)} ":
            value = True
        if value is not None:
            args[pname] = value
    return [(spec.name, args)]


def _best_tool(tools: list[ToolSpec], lower: list[str]) -> ToolSpec | None:
    """The tool whose name's verb is in the message, and most of its other words."""
    best: tuple[int, ToolSpec] | None = None
    for t in tools:
        verb, *others = t.name.lower().split("_")
        if verb and any(_same(verb, w) for w in lower):
            score = sum(any(_same(o, w) for w in lower) for o in others if o)
            if best is None or score > best[0]:
                best = (score, t)
    return best[1] if best else None


def _number(raw: str, kind: str) -> int | float | None:
    value: int | float = int(raw.split(".")[0]) if kind == "integer" else float(raw)
    return value if not isinstance(value, float) or math.isfinite(value) else None


def _string_arg(pname: str, words: list[str], quoted: list[str], emails: list[str],
                exclude: set[str]) -> str | None:
    lower = [w.lower() for w in words]

    def usable(j: int, skip: bool) -> str | None:
        while skip and j < len(words) and lower[j] in _SKIP_AFTER:
            j += 1
        ok = 0 <= j < len(words) and lower[j] not in _STOP and lower[j] not in exclude
        return words[j] if ok else None

    stem = re.sub(r"_(name|id)$", "", pname.lower())
    for i in (i for i, w in enumerate(lower) if _same(w, stem)):
        if found := usable(i + 1, True) or usable(i - 1, False):
            return found
    if stem in _RECIPIENT or pname.lower() in _RECIPIENT:
        if emails:
            return emails.pop(0)
        for i in (i for i, w in enumerate(lower) if w == "to"):
            if found := usable(i + 1, True):
                return found
    for pool in (quoted, emails):
        if pool:
            return pool.pop(0)
    return None
