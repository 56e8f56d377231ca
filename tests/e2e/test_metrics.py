"""``GET /metrics`` over real HTTP: the counters move by exactly the runs and decisions made.

A fresh server (SQLite and PostgreSQL) is scraped, then driven through the seed's flow
and every other way a run can go (rejected, external result, user input, cancelled,
failed, left paused) plus a decision refused as already made; then scraped again. Each
counter's move is checked against the events the runs actually recorded (read back from
``/runs/{id}/events``), and against the numbers written out by hand. With two uvicorn
workers in prometheus_client's multiprocess mode, any worker's scrape gives the totals.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.flows import (
    assert_problem,
    continue_,
    continue_stream,
    decided,
    events,
    form,
    post_continue,
    start,
)
from tests.e2e.sse import parse
from tests.support.server import ROOT, LiveServer, live_server

pytestmark = pytest.mark.e2e

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

SEED = "Delete 50 old records from the users table"
RUN_COUNTERS = {"RunStarted": "started", "RunPaused": "paused", "RunCompleted": "completed",
                "RunFailed": "failed", "RunCancelled": "cancelled"}
DECISIONS = {"ToolConfirmed": "confirmed", "ToolRejected": "rejected",
             "ExternalResultProvided": "external_result", "UserInputProvided": "user_input"}


def scrape(c: httpx.Client) -> Samples:
    r = c.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: Samples, after: Samples, prefix: str) -> dict[Any, float]:
    """The samples named ``prefix…`` that changed, by how much."""
    keys = {k for k in (*before, *after) if k[0].startswith(prefix)}
    return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in keys
            if after.get(k, 0.0) != before.get(k, 0.0)}


def make_every_kind_of_run(c: httpx.Client) -> list[str]:
    """The seed flow and the other paths a run can take; returns the run ids."""
    runs = []
    # The seed's curl commands: start (streamed), then confirm with stream=false.
    r = c.post("/agents/data_manager/runs",
               files=form(message=SEED, user_id="test_user", session_id="test_session"))
    stream = parse(r.text)
    assert stream[-1][0] == "RunPaused"
    paused = stream[-1][1]
    run = {"run_id": paused["run_id"], "agent_id": "data_manager", "tools": paused["tools"]}
    done = continue_(c, run, [decided(t, confirmed=True) for t in paused["tools"]])
    assert done["status"] == "COMPLETED"
    runs.append(run["run_id"])
    # The same decision again: refused (409), recorded nothing, counts nothing.
    r = post_continue(c, "data_manager", run["run_id"], stream="false", tools=[
        decided(t, confirmed=True) for t in paused["tools"]])
    assert_problem(r, 409)

    # Rejected, the continue streamed.
    run = start(c, "data_manager", SEED)
    continue_stream(c, run, [decided(t, confirmed=False, confirmation_note="no")
                             for t in run["tools"]])
    runs.append(run["run_id"])

    # An external system's result; a person's input.
    run = start(c, "support_desk", "check payment for order 77")
    assert continue_(c, run, [decided(run["tools"][0], result="paid")])["status"] == "COMPLETED"
    runs.append(run["run_id"])
    run = start(c, "support_desk", "Issue a refund of 30 for order A17")
    [tool] = run["tools"]
    schema = [{**f, "value": "ana@example.com"} for f in tool["user_input_schema"]]
    assert continue_(c, run, [decided(tool, user_input_schema=schema)])["status"] == \
        "COMPLETED"
    runs.append(run["run_id"])

    # Cancelled while paused.
    run = start(c, "data_manager", SEED)
    assert c.post(f"/runs/{run['run_id']}/cancel", json={"reason": "no"}).status_code == 200
    runs.append(run["run_id"])

    # Failed: the lookup runs at once, and the second model turn is past the limit.
    run = start(c, "support_desk", 'call lookup_order {"order_id": "5"}')
    assert run["status"] == "ERROR", run
    runs.append(run["run_id"])

    # Left paused: one confirmation waits.
    run = start(c, "data_manager", SEED)
    assert run["status"] == "PAUSED"
    runs.append(run["run_id"])
    return runs


def expected_from_events(c: httpx.Client, run_ids: list[str]) -> tuple[Counter[Any], ...]:
    """What the runs recorded: run facts, decisions, tool outcomes and model calls."""
    runs: Counter[Any] = Counter()
    decisions: Counter[Any] = Counter()
    tools: Counter[Any] = Counter()
    models = 0
    for run_id in run_ids:
        history = events(c, run_id)
        agent = history[0]["payload"]["agent_id"]
        names = {}
        for e in history:
            p = e["payload"]
            if e["type"] in RUN_COUNTERS:
                runs[(RUN_COUNTERS[e["type"]], agent)] += 1
            if e["type"] in DECISIONS:
                decisions[(agent, DECISIONS[e["type"]])] += 1
            if e["type"] == "ToolCallRequested":
                names[p["tool_call_id"]] = p["tool_name"]
            if e["type"] in ("ToolExecuted", "ToolFailed"):
                outcome = "executed" if e["type"] == "ToolExecuted" else "failed"
                tools[(agent, names[p["tool_call_id"]], outcome)] += 1
            models += e["type"] == "ModelResponded"
    return runs, decisions, tools, Counter({"models": models})


def caught_up(c: httpx.Client, paused: int) -> Samples:
    """Scrape until the read models have applied every event (the gauges read from them
    are then final): no projection lags, and the runs left paused are in the queue."""
    deadline = time.monotonic() + 30
    while True:
        samples = scrape(c)
        lags = [v for (name, _), v in samples.items()
                if name == "signoff_projection_lag_events"]
        if (lags and not any(lags)
                and value(samples, "signoff_pending_decisions", kind="confirmation") == paused):
            return samples
        assert time.monotonic() < deadline, ("the read models did not catch up", lags, value(
            samples, "signoff_pending_decisions", kind="confirmation"))
        time.sleep(0.05)


def assert_counted_exactly(before: Samples, after: Samples, c: httpx.Client,
                           run_ids: list[str]) -> None:
    runs, decisions, tools, models = expected_from_events(c, run_ids)
    # Written out: 7 runs, 4 decisions (the refused repeat is not one).
    assert runs == {("started", "data_manager"): 4, ("started", "support_desk"): 3,
                    ("paused", "data_manager"): 4, ("paused", "support_desk"): 2,
                    ("completed", "data_manager"): 2, ("completed", "support_desk"): 2,
                    ("cancelled", "data_manager"): 1, ("failed", "support_desk"): 1}
    assert decisions == {("data_manager", "confirmed"): 1, ("data_manager", "rejected"): 1,
                         ("support_desk", "external_result"): 1,
                         ("support_desk", "user_input"): 1}
    assert moved(before, after, "signoff_runs_") == {
        (f"signoff_runs_{fact}_total", frozenset({("agent", agent)})): float(n)
        for (fact, agent), n in runs.items()}
    assert moved(before, after, "signoff_decisions_") == {
        ("signoff_decisions_total", frozenset({("agent", agent), ("kind", kind)})): float(n)
        for (agent, kind), n in decisions.items()}
    tool_counts = {k[1]: v for k, v in moved(before, after, "signoff_tool_call_duration_seconds"
                                              ).items() if k[0].endswith("_count")}
    assert tool_counts == {
        frozenset({("agent", a), ("tool", t), ("outcome", o)}): float(n)
        for (a, t, o), n in tools.items()}
    assert tools == {("data_manager", "delete_records", "executed"): 1,
                     ("support_desk", "issue_refund", "executed"): 1,
                     ("support_desk", "lookup_order", "executed"): 1}
    model_calls = sum(v for k, v in moved(before, after, "signoff_model_call_duration_seconds"
                                          ).items() if k[0].endswith("_count"))
    assert model_calls == models["models"] > 0


def test_counters_move_by_exactly_the_runs_and_decisions_made(store_url: str,
                                                              tmp_path: Path) -> None:
    with live_server(store_url, tmp_path / "server.log", SIGNOFF_MAX_MODEL_TURNS="1") as s, \
            s.client() as c:
        before = scrape(c)
        assert value(before, "signoff_store_up") == 1
        assert value(before, "signoff_pending_decisions", kind="confirmation") == 0
        run_ids = make_every_kind_of_run(c)
        after = caught_up(c, paused=1)
        assert_counted_exactly(before, after, c, run_ids)

        # Requests, by route template and status (the refused repeat is the one 409).
        starts = "/agents/{agent_id}/runs"
        continues = "/agents/{agent_id}/runs/{run_id}/continue"
        assert value(after, "signoff_http_requests_total", method="POST", route=starts,
                     status="200") == 7
        assert value(after, "signoff_http_requests_total", method="POST", route=continues,
                     status="409") == 1
        assert value(after, "signoff_http_request_duration_seconds_count", method="POST",
                     route=continues) == 5
        assert c.get("/no/such/path").status_code == 404
        assert value(scrape(c), "signoff_http_requests_total", method="GET",
                     route="unmatched", status="404") == 1

        # Read when scraped: the one run left paused, and projections caught up.
        assert value(after, "signoff_paused_runs") == 1
        assert value(after, "signoff_pending_decisions", kind="user_input") == 0
        assert value(after, "signoff_oldest_pending_decision_age_seconds") > 0
        head = value(after, "signoff_event_log_head")
        assert head >= sum(len(events(c, r)) for r in run_ids)
        for projection in ("queue", "audit"):
            assert value(after, "signoff_projection_lag_events", projection=projection) == 0
            assert value(after, "signoff_projection_position", projection=projection) == head


# ------------------------------------------------------- several workers

@contextlib.contextmanager
def workers(url: str, tmp: Path, n: int) -> Iterator[LiveServer]:
    """``signoff serve --workers n`` in multiprocess mode, stopped by its PID."""
    metrics_dir = tmp / "metrics"
    metrics_dir.mkdir()
    server = LiveServer(url, tmp / "server.log", {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
                                                  "SIGNOFF_MAX_MODEL_TURNS": "1"})
    with (tmp / "server.log").open("ab") as log:
        server.proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "serve", "--workers", str(n)], cwd=ROOT,
            env=server.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (_answers(server)
                   and server.log_path.read_text().count("startup complete") == n):
            assert server.proc.poll() is None, server.log()
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.1)
        yield server
    finally:
        server.stop()


def counted_by(metrics_dir: Path) -> set[str]:
    """The worker processes that have counted something (one file each)."""
    return {f for f in os.listdir(metrics_dir) if f.startswith("counter_")}


def _answers(server: LiveServer) -> bool:
    try:
        return httpx.get(server.url + "/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.postgres
def test_with_two_workers_any_scrape_counts_every_workers_runs(pg_database: Any,
                                                               tmp_path: Path) -> None:
    with workers(str(pg_database.url), tmp_path, 2) as s:
        with s.client() as c:
            before = scrape(c)
        run_ids: list[str] = []
        rounds = calls = 0  # rounds of clients; calls of make_every_kind_of_run
        # New connections, which the workers share out; until both have counted some. On
        # a loaded machine one worker may take every connection one at a time: from the
        # fourth round on, four clients at once (a busy worker leaves some to the other).

        def one_client() -> list[str]:
            with s.client() as c:
                return make_every_kind_of_run(c)

        while rounds < 3 or (len(counted_by(tmp_path / "metrics")) < 2 and rounds < 20):
            clients = 1 if rounds < 3 else 4
            with concurrent.futures.ThreadPoolExecutor(clients) as pool:
                for ids in pool.map(lambda _: one_client(), range(clients)):
                    run_ids += ids
            rounds += 1
            calls += clients
        assert len(counted_by(tmp_path / "metrics")) == 2, (rounds, s.log())
        scrapes = []
        for _ in range(6):
            with s.client() as c:
                scrapes.append(caught_up(c, paused=calls))
        with s.client() as c:
            runs, decisions, _, _ = expected_from_events(c, run_ids)
            assert sum(runs.values()) == calls * 19
            assert sum(decisions.values()) == calls * 4
            for after in scrapes:
                assert moved(before, after, "signoff_runs_") == {
                    (f"signoff_runs_{fact}_total", frozenset({("agent", agent)})): float(n)
                    for (fact, agent), n in runs.items()}
                assert moved(before, after, "signoff_decisions_") == {
                    ("signoff_decisions_total",
                     frozenset({("agent", agent), ("kind", kind)})): float(n)
                    for (agent, kind), n in decisions.items()}
            assert json.loads(c.get("/ready").text)["status"] == "ready"


def test_the_database_pool_is_shown_on_postgresql(server: LiveServer) -> None:
    with server.client() as c:
        text = c.get("/metrics").text
    sizes = [line for line in text.splitlines() if line.startswith("signoff_db_pool_size ")]
    if server.database_url.startswith("postgres"):
        assert sizes and float(sizes[0].split()[1]) >= 1
        assert any(line.startswith("signoff_db_pool_available ") for line in text.splitlines())
    else:
        assert not sizes  # SQLite has no pool to show
