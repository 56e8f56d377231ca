"""The ``@tool`` decorator and the ``Agent`` definition, in Agno's spellings.

A tool is a plain Python function. The decorator records what a call of it needs before
it may run: a person's confirmation, an external system's result, or user input.
"""

from __future__ import annotations

import concurrent.futures
import functools
import inspect
import json
import logging
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, overload

from agent.limits import CUT
from agent.models.base import ModelClient, ToolSpec
from domain.calls import PolicyOutcome, ToolCall
from domain.values import PolicyVerdict
from service.policies import Policies, failed_closed

log = logging.getLogger("signoff.loop")

_JSON_TYPES: dict[Any, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    dict: "object",
    list: "array",
}


def _json_type(annotation: Any) -> str:
    origin = typing.get_origin(annotation) or annotation
    return _JSON_TYPES.get(origin, "string")


def _arg_docs(doc: str) -> dict[str, str]:
    """Parameter descriptions from a Google-style ``Args:`` section."""
    docs: dict[str, str] = {}
    in_args = False
    for line in doc.splitlines():
        stripped = line.strip()
        if stripped in ("Args:", "Arguments:", "Parameters:"):
            in_args = True
            continue
        if in_args:
            if not stripped:
                continue
            if stripped.endswith(":") and " " not in stripped:
                in_args = False
                continue
            m = re.match(r"(\w+)(?:\s*\([^)]*\))?:\s*(.*)", stripped)
            if m:
                docs[m.group(1)] = m.group(2)
    return docs


@dataclass
class Tool:
    """A function the agent may call, and what a call of it needs first."""

    fn: Callable[..., Any]
    name: str
    description: str
    parameters: dict[str, Any]
    # A bool, or a function of the call's arguments (a dict) that says whether this
    # call needs a confirmation (see ``requirement_for``).
    requires_confirmation: bool | Callable[[dict[str, Any]], bool] = False
    confirmation_message: str | None = None
    external_execution: bool = False
    requires_user_input: bool = False
    user_input_fields: list[str] = field(default_factory=list)
    stop_after_tool_call: bool = False
    idempotent: bool = False
    editable_args: bool = True
    # How long a decision on a call may wait (seconds or a timedelta; None: for ever),
    # and what happens then: "reject", "escalate" (to the reviewers of ``escalate_to``)
    # or "approve" (only for a tool marked ``safe``).
    decision_timeout: float | timedelta | None = None
    on_timeout: str = "reject"
    escalate_to: str | None = None
    safe: bool = False

    def __post_init__(self) -> None:
        """Definition errors: a timeout that cannot happen, an action that cannot be."""
        where = f"tool {self.name!r}"
        if isinstance(self.decision_timeout, int | float):
            if isinstance(self.decision_timeout, bool) or self.decision_timeout <= 0:
                raise ValueError(f"{where}: decision_timeout must be a positive number of "
                                 "seconds or a timedelta")
            self.decision_timeout = timedelta(seconds=self.decision_timeout)
        elif self.decision_timeout is not None and (
                not isinstance(self.decision_timeout, timedelta)
                or self.decision_timeout <= timedelta(0)):
            raise ValueError(f"{where}: decision_timeout must be a positive number of "
                             "seconds or a timedelta")
        if self.on_timeout not in ("reject", "escalate", "approve"):
            raise ValueError(f"{where}: on_timeout must be 'reject', 'escalate' or "
                             f"'approve', not {self.on_timeout!r}")
        if self.decision_timeout is None and (self.on_timeout != "reject"
                                              or self.escalate_to is not None):
            raise ValueError(f"{where}: on_timeout and escalate_to need a decision_timeout")
        if (self.on_timeout == "escalate") != (self.escalate_to is not None):
            raise ValueError(f"{where}: on_timeout='escalate' names the group it goes to "
                             "(escalate_to=...), and escalate_to is only for it")
        if self.on_timeout == "approve":
            if not self.safe:
                raise ValueError(f"{where}: on_timeout='approve' is only for a tool marked "
                                 "safe=True (a call nobody confirmed would run)")
            if self.external_execution or self.requires_user_input:
                raise ValueError(f"{where}: a call that waits for a result or input "
                                 "cannot be approved when it expires")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    @property
    def requirement(self) -> str | None:
        """The kind of decision a call of this tool waits for, or None."""
        if self.external_execution:
            return "external_execution"
        if self.requires_user_input:
            return "user_input"
        if self.requires_confirmation:
            return "confirmation"  # a function of the arguments may ask for one too
        return None

    @property
    def confirms_by_policy(self) -> bool:
        """Whether ``requires_confirmation`` is a function of the arguments."""
        return callable(self.requires_confirmation)

    def spec(self) -> ToolSpec:
        return ToolSpec(self.name, self.description, self.parameters)

    def user_input_schema(self) -> list[dict[str, Any]]:
        """Agno's ``user_input_schema``: the fields a person fills in before the call runs."""
        props = self.parameters.get("properties", {})
        names = self.user_input_fields or list(props)
        return [
            {
                "name": n,
                "field_type": _field_type(props.get(n, {}).get("type", "string")),
                "description": props.get(n, {}).get("description"),
                "value": None,
            }
            for n in names
        ]


def _field_type(json_type: str) -> str:
    return {"string": "str", "integer": "int", "number": "float", "boolean": "bool",
            "object": "dict", "array": "list"}.get(json_type, "str")


def _parameters(fn: Callable[..., Any]) -> dict[str, Any]:
    sig = inspect.signature(fn)
    hints = typing.get_type_hints(fn)
    docs = _arg_docs(inspect.getdoc(fn) or "")
    properties: dict[str, Any] = {}
    required: list[str] = []
    for pname, param in sig.parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        prop: dict[str, Any] = {"type": _json_type(hints.get(pname, str))}
        if pname in docs:
            prop["description"] = docs[pname]
        properties[pname] = prop
        if param.default is param.empty:
            required.append(pname)
    return {"type": "object", "properties": properties, "required": required}


@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...
@overload
def tool(
    fn: None = None, /, **options: Any
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Make a function a tool. Options (Agno's names; the seed's aliases in brackets):

    - ``requires_confirmation`` [``stop_before_execution``]: a person confirms or rejects
      each call before it runs; ``confirmation_message`` [``execution_message``] is shown.
      Either a bool or a function of the call's arguments (a dict): ``lambda args:
      args["count"] > 100`` asks for a confirmation only when it returns true; a call
      it lets through is recorded with it (the policy ``tool:NAME``).
    - ``external_execution``: signoff never runs the function; an external system
      supplies the result.
    - ``requires_user_input`` with ``user_input_fields``: a person fills in those
      arguments before the call runs.
    - ``stop_after_tool_call``: the run completes with the tool's result.
    - ``idempotent``: safe to run again when a crash left its outcome unknown.
    - ``editable_args``: whether a reviewer may change the arguments when confirming.
    - ``decision_timeout`` (seconds or a ``timedelta``): how long a decision on a call may
      wait; then ``on_timeout`` happens: ``"reject"`` (the default), ``"escalate"`` (the
      call waits for the reviewers of the group ``escalate_to``, for one more
      ``decision_timeout``, then is rejected) or ``"approve"`` (only with ``safe=True``).
    - ``name``, ``description``: override the function's name and docstring.
    """
    aliases = {"stop_before_execution": "requires_confirmation",
               "execution_message": "confirmation_message"}
    opts = {aliases.get(k, k): v for k, v in options.items()}
    allowed = {f for f in Tool.__dataclass_fields__ if f not in ("fn", "parameters")}
    unknown = set(opts) - allowed
    if unknown:
        raise TypeError(f"unknown tool option(s): {', '.join(sorted(unknown))}")

    def wrap(f: Callable[..., Any]) -> Tool:
        doc = inspect.getdoc(f) or ""
        description = opts.pop("description", None) or doc.split("\n\n")[0].strip()
        name = opts.pop("name", None) or f.__name__
        return Tool(fn=f, name=name, description=description, parameters=_parameters(f), **opts)

    return wrap(fn) if fn is not None else wrap


def requirement_for(
    tool: Tool | None, agent_id: str, args: dict[str, Any], policies: Policies | None = None,
) -> tuple[str | None, PolicyOutcome | None]:
    """What a call of ``tool`` with ``args`` waits for, and the policy that decided it
    (None when no policy did: the tool's own bool, or a tool that needs a result or
    input, which no policy can waive).

    Precedence: an external result or user input is always waited for; else the first
    rule of the settings (``SIGNOFF_POLICIES``) that matches the call decides; else the
    tool's ``requires_confirmation``: a function of the arguments decides, a bool is
    the answer. A rule or a function that raises fails closed: the call needs a
    confirmation, recorded with the error. So are arguments cut for their size (no
    policy can judge them).
    """
    if tool is None:
        return None, None
    static = tool.requirement
    if static in ("external_execution", "user_input"):
        return static, None
    rule = policies.decide(agent_id, tool.name, args) if policies and policies.rules else None
    if rule is None and tool.confirms_by_policy:
        name = f"tool:{tool.name}"
        fn = tool.requires_confirmation
        doc = (inspect.getdoc(fn) or "").split("\n\n")[0].strip() or None
        try:
            if "_cut" in args:
                raise ValueError("the arguments were cut for their size")
            needed = bool(fn(dict(args)))  # type: ignore[operator]
        except Exception as e:
            rule = failed_closed(name, e)
        else:
            verdict = PolicyVerdict.REQUIRED if needed else PolicyVerdict.ALLOWED
            rule = PolicyOutcome(name, verdict, doc or f"requires_confirmation(args) of "
                                 f"{tool.name} returned {needed}")
    elif rule is not None and "_cut" in args and not rule.required:
        rule = failed_closed(rule.rule, ValueError("the arguments were cut for their size"))
    if rule is None:
        return static, None
    return ("confirmation" if rule.required else None), rule


@dataclass
class Agent:
    """An agent: a model, instructions and tools, served under ``id``.

    ``confirm_before_run`` pauses every run before the model is asked anything, until a
    person confirms it (``confirmation_message`` is shown); a rejection cancels the run.
    ``model`` is None to use the service's configured default model.
    """

    id: str
    name: str
    tools: list[Tool] = field(default_factory=list)
    instructions: list[str] = field(default_factory=list)
    model: ModelClient | None = None
    description: str | None = None
    confirm_before_run: bool = False
    confirmation_message: str | None = None

    def __post_init__(self) -> None:
        self.tools = [t if isinstance(t, Tool) else tool(t) for t in self.tools]
        names = [t.name for t in self.tools]
        if len(set(names)) != len(names):
            raise ValueError(f"agent {self.id!r} has two tools with one name")

    def get_tool(self, name: str) -> Tool | None:
        return next((t for t in self.tools if t.name == name), None)

    def system_prompt(self) -> str:
        return "\n".join(self.instructions)


# ------------------------------------------------------------------ running a call

@dataclass(frozen=True)
class Unfinished:
    """A tool still running at its timeout: its outcome is unknown."""

    error: TimeoutError


def run_tool(pool: concurrent.futures.Executor, tool: Tool | None, call: ToolCall,
             timeout: float) -> str | BaseException | Unfinished:
    """What an approved call's function returned (as text), or what went wrong: the
    tool's own exception, a call that could not be run (no such tool, an external one,
    arguments cut), a ``TimeoutError`` for a call still queued at ``timeout`` (it is
    cancelled: it never runs), ``Unfinished`` for one still running (its thread cannot
    be stopped)."""
    if tool is None:
        return LookupError(f"the agent has no tool {call.tool_name!r}")
    if tool.external_execution:
        return RuntimeError("an external tool cannot be run by signoff")
    args = call.args
    if CUT in args:
        return ValueError("the arguments the model proposed were cut (over the size "
                          "limit): the tool was not run")
    future = pool.submit(tool.fn, **args)
    try:
        result = future.result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        if future.cancel():  # still queued behind other tools: it never runs
            return TimeoutError(f"the tool did not start within {timeout:g} s; "
                                "it was not run")
        future.add_done_callback(functools.partial(_finished_late, call))
        return Unfinished(TimeoutError(f"the tool did not finish within {timeout:g} s"))
    except Exception as e:  # the tool's own failure is recorded, not raised
        return e
    return result if isinstance(result, str) else _to_text(result)


def _finished_late(call: ToolCall, future: concurrent.futures.Future[Any]) -> None:
    log.warning("call %s (%s) finished after its timeout; its outcome is not recorded "
                "(the call is in doubt, or failed)", call.tool_call_id, call.tool_name)


def _to_text(value: Any) -> str:
    try:
        return json.dumps(value, default=str)
    except (TypeError, ValueError):
        return str(value)
