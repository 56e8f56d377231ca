"""Who may see, decide on or cancel one run, and who is recorded as having done it.

The routes' roles (which role may call which route) are checked at the edge
(``api/auth.py``); these checks are about the caller's relation to one run, and every
use case of ``service/lifecycle.py`` makes them before it writes anything:

- a client's runs are its own: another user's run is ``RunNotFound`` (404), as if it
  did not exist;
- a reviewer limited to some agents or tools is ``Forbidden`` (403) outside them;
- a call whose decision expired and was escalated to a group is decided (or cancelled
  with its run) by a reviewer of that group only;
- a client decides only what its run asks of its user (input, an external result): a
  call that needs a person's confirmation, and a call in doubt after a crash, are a
  reviewer's to decide (403 to the client, as Agno answers with authorization on).

Without authentication (no key issued, no JWT key: local development) the caller is
``OPEN``: every run is visible, and the actor is whoever the request names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

from domain.keys import Role
from domain.run import Run
from domain.values import CallState, Decision, Requirement
from service.auth import ANONYMOUS, Identity
from service.runs import RunDamaged, RunNotFound, RunService

T = TypeVar("T")


class Forbidden(Exception):
    """The caller may not do this to this run (403)."""


def check_owner(caller: Identity, run_id: str, user_id: str | None, agent_id: str,
                tools: Iterable[str] = ()) -> None:
    """Refuse a caller who may not see this run (or act on calls of ``tools``)."""
    if caller.open or caller.role == Role.AUDITOR:
        return
    if caller.role == Role.CLIENT:
        if user_id != caller.name:
            raise RunNotFound(f"no run {run_id!r}")
        return
    if caller.role == Role.REVIEWER:
        if not caller.may_see(agent_id, list(tools)):
            raise Forbidden(f"run {run_id!r} is outside your agents and tools")
        return
    raise Forbidden(f"{'an' if str(caller.role)[0] in 'aeiou' else 'a'} {caller.role} may "
                    "not touch runs")


def read_for(caller: Identity, store: RunService, run_id: str, read: Callable[[], T]) -> T:
    """``read()`` (one of the store's readers of the run) for a caller who may see the
    run. A run too damaged to read (``RunDamaged``) is named damaged only to a caller
    who may see it, by its first event; to anyone else it does not exist (404, as any
    run they may not see). The caller must still check the run it gets."""
    try:
        return read()
    except RunDamaged:
        try:
            user_id, agent_id = store.started_by(run_id)
        except RunDamaged:  # whose run it is cannot be read: only those who see all
            if not (caller.open or caller.role == Role.AUDITOR):
                raise RunNotFound(f"no run {run_id!r}") from None
            raise
        check_owner(caller, run_id, user_id, agent_id)
        raise


def check_run(caller: Identity, run: Run) -> None:
    """May the caller see this run?"""
    check_owner(caller, run.run_id, run.user_id, run.agent_id)


def check_calls(caller: Identity, run: Run, call_ids: Iterable[str]) -> None:
    """May the caller decide these calls of the run (or end the run while they are
    open)? Its agent, the calls' tools, and the group an escalated call waits for."""
    ids = [i for i in call_ids if i in run.calls]
    check_owner(caller, run.run_id, run.user_id, run.agent_id,
                [run.calls[i].tool_name for i in ids])
    if caller.open:
        return
    for call_id in ids:
        group = run.calls[call_id].escalated_to
        if group is not None and (caller.role != Role.REVIEWER or group not in caller.groups):
            raise Forbidden(f"call {call_id!r} was escalated to the reviewers of {group!r}: "
                            "only they decide it")


# What a client may decide: what the run asks of its user.
_USERS_TO_ANSWER = (Requirement.USER_INPUT, Requirement.EXTERNAL_EXECUTION)


def check_decisions(caller: Identity, run: Run, decisions: Iterable[Decision]) -> None:
    """May the caller make these decisions? As ``check_calls``; and a client gives only
    the input and the external results its run asks for: the confirmation of a call (or
    its rejection), and any decision on a call in doubt, are a reviewer's."""
    decisions = list(decisions)
    check_calls(caller, run, [d.tool_call_id for d in decisions])
    if caller.open or caller.role != Role.CLIENT:
        return
    for d in decisions:
        call = run.calls[d.tool_call_id]
        if call.state == CallState.IN_DOUBT or call.requires not in _USERS_TO_ANSWER:
            raise Forbidden(f"call {d.tool_call_id!r} ({call.tool_name}) needs a reviewer's "
                            "decision: this run requires a reviewer's approval before it can "
                            "be continued")


def acting_as(caller: Identity, named: str | None) -> str | None:
    """The user a request acts as: the authenticated caller (a request naming anyone
    else is refused); without authentication, whoever the request names."""
    if caller.open:
        return named
    if named is not None and named != caller.name:
        raise Forbidden(f"the request names {named!r}, but you are {caller.name!r}: the "
                        "actor is the authenticated caller, never a field of the body")
    return caller.name


def actor(caller: Identity, named: str | None) -> str:
    """Who a decision or a cancel is recorded as made by: the authenticated caller;
    without authentication, the user the request names, or ``anonymous``. Never the
    run's requester by default."""
    return acting_as(caller, named) or ANONYMOUS
