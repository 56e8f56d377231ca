"""The agent loop's tests run over the run service in memory (eventsourcing's POPO
store): ``app``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from service.runs import RunService


@pytest.fixture
def app() -> Iterator[RunService]:
    store = RunService(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    yield store
    store.close()
