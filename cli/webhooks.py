"""``signoff webhooks``: webhook subscriptions (create, list, delete) and their deliveries."""

from __future__ import annotations

import json
from typing import Annotated
from urllib.parse import urlsplit

import typer

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
    projections,
    read_projection,
)
from domain.webhooks import UnknownEventType, WebhookDeleted
from projections import webhooks as subscriptions
from service.webhooks import (
    HostNotAllowed,
    WebhookNotFound,
    allowed_hosts,
    check_host,
    create_webhook,
    delete_webhook,
)

webhooks = group("Webhook subscriptions (create, list, delete) and their deliveries.")

WEBHOOKS = subscriptions.WebhooksProjection.name
WebhookId = Annotated[str, typer.Argument(metavar="WEBHOOK_ID", help="the subscription's id")]


@webhooks.command("create", cls=Command)
def create(
    url: Annotated[str, typer.Argument(metavar="URL",
                                       help="http or https URL deliveries are POSTed to")],
    event: Annotated[list[str] | None, typer.Option(
        metavar="EVENT_TYPE",
        help="an event type to be told of (repeat for several; default: * for all)")] = None,
    secret: Annotated[str | None, typer.Option(
        metavar="SECRET",
        help="sign with this secret (16 or more characters); default: a new one")] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Subscribe a URL to events and print its secret (shown this once)."""
    settings = load_settings(database_url=database_url)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise fail("the URL must be http:// or https:// with a host", 2)
    if secret is not None and len(secret) < 16:
        raise fail("--secret must have 16 or more characters", 2)
    try:
        check_host(url, allowed_hosts(settings.webhook_hosts))
    except HostNotAllowed as e:
        raise fail(str(e), 2) from None
    opened = projections([WEBHOOKS])
    view = opened.views[WEBHOOKS]

    def keep(webhook_id: str, value: str) -> None:
        with view.write_transaction() as c:
            subscriptions.keep_secret(c, webhook_id, value)

    try:
        made, webhook, _ = create_webhook(opened.store, url=url, event_types=event or ["*"],
                                          secret=secret, created_by=cli_actor(),
                                          keep_secret=keep)
    except UnknownEventType as e:
        raise fail(str(e), 2) from None
    finally:
        opened.close()
        opened.store.close()
    typer.echo(made)
    typer.echo(f"signoff: webhook {webhook.id} to {webhook.url} "
               f"({', '.join(webhook.event_types)}) created; keep the secret above", err=True)


@webhooks.command("list", cls=Command)
def list_(as_json: AsJson = False, database_url: DatabaseUrl = None) -> None:
    """Every subscription (never the secrets)."""
    existing_store(database_url)
    with read_projection(WEBHOOKS) as c:
        rows = subscriptions.read_webhooks(c)
    if as_json:
        typer.echo(json.dumps(rows, default=str, indent=2))
        return
    for w in rows:
        typer.echo(f"{w['id']}  {'DELETED' if w['deleted'] else 'active':<8} "
                   f"{','.join(w['event_types']):<24} {w['url']}")


@webhooks.command("delete", cls=Command)
def delete(webhook_id: WebhookId, database_url: DatabaseUrl = None) -> None:
    """Delete a subscription: nothing more is sent to it."""
    store = build_app(existing_store(database_url))
    try:
        delete_webhook(store, webhook_id, deleted_by=cli_actor())
    except (WebhookNotFound, WebhookDeleted) as e:
        raise fail(str(e)) from None
    finally:
        store.close()
    typer.echo(f"signoff: deleted webhook {webhook_id}", err=True)


@webhooks.command("deliveries", cls=Command)
def deliveries(
    webhook_id: WebhookId,
    status: Annotated[str | None, typer.Option(
        metavar="STATUS", help="pending, delivered, failed or cancelled")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, metavar="N",
                                       help="at most this many deliveries")] = 50,
    as_json: AsJson = False,
    database_url: DatabaseUrl = None,
) -> None:
    """A subscription's deliveries, newest first, with their attempts."""
    existing_store(database_url)
    with read_projection(WEBHOOKS) as c:
        rows = subscriptions.read_deliveries(c, webhook_id, status=status, limit=limit)
    if as_json:
        typer.echo(json.dumps(rows, default=str, indent=2))
        return
    for d in rows:
        typer.echo(f"{d['position']:>10}  {d['event_type']:<14} {d['status']:<9} "
                   f"run {d['run_id']}  {len(d['attempts'])} attempts")
        for a in d["attempts"]:
            typer.echo(f"{'':>12}#{a['attempt']} {a['started_at']:%Y-%m-%d %H:%M:%S} "
                       f"{a['duration_ms']:.0f} ms  {a['status_code'] or a['error']}")
