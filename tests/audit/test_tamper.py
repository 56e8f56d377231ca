"""Someone with write access to the database changes the record; ``verify`` says what
broke (on SQLite and PostgreSQL), and an untouched store verifies clean."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import pytest
from eventsourcing.cryptography import AESCipher

from domain import chain
from service import audit
from tests.audit.store import Store, filled_store

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = filled_store(store_url)
    yield s
    s.close()


def _run_with(store: Store, topic: str, test: Any = lambda state: True) -> tuple[str, int]:
    """A run, and the version of its first event of this type that passes ``test``."""
    for run_id in store.run_ids:
        for version, t, state in store.rows(run_id):
            if t.endswith(topic) and test(json.loads(state)):
                return run_id, version
    raise AssertionError(f"no {topic}")


def test_an_untouched_store_verifies_clean(store: Store) -> None:
    report = store.verify()
    assert report.intact, report.as_dict()
    assert (report.runs, report.broken, report.unchained) == (12, 0, 0)
    assert report.events == store.app.head() == 102
    assert report.anchors_checked == 1  # the head (a checkpoint every 1,000 events)
    head = store.stored_anchors()[-1]
    assert report.head == {"position": 102, "events": 102, "hash": head["hash"],
                           "runs": head["runs"]}
    for run_id in store.run_ids:
        assert audit.verify_run(store.app, run_id).intact


def test_a_changed_argument_of_a_confirmation_is_named(store: Store) -> None:
    run_id, version = _run_with(store, "ToolConfirmed", lambda s: s["approved_args"])
    store.edit(run_id, version, lambda s: s["approved_args"].update(count=90000))

    report = audit.verify_run(store.app, run_id)
    assert not report.intact
    broken = report.first_broken
    assert (broken.run_id, broken.version, broken.type) == (run_id, version, "ToolConfirmed")
    assert "does not match its hash" in broken.problem
    log = store.verify()
    assert log.first_broken.run_id == run_id and log.first_broken.version == version
    assert log.broken == 1  # the other runs are intact
    assert log.anchor_mismatch is None  # the hashes stored are untouched: the chain names it


def test_a_deleted_event_is_named(store: Store) -> None:
    run_id = store.run_ids[0]
    store.delete(run_id, 3)
    broken = audit.verify_run(store.app, run_id).first_broken
    assert broken.version == 4
    assert broken.problem.startswith("version 3 of the run missing")
    report = store.verify()
    assert report.first_broken.version == 4
    assert report.anchor_mismatch["found_events"] == 101


def test_two_swapped_events_are_named(store: Store) -> None:
    run_id = store.run_ids[1]
    store.swap(run_id, 3, 4)
    broken = audit.verify_run(store.app, run_id).first_broken
    assert broken.version == 3
    assert "does not match its hash" in broken.problem


def test_a_run_deleted_whole_breaks_the_anchor(store: Store) -> None:
    gone = store.run_ids[4]
    n = len(store.rows(gone))
    store.delete(gone)
    report = store.verify()
    # Every run left is intact on its own; the run the anchors saw is named (before the
    # anchors bound each run's head, nothing named it: the old expectation was the bug) ...
    assert report.broken == 1 and report.first_broken.run_id == gone
    assert "it was removed" in report.first_broken.problem
    assert not report.intact  # ... and the log is not what was anchored
    mismatch = report.anchor_mismatch
    assert mismatch["expected_events"] - mismatch["found_events"] == n
    assert "removed" in mismatch["problem"]


def test_the_last_event_of_a_run_cut_off_breaks_the_anchor(store: Store) -> None:
    run_id = store.run_ids[2]
    last = store.rows(run_id)[-1][0]
    store.delete(run_id, last)
    # What is left of it chains, but the anchors saw its last version: the run's own
    # check names it (it said intact before the anchors bound each run's head) ...
    broken = store.verify_run(run_id).first_broken
    assert (broken.run_id, broken.version) == (run_id, last)
    assert broken.problem.startswith("truncated")
    report = store.verify()  # ... and so do the log and its anchor
    assert report.first_broken.run_id == run_id
    assert "removed" in report.anchor_mismatch["problem"]


def test_a_run_rewritten_with_its_hashes_recomputed_breaks_the_anchor(store: Store) -> None:
    """Whoever knows the scheme can re-chain one run after changing it: the run verifies
    on its own, the anchor over the log does not."""
    run_id, version = _run_with(store, "ToolCallRequested")
    events = store.app.run_events(run_id)
    prev = None
    for event, (v, topic, state) in zip(events, store.rows(run_id), strict=True):
        data = json.loads(state)
        if v == version:
            data["tool_args"]["table_name"] = "everything"
            object.__setattr__(event, "tool_args", data["tool_args"])
        data["hash"] = chain.digest(chain.event_record(event, topic, prev))
        prev = data["hash"]
        store.set_state(run_id, v, json.dumps(data).encode())

    assert audit.verify_run(store.app, run_id).intact  # its chain holds on its own ...
    # ... but its head is not what the anchors saw: the run is named (it was not before
    # the anchors bound each run's head), on its own and in the log
    assert "rewritten" in store.verify_run(run_id).first_broken.problem
    report = store.verify()
    assert report.first_broken.run_id == run_id and report.broken == 1
    assert "different ones" in report.anchor_mismatch["problem"]


def test_an_anchor_kept_outside_catches_a_rebuilt_anchors_projection(store: Store) -> None:
    """The anchors table can be rebuilt too by whoever deletes a run: an anchor the
    auditor kept (``signoff audit anchor``) still catches it."""
    kept = store.stored_anchors()[-1]
    store.delete(store.run_ids[0])
    store.projections.rebuild("anchors")
    assert store.verify().intact  # the tables now agree with the log ...
    report = store.verify(kept)  # ... but not with what was anchored before
    assert not report.intact
    assert report.anchor_mismatch["expected_hash"] == kept["hash"]


@pytest.fixture
def encrypted(store_url: str) -> Iterator[Store]:
    s = filled_store(store_url, cipher_key=AESCipher.create_key(32))
    yield s
    s.close()


def test_an_encrypted_store_is_unreadable_in_the_database_and_verifies(
        encrypted: Store) -> None:
    for run_id in encrypted.run_ids:
        for _, _, state in encrypted.rows(run_id):
            assert b"tool_call" not in state and b"decided_by" not in state
            with pytest.raises(ValueError):
                json.loads(state)
    assert encrypted.verify().intact


def test_altered_ciphertext_is_named(encrypted: Store) -> None:
    run_id = encrypted.run_ids[0]
    version, _, state = encrypted.rows(run_id)[4]
    flipped = state[:-1] + bytes([state[-1] ^ 1])
    encrypted.set_state(run_id, version, flipped)
    broken = audit.verify_run(encrypted.app, run_id).first_broken
    assert broken.version == version
    assert "cannot be read" in broken.problem


def test_the_log_chain_is_what_the_docs_say(store: Store) -> None:
    """The anchor is reproducible from the events' hashes alone, as docs/audit.md says."""
    log_hash = "0" * 64
    for _, event in store.app.log():
        log_hash = hashlib.sha256((log_hash + event.hash).encode()).hexdigest()
    assert log_hash == store.stored_anchors()[-1]["hash"]
