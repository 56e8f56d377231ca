"""Agno 3.1.10's own ``AgentOSClient`` against a real ``signoff serve``: every agent,
session and run method it has, streaming and not, returns what the client parses
without error, with the values signoff means.

**Why a test extra and not a virtual environment of its own.** ``agno==3.1.10`` is in
pyproject.toml's ``test`` extra: installed beside signoff's dependencies it changes none
of them (it adds agno, agnoctl, docstring-parser, h2, hpack, hyperframe, prompt-toolkit,
questionary and wcwidth: ``pip install --dry-run`` says so), and its client needs only
what signoff already has (fastapi, httpx, pydantic). ``make test`` installs it with the
rest (nine small wheels, once), where a venv made by the test would cost every cold CI
run a fresh ``python -m venv`` and a pip install of agno with fastapi (about 20 s here),
and a subprocess per scenario. This module runs in about 5 s. The client is imported
here only: signoff's own code never imports agno.

**Approvals.** Agno 3.1.10's client has no approvals method (Agno's own reviewer UI calls
``/approvals`` directly): those routes are driven through the client's own transport
(``_aget``, ``_apost``, ``_adelete``: the same httpx client, the same error handling) and
parsed with the response models Agno's approvals router declares (``ApprovalResponse``,
``ApprovalCountResponse``, ``ApprovalStatusResponse``, ``PaginatedResponse``).

**Out of scope** (``OUT_OF_SCOPE``): teams, workflows, memories, knowledge, evals, traces,
Agno's metrics and database migrations. Each answers a 404 problem naming the feature
(``not_served``), which the client raises as ``httpx.HTTPStatusError``; ``get_metrics``
reads ``GET /metrics``, which is signoff's Prometheus text, so the client fails to
decode it. ``test_every_method_of_the_client_is_here`` keeps the two lists complete: a
method added to the client fails it until it is placed.

No method may drop a stream event: the client logs an event it cannot parse and goes on
(``_parse_sse_events``), so every test fails on any error agno logs (``agno_errors``).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from agno.client import AgentOSClient
from agno.db.base import SessionType
from agno.models.response import ToolExecution
from agno.os.routers.approvals.schema import (
    ApprovalCountResponse,
    ApprovalResponse,
    ApprovalStatusResponse,
)
from agno.os.schema import (
    AgentSessionDetailSchema,
    PaginatedResponse,
    RunSchema,
    SessionRunPreviewSchema,
)
from agno.run.agent import RunOutput
from agno.run.base import RunStatus
from agno.utils import log as agno_log
from agno.utils.http import aclose_default_clients

from tests.support.server import LiveServer, live_server

pytestmark = pytest.mark.e2e

T = TypeVar("T")
SEED = "Delete 50 old records from the users table"
ARGS = {"table_name": "users", "count": 50}
USER = "agno_user"

# The client's methods signoff serves, by what they concern.
IN_SCOPE = {
    "config": {"get_config", "aget_config"},
    "agents": {"list_agents", "get_agent", "aget_agent"},
    "runs": {"run_agent", "run_agent_stream", "continue_agent_run",
             "continue_agent_run_stream", "cancel_agent_run"},
    "sessions": {"create_session", "get_sessions", "get_session", "get_session_runs",
                 "get_session_run_previews", "aget_session_run_previews", "get_session_run",
                 "rename_session", "update_session", "delete_session", "delete_sessions"},
}
# The methods signoff does not serve: each with a call, and the feature its 404 names
# (None: get_metrics, which meets signoff's Prometheus /metrics and cannot decode it).
OUT_OF_SCOPE: dict[str, tuple[Callable[[AgentOSClient], Awaitable[Any]], str | None]] = {
    "list_teams": (lambda c: c.list_teams(), "teams"),
    "get_team": (lambda c: _sync(c.get_team, "t"), "teams"),
    "aget_team": (lambda c: c.aget_team("t"), "teams"),
    "run_team": (lambda c: c.run_team("t", "hi"), "teams"),
    "run_team_stream": (lambda c: _drain(c.run_team_stream("t", "hi")), "teams"),
    "cancel_team_run": (lambda c: c.cancel_team_run("t", "r"), "teams"),
    "continue_team_run": (lambda c: c.continue_team_run("t", "r", requirements=[]), "teams"),
    "continue_team_run_stream":
        (lambda c: _drain(c.continue_team_run_stream("t", "r", requirements=[])), "teams"),
    "list_workflows": (lambda c: c.list_workflows(), "workflows"),
    "get_workflow": (lambda c: _sync(c.get_workflow, "w"), "workflows"),
    "aget_workflow": (lambda c: c.aget_workflow("w"), "workflows"),
    "run_workflow": (lambda c: c.run_workflow("w", "hi"), "workflows"),
    "run_workflow_stream": (lambda c: _drain(c.run_workflow_stream("w", "hi")), "workflows"),
    "continue_workflow_run":
        (lambda c: c.continue_workflow_run("w", "r", requirements=[]), "workflows"),
    "continue_workflow_run_stream":
        (lambda c: _drain(c.continue_workflow_run_stream("w", "r", requirements=[])), "workflows"),
    "cancel_workflow_run": (lambda c: c.cancel_workflow_run("w", "r"), "workflows"),
    "create_memory": (lambda c: c.create_memory("m", user_id=USER), "memories"),
    "get_memory": (lambda c: c.get_memory("m"), "memories"),
    "list_memories": (lambda c: c.list_memories(), "memories"),
    "update_memory": (lambda c: c.update_memory("m", "x", user_id=USER), "memories"),
    "delete_memory": (lambda c: c.delete_memory("m"), "memories"),
    "delete_memories": (lambda c: c.delete_memories(["m"]), "memories"),
    "get_memory_topics": (lambda c: c.get_memory_topics(), "memories"),
    "get_user_memory_stats": (lambda c: c.get_user_memory_stats(), "memories"),
    "optimize_memories": (lambda c: c.optimize_memories(USER), "memories"),
    "list_eval_runs": (lambda c: c.list_eval_runs(), "evals"),
    "get_eval_run": (lambda c: c.get_eval_run("e"), "evals"),
    "delete_eval_runs": (lambda c: c.delete_eval_runs(["e"]), "evals"),
    "update_eval_run": (lambda c: c.update_eval_run("e", "x"), "evals"),
    "run_eval": (lambda c: c.run_eval("accuracy", "hi", agent_id="data_manager",
                                      expected_output="x"), "evals"),
    "upload_knowledge_content": (lambda c: c.upload_knowledge_content(text_content="x"),
                                 "knowledge"),
    "update_knowledge_content": (lambda c: c.update_knowledge_content("k", name="x"),
                                 "knowledge"),
    "list_knowledge_content": (lambda c: c.list_knowledge_content(), "knowledge"),
    "get_knowledge_content": (lambda c: c.get_knowledge_content("k"), "knowledge"),
    "delete_knowledge_content": (lambda c: c.delete_knowledge_content("k"), "knowledge"),
    "delete_all_knowledge_content": (lambda c: c.delete_all_knowledge_content(), "knowledge"),
    "get_knowledge_content_status":
        (lambda c: c.get_knowledge_content_status("k"), "knowledge"),
    "search_knowledge": (lambda c: c.search_knowledge("x"), "knowledge"),
    "get_knowledge_config": (lambda c: c.get_knowledge_config(), "knowledge"),
    "get_traces": (lambda c: c.get_traces(), "traces"),
    "get_trace": (lambda c: c.get_trace("t"), "traces"),
    "get_trace_session_stats": (lambda c: c.get_trace_session_stats(), "traces"),
    "search_traces": (lambda c: c.search_traces(), "traces"),
    "get_metrics": (lambda c: c.get_metrics(starting_date=date(2026, 1, 1)), None),
    "refresh_metrics": (lambda c: c.refresh_metrics(), "metrics"),
    "get_metrics_refresh_status": (lambda c: c.get_metrics_refresh_status(), "metrics"),
    "migrate_database": (lambda c: c.migrate_database("signoff"), "databases"),
}


async def _sync(method: Callable[..., T], *args: Any) -> T:
    return method(*args)


async def _drain(events: Any) -> list[Any]:
    return [e async for e in events]


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    """One scenario on one event loop; the client's shared httpx clients (bound to that
    loop) closed after it."""
    async def main() -> T:
        try:
            return await scenario()
        finally:
            await aclose_default_clients()
    return asyncio.run(main())


class Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(autouse=True)
def agno_errors() -> Iterator[Errors]:
    """What agno logs at WARNING or above (an event it could not parse, and dropped)
    fails the test."""
    errors = Errors()
    loggers = [agno_log.agent_logger, agno_log.team_logger, agno_log.workflow_logger]
    for lg in loggers:
        lg.addHandler(errors)
    try:
        yield errors
    finally:
        for lg in loggers:
            lg.removeHandler(errors)
    assert [r.getMessage() for r in errors.records] == []


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """Without keys, as Agno's AgentOS runs without authorization; SQLite (what is
    checked here is the wire, the same over either store)."""
    tmp: Path = tmp_path_factory.mktemp("agno-client")
    with live_server(f"sqlite:///{tmp / 'signoff.db'}", tmp / "server.log") as s:
        yield s


@pytest.fixture
def client(server: LiveServer) -> AgentOSClient:
    return AgentOSClient(server.url, timeout=30)


def session() -> str:
    return f"agno-{uuid.uuid4().hex[:10]}"


def names(events: list[Any]) -> list[str]:
    return [e.event for e in events]


def problem_of(e: httpx.HTTPStatusError) -> dict[str, Any]:
    assert e.response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = e.response.json()
    return body


async def approvals_of(c: AgentOSClient, **params: Any) -> PaginatedResponse[ApprovalResponse]:
    return PaginatedResponse[ApprovalResponse].model_validate(
        await c._aget("/approvals", params=params))


# ------------------------------------------------------------------- the methods

def test_every_method_of_the_client_is_here() -> None:
    public = {n for n, m in inspect.getmembers(AgentOSClient, inspect.isfunction)
              if not n.startswith("_")}
    served = set().union(*IN_SCOPE.values())
    assert served.isdisjoint(OUT_OF_SCOPE)
    assert public == served | set(OUT_OF_SCOPE)


def test_config_and_agents(client: AgentOSClient) -> None:
    config = client.get_config()  # the client's one sync config call
    assert config.os_id == "signoff"
    assert "data_manager" in [a.id for a in config.agents or []]

    async def scenario() -> None:
        assert (await client.aget_config()).model_dump() == config.model_dump()
        agents = await client.list_agents()
        assert {a.id for a in agents} >= {"data_manager", "support_desk"}
        agent = client.get_agent("data_manager")
        assert (agent.id, agent.name) == ("data_manager", "Data Manager")
        again = await client.aget_agent("data_manager")
        assert again.model_dump() == agent.model_dump()
        with pytest.raises(httpx.HTTPStatusError) as e:
            await client.aget_agent("nobody")
        assert problem_of(e.value)["status"] == 404

    run(scenario)


def test_runs_paused_then_confirmed_and_rejected_streaming_and_not(
        client: AgentOSClient) -> None:
    sid = session()

    async def scenario() -> None:
        # Not streamed: paused on the seed's call, with its approval's id.
        paused = await client.run_agent("data_manager", SEED, session_id=sid, user_id=USER)
        assert isinstance(paused, RunOutput)
        assert (paused.status, paused.session_id, paused.user_id) == (
            RunStatus.paused, sid, USER)
        assert paused.content == "I have tools to execute, but I need confirmation."
        [tool] = paused.tools or []
        assert (tool.tool_name, tool.tool_args, tool.requires_confirmation) == (
            "delete_records", ARGS, True)
        [requirement] = paused.requirements or []
        assert requirement.tool_execution is not None
        assert requirement.tool_execution.tool_call_id == tool.tool_call_id
        [approval] = (await approvals_of(client, run_id=paused.run_id)).data
        assert (tool.approval_type, tool.approval_id) == ("required", approval.id)
        assert requirement.tool_execution.approval_id == approval.id

        # Continued, not streamed, confirmed: the tool ran and the run completed.
        tool.confirmed = True
        done = await client.continue_agent_run("data_manager", paused.run_id, [tool],
                                               session_id=sid, user_id=USER)
        assert (done.status, done.content) == (RunStatus.completed,
                                               "Done. Deleted 50 records from users")
        [ran] = done.tools or []
        assert (ran.confirmed, ran.result, ran.approval_id) == (
            True, "Deleted 50 records from users", approval.id)

        # Streamed: the same pause as events, every one parsed.
        events = await _drain(client.run_agent_stream("data_manager", SEED, session_id=sid,
                                                      user_id=USER))
        assert names(events) == ["RunStarted", "ModelRequestStarted", "ModelRequestCompleted",
                                 "RunContentCompleted", "RunPaused"]
        pause = events[-1]
        assert len({e.run_id for e in events}) == 1
        [waiting] = pause.tools
        assert isinstance(waiting, ToolExecution) and waiting.requires_confirmation

        # Continued, streamed, rejected with a note: the model is told why.
        waiting.confirmed, waiting.confirmation_note = False, "not today"
        events = await _drain(client.continue_agent_run_stream(
            "data_manager", pause.run_id, [waiting], session_id=sid, user_id=USER))
        assert names(events)[0] == "RunContinued"
        assert names(events)[-1] == "RunCompleted"
        assert events[-1].content == "Done. not today"

        # Streamed start, then continued streamed with a confirmation and not streamed
        # with a rejection: the other two of the four.
        pause = (await _drain(client.run_agent_stream("data_manager", SEED, session_id=sid,
                                                      user_id=USER)))[-1]
        [waiting] = pause.tools
        waiting.confirmed = True
        events = await _drain(client.continue_agent_run_stream(
            "data_manager", pause.run_id, [waiting], session_id=sid, user_id=USER))
        assert "ToolCallCompleted" in names(events)
        completed = next(e for e in events if e.event == "ToolCallCompleted")
        assert completed.tool.result == "Deleted 50 records from users"
        assert events[-1].content == "Done. Deleted 50 records from users"
        paused = await client.run_agent("data_manager", SEED, session_id=sid, user_id=USER)
        [tool] = paused.tools or []
        tool.confirmed, tool.confirmation_note = False, "too many"
        done = await client.continue_agent_run("data_manager", paused.run_id, [tool],
                                               session_id=sid, user_id=USER)
        assert (done.status, done.content) == (RunStatus.completed, "Done. too many")
        assert (done.tools or [])[0].confirmed is False

        # Cancelled while paused.
        paused = await client.run_agent("data_manager", SEED, session_id=sid, user_id=USER)
        assert await client.cancel_agent_run("data_manager", paused.run_id) is None
        cancelled = await client.get_session_run(sid, paused.run_id)
        assert cancelled.status == RunStatus.cancelled

    run(scenario)


def test_external_results_and_user_input(client: AgentOSClient) -> None:
    sid = session()

    async def scenario() -> None:
        paused = await client.run_agent("support_desk", 'call check_payment {"order_id": "o-1"}',
                                        session_id=sid, user_id=USER)
        [tool] = paused.tools or []
        assert tool.external_execution_required and tool.approval_id is None
        tool.result = "paid"
        done = await client.continue_agent_run("support_desk", paused.run_id, [tool],
                                               session_id=sid, user_id=USER)
        assert (done.status, done.content) == (RunStatus.completed, "Done. paid")

        events = await _drain(client.run_agent_stream(
            "support_desk", 'call issue_refund {"order_id": "o-2", "amount": 5}',
            session_id=sid, user_id=USER))
        [tool] = events[-1].tools
        assert tool.requires_user_input
        [field] = [f for f in tool.user_input_schema or [] if f.name == "email"]
        field.value = "ann@example.com"
        events = await _drain(client.continue_agent_run_stream(
            "support_desk", events[-1].run_id, [tool], session_id=sid, user_id=USER))
        assert events[-1].content == "Done. Refunded 5 on order o-2; receipt sent to " \
            "ann@example.com"

    run(scenario)


def test_sessions(client: AgentOSClient) -> None:
    sid, other = session(), session()

    async def scenario() -> None:
        made = await client.create_session(session_id=other, user_id=USER,
                                           agent_id="data_manager", session_name="planned")
        assert isinstance(made, AgentSessionDetailSchema)
        assert (made.session_id, made.session_name) == (other, "planned")
        first = await client.run_agent("data_manager", SEED, session_id=sid, user_id=USER)
        first.tools[0].confirmed = True  # type: ignore[index]
        await client.continue_agent_run("data_manager", first.run_id, first.tools or [],
                                        session_id=sid, user_id=USER)
        second = await client.run_agent("data_manager", SEED, session_id=sid, user_id=USER)

        page = await client.get_sessions(session_type=SessionType.AGENT, user_id=USER,
                                          session_name="planned")
        assert [s.session_id for s in page.data] == [other]
        page = await client.get_sessions(component_id="data_manager", user_id=USER,
                                          limit=1, page=1, sort_by="created_at",
                                          sort_order="asc")
        assert page.meta.limit == 1 and page.meta.total_count >= 2
        assert (await client.get_sessions()).data  # no filter at all

        found = await client.get_session(sid)
        typed = await client.get_session(sid, session_type=SessionType.AGENT, user_id=USER)
        assert isinstance(found, AgentSessionDetailSchema)
        assert found.model_dump() == typed.model_dump()
        assert (found.session_name, found.agent_id, found.user_id) == (
            SEED, "data_manager", USER)

        runs = await client.get_session_runs(sid)
        assert all(isinstance(r, RunSchema) for r in runs)
        assert [r.run_id for r in runs] == [first.run_id, second.run_id]
        assert [r.status for r in runs] == [RunStatus.completed, RunStatus.paused]
        paused = await client.get_session_runs(sid, session_type=SessionType.AGENT,
                                               user_id=USER, status=["paused"])
        assert [r.run_id for r in paused] == [second.run_id]

        previews = client.get_session_run_previews(sid)  # sync
        assert all(isinstance(p, SessionRunPreviewSchema) for p in previews)
        assert [p.run_id for p in previews] == [first.run_id, second.run_id]
        previews = await client.aget_session_run_previews(sid, status=["COMPLETED"])
        assert [(p.run_id, p.content_preview) for p in previews] == [
            (first.run_id, "Done. Deleted 50 records from users")]

        one = await client.get_session_run(sid, second.run_id)
        assert isinstance(one, RunSchema)
        assert (one.run_id, one.status, one.run_input) == (
            second.run_id, RunStatus.paused, SEED)
        with pytest.raises(httpx.HTTPStatusError) as e:
            await client.get_session_run(sid, "no-such-run")
        assert problem_of(e.value)["status"] == 404

        renamed = await client.rename_session(sid, "tidy-up")
        assert renamed.session_name == "tidy-up"
        updated = await client.update_session(sid, session_type=SessionType.AGENT,
                                              session_state={"step": 2},
                                              metadata={"ticket": "T-1"})
        assert (updated.session_name, updated.session_state, updated.metadata) == (
            "tidy-up", {"step": 2}, {"ticket": "T-1"})

        assert await client.delete_session(sid) is None
        with pytest.raises(httpx.HTTPStatusError) as e:
            await client.get_session(sid)
        assert problem_of(e.value)["status"] == 404
        assert await client.delete_sessions([other], [SessionType.AGENT]) is None
        assert other not in [s.session_id for s in (await client.get_sessions()).data]

    run(scenario)


def test_approvals_through_the_clients_transport(client: AgentOSClient) -> None:
    sid = session()

    async def scenario() -> None:
        paused = await client.run_agent("data_manager", SEED, session_id=sid, user_id=USER)
        [tool] = paused.tools or []
        page = await approvals_of(client, status="pending", run_id=paused.run_id)
        [approval] = page.data
        assert page.meta.total_count == 1
        assert (approval.id, approval.status, approval.tool_name, approval.run_status) == (
            tool.approval_id, "pending", "delete_records", RunStatus.paused)
        count = ApprovalCountResponse.model_validate(
            await client._aget("/approvals/count", params={"user_id": USER}))
        assert count.count >= 1
        one = ApprovalResponse.model_validate(await client._aget(f"/approvals/{approval.id}"))
        assert one == approval
        status = ApprovalStatusResponse.model_validate(
            await client._aget(f"/approvals/{approval.id}/status"))
        assert (status.status, status.run_id) == ("pending", paused.run_id)

        # Resolved with an Idempotency-Key: sent again, the same answer; the same key
        # with another request, 422; without a key, 409 (Agno's words).
        key = {"Idempotency-Key": f"resolve-{uuid.uuid4()}"}
        body = {"status": "approved", "resolved_by": "rita"}
        resolved = ApprovalResponse.model_validate(
            await client._apost(f"/approvals/{approval.id}/resolve", body, headers=key))
        assert (resolved.status, resolved.resolved_by, resolved.run_status) == (
            "approved", "rita", RunStatus.completed)
        again = ApprovalResponse.model_validate(
            await client._apost(f"/approvals/{approval.id}/resolve", body, headers=key))
        assert again == resolved
        with pytest.raises(httpx.HTTPStatusError) as e:
            await client._apost(f"/approvals/{approval.id}/resolve",
                                {**body, "status": "rejected"}, headers=key)
        assert problem_of(e.value)["status"] == 422
        with pytest.raises(httpx.HTTPStatusError) as e:
            await client._apost(f"/approvals/{approval.id}/resolve", body)
        assert problem_of(e.value)["detail"] == \
            "Approval is already 'approved' and cannot be resolved"

        # The client continues as Agno's does after a resolve: nothing to decide.
        done = await client.continue_agent_run("data_manager", paused.run_id, [],
                                               session_id=sid, user_id=USER)
        assert (done.status, (done.tools or [])[0].result) == (
            RunStatus.completed, "Deleted 50 records from users")

        # Agno's DELETE /approvals/{id}: signoff keeps every decision.
        with pytest.raises(httpx.HTTPStatusError) as e:
            await client._adelete(f"/approvals/{approval.id}")
        assert e.value.response.status_code == 405
        assert e.value.response.headers["allow"] == "GET"
        assert problem_of(e.value)["detail"].startswith("signoff never deletes an approval")
        assert ApprovalResponse.model_validate(
            await client._aget(f"/approvals/{approval.id}")).status == "approved"

    run(scenario)


@pytest.mark.parametrize("method", sorted(OUT_OF_SCOPE))
def test_a_method_out_of_scope_is_refused_clearly(client: AgentOSClient, method: str) -> None:
    call, feature = OUT_OF_SCOPE[method]

    async def scenario() -> None:
        if feature is None:  # Prometheus text where Agno's JSON would be
            with pytest.raises(ValueError):
                await call(client)
            return
        with pytest.raises(httpx.HTTPStatusError) as e:
            await call(client)
        response = e.value.response
        assert (response.status_code, response.headers["content-type"]) == (
            404, "application/problem+json")
        if method.endswith("_stream"):  # the client closes the stream unread
            return
        problem = problem_of(e.value)
        assert (problem["status"], problem["not_served"]) == (404, feature)
        assert problem["detail"].startswith(f"signoff does not serve Agno's {feature}")

    run(scenario)
