"""The ids signoff gives Agno's messages and requirements are ``uuid5`` names, stable for
a run across requests and across versions of signoff: a client may have stored them."""

from __future__ import annotations

from api.agno import _uuid


def test_a_known_id() -> None:  # the value uuid5 gave, written down
    run = "3f2c1a9e-0000-4000-8000-000000000001"
    assert _uuid(run, "message", "0") == "6335a330-3548-53ad-8c59-e6887623d48f"
