"""The ids signoff gives Agno's messages and requirements are ``uuid5`` names: stable for
a run (a client may match a requirement by id across requests), computed without the
``uuid`` module's objects on the hot path; they must stay exactly those uuid5 values."""

from __future__ import annotations

from uuid import NAMESPACE_URL, UUID, uuid5

from hypothesis import given
from hypothesis import strategies as st

from api.agno import _uuid


@given(st.lists(st.text(), min_size=1, max_size=4))
def test_ids_are_the_uuid5_of_their_parts(parts: list[str]) -> None:
    expected = uuid5(NAMESPACE_URL, "signoff:" + ":".join(parts))
    assert _uuid(*parts) == str(expected)
    assert UUID(_uuid(*parts)).version == 5


def test_a_known_id() -> None:  # the value uuid5 gave, written down
    run = "3f2c1a9e-0000-4000-8000-000000000001"
    assert _uuid(run, "message", "0") == "6335a330-3548-53ad-8c59-e6887623d48f"
