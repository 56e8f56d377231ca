"""Random scenarios driven through the run lifecycle (``service/lifecycle.py``) and the
real ``AgentLoop`` (offline model), and the comparison of every read model with the
independent fold (``tests/projections/fold.py``).

A scenario is drawn step by step (``hypothesis`` ``st.data()``): runs of the demo agents,
the test agents (``tests/support/agents.py``) and ``crashing`` (below) are started with
explicit ``call TOOL {json}`` lines, so the offline model proposes one to three calls of
every kind (confirmation, external result, user input, none); then paused runs are
decided (one call at a time or all at once, confirmed with or without edited arguments,
rejected with reasons, by several actors), cancelled, crashed mid-tool and recovered (the
call goes in doubt), decisions expire (rejected, approved, escalated to a group and
expired again), while time moves on by milliseconds, hours or days.

Time is a fake clock shared by the loop and the events' timestamps (eventsourcing's
``datetime_now_with_tzinfo``), so times to decision, days and ties are drawn too.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock
from zoneinfo import ZoneInfo

from hypothesis import strategies as st

from agent import demo
from agent.loop import AgentLoop
from agent.models.offline import OfflineModel
from agent.tools import Agent, tool
from domain.calls import ToolCall
from domain.run import Run
from domain.values import CallState, Decision, DecisionKind, Requirement, RunStatus
from projections import analytics, audit, queue, queuepages, sweeps
from projections.runner import Projections
from service.policies import Policies
from service.runs import RunService
from tests.projections.fold import (
    Fold,
    expected_analytics,
    expected_decisions,
    expected_queue,
    expected_queue_age,
    expected_running,
    expected_stale,
    fold,
)
from tests.support import agents as test_agents
from tests.support.runs import Runs

TOOL_TIMEOUT = 60.0


class SimulatedCrash(BaseException):
    """The process "dies" while a tool runs: nothing after the tool's start is recorded."""


@tool(requires_confirmation=True)
def wire_funds(account: str, crash: bool = False) -> str:
    """Wire funds; with ``crash`` the process dies while it runs.

    Args:
        account: Target account
        crash: Die while running
    """
    if crash:
        raise SimulatedCrash(account)
    return f"Wired to {account}"


@tool
def sync_ledger(ledger: str, crash: bool = False) -> str:
    """Sync a ledger (needs no decision); with ``crash`` the process dies while it runs.

    Args:
        ledger: Which ledger
        crash: Die while running
    """
    if crash:
        raise SimulatedCrash(ledger)
    return f"Synced {ledger}"


crashing = Agent(id="crashing", name="Crashing", tools=[wire_funds, sync_ledger, demo.lookup_order])


@tool(requires_confirmation=lambda args: args["amount"] > 100)
def pay(account: str, amount: int) -> str:
    """Pay an account; a person confirms amounts over 100 (the tool's own policy).

    Args:
        account: Who is paid
        amount: How much
    """
    return f"Paid {amount} to {account}"


@tool(requires_confirmation=lambda args: args["level"] > 2)
def flag(item: str, level: int = 0) -> str:
    """Flag an item; without a level the tool's policy raises (KeyError: it fails closed).

    Args:
        item: What is flagged
        level: How severe
    """
    return f"Flagged {item} at {level}"


@tool(requires_confirmation=True, decision_timeout=3600, on_timeout="escalate",
      escalate_to="leads")
def purge(bucket: str) -> str:
    """Purge a bucket; undecided for an hour, it goes to the leads (for another hour).

    Args:
        bucket: Which bucket
    """
    return f"Purged {bucket}"


@tool(requires_confirmation=True, decision_timeout=timedelta(minutes=10), on_timeout="approve",
      safe=True)
def warm_cache(name: str) -> str:
    """Warm a cache (safe): undecided for 10 minutes, it runs.

    Args:
        name: Which cache
    """
    return f"Warmed {name}"


@tool(external_execution=True, decision_timeout=1800)
def fetch_quote(symbol: str) -> str:
    """A quote from outside; no result within 30 minutes: rejected.

    Args:
        symbol: Which symbol
    """
    raise RuntimeError("external")


policed = Agent(id="policed", name="Policed",
                tools=[pay, flag, demo.lookup_order, purge, warm_cache, fetch_quote])

# The settings' rules of the scenarios (SIGNOFF_POLICIES), before the tools' own: tiny
# payments are allowed, payments to acct-9 hit a rule that cannot be evaluated (a number
# compared with a string: it fails closed), lookups of o-1 are allowed (a tool that
# needs nothing anyway: the allowance is recorded), flags of "logs" need a person, syncs
# of the main ledger are allowed (and may crash: in doubt after the allowance).
POLICIES = Policies.from_data({"rules": [
    {"name": "tiny-payments", "agent": "policed", "tool": "pay",
     "when": {"amount": {"lte": 5}}, "decision": "allow",
     "description": "payments of 5 or less run at once"},
    {"name": "broken", "agent": "policed", "tool": "pay",
     "when": {"account": "acct-9", "amount": {"gt": "x"}}, "decision": "allow"},
    {"name": "o-1-lookups", "agent": "policed", "tool": "lookup_order",
     "when": {"order_id": {"in": ["o-1"]}}, "decision": "allow"},
    {"name": "log-flags", "agent": "poli*", "tool": "flag",
     "when": {"item": "logs"}, "decision": "require"},
    # A call let through that then crashes: in doubt after its allowance.
    {"name": "main-ledger", "agent": "crashing", "tool": "sync_ledger",
     "when": {"ledger": "main"}, "decision": "allow"},
]})

AGENTS: dict[str, Agent] = {a.id: a for a in (demo.data_manager, demo.support_desk,
                                               test_agents.ops, test_agents.gatekeeper,
                                               crashing, policed)}

_words = st.sampled_from(["users", "orders", "logs", "o-1", "o-2", "acct-9", "main"])
ARGS: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "delete_records": st.fixed_dictionaries({"table_name": _words,
                                             "count": st.integers(0, 500)}),
    "send_notification": st.fixed_dictionaries({
        "recipient": st.sampled_from(["ann@example.com", "bo"]), "message": _words}),
    "lookup_order": st.fixed_dictionaries({"order_id": _words}),
    "check_payment": st.fixed_dictionaries({"order_id": _words}),
    "issue_refund": st.fixed_dictionaries({"order_id": _words,
                                           "amount": st.sampled_from([5.0, 12.5, 99.0])}),
    "slow_delete": st.fixed_dictionaries({"table_name": _words}),
    "refresh_cache": st.fixed_dictionaries({"name": _words}),
    "transfer_money": st.fixed_dictionaries({"account": _words,
                                             "amount": st.integers(1, 1000)}),
    "archive_table": st.fixed_dictionaries({"table_name": _words}),
    "failing_tool": st.fixed_dictionaries({"name": _words}),
    "wire_funds": st.fixed_dictionaries({"account": _words, "crash": st.booleans()}),
    "sync_ledger": st.fixed_dictionaries({"ledger": _words, "crash": st.booleans()}),
    "pay": st.fixed_dictionaries({"account": _words,
                                  "amount": st.sampled_from([1, 5, 6, 100, 101, 900])}),
    "purge": st.fixed_dictionaries({"bucket": _words}),
    "warm_cache": st.fixed_dictionaries({"name": _words}),
    "fetch_quote": st.fixed_dictionaries({"symbol": _words}),
    "flag": st.fixed_dictionaries({"item": _words}, optional={"level": st.sampled_from([1, 3])}),
}
USERS = st.sampled_from(["alice", "bob", None])
ACTORS = st.sampled_from(["alice", "bob", "carol", "ops-bot"])
NOTES = st.sampled_from([None, "", "looks fine", "not today", "checked twice"])
TICKS = st.one_of(st.integers(0, 5_000).map(lambda ms: timedelta(milliseconds=ms)),
                  st.integers(1, 30).map(lambda m: timedelta(minutes=m)),
                  st.just(timedelta(hours=7)), st.just(timedelta(days=1)))


class FakeClock:
    """The loop's clock and every event's timestamp; moves only when told."""

    def __init__(self, start: datetime = datetime(2030, 3, 10, 21, 0, tzinfo=UTC)) -> None:
        self.t = start

    def now(self) -> datetime:
        return self.t

    def tick(self, by: timedelta) -> None:
        self.t += by


@contextlib.contextmanager
def fake_time(clock: FakeClock) -> Iterator[None]:
    with mock.patch("eventsourcing.domain.datetime_now_with_tzinfo", clock.now):
        yield


@dataclass
class Driver:
    """Draws and performs the steps of one scenario."""

    data: Any  # hypothesis st.data()
    loop: Runs  # the run lifecycle over the loop (``new_loop``)
    clock: FakeClock
    projections: Projections | None = None
    run_ids: list[str] = field(default_factory=list)

    @property
    def app(self) -> RunService:
        return self.loop.store

    def draw(self, strategy: st.SearchStrategy[Any], label: str | None = None) -> Any:
        return self.data.draw(strategy, label=label)

    def pick(self, runs: list[Run]) -> Run:
        """One of ``runs``, by its place in the scenario (run ids are random)."""
        return runs[self.draw(st.integers(0, len(runs) - 1), "run")]

    def _seen(self, run: Run, _events: list[Any]) -> None:
        if run.run_id not in self.run_ids:
            self.run_ids.append(run.run_id)

    def runs(self) -> list[Run]:
        return [self.app.get_run(r) for r in self.run_ids]

    def run(self, max_steps: int = 25, max_runs: int = 7) -> None:
        n = self.draw(st.integers(1, max_steps), "steps")
        for _ in range(n):
            runs = self.runs()
            paused = [r for r in runs if r.status == RunStatus.PAUSED]
            live = [r for r in runs if not r.status.is_final]
            crashed = [r for r in runs if r.status == RunStatus.RUNNING
                       and r.calls_in(CallState.RUNNING)]
            choices = ["tick", "catch_up"]
            if len(runs) < max_runs:
                choices += ["start", "start"]
            if paused:
                choices += ["decide", "decide", "decide"]
            if live:
                choices.append("cancel")
            if crashed:
                choices += ["recover", "recover"]
            if paused:
                choices.append("expire")
            action = self.draw(st.sampled_from(choices), "action")
            if action == "tick":
                self.clock.tick(self.draw(TICKS, "tick"))
            elif action == "catch_up" and self.projections is not None:
                self.projections.catch_up_all()
            elif action == "start":
                self.start()
            elif action == "decide":
                self.decide(self.pick(paused))
            elif action == "cancel":
                run = self.pick(live)
                self.loop.cancel(run.run_id, actor=self.draw(ACTORS, "actor"),
                                 reason=self.draw(NOTES, "reason"))
            elif action == "expire":
                # As the sweeper does: every paused run's calls past their deadline.
                self.clock.tick(self.draw(TICKS, "tick"))
                for run in paused:
                    with contextlib.suppress(SimulatedCrash):
                        self.loop.expire(run.run_id)
            elif action == "recover":
                run = self.pick(crashed)
                self.clock.tick(timedelta(seconds=TOOL_TIMEOUT + 1))
                self.loop.settle(run.run_id)

    def start(self) -> None:
        # "crashing" twice: its calls going in doubt need a crash and a recovery after it;
        # "policed" twice: its expiries need a pause, then time, then a sweep.
        agent = AGENTS[self.draw(st.sampled_from([*sorted(AGENTS), "crashing", "policed"]),
                                 "agent")]
        names = self.draw(st.lists(st.sampled_from([t.name for t in agent.tools]),
                                   min_size=1, max_size=3), "tools")
        lines = [f"call {n} {json.dumps(self.draw(ARGS[n], n))}" for n in names]
        with contextlib.suppress(SimulatedCrash):
            self.loop.start(agent.id, "\n".join(lines), user_id=self.draw(USERS, "user"),
                            session_id=self.draw(st.sampled_from([None, "s1", "s2"])),
                            observer=self._seen)

    def decide(self, run: Run) -> None:
        pending = run.pending_calls()
        how = self.draw(st.sampled_from(["one", "all", "some"]), "how")
        if how == "one":
            chosen = [pending[0]]
        elif how == "all":
            chosen = pending
        else:
            picked = self.draw(st.sets(st.sampled_from(range(len(pending))), min_size=1),
                               "calls")
            chosen = [pending[i] for i in sorted(picked)]
        decisions = [self.decision(run, c) for c in chosen]
        actor = self.draw(ACTORS, "actor")
        with contextlib.suppress(SimulatedCrash):
            after = self.loop.decide(run.run_id, decisions, actor=actor, observer=self._seen)
            self.loop.drive(after, observer=self._seen)

    def decision(self, run: Run, call: ToolCall) -> Decision:
        cid, name = call.tool_call_id, call.tool_name
        if call.state == CallState.IN_DOUBT:
            kinds = [DecisionKind.CONFIRMED, DecisionKind.REJECTED,
                     DecisionKind.EXTERNAL_RESULT]
        else:
            kinds = {Requirement.CONFIRMATION: [DecisionKind.CONFIRMED],
                     Requirement.EXTERNAL_EXECUTION: [DecisionKind.EXTERNAL_RESULT],
                     Requirement.USER_INPUT: [DecisionKind.USER_INPUT],
                     }[Requirement(call.requires)] + [DecisionKind.REJECTED]
        kind = self.draw(st.sampled_from(kinds), "kind")
        if kind == DecisionKind.CONFIRMED:
            edited = None
            if call.editable_args and name in ARGS and self.draw(st.booleans(), "edit"):
                edited = self.draw(ARGS[name], "edited")
            return Decision(cid, kind, note=self.draw(NOTES, "note"), approved_args=edited)
        if kind == DecisionKind.REJECTED:
            return Decision(cid, kind, note=self.draw(NOTES, "reason"))
        if kind == DecisionKind.EXTERNAL_RESULT:
            return Decision(cid, kind, result=self.draw(st.sampled_from(["paid", "unpaid",
                                                                         ""]), "result"))
        fields = [f["name"] for f in call.user_input_schema or []]
        return Decision(cid, kind, values={f: self.draw(st.sampled_from(
            ["ann@example.com", "bo@example.org"]), f) for f in fields})


class LoopRuns(Runs):
    """The run lifecycle as the scenarios drive it (``tests/support/runs.py``): ``app``
    is its store, ``close`` closes its loop."""

    @property
    def app(self) -> RunService:
        return self.store

    def close(self) -> None:
        self.loop.close()


def new_loop(app: RunService, clock: FakeClock) -> LoopRuns:
    """The scenarios' agents (offline model, the scenarios' rules) driven through the run
    lifecycle over ``app``, on ``clock``."""
    return LoopRuns(app, AgentLoop(AGENTS, OfflineModel(), tool_timeout=TOOL_TIMEOUT,
                                   clock=clock.now, policies=POLICIES))


# ------------------------------------------------------------------ reading back

def expected_total(matches: int, filtered: bool, cap: int) -> tuple[int, bool]:
    """``(total, total_exact)`` for ``matches`` rows: unfiltered totals are counters,
    always exact; filtered ones are counted up to ``cap``."""
    if not filtered or matches <= cap:
        return matches, True
    return cap, False


def read_queue(p: Projections, *, limit: int, total_cap: int = queuepages.TOTAL_CAP,
               **filters: Any) -> list[dict[str, Any]]:
    """Every page of ``list_queue``, following ``next_cursor``; checks that every page
    has the same ``total`` and ``total_exact``, and that they are right."""
    items: list[dict[str, Any]] = []
    after = None
    totals = set()
    view = p.views[queue.QueueProjection.name]
    while True:
        with view.read() as c:
            page = queuepages.list_queue(c, after=after, limit=limit, total_cap=total_cap,
                                    **filters)
        assert len(page["items"]) <= limit
        items += page["items"]
        totals.add((page["total"], page["total_exact"]))
        if page["next_cursor"] is None:
            break
        after = page["next_cursor"]
    filtered = any(v is not None for v in filters.values())
    assert totals == {expected_total(len(items), filtered, total_cap)}, (totals, len(items))
    return items


def read_running(p: Projections) -> list[dict[str, Any]]:
    """``signoff_queue_running``'s rows by run id, times as datetimes."""
    with p.views[queue.QueueProjection.name].read() as c:
        d = c.dialect
        return [{"run_id": r["run_id"], "since": d.from_time(r["since"]),
                 "deadline": d.from_time(r["deadline"])} for r in c.execute(
            "SELECT run_id, since, deadline FROM signoff_queue_running "
            "ORDER BY run_id").fetchall()]


def read_stale(p: Projections, now: datetime, idle_before: datetime,
               limit: int = 100) -> list[str]:
    with p.views[queue.QueueProjection.name].read(snapshot=False) as c:
        return sweeps.stale(c, now, idle_before, limit)


def running_times(f: Fold) -> list[datetime]:
    """Every time ``stale`` compares with, and just around each (its bounds are strict)."""
    times = {t for r in expected_running(f) for t in (r["since"], r["deadline"]) if t}
    tick = timedelta(microseconds=1)
    return sorted({t + dt for t in times for dt in (-tick, timedelta(0), tick)}) or [
        datetime(2030, 1, 1, tzinfo=UTC)]


def assert_running_matches_fold(p: Projections, f: Fold, now: datetime,
                                idle_before: datetime, limit: int) -> None:
    """The running runs' rows, and ``stale``'s answer at ``now`` and ``idle_before``,
    equal the fold's."""
    same(read_running(p), expected_running(f), "running runs")
    assert read_stale(p, now, idle_before, limit) == expected_stale(f, now, idle_before,
                                                                    limit), (now, idle_before,
                                                                             limit)


def read_decisions(p: Projections, *, limit: int, total_cap: int = audit.TOTAL_CAP,
                   **filters: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    after = None
    totals = set()
    view = p.views[audit.AuditProjection.name]
    while True:
        with view.read() as c:
            page = audit.list_decisions(c, after=after, limit=limit, total_cap=total_cap,
                                        **filters)
        rows += page["items"]
        totals.add((page["total"], page["total_exact"]))
        if page["next_cursor"] is None:
            break
        after = page["next_cursor"]
    filtered = any(v is not None for v in filters.values())
    assert totals == {expected_total(len(rows), filtered, total_cap)}, (totals, len(rows))
    return rows


def assert_counts_match_fold(p: Projections, f: Any) -> None:
    """The counters equal the fold's numbers (how many runs are paused, how many
    decisions there are), and what recounting the rows gives."""
    expected = {queue.QueueProjection.name: {"paused": len(expected_queue(f))},
                audit.AuditProjection.name: {"decisions": len(expected_decisions(f))}}
    for name, counts in expected.items():
        recounted = p.views[name].recount()
        assert {k: v[0] for k, v in recounted.items()} == counts, (name, recounted, counts)
        assert {k: v[1] for k, v in recounted.items()} == counts, (name, recounted, counts)


def read_analytics(p: Projections, group_by: str, **window: Any) -> list[dict[str, Any]]:
    with p.views[audit.AuditProjection.name].read() as c:
        return analytics.analytics(c, group_by, **window)


def read_queue_age(p: Projections, group_by: str, at: datetime) -> list[dict[str, Any]]:
    with p.views[queue.QueueProjection.name].read() as c:
        return analytics.queue_age(c, group_by, at=at)


# Every grouping of the analytics, each clock, and time zones whose days are not UTC's.
ANALYTICS_GROUPS = ("tool", "agent", "actor", "day", "actor,tool", "tool,day")
QUEUE_GROUPS = ("tool", "agent", "kind", "group", "tool,group")
ZONES = (UTC, ZoneInfo("Pacific/Kiritimati"), ZoneInfo("America/St_Johns"))


def assert_analytics_match_fold(p: Projections, f: Fold, *, by: str, tz: Any,
                                **window: Any) -> None:
    for group_by in ANALYTICS_GROUPS:
        same(read_analytics(p, group_by, by=by, tz=tz, **window),
             expected_analytics(f, group_by, by=by, tz=tz, **window),
             f"analytics by {group_by} ({by}, {tz}) in {window}")


def assert_queue_age_matches_fold(p: Projections, f: Fold, at: datetime) -> None:
    for group_by in QUEUE_GROUPS:
        same(read_queue_age(p, group_by, at), expected_queue_age(f, group_by, at),
             f"queue age by {group_by} at {at}")


def same(actual: list[dict[str, Any]], expected: list[dict[str, Any]], what: str) -> None:
    """``actual == expected``, or an AssertionError naming the first rows that differ."""
    if actual == expected:
        return
    lines = [f"{what}: {len(actual)} rows read, {len(expected)} expected by the fold"]
    for i, (a, e) in enumerate(zip(actual, expected, strict=False)):
        if a != e:
            keys = sorted(set(a) | set(e))
            lines.append(f"row {i} differs: " + "; ".join(
                f"{k}: read {a.get(k)!r}, fold {e.get(k)!r}" for k in keys
                if a.get(k) != e.get(k)))
            break
    lines += [f"read only: {r}" for r in actual[len(expected):][:3]]
    lines += [f"fold only: {r}" for r in expected[len(actual):][:3]]
    raise AssertionError("\n".join(lines))


def assert_read_models_match_fold(p: Projections, app: RunService, data: Any) -> None:
    """Every read function's answer equals the fold's, over the same log."""
    f = fold(app.log())
    draw = data.draw

    assert_counts_match_fold(p, f)
    times = running_times(f)
    now = draw(st.sampled_from(times), "now")
    idle_before = draw(st.sampled_from([t for t in times if t <= now] or [now]),
                       "idle before")
    assert_running_matches_fold(p, f, now, idle_before,
                                draw(st.sampled_from([1, 2, 100]), "stale limit"))
    # Small caps too: a filtered total beyond the cap says so (total_exact false).
    cap = draw(st.sampled_from([1, 2, 3, queuepages.TOTAL_CAP]), "total cap")
    queue_limit = draw(st.integers(1, 4), "queue page size")
    same(read_queue(p, limit=queue_limit, total_cap=cap), expected_queue(f), "queue")
    waiting = [c for item in expected_queue(f) for c in item["waiting_for"]]
    filters = draw(st.sampled_from([
        {"agent_id": draw(st.sampled_from(sorted(AGENTS)))},
        {"user_id": draw(USERS.filter(bool))},
        {"tool_name": draw(st.sampled_from(sorted({c["tool_name"] for c in waiting}
                                                  or {"slow_delete"})))},
        {"kind": draw(st.sampled_from(["confirmation", "external_execution", "user_input",
                                       "in_doubt"]))},
        {"group": draw(st.sampled_from(["leads", "nobody"]))},
    ]), "queue filter")
    same(read_queue(p, limit=queue_limit, total_cap=cap, **filters),
         expected_queue(f, **filters), f"queue {filters}")

    # Small pages split a cancel's rows (one position, several calls) too.
    decision_limit = draw(st.sampled_from([1, 2, 3, 1000]), "decisions page size")
    same(read_decisions(p, limit=decision_limit, total_cap=cap), expected_decisions(f),
         "decisions")
    rows = expected_decisions(f)
    if rows:
        row = rows[draw(st.integers(0, len(rows) - 1), "a decision to filter on")]
        key = draw(st.sampled_from(["run_id", "actor", "tool_name", "decision"]))
        same(read_decisions(p, limit=decision_limit, total_cap=cap, **{key: row[key]}),
             expected_decisions(f, **{key: row[key]}), f"decisions {key}={row[key]!r}")

    times = sorted({r["decided_at"] for r in rows} | {r["requested_at"] for r in rows})
    window: dict[str, Any] = {}
    if times:
        window = {"since": draw(st.sampled_from(times), "since")}
        window["until"] = draw(st.sampled_from([t for t in times if t >= window["since"]]
                                               + [window["since"] + timedelta(days=2)]),
                               "until")
    for by in analytics.CLOCKS:
        tz = draw(st.sampled_from(ZONES), f"time zone ({by})")
        assert_analytics_match_fold(p, f, by=by, tz=tz)
        assert_analytics_match_fold(p, f, by=by, tz=tz, **window)
    assert_queue_age_matches_fold(p, f, draw(st.sampled_from(times or [now]), "queue at"))


def assert_matches_fold(p: Projections, app: RunService) -> None:
    """The whole queue, the whole decision trail and every analytics grouping equal the
    fold's (no random paging or filters: for tests that are not property tests)."""
    f = fold(app.log())
    assert_counts_match_fold(p, f)
    same(read_queue(p, limit=100), expected_queue(f), "queue")
    times = running_times(f)
    for now in (times[0], times[len(times) // 2], times[-1]):
        for idle_before in (times[0], now):
            for limit in (1, 100):
                assert_running_matches_fold(p, f, now, idle_before, limit)
    same(read_decisions(p, limit=1000), expected_decisions(f), "decisions")
    for by in analytics.CLOCKS:
        assert_analytics_match_fold(p, f, by=by, tz=ZONES[1])
    assert_queue_age_matches_fold(p, f, times[-1])
