"""Builds the application, the model and the agent loop from the settings."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from agent.loop import AgentLoop, load_agents
from agent.models.base import ModelClient
from service.config import Settings, eventsourcing_env
from service.runs import RunService

if TYPE_CHECKING:
    from projections.runner import Projections


def build_model(spec: str, timeout: float = 60.0) -> ModelClient:
    """'offline' or 'openai:MODEL_ID'."""
    if spec == "offline":
        from agent.models.offline import OfflineModel

        return OfflineModel()
    from agent.models.openai import OpenAIModel

    # An empty OPENAI_BASE_URL (as docker compose passes it) means the default endpoint.
    base_url = os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
    return OpenAIModel(model=spec.removeprefix("openai:"), base_url=base_url, timeout=timeout)


def build_app(settings: Settings) -> RunService:
    return RunService(env=eventsourcing_env(settings))


def build_loop(settings: Settings, app: RunService | None = None) -> AgentLoop:
    app = app or build_app(settings)
    agents = load_agents(m for m in settings.agents.split(",") if m.strip())
    model = build_model(settings.default_model_spec(), settings.model_timeout)
    return AgentLoop(app, agents, model, tool_timeout=settings.tool_timeout,
                     max_model_turns=settings.max_model_turns)


def build_projections(settings: Settings, app: RunService) -> Projections:
    from projections.runner import Projections

    return Projections(app, eventsourcing_env(settings))
