"""A JWT's scope claims (``signoff_agents``, ``signoff_tools``, ``signoff_groups``) mean
what they mean on a key: they limit a reviewer, or name its groups, and no other role's
token carries them (``POST /keys`` refuses them on another role's key, so the token is
refused: 401). On a reviewer's token an empty list of agents or tools allows nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest

from domain.keys import Role
from service.auth import Authenticator, Identity, Unauthenticated
from service.runs import RunService

SECRET = "a-shared-secret-of-the-identity-provider-0123456789"
SCOPES = {"signoff_agents": ["data_manager"], "signoff_tools": ["delete_records"],
          "signoff_groups": ["leads"]}
OTHER_ROLES = [r for r in Role if r != Role.REVIEWER]


@pytest.fixture
def auth() -> Iterator[Authenticator]:
    app = RunService(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    try:
        yield Authenticator(app, jwt_key=SECRET, jwt_algorithms=("HS256",))
    finally:
        app.close()


def _identify(auth: Authenticator, role: str, **claims: Any) -> Identity:
    token = jwt.encode({"sub": "jo", "role": role, "exp": int(time.time()) + 300, **claims},
                       SECRET, algorithm="HS256")
    return auth.identify(token)


@pytest.mark.parametrize("role", OTHER_ROLES)
@pytest.mark.parametrize("claim", list(SCOPES))
def test_another_roles_token_naming_agents_tools_or_groups_is_refused(
        auth: Authenticator, role: Role, claim: str) -> None:
    with pytest.raises(Unauthenticated) as refused:
        _identify(auth, str(role), **{claim: SCOPES[claim]})
    assert f"the token's {claim!r} claim is for reviewers" in str(refused.value)


@pytest.mark.parametrize("role", OTHER_ROLES)
@pytest.mark.parametrize("value", [None, []], ids=["null", "empty"])
def test_another_roles_token_with_empty_scope_claims_names_nothing(
        auth: Authenticator, role: Role, value: list[str] | None) -> None:
    identity = _identify(auth, str(role), **{c: value for c in SCOPES})
    assert identity == Identity(name="jo", role=role, via="jwt")
    assert identity.groups == frozenset() and identity.agents is None


def test_a_reviewers_token_keeps_its_scope(auth: Authenticator) -> None:
    identity = _identify(auth, "reviewer", **SCOPES)
    assert identity.agents == frozenset({"data_manager"})
    assert identity.tools == frozenset({"delete_records"})
    assert identity.groups == frozenset({"leads"})
    assert identity.may_see("data_manager", ["delete_records"])
    assert not identity.may_see("support_desk")


def test_a_reviewers_token_with_no_scope_claims_reviews_everything(
        auth: Authenticator) -> None:
    identity = _identify(auth, "reviewer")
    assert (identity.agents, identity.tools, identity.groups) == (None, None, frozenset())
    assert identity.may_see("data_manager", ["delete_records"])


def test_a_reviewers_token_with_empty_agents_reviews_nothing(auth: Authenticator) -> None:
    """An identity provider that lists a reviewer's agents and finds none: nothing, not
    everything (a key cannot be issued so: ``POST /keys`` refuses an empty list)."""
    identity = _identify(auth, "reviewer", signoff_agents=[])
    assert identity.agents == frozenset()
    assert not identity.may_see("data_manager")
    tools = _identify(auth, "reviewer", signoff_tools=[])
    assert not tools.may_see("data_manager", ["delete_records"])


def test_a_bad_claim_is_named_before_the_role_is_considered(auth: Authenticator) -> None:
    with pytest.raises(Unauthenticated, match="'signoff_groups' claim must be a list"):
        _identify(auth, "client", signoff_groups="leads")


@pytest.mark.parametrize("sub", ["system", "anonymous", "System"])
def test_a_token_whose_subject_is_a_name_signoff_keeps_for_itself_is_refused(
        auth: Authenticator, sub: str) -> None:
    """A reviewer's decision recorded as ``system`` would read as the sweeper's."""
    token = jwt.encode({"sub": sub, "role": "reviewer", "exp": int(time.time()) + 300},
                       SECRET, algorithm="HS256")
    with pytest.raises(Unauthenticated, match="keeps for its own actors"):
        auth.identify(token)
