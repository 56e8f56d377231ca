"""Take the inbox's screenshots for docs/inbox.md: ``python -m tests.browser.screenshots``.

Starts ``signoff serve`` on a throwaway SQLite store (demo agents, offline model, no
keys), has three reviewers decide a few dozen calls at varied speeds, leaves a few runs
waiting, and photographs the queue, a run's detail, a run's history and the analytics
with Debian's Chromium into docs/screenshots/ (or the folder given).
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from playwright.sync_api import sync_playwright

from tests.browser.world import SEED, launch
from tests.e2e.flows import decided, form, pending
from tests.support.server import ROOT, live_server

OUT = ROOT / "docs" / "screenshots"
WAITING = [
    ("data_manager", SEED),
    ("data_manager", 'call send_notification {"recipient": "finance", '
                     '"message": "Q3 numbers are final"}'),
    ("support_desk", "check payment for order 77"),
    ("support_desk", "Issue a refund of 30 for order A17"),
]


def seed(c: Any) -> tuple[str, str]:
    """Decided runs for the analytics and the audit trail; the run to show in detail."""
    rng = random.Random(6)
    plans = []
    for _ in range(18):
        table = rng.choice(["users", "logs", "sessions", "orders"])
        count = rng.choice([5, 20, 50, 200, 1000])
        who = rng.choice(["alice", "alice", "bo", "chen"])
        plans.append(("data_manager", f"Delete {count} old records from the {table} table",
                      who, rng.random()))
    for i in range(6):
        plans.append(("data_manager", f'call send_notification {{"recipient": "team{i}", '
                      '"message": "Deploy done"}', rng.choice(["bo", "chen"]), rng.random()))
    for i in range(4):
        plans.append(("support_desk", f"check payment for order {100 + i}", "alice", 0.0))
        plans.append(("support_desk", f"Issue a refund of {10 * (i + 1)} for order B{i}",
                      "bo", 0.0))
    started = []
    for agent, message, who, roll in plans:
        r = c.post(f"/agents/{agent}/runs", files=form(message=message, user_id="ann",
                                                       stream="false"))
        started.append((r.json(), who, roll, rng.uniform(0.2, 4.0)))
    t0 = time.monotonic()
    edited = ""
    for run, who, roll, wait in sorted(started, key=lambda s: s[3]):
        time.sleep(max(0.0, t0 + wait - time.monotonic()))
        [tool] = pending(run)
        if tool["external_execution_required"]:
            decision: dict[str, Any] = {"result": "paid in full on 2026-10-30"}
        elif tool["requires_user_input"]:
            decision = {"user_input_schema": [{**f, "value": "ann@example.com"}
                                              for f in tool["user_input_schema"]]}
        elif roll < 0.25 or (tool["tool_args"].get("count", 0) >= 1000):
            decision = {"confirmed": False, "confirmation_note": "too many rows at once: "
                        "ask for a smaller batch"}
        elif roll < 0.45 and "count" in tool["tool_args"]:
            decision = {"confirmed": True, "tool_args": {**tool["tool_args"], "count": 10}}
        else:
            decision = {"confirmed": True}
        c.post(f"/agents/{run['agent_id']}/runs/{run['run_id']}/continue",
               files=form(tools=[decided(tool, **decision)], user_id=who, stream="false"))
        if "tool_args" in decision and not edited:
            edited = run["run_id"]
    waiting = ""
    for agent, message in WAITING:
        r = c.post(f"/agents/{agent}/runs", files=form(message=message, user_id="ann",
                                                       stream="false"))
        waiting = waiting or r.json()["run_id"]
        time.sleep(0.4)
    return waiting, edited


def main(out: Path = OUT) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, \
            live_server(f"sqlite:///{tmp}/signoff.db", Path(tmp) / "server.log",
                        SIGNOFF_AGENTS="agent.demo") as server, \
            server.client() as c, sync_playwright() as p:
        waiting, edited = seed(c)
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1400, "height": 860})
        page.goto(f"{server.url}/inbox")
        page.fill("#name", "alice")
        page.click("#who button[type=submit]")
        page.wait_for_selector("#live[data-state=open]")
        page.click(f"#queue li[data-run-id='{waiting}'] a")
        page.wait_for_selector("#detail .call-card input[name='arg-count']")
        page.fill("#detail input[name='arg-count']", "10")
        page.screenshot(path=out / "inbox.png")

        page.goto(f"{server.url}/inbox#run/{edited}")
        page.wait_for_selector("#run-status")
        page.locator("#detail").screenshot(path=out / "run.png")

        page.goto(f"{server.url}/inbox#history/{edited}")
        page.wait_for_selector("#history #timeline")
        page.click("#history button[name='at-4']")
        page.click("#history button[name='verify']")
        page.wait_for_selector("#verify-result.intact")
        page.wait_for_selector("#at-version .at-status")
        page.screenshot(path=out / "audit.png", full_page=True)

        page.goto(f"{server.url}/inbox#analytics")
        page.wait_for_selector("[data-chart='time-actor'] rect")
        page.locator(".analytics").screenshot(path=out / "analytics.png")
        browser.close()
    print(f"screenshots in {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
