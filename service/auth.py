"""Who is calling: API keys (hashed, in the event store) and bearer JWTs.

``Authenticator.identify(token)`` answers the ``Identity`` behind a bearer token, or
raises ``Unauthenticated``. API keys look like ``sk_signoff_...``; anything else with
two dots is tried as a JWT when one is configured. Keys are cached for a few seconds per
process, so a revocation takes effect everywhere within ``cache_seconds``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from domain.keys import KEY_CREATED, PREFIX, ApiKey, Role, key_id
from domain.values import SYSTEM
from service.runs import RunService


class Unauthenticated(Exception):
    """No credentials, or credentials that do not identify anyone."""


@dataclass(frozen=True)
class Identity:
    name: str
    role: Role | None  # None: no authentication configured (local development)
    agents: frozenset[str] | None = None  # a reviewer limited to these agents
    tools: frozenset[str] | None = None  # ... and these tools
    via: str = "key"  # "key" | "jwt" | "open"
    groups: frozenset[str] = frozenset()  # the groups of reviewers the caller is in

    @property
    def open(self) -> bool:
        return self.role is None

    def may_see(self, agent_id: str, tool_names: list[str] | None = None) -> bool:
        if self.agents is not None and agent_id not in self.agents:
            return False
        return not (self.tools is not None and tool_names
                    and any(t not in self.tools for t in tool_names))


OPEN = Identity(name="", role=None, via="open")
# The actor recorded for a caller without authentication who names no one.
ANONYMOUS = "anonymous"
# Names signoff records for its own actors: never a caller's (a key's, a JWT's ``sub``).
RESERVED_NAMES = frozenset({SYSTEM, ANONYMOUS})


def reserved(name: str) -> bool:
    """Is ``name`` one signoff keeps for its own actors (in any case)?"""
    return name.casefold() in {n.casefold() for n in RESERVED_NAMES}


class Authenticator:
    def __init__(self, app: RunService, *, jwt_key: str = "", jwt_algorithms: tuple[str, ...] = (),
                 jwt_audience: str = "", jwt_issuer: str = "", jwt_role_claim: str = "role",
                 cache_seconds: float = 5.0) -> None:
        self.app = app
        self.jwt_key = jwt_key
        self.jwt_algorithms = jwt_algorithms
        self.jwt_audience = jwt_audience
        self.jwt_issuer = jwt_issuer
        self.jwt_role_claim = jwt_role_claim
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, Identity | None]] = {}
        self._lock = threading.Lock()

    def identify(self, token: str) -> Identity:
        if token.startswith(PREFIX):
            return self._key(token)
        if self.jwt_key and token.count(".") == 2:
            return self._jwt(token)
        raise Unauthenticated("not a signoff API key" + (" or a valid JWT" if self.jwt_key
                                                         else ""))

    def settled(self, token: str) -> bool:
        """Whether ``identify(token)`` answers without reading the store (a JWT, a key
        cached and fresh, or no key at all)."""
        if not token.startswith(PREFIX):
            return True
        hit = self._cache.get(token)
        return hit is not None and hit[0] >= time.monotonic()

    def _key(self, token: str) -> Identity:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(token)
        if hit is None or hit[0] < now:
            identity = self._load(token)
            with self._lock:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[token] = (now + self.cache_seconds, identity)
        else:
            identity = hit[1]
        if identity is None:
            raise Unauthenticated("unknown or revoked API key")
        return identity

    def _load(self, token: str) -> Identity | None:
        from eventsourcing.application import AggregateNotFoundError

        try:
            key: Any = self.app.repository.get(key_id(token))
        except AggregateNotFoundError:
            return None
        if not isinstance(key, ApiKey) or key.revoked:
            return None
        return Identity(name=key.name, role=key.role,
                        agents=frozenset(key.agents) if key.agents is not None else None,
                        tools=frozenset(key.tools) if key.tools is not None else None,
                        groups=frozenset(getattr(key, "groups", None) or ()))

    def _jwt(self, token: str) -> Identity:
        import jwt

        try:
            claims: dict[str, Any] = jwt.decode(
                token, self.jwt_key, algorithms=list(self.jwt_algorithms),
                audience=self.jwt_audience or None, issuer=self.jwt_issuer or None,
                options={"require": ["sub", "exp"]})
        except jwt.PyJWTError as e:
            raise Unauthenticated(f"invalid token: {e}") from None
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject.strip():
            raise Unauthenticated("the token's 'sub' claim names no one: it must be a "
                                  "non-empty string")
        if reserved(subject):
            raise Unauthenticated(f"the token's 'sub' {subject!r} is a name signoff keeps "
                                  "for its own actors")
        try:
            role = Role(claims.get(self.jwt_role_claim))  # type: ignore[arg-type]  # None: ValueError
        except ValueError:
            raise Unauthenticated(f"the token's {self.jwt_role_claim!r} claim is not a "
                                  f"role ({', '.join(Role)})") from None
        agents, tools, groups = (_names(claims, c) for c in REVIEWER_CLAIMS)
        if role != Role.REVIEWER:  # as another role's key: no agents, tools nor groups
            _no_reviewer_claims(claims, role)
            return Identity(name=subject, role=role, via="jwt")
        return Identity(name=subject, role=role, via="jwt", agents=agents, tools=tools,
                        groups=groups if groups is not None else frozenset())


# A JWT's claims that limit a reviewer (agents, tools) or name its groups.
REVIEWER_CLAIMS = ("signoff_agents", "signoff_tools", "signoff_groups")


def _no_reviewer_claims(claims: dict[str, Any], role: Role) -> None:
    """Refuse (``Unauthenticated``) a token of another role that names agents, tools or
    groups, as ``POST /keys`` refuses them on another role's key: the token says something
    signoff would not do. Absent, null or an empty list names nothing."""
    named = [c for c in REVIEWER_CLAIMS if claims.get(c)]
    if named:
        raise Unauthenticated(f"the token's {named[0]!r} claim is for reviewers: a token "
                              f"with the role {str(role)!r} must not name agents, tools "
                              "or groups")


def _names(claims: dict[str, Any], claim: str) -> frozenset[str] | None:
    """A scope claim of a JWT (agents, tools, groups): a list of strings; absent or null:
    None. Anything else (``Unauthenticated``) is a token that says nothing clear."""
    value = claims.get(claim)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Unauthenticated(f"the token's {claim!r} claim must be a list of strings")
    return frozenset(value)


class AuthPolicy:
    """Whether callers must authenticate (``SIGNOFF_AUTH``). In ``auto`` mode that is once
    a JWT key is set or any API key was ever issued: checked again every few seconds
    until true, so the first ``signoff keys create`` turns it on for running servers."""

    def __init__(self, app: RunService, mode: str, jwt_configured: bool,
                 recheck_seconds: float = 5.0) -> None:
        self.app = app
        self.mode = mode
        self.jwt_configured = jwt_configured
        self.recheck_seconds = recheck_seconds
        self._known = mode == "required" or (mode == "auto" and jwt_configured)
        self._checked_at = -1e9
        if mode == "auto" and not self._known:
            index_key_events(app)

    def settled(self) -> bool:
        """Whether ``required`` answers without reading the store."""
        return (self._known or self.mode == "off"
                or time.monotonic() - self._checked_at < self.recheck_seconds)

    @property
    def required(self) -> bool:
        if self._known or self.mode == "off":
            return self._known
        now = time.monotonic()
        if now - self._checked_at >= self.recheck_seconds:
            self._checked_at = now
            self._known = any_key(self.app)
        return self._known


def index_key_events(app: RunService) -> None:
    """A partial index over the events table holding only keys' first events: ``any_key``
    is then one index probe, not a scan of every run's events (1-2 s at 8.8M events on
    PostgreSQL). Run events never enter it, so it costs their inserts nothing."""
    table = getattr(app.recorder, "events_table_name", None)
    datastore = getattr(app.recorder, "datastore", None)
    if table is None or datastore is None:  # the in-memory store
        return
    with datastore.transaction(commit=True) as c:
        c.execute(f"CREATE INDEX IF NOT EXISTS {table}_key_created ON {table} "
                  f"(topic) WHERE topic = '{KEY_CREATED}'")


def any_key(app: RunService) -> bool:
    """Whether any key was ever issued (then the service requires authentication)."""
    table = getattr(app.recorder, "events_table_name", None)
    datastore = getattr(app.recorder, "datastore", None)
    if table is None or datastore is None:
        return any(True for _ in app.log(limit=1, topics=[KEY_CREATED]))
    with datastore.transaction(commit=False) as c:
        # The topic as a literal, so that the planner proves the partial index applies.
        c.execute(f"SELECT 1 FROM {table} WHERE topic = '{KEY_CREATED}' LIMIT 1")
        return c.fetchone() is not None
