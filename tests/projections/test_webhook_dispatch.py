"""The webhooks projection and its dispatcher in process, with an injected clock: the
backoff schedule exactly (no waiting for it), giving up after the last attempt, a
subscription told only of events after its creation, none twice after a rebuild, and a
deleted one told nothing more. A real subscriber on 127.0.0.1; SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import pytest

from domain.run import Run
from domain.values import Requirement, TimeoutAction
from projections import webhooks
from projections.deliveries import Dispatcher
from projections.runner import Projections
from service.config import Settings, eventsourcing_env
from service.runs import RunService
from service.webhooks import create_webhook, delete_webhook
from tests.support.receiver import Receiver, verify_function

WEBHOOKS = webhooks.WebhooksProjection.name


class Clock:
    """Stands still until advanced; starts ``ahead`` seconds after the real time (the
    events' timestamps are real: a delivery is due from its event's time on)."""

    def __init__(self, ahead: float = 0.0) -> None:
        self.now = datetime.now(UTC) + timedelta(seconds=ahead)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def projections(env: dict[str, str]) -> Iterator[Projections]:
    p = Projections(RunService(env=env), env, names=[WEBHOOKS])
    yield p
    p.close()
    p.store.close()


def _subscribe(p: Projections, url: str, event_types: list[str]) -> tuple[str, str]:
    def keep(webhook_id: str, secret: str) -> None:
        with p.views[WEBHOOKS].write_transaction() as c:
            webhooks.keep_secret(c, webhook_id, secret)

    secret, webhook, _ = create_webhook(p.store, url=url, event_types=event_types,
                                        created_by="test", keep_secret=keep)
    return str(webhook.id), secret


def _a_run_that_completes(app: RunService) -> Run:
    run = Run.start(agent_id="travel", agent_name="Travel agent", user_id="u1",
                    session_id="s1", input="Book me a flight", instructions="")
    run.record_model_response(model="m", provider="p", content="Booked.", tool_calls=[],
                              input_tokens=1, output_tokens=1)
    run.complete("Booked.")
    app.save(run)
    return run


def _deliveries(p: Projections, webhook_id: str) -> list[dict[str, Any]]:
    with p.views[WEBHOOKS].read() as c:
        return webhooks.read_deliveries(c, webhook_id)


def _step(d: Dispatcher) -> float:
    wait = d.step()
    assert d.drain()
    return wait


def test_retries_back_off_on_the_injected_clock_then_give_up(projections: Projections) -> None:
    p = projections
    with Receiver(failures=99) as receiver:
        clock = Clock()
        d = Dispatcher(p.store, p.views[WEBHOOKS], attempts=4, backoff_base=10,
                       backoff_max=25, timeout=5, concurrency=2, clock=clock,
                       jitter=lambda: 1.0)
        try:
            early = _a_run_that_completes(p.store)  # before the subscription: not owed
            webhook_id, secret = _subscribe(p, receiver.url, ["run.completed"])
            run = _a_run_that_completes(p.store)
            p.catch_up(WEBHOOKS)
            clock.now = datetime.now(UTC)  # the event's time has come
            [owed] = _deliveries(p, webhook_id)
            assert owed["run_id"] == str(run.id) != str(early.id)
            assert owed["status"] == "pending" and owed["attempts"] == []

            waits = []
            for expected_wait in (10, 20, 25):  # doubling from 10 s, at most 25 s
                _step(d)
                [row] = _deliveries(p, webhook_id)
                assert row["status"] == "pending"
                assert row["next_attempt_at"] == clock.now + timedelta(seconds=expected_wait)
                # Not due yet: nothing is sent, and the dispatcher knows how long to wait.
                waits.append(_step(d))
                clock.advance(expected_wait)
            assert len(receiver.requests) == 3
            _step(d)  # the 4th and last attempt
        finally:
            d.close()
    [row] = _deliveries(p, webhook_id)
    assert row["status"] == "failed" and row["next_attempt_at"] is None
    assert [a["status_code"] for a in row["attempts"]] == [500] * 4
    assert [a["attempt"] for a in row["attempts"]] == [1, 2, 3, 4]
    starts = [a["started_at"] for a in row["attempts"]]
    assert [(b - a).total_seconds() for a, b in pairwise(starts)] == [
        10, 20, 25]
    assert waits == [1.0, 1.0, 1.0]  # the poll interval caps each wait
    verify = verify_function()
    assert len(receiver.requests) == 4
    assert {r["delivery"] for r in receiver.requests} == {row["id"]}
    # Signed at the (injected) time of each attempt: within the docs' tolerance.
    assert all(verify(secret, r["headers"]["Signoff-Signature"], r["body"])
               for r in receiver.requests)


def test_a_rebuild_owes_nothing_again_and_a_deleted_subscription_is_told_nothing(
        projections: Projections) -> None:
    p, clock = projections, Clock(ahead=60)
    with Receiver() as receiver:
        d = Dispatcher(p.store, p.views[WEBHOOKS], backoff_base=10, timeout=5,
                       clock=clock, jitter=lambda: 1.0)
        try:
            kept, _ = _subscribe(p, receiver.url, ["*"])
            doomed, _ = _subscribe(p, receiver.url, ["run.completed"])
            _a_run_that_completes(p.store)
            p.catch_up(WEBHOOKS)
            _step(d)
            assert len(receiver.requests) == 2
            assert [r["status"] for r in _deliveries(p, kept)] == ["delivered"]

            p.rebuild(WEBHOOKS)  # the subscriptions again, from the log
            _step(d)
            assert len(receiver.requests) == 2  # nothing owed twice

            delete_webhook(p.store, doomed, deleted_by="test")
            _a_run_that_completes(p.store)
            p.catch_up(WEBHOOKS)
            _step(d)
        finally:
            d.close()
    assert [r["status"] for r in _deliveries(p, kept)] == ["delivered", "delivered"]
    assert [r["status"] for r in _deliveries(p, doomed)] == ["delivered"]
    assert len(receiver.requests) == 3


@pytest.mark.postgres
def test_dispatchers_sharing_postgresql_send_each_delivery_once(pg_database: Any) -> None:
    env = eventsourcing_env(Settings(database_url=pg_database.url, postgres_pool_size=4))
    first, second = (Projections(RunService(env=env), env, names=[WEBHOOKS])
                     for _ in range(2))
    try:
        with Receiver() as receiver:
            webhook_id, _ = _subscribe(first, receiver.url, ["*"])
            for _ in range(30):
                _a_run_that_completes(first.store)
            first.catch_up(WEBHOOKS)
            dispatchers = [Dispatcher(p.store, p.views[WEBHOOKS], concurrency=4).start()
                           for p in (first, second)]
            try:
                deadline = time.monotonic() + 30
                while any(r["status"] != "delivered" for r in _deliveries(first, webhook_id)):
                    assert time.monotonic() < deadline
                    time.sleep(0.02)
            finally:
                for d in dispatchers:
                    d.close()
    finally:
        for p in (first, second):
            p.close()
            p.store.close()
    ids = [r["delivery"] for r in receiver.requests]
    assert len(ids) == len(set(ids)) == 30


def test_an_expiry_that_escalates_is_decision_escalated_then_one_that_rejects_is_made(
        projections: Projections) -> None:
    p, clock = projections, Clock(ahead=60)
    deadline = datetime.now(UTC)
    with Receiver() as receiver:
        d = Dispatcher(p.store, p.views[WEBHOOKS], clock=clock, jitter=lambda: 1.0)
        try:
            webhook_id, _ = _subscribe(p, receiver.url, ["decision.made",
                                                         "decision.escalated"])
            run = Run.start(agent_id="ops", agent_name="Ops", user_id="u1", session_id="s1",
                            input="Restart the database", instructions="")
            run.record_model_response(
                model="m", provider="p", content=None, input_tokens=1, output_tokens=1,
                tool_calls=[{"id": "c1", "name": "restart", "args": {"db": "main"}}])
            run.request_tool_call(tool_call_id="c1", tool_name="restart",
                                  tool_args={"db": "main"}, requires=Requirement.CONFIRMATION,
                                  expires_at=deadline, on_timeout=TimeoutAction.ESCALATE,
                                  escalate_to="leads")
            run.pause()
            run.expire_decision("c1", now=deadline + timedelta(seconds=1),
                                next_deadline=deadline + timedelta(seconds=2))
            run.expire_decision("c1", now=deadline + timedelta(seconds=3))
            p.store.save(run)
            p.catch_up(WEBHOOKS)
            _step(d)
        finally:
            d.close()
    rows = _deliveries(p, webhook_id)
    assert [r["event_type"] for r in rows] == ["decision.made", "decision.escalated"]
    assert {r["status"] for r in rows} == {"delivered"}
    made, escalated = (json.loads(r["body"])["data"] for r in rows)
    assert escalated["escalated_to"] == "leads" and escalated["tool_name"] == "restart"
    assert (made["decision"], made["action"], made["decided_by"]) == (
        "expired", "reject", "system")
    assert len(receiver.requests) == 2


def test_the_dispatcher_is_woken_by_a_page_that_made_deliveries_only(
        projections: Projections) -> None:
    """Pages that owe no one anything (no subscription wants their events) leave the
    dispatcher asleep until its poll; the first page that owes a delivery wakes it."""
    p = projections
    d = Dispatcher.for_settings(Settings(database_url="sqlite:///:memory:"), p)
    try:
        _a_run_that_completes(p.store)
        p.catch_up_all()  # every applied page is told to the dispatcher
        assert not d._wake.is_set()

        _subscribe(p, "http://127.0.0.1:9/hook", ["run.completed"])
        p.catch_up_all()
        assert not d._wake.is_set()  # a subscription made: nothing owed yet

        _a_run_that_completes(p.store)
        p.catch_up_all()
        assert d._wake.is_set()
    finally:
        d.close()
