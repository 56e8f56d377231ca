"""Agno AgentOS's OS-level routes: ``GET /config`` in Agno's ``ConfigResponse`` shape
(what ``AgentOSClient.get_config()`` parses), and a clear 404 problem on the routes of
the AgentOS features signoff does not serve (teams, workflows, memories, knowledge,
evals, traces, Agno's metrics refresh, database migrations), rather than the generic
"Not Found" of a path nobody knows.

``/config`` names one database (``DB_ID``), for sessions only: the sessions API
(api/routes/sessions.py) answers from it, and Agno's clients pass its id back as
``db_id``."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NoReturn

from fastapi import APIRouter

from agent.tools import Agent
from api.auth import EVERY_ROLE, allow
from api.deps import ContainerDep
from api.errors import ProblemError
from api.sessions import DB_ID, SESSIONS_TABLE

router = APIRouter(tags=["Agno-compatible"])

Json = dict[str, Any]

OS_ID = "signoff"


def _model(agent: Agent, default_model: Any) -> Json:
    """Agno's ``Model`` of a config: the model's id and provider (a timing wrapper
    carries its client's)."""
    model = agent.model or default_model
    return {"id": model.name, "provider": model.provider}


def _agent_summary(agent: Agent, default_model: Any) -> Json:
    """An agent as Agno's ``AgentSummaryResponse`` (unset keys left out, as Agno does)."""
    summary: Json = {"id": agent.id, "name": agent.name}
    if agent.description:
        summary["description"] = agent.description
    summary.update(db_id=DB_ID, model=_model(agent, default_model), sandboxed=False)
    return summary


def os_config(agents: Iterable[Agent], default_model: Any) -> Json:
    """The service as Agno's ``ConfigResponse``, as an AgentOS with agents and an OS
    database answers it: the sessions in that database (signoff's sessions read model),
    each of Agno's other storage features with no database, no background-run queue, no
    teams, workflows or interfaces."""
    agents = list(agents)
    models = {(m["id"], m["provider"]): m for m in (_model(a, default_model) for a in agents)}
    return {
        "os_id": OS_ID,
        "available_models": list(models.values()),
        "os_database": DB_ID,
        "databases": [DB_ID],
        "session": {"dbs": [{"db_id": DB_ID, "domain_config": {"display_name": DB_ID},
                             "tables": [SESSIONS_TABLE]}]},
        "metrics": {"dbs": []},
        "memory": {"dbs": []},
        "learning": {"dbs": []},
        "filesystem": {"namespaces": []},
        "knowledge": {"dbs": [], "knowledge_instances": []},
        "evals": {"dbs": []},
        "traces": {"dbs": []},
        "queue": {"durable": False, "queue_per_session": False},
        "agents": [_agent_summary(a, default_model) for a in agents],
        "teams": [],
        "workflows": [],
        "interfaces": [],
        "company": None,  # present, as Agno writes it when no company is configured
    }


@router.get("/config", dependencies=[allow(*EVERY_ROLE)])
def get_config(c: ContainerDep) -> Json:
    """The service as Agno's ``GET /config`` describes an AgentOS: its id, the agents it
    serves (each with its model's id and provider), and the models they use."""
    return os_config(c.agent_loop.agents.values(), c.agent_loop.default_model)


# Agno's route prefixes for the features signoff does not serve: prefix -> feature.
NOT_SERVED = {
    "/teams": "teams",
    "/workflows": "workflows",
    "/memories": "memories",
    "/memory_topics": "memories",
    "/user_memory_stats": "memories",
    "/optimize-memories": "memories",
    "/knowledge": "knowledge",
    "/eval-runs": "evals",
    "/traces": "traces",
    "/trace_session_stats": "traces",
    "/metrics/refresh": "metrics",  # Agno's; GET /metrics is signoff's Prometheus text
    "/databases": "databases",
}
_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]


def _not_served(prefix: str, feature: str) -> Callable[[], NoReturn]:
    def answer() -> NoReturn:
        raise ProblemError(404, f"signoff does not serve Agno's {feature} ({prefix}): it "
                           "serves agents only (GET /agents)", not_served=feature)
    return answer


# Every method, the prefix and everything under it; public (the answer holds no data) and
# left out of the OpenAPI document: they are not routes of the service.
for _prefix, _feature in NOT_SERVED.items():
    for _path in (_prefix, _prefix + "/{rest:path}"):
        router.add_api_route(_path, _not_served(_prefix, _feature), methods=_METHODS,
                             response_model=None, include_in_schema=False,
                             dependencies=[allow()])
