"""Approval policies from the settings (``SIGNOFF_POLICIES``): rules that decide, from a
call's agent, tool and arguments, whether it needs a person's confirmation.

A rule file is TOML (``.toml``) or JSON (``.json``) with a list of ``rules``; each rule
names the calls it applies to and what it decides::

    [[rules]]
    name = "big-deletes"                 # recorded on every call the rule decides
    description = "More than 100 records: a person confirms"
    agent = "data_manager"               # optional; a glob (fnmatch): "*", "data_*"
    tool = "delete_records"              # optional; a glob
    when = { count = { gt = 100 } }      # optional; every condition must hold
    decision = "require"                 # "require" (confirmation) or "allow"

A condition is ``ARGUMENT = VALUE`` (equal) or ``ARGUMENT = { OP = VALUE, ... }`` with
``OP`` one of ``eq``, ``ne``, ``lt``, ``lte``, ``gt``, ``gte``, ``in``, ``not_in``.
``lt``/``lte``/``gt``/``gte`` compare numbers with numbers or strings with strings.

The first rule (in file order) that matches a call decides it. A rule that cannot be
evaluated (an argument it names is missing, a comparison of a string with a number)
fails closed: the call needs a confirmation, and the record says which rule failed and
why. This module is pure apart from ``load`` (which reads the file).
"""

from __future__ import annotations

import fnmatch
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from domain.calls import PolicyOutcome
from domain.values import PolicyVerdict

Json = dict[str, Any]
OPS = ("eq", "ne", "lt", "lte", "gt", "gte", "in", "not_in")


class PolicyError(ValueError):
    """A rule file that cannot be read or is not a valid set of rules."""


def failed_closed(rule: str, err: BaseException) -> PolicyOutcome:
    """The outcome of a rule that failed: a person confirms (fail closed)."""
    return PolicyOutcome(rule, PolicyVerdict.REQUIRED,
                         f"the rule failed ({type(err).__name__}: {err}); a person confirms",
                         error=True)


class Condition(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    arg: str
    op: Literal["eq", "ne", "lt", "lte", "gt", "gte", "in", "not_in"]
    value: Any

    @field_validator("value")
    @classmethod
    def _list_for_in(cls, v: Any, info: Any) -> Any:
        if info.data.get("op") in ("in", "not_in") and not isinstance(v, list):
            raise ValueError("'in' and 'not_in' take a list")
        return v

    def holds(self, args: Json) -> bool:
        """Whether the condition holds; ``LookupError`` / ``TypeError`` when it cannot be
        evaluated (the caller fails closed)."""
        if self.arg not in args:
            raise LookupError(f"the call has no argument {self.arg!r}")
        actual = args[self.arg]
        if self.op == "eq":
            return bool(actual == self.value)
        if self.op == "ne":
            return bool(actual != self.value)
        if self.op == "in":
            return actual in self.value
        if self.op == "not_in":
            return actual not in self.value
        if not _comparable(actual, self.value):
            raise TypeError(f"{self.arg} is {type(actual).__name__} {actual!r}; "
                            f"{self.op} compares it with {self.value!r}")
        return bool({"lt": actual < self.value, "lte": actual <= self.value,
                     "gt": actual > self.value, "gte": actual >= self.value}[self.op])

    def describe(self) -> str:
        return f"{self.arg} {self.op} {self.value!r}"


def _comparable(a: Any, b: Any) -> bool:
    def number(x: Any) -> bool:
        return isinstance(x, int | float) and not isinstance(x, bool)

    return (number(a) and number(b)) or (isinstance(a, str) and isinstance(b, str))


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    description: str | None = None
    agent: str = "*"
    tool: str = "*"
    when: tuple[Condition, ...] = ()
    decision: Literal["require", "allow"]

    @field_validator("when", mode="before")
    @classmethod
    def _conditions(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            raise ValueError("must be a table of ARGUMENT = VALUE or ARGUMENT = {OP = VALUE}")
        out = []
        for arg, test in v.items():
            if isinstance(test, dict):
                if not test:
                    raise ValueError(f"{arg}: no operator")
                for op, value in test.items():
                    if op not in OPS:
                        raise ValueError(f"{arg}: unknown operator {op!r} (one of "
                                         f"{', '.join(OPS)})")
                    out.append({"arg": arg, "op": op, "value": value})
            else:
                out.append({"arg": arg, "op": "eq", "value": test})
        return out

    def matches(self, agent_id: str, tool_name: str) -> bool:
        return (fnmatch.fnmatchcase(agent_id, self.agent)
                and fnmatch.fnmatchcase(tool_name, self.tool))

    def reason(self) -> str:
        if self.description:
            return self.description
        when = " and ".join(c.describe() for c in self.when) or "always"
        return f"{self.decision} {self.tool} of {self.agent} when {when}"


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rules: list[Rule] = []


@dataclass(frozen=True)
class Policies:
    """The rules of the settings, in order; empty: no rule decides anything."""

    rules: tuple[Rule, ...] = ()

    @classmethod
    def from_data(cls, data: Any) -> Policies:
        try:
            parsed = _File.model_validate(data)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            raise PolicyError(f"{where}: {str(first['msg']).removeprefix('Value error, ')}"
                              ) from None
        names = [r.name for r in parsed.rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise PolicyError(f"two rules are named {dupes[0]!r}")
        return cls(tuple(parsed.rules))

    def decide(self, agent_id: str, tool_name: str, args: Json) -> PolicyOutcome | None:
        """The first matching rule's outcome; None when no rule matches."""
        for rule in self.rules:
            if not rule.matches(agent_id, tool_name):
                continue
            name = f"settings:{rule.name}"
            try:
                holds = all(c.holds(args) for c in rule.when)
            except Exception as e:  # fail closed: a person confirms
                return failed_closed(name, e)
            if holds:
                verdict = (PolicyVerdict.REQUIRED if rule.decision == "require"
                           else PolicyVerdict.ALLOWED)
                return PolicyOutcome(name, verdict, rule.reason())
        return None


def load(path: str) -> Policies:
    """The rules in ``path`` (TOML or JSON, by its suffix); empty path: no rules."""
    if not path:
        return Policies()
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise PolicyError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        data = json.loads(text) if p.suffix.lower() == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as e:
        raise PolicyError(f"{path} is not valid {'JSON' if p.suffix == '.json' else 'TOML'}"
                          f": {e}") from None
    return Policies.from_data(data)
