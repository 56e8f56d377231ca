"""The inbox in a real browser against a real server with API keys: a reviewer sees a run
pause without reloading, edits an argument and approves; a reviewer filters the queue and
rejects with a reason; an auditor opens a run's history at a version and verifies it, and
reads the analytics (each kind of call's acceptance); each role is refused what it may not
do. On a service without keys: input and an external result entered under a name, and the
live queue back after the server restarts.

Every outcome is checked through the API too: the page must have recorded exactly what
the reviewer did, under the reviewer's name.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.world import SEED, World, eventually
from tests.e2e.flows import form, payloads
from tests.support.server import LiveServer, live_server

pytestmark = pytest.mark.e2e

NOTIFY = 'call send_notification {"recipient": "ops", "message": "hi"}'


def expect(locator: Any) -> Any:
    from playwright.sync_api import expect as expect_

    return expect_(locator)


def test_a_reviewer_sees_a_run_pause_edits_an_argument_and_approves(
        world: World, page: Any) -> None:
    world.open_inbox(page, "rita")
    expect(page.locator("#live")).to_have_attribute("data-state", "open")
    page.evaluate("window.sameDocument = true")  # gone if the page reloads

    # A client's run pauses while the reviewer looks at the inbox: it appears by itself.
    run = world.paused(SEED)
    row = page.locator(f"#queue li[data-run-id='{run['run_id']}']")
    expect(row).to_contain_text("delete_records")
    expect(row).to_contain_text('"count":50')
    assert page.evaluate("window.sameDocument") is True

    # The run's detail: the user's request, the model's messages, the call, its history.
    row.locator("a").click()
    detail = page.locator("#detail")
    expect(detail.locator("#request")).to_have_text(SEED)
    expect(detail.locator(".messages li.assistant")).to_contain_text("delete_records")
    expect(detail.locator("#timeline li")).to_have_count(4)
    card = detail.locator(".call-card[data-tool='delete_records']")
    expect(card.locator("input[name='arg-table_name']")).to_have_value("users")

    # The reviewer deletes 10 records instead of 50, and approves.
    card.locator("input[name='arg-count']").fill("10")
    card.get_by_role("button", name="Approve").click()
    expect(page.locator("#run-status")).to_have_text("COMPLETED")
    expect(card.locator(".decision")).to_contain_text("Approved by rita")
    expect(card.locator("tr.changed")).to_contain_text("count")
    expect(card.locator(".result")).to_contain_text("Deleted 10 records from users")
    expect(row).to_have_count(0)  # it left the queue
    assert page.evaluate("window.sameDocument") is True

    # Recorded: the requested arguments, and beside them the approved ones, by rita.
    history = world.events(run["run_id"])
    [requested] = payloads(history, "ToolCallRequested")
    [confirmed] = payloads(history, "ToolConfirmed")
    assert requested["tool_args"] == {"table_name": "users", "count": 50}
    assert confirmed["approved_args"] == {"table_name": "users", "count": 10}
    assert confirmed["decided_by"] == "rita"
    assert payloads(history, "ToolExecuted")[0]["result"] == "Deleted 10 records from users"


def test_a_reviewer_filters_the_queue_and_rejects_a_call_with_a_reason(
        world: World, page: Any) -> None:
    other = world.paused(SEED)
    run = world.paused(NOTIFY)
    world.open_inbox(page, "rita")
    rows = {r["run_id"]: page.locator(f"#queue li[data-run-id='{r['run_id']}']")
            for r in (other, run)}
    expect(rows[other["run_id"]]).to_have_count(1)
    page.select_option("select[name='tool']", "send_notification")
    expect(rows[other["run_id"]]).to_have_count(0)
    expect(rows[run["run_id"]]).to_have_count(1)
    page.select_option("select[name='kind']", "user_input")
    expect(rows[run["run_id"]]).to_have_count(0)
    page.select_option("select[name='kind']", "confirmation")
    rows[run["run_id"]].locator("a").click()
    card = page.locator("#detail .call-card[data-tool='send_notification']")

    # A rejection without a reason is not sent: the model would not know why.
    card.get_by_role("button", name="Reject").click()
    expect(card.locator(".form-status")).to_contain_text("Give a reason")
    assert [e["type"] for e in world.events(run["run_id"])][-1] == "RunPaused"

    card.locator("textarea[name='reason']").fill("ops is not a person: ask who to notify")
    card.get_by_role("button", name="Reject").click()
    expect(page.locator("#run-status")).to_have_text("COMPLETED")
    expect(card.locator(".decision")).to_contain_text("Rejected by rita")
    expect(card.locator(".decision")).to_contain_text("ops is not a person")

    history = world.events(run["run_id"])
    [rejected] = payloads(history, "ToolRejected")
    assert rejected["reason"] == "ops is not a person: ask who to notify"
    assert rejected["decided_by"] == "rita"
    assert not payloads(history, "ToolExecuted")  # the tool never ran


def test_an_auditor_opens_a_runs_history_at_a_version_and_verifies_it(
        world: World, page: Any) -> None:
    run = world.paused(SEED)
    world.decide(run, confirmed=True, tool_args={"table_name": "users", "count": 7})
    history = world.events(run["run_id"])
    with world.as_("audrey") as c:  # the audit trail is a read model: wait for it
        eventually(lambda: c.get("/audit/decisions",
                                 params={"run_id": run["run_id"]}).json()["items"])

    world.open_inbox(page, "audrey", "#audit")
    page.fill("#audit-search input[name='actor']", "rita")
    page.fill("#audit-search input[name='tool']", "delete_records")
    page.click("#audit-search button[type=submit]")
    row = page.locator(f"#decisions tr[data-run-id='{run['run_id']}']")
    expect(row).to_contain_text("confirmed")
    expect(row).to_contain_text('"count":7')

    # Its history: every event, the state at version 4 (paused), and the chain verified.
    row.get_by_role("link").click()
    expect(page.locator("#history #timeline li")).to_have_count(len(history))
    page.click("#history button[name='at-4']")
    expect(page.locator("#at-version .at-status")).to_have_text("PAUSED")
    expect(page.locator("#at-version")).to_contain_text("delete_records")
    page.get_by_role("button", name="Verify this run's hash chain").click()
    verdict = page.locator("#verify-result")
    expect(verdict).to_contain_text("Intact")
    expect(verdict).to_contain_text(f"{len(history)} events")
    expect(verdict).to_contain_text(history[-1]["hash"][:16])
    with world.as_("audrey") as c:  # where the run's last event is in the log
        position = c.get(f"/runs/{run['run_id']}/verify").json()["head"]["position"]
    expect(verdict).to_contain_text(f"at log position {position}")

    # Analytics: acceptance per kind of call and time to decision, per tool and per
    # reviewer. Rita also rejects a call that waits for an external result: it is in the
    # external results' rate, not in the confirmations' (issue 16: the label read
    # "confirmed + rejected", every rejection counted against the confirmations).
    paid = world.paused('call check_payment {"order_id": "o-7"}', agent="support_desk")
    world.decide(paid, confirmed=False)
    with world.as_("audrey") as c:
        rita = eventually(lambda: next((g for g in c.get(
            "/analytics/decisions", params={"group_by": "actor"}).json()["groups"]
            if g["group"] == "rita" and g["acceptance"]["external_execution"]["rejected"]),
            None))
    page.click("nav a[data-view='analytics']")
    for chart, label in [("acceptance-confirmation-tool", "delete_records"),
                         ("time-tool", "delete_records"),
                         ("acceptance-confirmation-actor", "rita"), ("time-actor", "rita"),
                         ("acceptance-external_execution-tool", "check_payment"),
                         ("acceptance-external_execution-actor", "rita")]:
        expect(page.locator(f"[data-chart='{chart}'] rect[data-label='{label}']")
               ).to_have_count(1)
    confirmations = page.locator("[data-chart='acceptance-confirmation-actor']")
    expect(confirmations.locator("figcaption")).to_have_text(
        "Confirmations accepted: confirmed / (confirmed + rejected), of the calls that "
        "wait for a confirmation")
    accepted = rita["acceptance"]["confirmation"]
    decided_ = accepted["accepted"] + accepted["rejected"]
    assert decided_ < rita["confirmed"] + rita["rejected"]  # the external rejection
    expect(confirmations.locator("rect[data-label='rita'] title")).to_have_text(
        f"rita: {int(accepted['rate'] * 100 + 0.5)} % of {decided_}")  # JS's Math.round
    expect(page.locator("[data-chart='acceptance-external_execution-actor'] "
                        "rect[data-label='rita'] title")).to_have_text("rita: 0 % of 1")


def test_an_auditor_cannot_decide_and_a_reviewer_cannot_audit(world: World, page: Any) -> None:
    run = world.paused(NOTIFY)
    world.open_inbox(page, "audrey", f"#run/{run['run_id']}")
    card = page.locator("#detail .call-card[data-tool='send_notification']")
    card.get_by_role("button", name="Approve").click()
    expect(card.locator(".form-status")).to_contain_text("403: ")
    expect(card.locator(".form-status")).to_contain_text("auditor may not")
    world.open_inbox(page, "rita", "#audit")
    expect(page.locator("#decisions .error")).to_contain_text("reviewer may not")
    assert [e["type"] for e in world.events(run["run_id"])][-1] == "RunPaused"


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A service without keys (local development)."""
    tmp = tmp_path_factory.mktemp("open")
    with live_server(f"sqlite:///{tmp / 'open.db'}", tmp / "open.log") as server:
        yield server


def _start(server: LiveServer, agent: str, message: str) -> dict[str, Any]:
    with server.client() as c:
        r = c.post(f"/agents/{agent}/runs", files=form(message=message, user_id="ann",
                                                       stream="false"))
    assert r.status_code == 200, r.text
    run: dict[str, Any] = r.json()
    return run


def _events(server: LiveServer, run_id: str) -> list[dict[str, Any]]:
    with server.client() as c:
        history: list[dict[str, Any]] = c.get(f"/runs/{run_id}/events").json()
    return history


def test_without_keys_a_name_is_recorded_on_input_and_results(
        open_server: LiveServer, page: Any) -> None:
    needs_input = _start(open_server, "support_desk", "Issue a refund of 30 for order A17")
    needs_result = _start(open_server, "support_desk", "check payment for order 77")
    page.goto(f"{open_server.url}/inbox")
    page.fill("#name", "olga")  # no key: the name recorded on decisions
    page.click("#who button[type=submit]")

    page.locator(f"#queue li[data-run-id='{needs_input['run_id']}'] a").click()
    card = page.locator("#detail .call-card[data-tool='issue_refund']")
    card.locator("input[name='input-email']").fill("ann@example.com")
    card.get_by_role("button", name="Submit input").click()
    expect(page.locator("#run-status")).to_have_text("COMPLETED")
    expect(card.locator(".decision")).to_contain_text("Input given by olga")

    page.locator(f"#queue li[data-run-id='{needs_result['run_id']}'] a").click()
    card = page.locator("#detail .call-card[data-tool='check_payment']")
    card.locator("textarea[name='result']").fill("paid in full")
    card.get_by_role("button", name="Submit result").click()
    expect(page.locator("#run-status")).to_have_text("COMPLETED")
    expect(card.locator(".decision")).to_contain_text("Result entered by olga")

    [given] = payloads(_events(open_server, needs_input["run_id"]), "UserInputProvided")
    assert (given["values"], given["decided_by"]) == ({"email": "ann@example.com"}, "olga")
    [answered] = payloads(_events(open_server, needs_result["run_id"]),
                          "ExternalResultProvided")
    assert (answered["result"], answered["decided_by"]) == ("paid in full", "olga")


def test_the_live_queue_comes_back_after_the_server_restarts(
        open_server: LiveServer, page: Any) -> None:
    page.goto(f"{open_server.url}/inbox")
    live = page.locator("#live")
    expect(live).to_have_attribute("data-state", "open")
    page.evaluate("window.sameDocument = true")
    open_server.kill()
    expect(live).to_have_attribute("data-state", "error")
    open_server.restart()
    expect(live).to_have_attribute("data-state", "open", timeout=20_000)
    run = _start(open_server, "data_manager", SEED)
    expect(page.locator(f"#queue li[data-run-id='{run['run_id']}']")).to_have_count(1)
    assert page.evaluate("window.sameDocument") is True
