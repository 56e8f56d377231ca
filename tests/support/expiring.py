"""An agent whose decisions expire at once, for the end-to-end test of the server's
expiry sweeper (served with ``SIGNOFF_AGENTS=...,tests.support.expiring``)."""

from __future__ import annotations

from agent.tools import Agent, tool


@tool(requires_confirmation=True, decision_timeout=0.001)
def drop_cache(name: str) -> str:
    """Drop a cache; a decision on it expires (rejected) after a millisecond.

    Args:
        name: Which cache
    """
    return f"Dropped {name}"


@tool(requires_confirmation=True, decision_timeout=0.001, on_timeout="escalate",
      escalate_to="leads")
def grant_access(user: str) -> str:
    """Grant access; undecided, it goes to the leads at once (for a millisecond more).

    Args:
        user: Who
    """
    return f"Granted {user}"


expiring = Agent(id="expiring", name="Expiring", tools=[drop_cache, grant_access])


@tool(requires_confirmation=True, decision_timeout=0.001, on_timeout="escalate",
      escalate_to="leads")
def grant_role(user: str, role: str) -> str:
    """Grant a role; undecided for a millisecond, the leads decide (served where no
    sweeper runs: the test records the expiries).

    Args:
        user: Who
        role: Which role
    """
    return f"Granted {role} to {user}"


escalating = Agent(id="escalating", name="Escalating", tools=[grant_role])
