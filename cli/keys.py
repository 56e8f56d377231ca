"""``signoff keys``: API keys (create, list, revoke) and the cipher key (generate)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from eventsourcing.cryptography import AESCipher

from bootstrap import build_app
from cli.common import (
    AsJson,
    Command,
    DatabaseUrl,
    cli_actor,
    existing_store,
    fail,
    group,
    load_settings,
)
from domain.errors import KeyRevoked
from domain.keys import Role
from service.auth import RESERVED_NAMES
from service.keys import (
    KeyNameTaken,
    KeyNotFound,
    KeyRefused,
    check_name,
    create_key,
    key_view,
    list_keys,
    revoke_key,
)

_RESERVED = " nor ".join(sorted(RESERVED_NAMES))
keys = group("API keys (create, list, revoke) and the cipher key (generate).")


def _role(role: str, agent: list[str] | None, tool: list[str] | None,
          groups: list[str] | None) -> Role:
    """The role named, once the scope given fits it; exits 2 naming what does not."""
    try:
        parsed = Role(role)
    except ValueError:
        raise fail(f"--role must be one of {', '.join(Role)}", 2) from None
    if (agent or tool) and parsed != Role.REVIEWER:
        raise fail("--agent and --tool limit reviewers only", 2)
    if any(not a.strip() for a in [*(agent or ()), *(tool or ())]):
        raise fail("--agent and --tool each name an agent or a tool: not a blank", 2)
    if groups and (parsed != Role.REVIEWER or any(not g.strip() for g in groups)):
        raise fail("--group names a group of reviewers (--role reviewer)", 2)
    return parsed


@keys.command("create", cls=Command)
def create(
    name: Annotated[str, typer.Option(metavar="NAME", help="who holds the key: recorded as "
                                      "the actor of everything done with it (one live key "
                                      f"per name; not {_RESERVED})")],
    role: Annotated[str, typer.Option(metavar="ROLE",
                                      help="client, reviewer, auditor or admin")],
    agent: Annotated[list[str] | None, typer.Option(
        metavar="AGENT_ID", help="limit a reviewer to this agent (repeat for several)")
    ] = None,
    tool: Annotated[list[str] | None, typer.Option(
        metavar="TOOL", help="limit a reviewer to this tool (repeat for several)")] = None,
    groups: Annotated[list[str] | None, typer.Option(
        "--group", metavar="GROUP", help="a group of reviewers the holder is in: decisions "
        "escalated to it are theirs (repeat for several)")] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Issue an API key and print its secret (shown this once; only its hash is kept)."""
    parsed = _role(role, agent, tool, groups)
    if not name.strip() or len(name) > 200:
        raise fail("--name must be 1 to 200 characters", 2)
    try:
        check_name(name.strip())  # before the store is opened (or made)
    except KeyRefused as e:
        raise fail(str(e), 2) from None
    store = build_app(load_settings(database_url=database_url))
    try:
        secret, key = create_key(store, name=name.strip(), role=parsed,
                                 created_by=cli_actor(), agents=agent, tools=tool,
                                 groups=[g.strip() for g in groups] if groups else None)
    except KeyRefused as e:
        raise fail(str(e), 2) from None
    except KeyNameTaken as e:
        raise fail(str(e)) from None
    finally:
        store.close()
    typer.echo(secret)
    typer.echo(f"signoff: key {key.id} for {key.name} ({key.role}) created; the secret above "
               "is not stored: keep it now", err=True)


@keys.command("list", cls=Command)
def list_(as_json: AsJson = False, database_url: DatabaseUrl = None) -> None:
    """Every key ever issued (never the secrets)."""
    store = build_app(existing_store(database_url))
    try:
        views = [key_view(k) for k in list_keys(store)]
    finally:
        store.close()
    if as_json:
        typer.echo(json.dumps(views, default=str, indent=2))
        return
    for k in views:
        scope = " ".join([*(f"agent={a}" for a in k["agents"] or []),
                          *(f"tool={t}" for t in k["tools"] or []),
                          *(f"group={g}" for g in k["groups"] or [])])
        typer.echo(f"{k['id']}  {k['hint']}…  {k['role']:<8} {k['name']:<20} "
                   f"{'REVOKED' if k['revoked'] else 'active':<8} {scope}")


@keys.command("revoke", cls=Command)
def revoke(
    key: Annotated[str, typer.Argument(metavar="KEY", help="the key's id, hint or name")],
    database_url: DatabaseUrl = None,
) -> None:
    """Revoke a key: requests with it are refused within seconds, everywhere."""
    store = build_app(existing_store(database_url))
    try:
        revoked = revoke_key(store, key, revoked_by=cli_actor())
    except (KeyNotFound, KeyRevoked) as e:
        raise fail(str(e)) from None
    finally:
        store.close()
    typer.echo(f"signoff: revoked key {revoked.id} of {revoked.name}", err=True)


@keys.command("generate", cls=Command)
def generate() -> None:
    """Print a new key for SIGNOFF_CIPHER_KEY (AES-256, base64)."""
    typer.echo(AESCipher.create_key(32))
