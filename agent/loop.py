"""The agent loop: asks the model, records its answer, pauses for people, runs tools.

It is the lifecycle's ``Steps`` (``service/lifecycle.py``): the lifecycle authorizes,
loads, records decisions and saves; the loop knows the agents, their tools and the
model, and drives a run on. Everything it learns from the outside world (the model's
answers, tool results) is recorded as an event on the run, so a replay never calls
anything again.

Durability: it commits (the lifecycle's ``commit``) in as few transactions as the rules
allow: one when a run pauses, completes or fails; one just before any tool's function
is called, so that a decision and the fact that the tool started are committed before
its side effect can happen; and one when the tools have run, before the model is asked
again, so that no outcome waits on a model's answer. If the process dies while a tool
runs, the call stays ``running`` until its deadline passes; then the lifecycle (on the
next touch of the run, or the sweeper) marks it in doubt and pauses for a person, or,
for an idempotent tool, has the loop run it again. A tool that does not finish in time
is in doubt the same way (its thread cannot be stopped: it may still have its effect),
unless it is idempotent: then it failed, and the model is told.

A run followed live (the lifecycle's ``Live``: a streamed response) is also committed
just before each model turn, so its start and its tools' outcomes are sent before the
model answers, and the model's text goes to the follower as it comes (``TEXT_SINK``).
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import functools
import importlib
import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

from agent.limits import CUT, Limits
from agent.messages import chat_messages
from agent.models.base import TEXT_SINK, ModelClient, ModelError, ModelTurn, ToolSpec
from agent.tools import Agent, Unfinished, requirement_for, run_tool
from domain.calls import OPEN, ToolCall
from domain.errors import InvalidDecision
from domain.run import Run
from domain.values import (
    RUN_CONFIRMATION_TOOL,
    SYSTEM,
    CallState,
    Decision,
    DecisionKind,
    Requirement,
    RunStatus,
    TimeoutAction,
)
from service.lifecycle import Commit
from service.live import Live
from service.policies import Policies

log = logging.getLogger("signoff.loop")



class AgentNotFound(Exception):
    """No served agent has this id."""


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

    # ------------------------------------------------- the lifecycle's Steps

    def new_run(self, agent_id: str, message: str, *, user_id: str | None,
                session_id: str | None) -> Run:
        """A new run of the agent for the user's message (not saved); paused on the
        run's confirmation if the agent asks for one before it runs."""
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
        return run

    def serves(self, agent_id: str) -> bool:
        return agent_id in self.agents

    def check_decision(self, run: Run, d: Decision) -> None:
        """Edited arguments and user input must fit the tool's parameters and the size
        limits (422 / 413 if not)."""
        self.limits.check_decision(d)
        self._check_args(run, self.agent(run.agent_id), d)

    def idempotent(self, run: Run, call: ToolCall) -> bool:
        agent = self.agents.get(run.agent_id)
        return agent is not None and _idempotent(agent, call)

    def escalation_window(self, run: Run, call: ToolCall) -> timedelta:
        """One more ``decision_timeout`` of the call's tool; if the tool is no longer
        served, as long as the first deadline gave."""
        agent = self.agents.get(run.agent_id)
        tool = agent.get_tool(call.tool_name) if agent else None
        if tool is not None and isinstance(tool.decision_timeout, timedelta):
            return tool.decision_timeout
        first = (call.expires_at or call.requested_at) - call.requested_at
        return max(first, timedelta(seconds=1))

    def drive(self, run: Run, commit: Commit, live: Live | None = None) -> Run:
        """Drive a RUNNING run until it pauses or ends, committing at the durable points
        (before each tool's function is called, when the tools have run, and at the end;
        for ``live``, before each model turn too)."""
        if run.status == RunStatus.RUNNING:
            self._drive(run, self.agent(run.agent_id), commit, live)
        commit(run)
        return run

    # -------------------------------------------------------------- driving

    @staticmethod
    def _check_args(run: Run, agent: Agent, d: Decision) -> None:
        """Edited arguments and user input must fit the tool's parameters (422 if not)."""
        call = run.calls.get(d.tool_call_id)
        tool = agent.get_tool(call.tool_name) if call else None
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

    def _drive(self, run: Run, agent: Agent, commit: Commit, live: Live | None) -> None:
        turns = 0
        while run.status == RunStatus.RUNNING:
            confirmation = next((c for c in run.calls.values()
                                 if c.tool_name == RUN_CONFIRMATION_TOOL
                                 and c.state == CallState.REJECTED), None)
            if confirmation is not None:
                d = confirmation.decision
                run.cancel(cancelled_by=d.decided_by if d else SYSTEM,
                           reason=d.reason if d else None)
                break
            # Approved calls run in the order they were requested. Idempotent calls a
            # crashed process left running past their deadline run again, in their place
            # (the lifecycle marks the other expired calls in doubt, so none is here).
            now = self.clock()
            to_run = [c for c in run.calls.values()
                      if c.state == CallState.APPROVED
                      or (c.state == CallState.RUNNING and c.deadline is not None
                          and c.deadline < now and _idempotent(agent, c))]
            if to_run:
                if self._run_tools(run, agent, to_run, commit):
                    break
                if run.pending_calls():  # a tool that did not finish: a person decides
                    run.pause()
                    break
                commit(run)  # the outcomes, before the model is asked again
                continue
            if turns >= self.max_model_turns:
                run.fail(f"stopped after {turns} model turns in one request")
                break
            turns += 1
            if live is not None:
                commit(run)  # what came before the turn is sent now, not with its answer
            self._model_turn(run, agent, live)
            if run.pending_calls():
                run.pause()

    def _model_turn(self, run: Run, agent: Agent, live: Live | None) -> None:
        model = self.model_for(agent)
        text = None
        if live is not None:
            live.model_started(run, model.name, model.provider)
            text = functools.partial(live.model_text, run)
        try:
            turn = self._ask(model, chat_messages(run), [t.spec() for t in agent.tools],
                             text)
        except ModelError as e:
            run.fail(f"model error: {e}")
            return
        # What the model proposed, as recorded: arguments over the limit are cut, and an
        # id the run already holds (some servers number calls per answer) made unique.
        proposals = []
        taken = set(run.calls)
        for c in turn.tool_calls:
            call_id = _unique(c.id, taken)
            taken.add(call_id)
            proposals.append((call_id, c.name, self.limits.cut_args(c.args)))
        run.record_model_response(
            model=model.name, provider=model.provider, content=turn.content,
            tool_calls=[{"id": i, "name": n, "args": a} for i, n, a in proposals],
            input_tokens=turn.input_tokens, output_tokens=turn.output_tokens)
        if not proposals:
            run.complete(turn.content)
            return
        for call_id, name, args in proposals:
            self._request(run, agent, call_id, name, args)

    def _request(self, run: Run, agent: Agent, call_id: str, name: str,
                 args: dict[str, Any]) -> None:
        """Record the model's request of one call, with what it waits for. Decided now,
        when the call is requested, and recorded with it: a replay (or a change of the
        rules since) never decides it again."""
        tool = agent.get_tool(name)
        requirement, policy = requirement_for(tool, agent.id, args, self.policies)
        if policy is not None:
            log.info("call %s of %s: confirmation %s by %s", call_id, name,
                     policy.outcome, policy.rule)
        if tool is None:  # a tool the model made up: it fails when it is run
            run.request_tool_call(tool_call_id=call_id, tool_name=name, tool_args=args,
                                  requires=Requirement(requirement) if requirement else None,
                                  editable_args=False, policy=policy)
            return
        timeout = tool.decision_timeout if requirement else None
        assert timeout is None or isinstance(timeout, timedelta)
        run.request_tool_call(
            tool_call_id=call_id,
            tool_name=name,
            tool_args=args,
            requires=Requirement(requirement) if requirement else None,
            confirmation_message=tool.confirmation_message,
            user_input_schema=tool.user_input_schema() if tool.requires_user_input else None,
            stop_after_tool_call=tool.stop_after_tool_call,
            editable_args=tool.editable_args,
            policy=policy,
            expires_at=self.clock() + timeout if timeout else None,
            on_timeout=TimeoutAction(tool.on_timeout) if timeout else None,
            escalate_to=tool.escalate_to if timeout else None,
        )

    def _ask(self, model: ModelClient, messages: list[dict[str, Any]],
             tools: list[ToolSpec], text: Callable[[str], None] | None = None) -> ModelTurn:
        """The model's turn, or ``ModelError`` when it takes longer than its timeout (the
        call is left to end on its own; its answer is not used). ``text``: where its
        text goes as it comes, until the turn is over (``TEXT_SINK``)."""
        timeout = self.model_timeout or getattr(model, "timeout", None)
        sink = _Sink(text) if text is not None else None
        token = TEXT_SINK.set(sink)
        try:
            if not timeout:
                return model.respond(messages, tools)
            future = self._models.submit(contextvars.copy_context().run, model.respond,
                                         messages, tools)
            try:
                return future.result(timeout=timeout)
            except concurrent.futures.TimeoutError:
                future.cancel()
                raise ModelError(f"model {model.name!r} did not answer within "
                                 f"{timeout:g} s") from None
        finally:
            TEXT_SINK.reset(token)
            if sink is not None:
                sink.close()  # a call left to end on its own says nothing more

    def _run_tools(self, run: Run, agent: Agent, calls: list[ToolCall],
                   commit: Commit) -> bool:
        """Run approved calls one by one. True when the run ended (stop_after_tool_call).

        Each call's start (with its own deadline) is committed just before its function
        is called, together with whatever was recorded since the last save (the
        decisions, the previous call's outcome): so a crash puts at most the call that
        was running in doubt.
        """
        stop_content: str | None = None
        for call in calls:
            call_id = call.tool_call_id
            deadline = self.clock() + timedelta(seconds=self.tool_timeout)
            if call.state == CallState.RUNNING:  # an idempotent retry after a crash
                run.retry_tool(call_id, now=self.clock(), deadline=deadline)
            else:
                run.start_tool(call_id, deadline=deadline)
            commit(run)  # committed before any side effect
            tool = agent.get_tool(call.tool_name)
            outcome = run_tool(self._pool, tool, call, self.tool_timeout)
            if isinstance(outcome, Unfinished):
                if not (tool and tool.idempotent):
                    run.mark_in_doubt(call_id)
                    continue
                outcome = outcome.error  # safe to run again: it failed
            if isinstance(outcome, BaseException):
                run.record_tool_failure(
                    call_id, self.limits.cut_text(f"{type(outcome).__name__}: {outcome}"))
            else:
                outcome = self.limits.cut_text(outcome)
                run.record_tool_result(call_id, outcome)
                if call.stop_after_tool_call:
                    stop_content = outcome
        if stop_content is not None and not run.calls_in(*OPEN):
            run.complete(stop_content)
            return True
        return False


def _unique(call_id: str, taken: set[str]) -> str:
    """``call_id``, or, if the run holds it already, the first of ``call_id~2``,
    ``call_id~3``... that it does not."""
    n, unique = 1, call_id
    while unique in taken:
        n += 1
        unique = f"{call_id}~{n}"
    return unique


class _Sink:
    """Passes a model's text on until closed (the turn over, or given up on)."""

    def __init__(self, to: Callable[[str], None]) -> None:
        self._to: Callable[[str], None] | None = to

    def __call__(self, delta: str) -> None:
        if (to := self._to) is not None:
            to(delta)

    def close(self) -> None:
        self._to = None


def _idempotent(agent: Agent, call: ToolCall) -> bool:
    tool = agent.get_tool(call.tool_name)
    return tool is not None and tool.idempotent

