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


def test_two_swapped_events_are_named_reordered_alike_by_both_checks(store: Store) -> None:
    run_id = store.run_ids[1]
    store.swap(run_id, 3, 4)
    broken = audit.verify_run(store.app, run_id).first_broken
    assert broken.version == 3
    assert broken.problem == ("reordered: this event is version 4 of the run, stored as "
                              "version 3: the run's events were swapped or moved")
    in_log = store.verify().first_broken  # the whole log's check: the same words
    assert (in_log.run_id, in_log.version, in_log.problem, in_log.type) == (
        run_id, 3, broken.problem, broken.type)
    assert in_log.position == _position(store, run_id, 3)


def _move(store: Store, run_id: str, a: int, b: int) -> None:
    """Exchange the version numbers of two of the run's rows (each keeps its position)."""
    with store.sql() as conn:
        for old, new in ((a, -a), (b, a), (-a, b)):
            conn.execute(store.q(f"UPDATE {store.table} SET originator_version = %s "
                                 "WHERE originator_id = %s AND originator_version = %s"),
                         (new, store._id(run_id), old))


DAMAGE: dict[str, Any] = {
    "altered": lambda s, r: s.edit(r, 3, lambda st: st.update(hash=st["hash"][::-1])),
    "deleted": lambda s, r: s.delete(r, 3),
    "swapped": lambda s, r: s.swap(r, 2, 4),
    "moved": lambda s, r: _move(s, r, 3, 5),
    "truncated": lambda s, r: s.delete(r, s.rows(r)[-1][0]),
    "unreadable": lambda s, r: s.set_state(r, 3, b"\x00not json"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_one_damage_reads_the_same_in_the_run_check_and_the_log_check(
        store: Store, damage: str) -> None:
    run_id = store.run_ids[2]
    DAMAGE[damage](store, run_id)
    own = store.verify_run(run_id).first_broken
    in_log = store.verify().first_broken
    assert own is not None and in_log is not None
    assert (in_log.run_id, in_log.version, in_log.problem, in_log.type) == (
        run_id, own.version, own.problem, own.type)
    if damage in ("swapped", "moved"):
        assert own.problem.startswith("reordered: this event is version ")


def _position(store: Store, run_id: str, version: int) -> int:
    return next(p for p, e in store.app.log()
                if str(e.originator_id) == run_id and e.originator_version == version)


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


def test_events_reordered_in_the_log_are_named_reordered(store: Store) -> None:
    """Two events of a run exchange their log positions (each keeps its version and
    state): the run reads whole in version order, the log does not."""
    run_id = store.run_ids[3]
    p3, p4 = _position(store, run_id, 3), _position(store, run_id, 4)
    column = "notification_id" if store.postgres else "rowid"
    with store.sql() as conn:
        for old, new in ((p3, -1), (p4, p3), (-1, p4)):
            conn.execute(store.q(f"UPDATE {store.table} SET {column} = %s "
                                 f"WHERE {column} = %s"), (new, old))
    assert store.verify_run(run_id).intact
    report = store.verify()
    broken = report.first_broken
    assert (broken.run_id, broken.version, broken.position) == (run_id, 4, p3)
    assert broken.problem == ("reordered: version 4 of the run comes before its version 3 "
                              "in the log: the log's order was altered")
    assert "reordered" in report.anchor_mismatch["problem"]
