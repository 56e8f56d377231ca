"""API keys: who may call signoff, in which role. Each key is an aggregate in the same
event store as the runs, so creating and revoking keys is recorded, hash-chained and
anchored like everything else.

A key's secret is never stored: the aggregate's id is derived from the secret's SHA-256
(``key_id``), so presenting a key is one lookup by id, and the store holds nothing from
which the secret could be recovered.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from uuid import UUID, uuid5

from eventsourcing.utils import get_topic

from domain.chain import Chained
from domain.errors import KeyRevoked

_NAMESPACE = UUID("5f0c4b7e-2a55-4c0e-9a41-6b3f1d0e8c21")
PREFIX = "sk_signoff_"


class Role(StrEnum):
    CLIENT = "client"  # starts runs, continues and reads its own
    REVIEWER = "reviewer"  # sees the queue and decides (optionally some agents or tools)
    AUDITOR = "auditor"  # reads histories, the audit trail, analytics; verifies, exports
    ADMIN = "admin"  # manages keys


def key_id(secret: str) -> UUID:
    """The id of the key with this secret."""
    return uuid5(_NAMESPACE, hashlib.sha256(secret.encode()).hexdigest())


class ApiKey(Chained):
    class Created(Chained.Created):
        name: str
        role: str
        agents: list[str] | None  # a reviewer limited to these agents (None: all; never [])
        tools: list[str] | None  # ... and to these tools
        hint: str  # the secret's first characters, to tell keys apart in a list
        created_by: str
        # The groups of reviewers the holder belongs to (calls escalated to one of them
        # are theirs to decide). Added later: absent from older keys' events, whose
        # hashes cover their fields as recorded (the class default stands).
        groups: list[str] | None = None

    class Revoked(Chained.Event):
        revoked_by: str

        def apply(self, key: ApiKey) -> None:
            key.revoked = True

    def __init__(self, name: str, role: str, agents: list[str] | None,
                 tools: list[str] | None, hint: str, created_by: str,
                 groups: list[str] | None = None) -> None:
        self.name = name
        self.role = Role(role)
        self.agents = agents
        self.tools = tools
        self.hint = hint
        self.created_by = created_by
        self.groups = groups
        self.revoked = False

    @classmethod
    def issue(cls, secret: str, *, name: str, role: Role, created_by: str,
              agents: list[str] | None = None, tools: list[str] | None = None,
              groups: list[str] | None = None) -> ApiKey:
        key: ApiKey = cls._create(cls.Created, id=key_id(secret), name=name, role=str(role),
                                  agents=agents, tools=tools, hint=secret[:len(PREFIX) + 4],
                                  created_by=created_by, groups=groups)
        return key

    def revoke(self, *, revoked_by: str) -> None:
        if self.revoked:
            raise KeyRevoked(f"key {self.name!r} is already revoked")
        self.trigger_event(self.Revoked, revoked_by=revoked_by)


# The topic of a key's first event: how the log's keys are found among runs' events.
KEY_CREATED = get_topic(ApiKey.Created)
