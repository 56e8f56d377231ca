"""The demo agents served by default (``SIGNOFF_AGENTS=agent.demo``).

``data_manager`` is the seed's agent, word for word; ``support_desk`` shows the other
two kinds of pause: a result supplied by an external system, and input a person fills in.
Their tools only return strings: nothing here touches real data.
"""

from __future__ import annotations

from agent.tools import Agent, tool


@tool(requires_confirmation=True)
def delete_records(table_name: str, count: int) -> str:
    """Delete records from a database table.

    Args:
        table_name: Name of the table
        count: Number of records to delete

    Returns:
        str: Confirmation message
    """
    return f"Deleted {count} records from {table_name}"


@tool(requires_confirmation=True)
def send_notification(recipient: str, message: str) -> str:
    """Send a notification to a user.

    Args:
        recipient: Email or username of the recipient
        message: Notification message

    Returns:
        str: Confirmation message
    """
    return f"Sent notification to {recipient}: {message}"


@tool(external_execution=True)
def check_payment(order_id: str) -> str:
    """Check an order's payment status in the billing system (run outside signoff).

    Args:
        order_id: The order to look up
    """
    raise RuntimeError("external tool: the billing system supplies the result")


@tool(requires_user_input=True, user_input_fields=["email"])
def issue_refund(order_id: str, amount: float, email: str) -> str:
    """Refund an order and email the customer; a person supplies the email address.

    Args:
        order_id: The order to refund
        amount: Amount to refund
        email: Where to send the refund receipt
    """
    return f"Refunded {amount} on order {order_id}; receipt sent to {email}"


@tool
def lookup_order(order_id: str) -> str:
    """Look up an order (safe: runs without asking anyone).

    Args:
        order_id: The order to look up
    """
    return f"Order {order_id}: 2 items, paid"


data_manager = Agent(
    id="data_manager",
    name="Data Manager",
    tools=[delete_records, send_notification],
    instructions=["You help users manage data operations"],
)

support_desk = Agent(
    id="support_desk",
    name="Support Desk",
    tools=[lookup_order, check_payment, issue_refund],
    instructions=["You help customers with their orders"],
)
