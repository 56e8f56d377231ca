"""Sessions at the edge: which sessions and runs a caller sees, and Agno's shapes of them
(``SessionSchema``, ``AgentSessionDetailSchema``, ``RunSchema``,
``SessionRunPreviewSchema``, as Agno 3.1 answers them).

Sessions and the runs of the session routes carry times as ISO 8601 UTC text
(``2026-12-03T15:50:37Z``), as Agno does; messages inside a run keep epoch seconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from agent.tools import Agent
from api.agno import agent_info, run_output
from api.errors import ProblemError
from domain.keys import Role
from domain.run import Run
from projections.sessions import SESSIONS, SessionsProjection, get_session
from projections.store import ViewMixin
from service.access import Forbidden
from service.auth import Identity

Json = dict[str, Any]

DB_ID = "signoff"  # the one database /config names, that the session routes accept
SESSIONS_TABLE = SESSIONS
PREVIEW_CHARS = 280  # Agno's run previews are cut to this many characters
_NO_MEDIA: dict[str, list[Any]] = {"images": [], "videos": [], "audios": [], "files": []}
# Agno's run statuses, as its session routes accept them in a filter.
STATUSES = ("PENDING", "RUNNING", "COMPLETED", "PAUSED", "CANCELLED", "ERROR", "REGENERATED")


def iso(t: datetime) -> str:
    """A time as Agno writes a session's: UTC, whole seconds, ``Z``."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _without_nulls(d: Json) -> Json:
    return {k: v for k, v in d.items() if v is not None}


def statuses(status: list[str] | None) -> list[str] | None:
    """A ``status`` filter of the session routes, in any case: the statuses (upper case)
    or None for any; 400 as Agno says it for one it does not know."""
    if not status:
        return None
    wanted = sorted({s.upper() for s in status})
    unknown = [s for s in wanted if s not in STATUSES]
    if unknown:
        raise ProblemError(400, f"Invalid status value(s) {unknown}; expected one of "
                           f"{sorted(STATUSES)}")
    return wanted


def epoch(seconds: int | None) -> datetime | None:
    return datetime.fromtimestamp(seconds, UTC) if seconds is not None else None


# ------------------------------------------------------------------- who sees

def scope(caller: Identity, user_id: str | None = None) -> Json:
    """The filters that confine a caller to what it may see, with the ``user_id`` it
    asked for: a client sees its own sessions and runs (asking for another user's is
    403), a reviewer limited to some agents those agents' (``agents``), an auditor (and
    anyone without authentication) all."""
    if caller.role == Role.CLIENT:
        if user_id is not None and user_id != caller.name:
            raise Forbidden(f"the request names {user_id!r}, but you are {caller.name!r}: a "
                            "client sees its own sessions only")
        return {"user_id": caller.name}
    if caller.role == Role.REVIEWER and caller.agents is not None:
        return {"user_id": user_id, "agents": caller.agents}
    return {"user_id": user_id}


# A session id that lists as another user's, to a client (revealing nothing of it).
TAKEN = ("Could not create a session with the supplied session_id. Omit session_id to have "
         "one generated, or choose a different one.")


def refuse_anothers(views: Mapping[str, ViewMixin], caller: Identity, session_id: str,
                    ) -> None:
    """409 (``TAKEN``) when ``session_id`` lists as a session the caller may not see:
    its runs, its name and its first message are another user's, and a run of the
    caller's must not join them. A session that does not list is the caller's to begin."""
    with views[SessionsProjection.name].read() as cur:
        existing = get_session(cur, session_id)
    if existing is not None and not sees(scope(caller), existing):
        raise ProblemError(409, TAKEN)


def sees(filters: Json, row: Json) -> bool:
    """Whether a session (or run) ``row`` passes ``scope``'s filters."""
    if filters.get("user_id") is not None and row["user_id"] != filters["user_id"]:
        return False
    agents = filters.get("agents")
    return agents is None or row["agent_id"] in agents


# --------------------------------------------------------------------- shapes

def metrics(models: Iterable[tuple[str, str, int, int]]) -> Json:
    """Agno's metrics of a run or a session: the token counts that are not zero, and
    each model's (``details.model``): (model, provider, input tokens, output tokens)."""
    details = []
    total_in = total_out = 0
    for model, provider, tokens_in, tokens_out in models:
        total_in += tokens_in
        total_out += tokens_out
        details.append({"id": model, "provider": provider, **_tokens(tokens_in, tokens_out)})
    out = _tokens(total_in, total_out)
    if details:
        out["details"] = {"model": details}
    return out


def _tokens(tokens_in: int, tokens_out: int) -> Json:
    counts = {"input_tokens": tokens_in, "output_tokens": tokens_out,
              "total_tokens": tokens_in + tokens_out}
    return {k: v for k, v in counts.items() if v}


def _session_metrics(row: Json) -> Json:
    return metrics((m["model"], m["provider"], m["input_tokens"], m["output_tokens"])
                   for m in row["models"])


def session_item(row: Json) -> Json:
    """A session in a list: Agno's ``SessionSchema``, its nulls left out."""
    m = _session_metrics(row)
    return _without_nulls({
        "session_id": row["session_id"], "session_name": row["name"],
        "session_state": row["session_state"] or {}, "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]), "session_type": "agent",
        "user_id": row["user_id"], "agent_id": row["agent_id"],
        "session_summary": row["summary"], "metrics": m or None,
        "total_tokens": m.get("total_tokens"), "metadata": row["metadata"]})


def agent_data(agent: Agent, default_model: Any) -> Json:
    """What Agno's session keeps of its agent: name, id, model."""
    model = agent_info(agent, default_model)["model"]
    return {"name": agent.name, "agent_id": agent.id,
            "model": {"provider": model["provider"], "name": model["name"],
                      "id": model["model"]}}


def session_detail(row: Json, runs: list[Run], agent: Json | None, *,
                   nulls: bool) -> Json:
    """One session: Agno's ``AgentSessionDetailSchema``, with its chat history (the user
    and assistant messages of its runs, in order). ``nulls``: as Agno's rename and
    update answer it, with its null fields; otherwise without."""
    m = _session_metrics(row)
    detail = {
        "user_id": row["user_id"], "agent_session_id": row["session_id"],
        "session_id": row["session_id"], "session_name": row["name"],
        "session_summary": row["summary"], "session_state": row["session_state"] or {},
        "agent_id": row["agent_id"], "total_tokens": m.get("total_tokens"),
        "agent_data": agent, "metrics": m, "metadata": row["metadata"],
        "chat_history": [msg for run in runs for msg in _messages(run)
                         if msg["role"] in ("user", "assistant")],
        "created_at": iso(row["created_at"]), "updated_at": iso(row["updated_at"])}
    return detail if nulls else _without_nulls(detail)


def _messages(run: Run) -> list[Json]:
    """The run's messages as Agno's ``Message.to_dict()`` writes them (no null field)."""
    return [_without_nulls(m) for m in run_output(run)["messages"]]


def run_schema(run: Run, *, nulls: bool) -> Json:
    """A run as Agno's ``RunSchema`` (what its session routes answer, not its
    ``RunOutput``). ``nulls``: with its null fields (one run, and ``GET
    /agents/{agent_id}/runs``), or without (a session's list of runs)."""
    out = run_output(run)
    schema = {
        "run_id": run.run_id, "parent_run_id": "", "agent_id": run.agent_id,
        "user_id": run.user_id, "status": str(run.status), "cancellation_stage": None,
        "run_input": run.input, "content": out["content"], "run_response_format": "text",
        "reasoning_content": "", "reasoning_steps": [],
        "metrics": metrics([(run.model, run.model_provider or "", run.input_tokens,
                             run.output_tokens)] if run.model else []),
        "metadata": None, "messages": _messages(run) or None, "tools": out["tools"] or None,
        "events": None, "created_at": iso(run.created_on), "references": [],
        "citations": None, "reasoning_messages": [], "session_state": {}, "images": [],
        "videos": [], "audio": [], "files": [], "response_audio": None,
        "input_media": dict(_NO_MEDIA), "followups": None, "forked_from_run_id": None,
        "forked_from_message_index": None, "forked_from_session_id": None,
        "regenerated_from": None, "last_checkpoint_at_message_index": None}
    return schema if nulls else _without_nulls(schema)


def run_preview(run: Run) -> Json:
    """A run as Agno's ``SessionRunPreviewSchema``: its input and content cut short."""
    content = run_output(run)["content"]
    return _without_nulls({
        "run_id": run.run_id, "parent_run_id": "", "agent_id": run.agent_id,
        "user_id": run.user_id, "status": str(run.status),
        "run_input": run.input[:PREVIEW_CHARS],
        "content_preview": content[:PREVIEW_CHARS] if content is not None else None,
        "created_at": iso(run.created_on)})
