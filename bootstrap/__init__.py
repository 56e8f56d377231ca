"""The composition root: everything the API and the CLI run, built from the settings.

The store (``build_app``), the agent loop and its model (``build_loop``), the run
lifecycle over both (``build_lifecycle``), the read models (``build_projections``), the
webhook dispatcher that follows them (``build_dispatcher``), and who may call
(``build_authenticator``, ``build_auth_policy``); ``write_inline`` has each save write
the read models in its own transaction. Nothing below this package chooses an
implementation."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from eventsourcing.persistence import IntegrityError, InternalError, ProgrammingError

from agent.loop import AgentLoop, load_agents
from agent.models.base import ModelClient
from service import policies
from service.auth import Authenticator, AuthPolicy
from service.config import Settings, eventsourcing_env, lean_pool
from service.lifecycle import RunLifecycle
from service.runs import RunService
from service.storekey import check_store_key

if TYPE_CHECKING:
    from projections.deliveries import Dispatcher
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


def build_app(settings: Settings, *, lean: bool = False) -> RunService:
    """The application, once the store's key check passed (``service/storekey.py``):
    ``StoreKeyError``, with nothing written, when SIGNOFF_CIPHER_KEY is not the store's
    key (or missing, or given for a plaintext store). Workers starting together on one
    PostgreSQL all create the tables and function if missing, and all but one may then
    fail on the catalog ("tuple concurrently updated", a unique violation): try again,
    briefly. ``lean``: its pool opens one connection and grows on demand
    (``lean_pool``). A store out of reach or unusable (``OperationalError``,
    ``InterfaceError``) is raised again with where it is in its message: PostgreSQL's
    host, port, database and user, or the SQLite file (never a password)."""
    from eventsourcing.persistence import InterfaceError, OperationalError

    env = eventsourcing_env(settings)
    for attempt in range(5):
        app = None
        try:
            app = RunService(env=lean_pool(env) if lean else env)
            check_store_key(app)
            return app
        except (InternalError, IntegrityError, ProgrammingError):
            if app is not None:
                app.close()
            if attempt == 4:
                raise
            time.sleep(0.1 * (attempt + 1))
        except (OperationalError, InterfaceError) as e:
            if app is not None:
                app.close()
            raise type(e)(f"{e} ({settings.store_address()})") from e
        except BaseException:
            if app is not None:
                app.close()
            raise
    raise AssertionError("unreachable")  # pragma: no cover


def build_loop(settings: Settings) -> AgentLoop:
    agents = load_agents(m for m in settings.agents.split(",") if m.strip())
    model = build_model(settings.default_model_spec(), settings.model_timeout)
    return AgentLoop(agents, model, tool_timeout=settings.tool_timeout,
                     max_model_turns=settings.max_model_turns,
                     policies=policies.load(settings.policies))


def build_lifecycle(settings: Settings, store: RunService, loop: AgentLoop) -> RunLifecycle:
    """The run lifecycle over the store, driving runs with the loop (on the loop's
    clock)."""
    return RunLifecycle(store, loop, tool_timeout=settings.tool_timeout, clock=loop.clock)


def build_projections(settings: Settings, names: list[str] | None = None) -> Projections:
    """The projections (``names``, or all), reading the log through an application of
    their own: its connections are never taken by request threads, so the read models
    keep up under load. Their pools are lean: a connection each at start. The anchors are
    signed with SIGNOFF_ANCHOR_SIGNING_KEY, when it is set."""
    from projections.anchors import use_signing_key
    from projections.runner import Projections

    projections = Projections(build_app(settings, lean=True),
                              lean_pool(eventsourcing_env(settings)), names=names,
                              batch_size=settings.projection_batch_size)
    use_signing_key(projections.views, settings.anchor_signer())
    return projections


def write_inline(store: RunService, projections: Projections) -> None:
    """Each save of ``store`` writes the inline read models in its own transaction
    (``projections/inline.py``); their follower then checks the log once a second (and
    when prompted) for what no save wrote: the anchors, other processes' events."""
    from projections.inline import InlineWriter

    writer = InlineWriter(projections)
    store.recorder.read_models = writer  # type: ignore[attr-defined]
    projections.listen = False
    projections.saves_write = {v.model.name for v in writer.views}


def build_authenticator(settings: Settings, app: RunService) -> Authenticator:
    algorithms = tuple(a.strip() for a in settings.jwt_algorithms.split(",") if a.strip())
    return Authenticator(app, jwt_key=settings.jwt_key, jwt_algorithms=algorithms,
                         jwt_audience=settings.jwt_audience, jwt_issuer=settings.jwt_issuer,
                         jwt_role_claim=settings.jwt_role_claim)


def build_auth_policy(settings: Settings, app: RunService) -> AuthPolicy:
    """Whether callers must authenticate (``SIGNOFF_AUTH``, a key issued, a JWT key)."""
    return AuthPolicy(app, settings.auth, bool(settings.jwt_key))


def build_dispatcher(settings: Settings, projections: Projections) -> Dispatcher:
    """The webhook dispatcher, woken by the projections (``start()`` it)."""
    from projections.deliveries import Dispatcher

    return Dispatcher.for_settings(settings, projections)
