"""The run lifecycle as in-process tests use it: without authentication (the ``OPEN``
caller), decisions given as ``Decision`` values, runs returned.

``Runs(store, loop)`` builds a ``RunLifecycle`` on the loop's clock and tool timeout,
as the service's bootstrap does.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from agent.loop import AgentLoop
from domain.run import Run
from domain.values import Decision, DecisionKind, Reply
from service.auth import OPEN, Identity
from service.lifecycle import Observer, RunLifecycle
from service.runs import RunService


def reply(d: Decision) -> Reply:
    """The reply a client sends to make decision ``d``."""
    if d.kind == DecisionKind.CONFIRMED:
        return Reply(d.tool_call_id, confirmed=True, note=d.note, tool_args=d.approved_args)
    if d.kind == DecisionKind.REJECTED:
        return Reply(d.tool_call_id, confirmed=False, note=d.note)
    if d.kind == DecisionKind.EXTERNAL_RESULT:
        return Reply(d.tool_call_id, result=d.result)
    return Reply(d.tool_call_id, values=d.values)


class Runs:
    def __init__(self, store: RunService, loop: AgentLoop, *,
                 caller: Identity = OPEN) -> None:
        self.store = store
        self.loop = loop
        self.caller = caller
        self.lifecycle = RunLifecycle(store, loop, tool_timeout=loop.tool_timeout,
                                      clock=loop.clock)

    def start(self, agent_id: str, message: str, *, user_id: str | None = None,
              session_id: str | None = None, observer: Observer | None = None) -> Run:
        run = self.lifecycle.open_run(self.caller, agent_id, message, user_id=user_id,
                                      session_id=session_id)
        return self.lifecycle.drive(run, observer)

    def decide(self, run_id: str | UUID, decisions: list[Decision], *,
               actor: str | None = None, request_key: str | None = None,
               drive: bool = False, observer: Observer | None = None) -> Run:
        return self.lifecycle.decide(self.caller, str(run_id), [reply(d) for d in decisions],
                                     named=actor, key=request_key, drive=drive,
                                     observer=observer).run

    def drive(self, run: Run, observer: Observer | None = None) -> Run:
        return self.lifecycle.drive(run, observer)

    def cancel(self, run_id: str | UUID, *, actor: str | None = None,
               reason: str | None = None) -> Run:
        return self.lifecycle.cancel(self.caller, str(run_id), named=actor, reason=reason)

    def expire(self, run_id: str | UUID, **_: Any) -> Run:
        return self.lifecycle.expire(str(run_id))

    def settle(self, run_id: str | UUID) -> Run:
        return self.lifecycle.settle(str(run_id))
