"""Agents used only by the tests (served beside the demo agents in end-to-end tests)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from agent.tools import Agent, tool


@tool(requires_confirmation=True)
def slow_delete(table_name: str) -> str:
    """Delete a table slowly: blocks while the file named by SIGNOFF_TEST_BLOCK exists.

    Args:
        table_name: Name of the table
    """
    block = os.environ.get("SIGNOFF_TEST_BLOCK")
    while block and Path(block).exists():
        time.sleep(0.05)
    return f"Dropped {table_name}"


@tool(requires_confirmation=True, idempotent=True)
def refresh_cache(name: str) -> str:
    """Refresh a cache (idempotent: safe to run again after a crash).

    Args:
        name: Which cache
    """
    block = os.environ.get("SIGNOFF_TEST_BLOCK")
    while block and Path(block).exists():
        time.sleep(0.05)
    return f"Refreshed {name}"


@tool(requires_confirmation=True, editable_args=False)
def transfer_money(account: str, amount: int) -> str:
    """Transfer money (arguments may not be edited by a reviewer).

    Args:
        account: Target account
        amount: Amount
    """
    return f"Transferred {amount} to {account}"


@tool(requires_confirmation=True, stop_after_tool_call=True)
def archive_table(table_name: str) -> str:
    """Archive a table; the run ends with the tool's result.

    Args:
        table_name: Name of the table
    """
    return f"Archived {table_name}"


@tool
def failing_tool(name: str) -> str:
    """Always fails.

    Args:
        name: Anything
    """
    raise ValueError(f"cannot process {name}")


ops = Agent(
    id="ops",
    name="Ops",
    tools=[slow_delete, refresh_cache, transfer_money, archive_table, failing_tool],
    instructions=["You run operations"],
)

gatekeeper = Agent(
    id="gatekeeper",
    name="Gatekeeper",
    tools=[slow_delete],
    confirm_before_run=True,
    confirmation_message="Start this run?",
)


@tool(requires_confirmation=True)
def send_letter(to: str) -> str:
    """Send a letter: blocks while the file named by SIGNOFF_TEST_BLOCK exists, then
    writes one line to the file named by SIGNOFF_TEST_EFFECTS (the side effect a test
    counts: one line per execution).

    Args:
        to: The recipient
    """
    block = os.environ.get("SIGNOFF_TEST_BLOCK")
    while block and Path(block).exists():
        time.sleep(0.02)
    effects = os.environ.get("SIGNOFF_TEST_EFFECTS")
    if effects:
        with open(effects, "a") as f:
            f.write(to + "\n")
    return f"Sent to {to}"


mailer = Agent(id="mailer", name="Mailer", tools=[send_letter],
               instructions=["You send letters"])
