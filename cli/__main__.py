"""The ``signoff`` command: its groups put together, and what any command's failure to use
the store says."""

from __future__ import annotations

import sys

import typer
from eventsourcing.persistence import (
    InterfaceError,
    MapperDeserialisationError,
    OperationalError,
)

from cli.audit import audit
from cli.common import Command, load_settings, where
from cli.keys import keys
from cli.project import project
from cli.runs import runs
from cli.serve import serve
from cli.webhooks import webhooks
from service.storekey import StoreKeyError

signoff = typer.Typer(help="signoff: event-sourced run state for human-in-the-loop AI agents.",
                      no_args_is_help=True, add_completion=False, rich_markup_mode=None)
signoff.command(cls=Command)(serve)
signoff.add_typer(runs, name="runs")
signoff.add_typer(project, name="project")
signoff.add_typer(audit, name="audit")
signoff.add_typer(keys, name="keys")
signoff.add_typer(webhooks, name="webhooks")


def main() -> None:
    try:
        signoff()
    except StoreKeyError as e:  # any command that opens the store (build_app)
        typer.echo(f"signoff: cannot open the store: {e}", err=True)
        sys.exit(2)
    except MapperDeserialisationError as e:
        typer.echo(f"signoff: cannot read the stored events: {e}\nIs SIGNOFF_CIPHER_KEY the "
                   "key they were written with (and unset for a store never encrypted)?",
                   err=True)
        sys.exit(1)
    except (OperationalError, InterfaceError) as e:  # the store out of reach, or unusable
        typer.echo(f"signoff: cannot use the store: {type(e).__name__}: {e}"
                   f"{where(e, load_settings())}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
