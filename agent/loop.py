"""The agent loop: asks the model, records its answer, pauses for people, runs tools.

Everything the loop learns from the outside world (the model's answers, tool results,
decisions) is recorded as an event on the run, so a replay never calls anything again.

Durability: the events are saved in as few transactions as the rules allow: one when a
run pauses, completes or fails, and one just before any tool's function is called, so
that a decision and the fact that the tool started are committed before its side
effect can happen. If the process dies while a tool runs, the call stays ``running``
until its deadline passes; after that the next touch of the run (``recover``) marks it
in doubt and pauses for a person, or, for an idempotent tool, runs it again.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import importlib
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

from eventsourcing.persistence import IntegrityError

from agent.models.base import ModelClient, ModelError, ModelTurn, ToolSpec
from agent.tools import Agent, Tool, requirement_for
from domain.errors import InvalidDecision, ToolCallNotPending
from domain.run import Run
from domain.values import (
    RUN_CONFIRMATION_TOOL,
    CallState,
    DecisionKind,
    Requirement,
    RunStatus,
    TimeoutAction,
)
from service.policies import Policies
from service.runs import RunService

log = logging.getLogger("signoff.loop")

# Called after each save with the run as it now is and the events just committed.
Observer = Callable[[Run, list[Any]], None]


class AgentNotFound(Exception):
    """No served agent has this id."""


class RunBusy(Exception):
    """Another request changed the run at the same moment; the caller may retry."""


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


@dataclass(frozen=True)
class Decision:
    """One decision on one tool call, as a reviewer or client submits it."""

    tool_call_id: str
    kind: DecisionKind
    note: str | None = None  # confirmation note, or rejection reason
    approved_args: dict[str, Any] | None = None
    result: str | None = None
    values: dict[str, Any] | None = None


def load_agents(modules: Iterable[str]) -> dict[str, Agent]:
    """Every module-level ``Agent`` in the given modules, by id."""
    agents: dict[str, Agent] = {}
    for name in modules:
        module = importlib.import_module(name.strip())
        for value in vars(module).values():
            if isinstance(value, Agent):
                if value.id in agents and agents[value.id] is not value:
                    raise ValueError(f"two agents have the id {value.id!r}")
                agents[value.id] = value
    if not agents:
        raise ValueError(f"no Agent objects found in {', '.join(modules)}")
    return agents


def _now() -> datetime:
    return datetime.now(UTC)


class AgentLoop:
    def __init__(
        self,
        app: RunService,
        agents: dict[str, Agent],
        default_model: ModelClient,
        *,
        tool_timeout: float = 300.0,
        model_timeout: float | None = None,
        max_model_turns: int = 10,
        limits: Limits | None = None,
        clock: Callable[[], datetime] = _now,
        policies: Policies | None = None,
    ) -> None:
        """``model_timeout``: seconds a model call may take in all (retries included);
        None: the model's own ``timeout`` attribute, if it has one. ``policies``: the
        rules of the settings (``SIGNOFF_POLICIES``) that decide which calls need a
        confirmation, before the tools' own ``requires_confirmation``."""
        self.app = app
        self.agents = agents
        self.default_model = default_model
        self.tool_timeout = tool_timeout
        self.model_timeout = model_timeout
        self.max_model_turns = max_model_turns
        self.limits = limits or Limits()
        self.clock = clock
        self.policies = policies or Policies()
        self._pool = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="signoff-tool")
        self._models = concurrent.futures.ThreadPoolExecutor(
            max_workers=32, thread_name_prefix="signoff-model")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._models.shutdown(wait=False, cancel_futures=True)

    def agent(self, agent_id: str) -> Agent:
        try:
            return self.agents[agent_id]
        except KeyError:
            raise AgentNotFound(f"no agent {agent_id!r}") from None

    def model_for(self, agent: Agent) -> ModelClient:
        return agent.model or self.default_model

    # ------------------------------------------------------------ use cases

    def start(
        self,
        agent_id: str,
        message: str,
        *,
        user_id: str | None = None,
        session_id: str | None = None,
        observer: Observer | None = None,
    ) -> Run:
        """Start a run and drive it until it pauses or ends."""
        agent = self.agent(agent_id)
        self.limits.check_message(message)
        run = Run.start(
            agent_id=agent.id,
            agent_name=agent.name,
            user_id=user_id,
            session_id=session_id or str(uuid4()),  # as Agno: a run without one gets its own
            input=message,
            instructions=agent.system_prompt(),
        )
        if agent.confirm_before_run:
            run.request_tool_call(
                tool_call_id=f"confirm_{run.id.hex}",
                tool_name=RUN_CONFIRMATION_TOOL,
                tool_args={"message": message},
                requires=Requirement.CONFIRMATION,
                confirmation_message=agent.confirmation_message or "Run this agent?",
                editable_args=False,
            )
            run.pause()
        return self._drive(run, agent, observer)

    def decide(
        self,
        run_id: str,
        decisions: list[Decision],
        *,
        actor: str,
        request_key: str | None = None,
        observer: Observer | None = None,
        run: Run | None = None,
        drive: bool = False,
    ) -> Run:
        """Record decisions and commit them; continue the run when none is left pending.

        ``run``: the run as the caller has just loaded (and recovered) it, to save a
        second read; a change by someone else since is still caught when it is saved.

        Returns the run after the commit, not yet driven on (see ``drive``), or with
        ``drive`` driven on until it pauses or ends: then the decisions are committed
        with the run's next durable point (the start of the first tool it runs, or its
        end), one transaction fewer. If another request decides the same call at the
        same moment, exactly one wins; the loser gets ``ToolCallNotPending`` carrying
        the decision that stands.
        """
        if run is None:
            run = self.recover(run_id, observer=observer)
        agent = self.agent(run.agent_id)
        if request_key:
            self._refuse_a_repeat_on_doubt(run, decisions, request_key)
        for d in decisions:
            self.limits.check_decision(d)
            self._check_args(run, agent, d)
            self._apply_decision(run, d, actor, request_key)
        if not run.pending_calls() and run.status == RunStatus.PAUSED:
            run.continue_run()
        committed: list[bool] = []

        def note(saved: Run, events: list[Any]) -> None:
            committed.append(True)
            if observer is not None:
                observer(saved, events)

        try:
            if drive and run.status == RunStatus.RUNNING:
                # No side effect happens before the first save: a conflict there is one
                # on the decisions; after it, the decisions stand (as in ``drive``).
                return self._drive(run, agent, note)
            self._save(run, note)
        except IntegrityError:
            if committed:
                log.warning("run %s changed while being driven; its newer state stands",
                            run.id)
                return self.app.get_run(run.id)
            # Someone else saved this run first: reload and check the rules again.
            fresh = self.app.get_run(run.id)
            for d in decisions:
                call = fresh.calls.get(d.tool_call_id)
                if call is not None and call["state"] not in (CallState.PENDING,
                                                              CallState.IN_DOUBT):
                    raise ToolCallNotPending(
                        f"call {d.tool_call_id!r} was decided by another request",
                        decision=call["decision"]) from None
            raise RunBusy("the run changed while deciding; try again") from None
        return run

    def drive(self, run: Run, observer: Observer | None = None) -> Run:
        """Drive a RUNNING run on until it pauses or ends (no-op otherwise)."""
        if run.status != RunStatus.RUNNING:
            return run
        try:
            return self._drive(run, self.agent(run.agent_id), observer)
        except IntegrityError:
            # Another process changed the run (a cancel, a recovery): what it saved stands.
            log.warning("run %s changed while being driven; its newer state stands", run.id)
            return self.app.get_run(run.id)

    def cancel(self, run_id: str, *, actor: str, reason: str | None = None,
               observer: Observer | None = None) -> Run:
        run = self.app.get_run(run_id)
        run.cancel(cancelled_by=actor, reason=reason)
        try:
            self._save(run, observer)
        except IntegrityError:
            raise RunBusy("the run changed while cancelling; try again") from None
        return run

    def expire(self, run_id: str, observer: Observer | None = None,
               run: Run | None = None) -> Run:
        """Record ``DecisionExpired`` for every call of a paused run whose decision is
        past its deadline (by the loop's clock), then go on as after decisions: a run
        with nothing left to wait for continues and is driven on. A no-op for a run
        with nothing due.

        ``run``: as the caller loaded it. If a reviewer decides (or another sweeper
        expires) the call at the same moment, exactly one save wins (eventsourcing's
        optimistic concurrency): the loser's ``IntegrityError`` is answered by the run
        as the winner left it, and nothing of the loser's is recorded.
        """
        run = run or self.app.get_run(run_id)
        if run.status != RunStatus.PAUSED:
            return run
        now = self.clock()
        due = [c for c in run.calls_in(CallState.PENDING)
               if c.get("expires_at") is not None and c["expires_at"] <= now]
        if not due:
            return run
        agent = self.agents.get(run.agent_id)
        for call in due:
            next_deadline = None
            if call.get("on_timeout") == TimeoutAction.ESCALATE:
                # One more decision_timeout; if the tool is no longer served, as long
                # as the first deadline gave.
                tool = agent.get_tool(call["tool_name"]) if agent else None
                window = (tool.decision_timeout if tool and tool.decision_timeout
                          else max(call["expires_at"] - call["requested_at"],
                                   timedelta(seconds=1)))
                assert isinstance(window, timedelta)
                next_deadline = now + window
            run.expire_decision(call["tool_call_id"], now=now, next_deadline=next_deadline)
            log.info("decision on call %s of %s expired (%s)", call["tool_call_id"],
                     call["tool_name"], call.get("on_timeout"))
        if not run.pending_calls():
            run.continue_run()
        try:
            self._save(run, observer)
        except IntegrityError:
            # Someone decided (or expired) first: what they saved stands.
            return self.app.get_run(run_id)
        return self.drive(run, observer)

    def recover(self, run_id: str, observer: Observer | None = None) -> Run:
        """Settle a run a crashed process left behind (no-op for a healthy one).

        A call whose deadline passed with no recorded outcome is in doubt: a person
        decides (it may have had its effect), unless its tool is idempotent, when it is
        run again. A run left ``RUNNING`` with nothing in flight is driven on.
        """
        run = self.app.get_run(run_id)
        if run.status != RunStatus.RUNNING:
            return run
        now = self.clock()
        stale = run.modified_on + timedelta(seconds=self.tool_timeout) < now
        agent = self.agent(run.agent_id)
        running = run.calls_in(CallState.RUNNING)
        expired = [c for c in running if c["deadline"] < now]
        if not (expired or (stale and not running)):
            return run
        for call in expired:
            if not _idempotent(agent, call):
                run.mark_in_doubt(call["tool_call_id"])
        if run.pending_calls():
            run.pause()
            try:
                self._save(run, observer)
            except IntegrityError:
                return self.app.get_run(run_id)
            return run
        try:
            return self._drive(run, agent, observer)
        except IntegrityError:
            return self.app.get_run(run_id)

    # -------------------------------------------------------------- driving

    def _refuse_a_repeat_on_doubt(self, run: Run, decisions: list[Decision],
                                  key: str) -> None:
        """A request sent again with the same ``Idempotency-Key`` (its first answer was
        lost: a 503, a dropped connection) after its decision was recorded and the call
        then put in doubt (the tool started; the process or the store went away before
        its outcome was recorded) must not decide the call a second time: whether to run
        it again is a new question, for a new decision. ``ToolCallNotPending`` (409)
        with the decision the key made."""
        in_doubt = {d.tool_call_id for d in decisions
                    if (run.calls.get(d.tool_call_id) or {}).get("state") == CallState.IN_DOUBT}
        if not in_doubt:
            return
        for e in self.app.run_events(run.id):
            call_id = getattr(e, "tool_call_id", None)
            if call_id in in_doubt and getattr(e, "request_key", None) == key:
                before = self.app.get_run(run.id, version=e.originator_version)
                raise ToolCallNotPending(
                    f"call {call_id!r} was decided by an earlier request with this "
                    "Idempotency-Key, and is in doubt since (its tool started; its outcome "
                    "was never recorded): decide it again, with a new key",
                    decision=before.calls[call_id]["decision"])

    @staticmethod
    def _check_args(run: Run, agent: Agent, d: Decision) -> None:
        """Edited arguments and user input must fit the tool's parameters (422 if not)."""
        call = run.calls.get(d.tool_call_id)
        tool = agent.get_tool(call["tool_name"]) if call else None
        if tool is None:
            return
        if d.kind == DecisionKind.CONFIRMED and d.approved_args is not None \
                and CUT in d.approved_args:
            raise InvalidDecision(f"the arguments the model proposed for {d.tool_call_id!r} "
                                  "were cut (too large): confirm it with arguments of your "
                                  "own in tool_args, or reject it")
        if d.kind == DecisionKind.CONFIRMED and d.approved_args is not None:
            problems = tool.spec().problems(d.approved_args, complete=True)
        elif d.kind == DecisionKind.USER_INPUT and d.values:
            problems = tool.spec().problems(d.values)
        else:
            return
        if problems:
            raise InvalidDecision("; ".join(problems))

    @staticmethod
    def _apply_decision(run: Run, d: Decision, actor: str, key: str | None) -> None:
        if d.kind == DecisionKind.CONFIRMED:
            run.confirm_tool(d.tool_call_id, decided_by=actor, note=d.note,
                             approved_args=d.approved_args, request_key=key)
        elif d.kind == DecisionKind.REJECTED:
            run.reject_tool(d.tool_call_id, decided_by=actor, reason=d.note, request_key=key)
        elif d.kind == DecisionKind.EXTERNAL_RESULT:
            run.provide_external_result(d.tool_call_id, decided_by=actor, result=d.result or "",
                                        request_key=key)
        else:
            run.provide_user_input(d.tool_call_id, decided_by=actor, values=d.values or {},
                                   request_key=key)

    def _save(self, run: Run, observer: Observer | None) -> None:
        pending = list(run.pending_events)
        if not pending:
            return
        self.app.save(run)
        if observer is not None:
            observer(run, pending)

    def _drive(self, run: Run, agent: Agent, observer: Observer | None) -> Run:
        """Drive a RUNNING run until it pauses or ends; save at the durable points."""
        turns = 0
        while run.status == RunStatus.RUNNING:
            confirmation = next((c for c in run.calls.values()
                                 if c["tool_name"] == RUN_CONFIRMATION_TOOL
                                 and c["state"] == CallState.REJECTED), None)
            if confirmation is not None:
                d = confirmation["decision"] or {}
                run.cancel(cancelled_by=d.get("decided_by", "system"), reason=d.get("reason"))
                break
            # Approved calls run in the order they were requested. Idempotent calls a
            # crashed process left running past their deadline run again, in their place
            # (recover() marks the other expired calls in doubt, so none of them is here).
            now = self.clock()
            to_run = [c for c in run.calls.values()
                      if c["state"] == CallState.APPROVED
                      or (c["state"] == CallState.RUNNING and c["deadline"] < now
                          and _idempotent(agent, c))]
            if to_run:
                done = self._run_tools(run, agent, to_run, observer)
                if done:
                    break
                continue
            if turns >= self.max_model_turns:
                run.fail(f"stopped after {turns} model turns in one request")
                break
            turns += 1
            self._model_turn(run, agent)
            if run.pending_calls():
                run.pause()
        self._save(run, observer)
        return run

    def _model_turn(self, run: Run, agent: Agent) -> None:
        model = self.model_for(agent)
        try:
            turn = self._ask(model, run.model_messages(), [t.spec() for t in agent.tools])
        except ModelError as e:
            run.fail(f"model error: {e}")
            return
        # What the model proposed, as recorded: arguments over the limit are cut.
        proposals = [(c.id, c.name, self.limits.cut_args(c.args)) for c in turn.tool_calls]
        run.record_model_response(
            model=model.name, provider=model.provider, content=turn.content,
            tool_calls=[{"id": i, "name": n, "args": a} for i, n, a in proposals],
            input_tokens=turn.input_tokens, output_tokens=turn.output_tokens)
        if not proposals:
            run.complete(turn.content)
            return
        for call_id, name, args in proposals:
            tool = agent.get_tool(name)
            # Decided now, when the call is requested, and recorded with it: a replay
            # (or a change of the rules since) never decides it again.
            requirement, policy = requirement_for(tool, agent.id, args, self.policies)
            if policy is not None:
                log.info("call %s of %s: confirmation %s by %s", call_id, name,
                         policy.outcome, policy.rule)
            timeout = tool.decision_timeout if tool and requirement else None
            assert timeout is None or isinstance(timeout, timedelta)
            run.request_tool_call(
                tool_call_id=call_id,
                tool_name=name,
                tool_args=args,
                requires=Requirement(requirement) if requirement else None,
                confirmation_message=tool.confirmation_message if tool else None,
                user_input_schema=tool.user_input_schema() if tool and tool.requires_user_input
                else None,
                stop_after_tool_call=tool.stop_after_tool_call if tool else False,
                editable_args=tool.editable_args if tool else False,
                policy=policy.record() if policy else None,
                expires_at=self.clock() + timeout if timeout else None,
                on_timeout=TimeoutAction(tool.on_timeout) if tool and timeout else None,
                escalate_to=tool.escalate_to if tool and timeout else None,
            )

    def _ask(self, model: ModelClient, messages: list[dict[str, Any]],
             tools: list[ToolSpec]) -> ModelTurn:
        """The model's turn, or ``ModelError`` when it takes longer than its timeout (the
        call is left to end on its own; its answer is not used)."""
        timeout = self.model_timeout or getattr(model, "timeout", None)
        if not timeout:
            return model.respond(messages, tools)
        future = self._models.submit(contextvars.copy_context().run, model.respond,
                                     messages, tools)
        try:
            return future.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise ModelError(f"model {model.name!r} did not answer within {timeout:g} s") \
                from None

    def _run_tools(self, run: Run, agent: Agent, calls: list[dict[str, Any]],
                   observer: Observer | None) -> bool:
        """Run approved calls one by one. True when the run ended (stop_after_tool_call).

        Each call's start (with its own deadline) is committed just before its function
        is called, together with whatever was recorded since the last save (the
        decisions, the previous call's outcome): so a crash puts at most the call that
        was running in doubt.
        """
        stop_content: str | None = None
        for call in calls:
            call_id = call["tool_call_id"]
            deadline = self.clock() + timedelta(seconds=self.tool_timeout)
            if call["state"] == CallState.RUNNING:  # an idempotent retry after a crash
                run.trigger_event(run.ToolExecutionStarted, tool_call_id=call_id,
                                  attempt=call["attempts"] + 1, deadline=deadline)
            else:
                run.start_tool(call_id, deadline=deadline)
            self._save(run, observer)  # committed before any side effect
            outcome = self._execute(agent.get_tool(call["tool_name"]), call)
            if isinstance(outcome, BaseException):
                run.record_tool_failure(
                    call_id, self.limits.cut_text(f"{type(outcome).__name__}: {outcome}"))
            else:
                outcome = self.limits.cut_text(outcome)
                run.record_tool_result(call_id, outcome)
                if call["stop_after_tool_call"]:
                    stop_content = outcome
        if stop_content is not None and not run.calls_in(CallState.APPROVED, CallState.RUNNING):
            run.complete(stop_content)
            return True
        return False

    def _execute(self, tool: Tool | None, call: dict[str, Any]) -> str | BaseException:
        if tool is None:
            return LookupError(f"the agent has no tool {call['tool_name']!r}")
        if tool.external_execution:
            return RuntimeError("an external tool cannot be run by signoff")
        args = call["approved_args"] if call["approved_args"] is not None else call["tool_args"]
        if CUT in args:
            return ValueError("the arguments the model proposed were cut (over the size "
                              "limit): the tool was not run")
        future = self._pool.submit(tool.fn, **args)
        try:
            result = future.result(timeout=self.tool_timeout)
        except concurrent.futures.TimeoutError:
            if future.cancel():  # still queued behind other tools: it never runs
                return TimeoutError(f"the tool did not start within {self.tool_timeout:g} s; "
                                    "it was not run")
            return TimeoutError(f"the tool did not finish within {self.tool_timeout:g} s")
        except Exception as e:  # the tool's own failure is recorded, not raised
            return e
        return result if isinstance(result, str) else _to_text(result)


def _idempotent(agent: Agent, call: dict[str, Any]) -> bool:
    tool = agent.get_tool(call["tool_name"])
    return tool is not None and tool.idempotent


def _to_text(value: Any) -> str:
    try:
        return json.dumps(value, default=str)
    except (TypeError, ValueError):
        return str(value)
