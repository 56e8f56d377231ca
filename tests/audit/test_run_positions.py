"""A run's own check names where its events are in the log (issue 16, point 9:
``GET /runs/{id}/verify`` gave ``position: null``): its head's log position when it is
intact, and the first broken event's when it is not, the same position the whole log's
check names (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from service import audit
from service.runs import RunService
from tests.audit.store import Store, filled_store
from tests.audit.test_tamper import DAMAGE
from tests.golden.test_golden import load


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = filled_store(store_url)
    yield s
    s.close()


def _positions(store: Store, run_id: str) -> dict[int, int]:
    """Each version's log position, from the stored notifications (nothing decoded)."""
    return {n.originator_version: n.id
            for n in store.app.recorder.select_notifications(1, 100_000)
            if str(n.originator_id) == run_id}


def test_an_intact_run_names_the_position_of_its_last_event(store: Store) -> None:
    for run_id in store.run_ids:
        positions = _positions(store, run_id)
        report = store.verify_run(run_id)
        assert report.intact
        last = max(positions)
        assert report.head == {"version": last, "hash": report.head["hash"],
                               "position": positions[last]}
    # The newest run's last event is the log's last.
    assert store.verify_run(store.run_ids[-1]).head["position"] == store.app.head()


def test_an_altered_event_is_named_at_its_position_by_both_checks(store: Store) -> None:
    run_id = store.run_ids[1]
    store.edit(run_id, 3, lambda state: state.update(hash=state["hash"][::-1]))
    position = _positions(store, run_id)[3]
    own = store.verify_run(run_id).first_broken
    assert (own.version, own.position) == (3, position)
    in_log = store.verify().first_broken
    assert (in_log.run_id, in_log.version, in_log.position) == (run_id, 3, position)
    assert in_log.problem == own.problem


def test_a_deleted_event_is_named_at_the_next_ones_position(store: Store) -> None:
    run_id = store.run_ids[0]
    positions = _positions(store, run_id)
    store.delete(run_id, 4)
    own = store.verify_run(run_id).first_broken
    assert (own.version, own.position) == (5, positions[5])
    assert "version 4 of the run missing" in own.problem
    assert store.verify().first_broken.position == positions[5]


def test_a_truncated_run_has_no_position_for_the_versions_it_lost(store: Store) -> None:
    run_id = store.run_ids[0]
    positions = _positions(store, run_id)
    last = max(positions)
    store.delete(run_id, last)
    report = store.verify_run(run_id)
    assert report.first_broken.version == last and report.first_broken.position is None
    assert "truncated" in report.first_broken.problem
    assert report.head["position"] == positions[last - 1]


def test_a_store_in_memory_has_no_positions_to_look_up() -> None:
    """The golden histories load into eventsourcing's in-memory store: the check still
    works, without positions for a run's own check."""
    app: RunService = load(Path(__file__).parents[1] / "golden" / "v3")
    run_id = str(next(e.originator_id for _, e in app.log()))
    report = audit.verify_run(app, run_id)
    assert report.intact and report.head["position"] is None
    assert json.dumps(report.as_dict())  # JSON as the API sends it


@pytest.mark.parametrize("damage", DAMAGE)
def test_every_damage_is_named_at_one_position_by_both_checks(store: Store,
                                                               damage: str) -> None:
    run_id = store.run_ids[2]
    DAMAGE[damage](store, run_id)
    own = store.verify_run(run_id).first_broken
    in_log = store.verify().first_broken
    assert own is not None and in_log is not None
    assert in_log.position == own.position
    assert own.position == _positions(store, run_id).get(own.version)
