"""The decision trail inside the proof: every row of ``signoff_decisions`` is checked
against the event it came from. A row changed, removed or added directly in the database
is named by ``signoff audit verify`` and ``GET /audit/verify`` (SQLite and PostgreSQL);
``--log-only`` skips the check; an untouched store of every kind of decision is intact."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from projections.audit import AuditProjection
from tests.audit.store import Store, filled_store
from tests.golden.record import populate
from tests.support.server import live_server

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = filled_store(store_url)
    yield s
    s.close()


def _sql(store: Store, statement: str, *params: Any) -> None:
    with store.sql() as conn:
        conn.execute(store.q(statement), params)


def _decision(store: Store, decision: str) -> dict[str, Any]:
    """The first row of this decision, the decision trail brought up to date first."""
    store.projections.catch_up(AuditProjection.name)
    with store.projections.views[AuditProjection.name].read() as c:
        row = c.execute("SELECT position, run_id, tool_call_id, actor FROM signoff_decisions "
                        "WHERE decision = %s ORDER BY position LIMIT 1", (decision,)).fetchone()
    assert row is not None
    return row


def test_an_untouched_store_of_every_kind_of_decision_checks_clean(store: Store) -> None:
    for _ in range(2):
        store.run_ids += populate(store.app)
    report = store.verify(rows=True)
    assert report.intact, report.as_dict()
    rows = report.read_models
    assert rows is not None
    assert (rows["rows"], rows["differ"], rows["unbound"], rows["stopped"]) == (36, 0, 0, None)
    assert rows["upto"] == store.app.head()


def test_a_changed_actor_is_named(store: Store) -> None:
    row = _decision(store, "confirmed")
    _sql(store, "UPDATE signoff_decisions SET actor = 'mallory' WHERE position = %s",
         row["position"])
    report = store.verify(rows=True)
    assert not report.intact
    assert report.first_broken is None and report.anchor_mismatch is None  # the log is sound
    rows = report.read_models
    assert rows is not None and rows["differ"] == 1
    [named] = rows["named"]
    assert (named["position"], named["run_id"], named["tool_call_id"]) == (
        row["position"], row["run_id"], row["tool_call_id"])
    assert named["problem"] == f"actor is 'mallory', the event says {row['actor']!r}"
    assert store.verify().intact  # the log alone (--log-only) does not look at the rows


def test_every_kind_of_change_to_the_rows_is_named(store: Store) -> None:
    confirmed, rejected = _decision(store, "confirmed"), _decision(store, "rejected")
    cancelled = _decision(store, "cancelled")
    _sql(store, "UPDATE signoff_decisions SET note = 'fine', decided_at = requested_at "
         "WHERE position = %s", rejected["position"])
    _sql(store, "DELETE FROM signoff_decisions WHERE position = %s", cancelled["position"])
    _sql(store, "UPDATE signoff_decisions SET position = 100000 WHERE position = %s",
         confirmed["position"])
    _sql(store, "UPDATE signoff_audit_counts SET n = n + 5 WHERE name = 'decisions'")
    rows = store.verify(rows=True).read_models
    assert rows is not None
    problems = {(n["position"], n["tool_call_id"]): n["problem"] for n in rows["named"]}
    assert problems[(rejected["position"], rejected["tool_call_id"])].startswith("note is 'fine'")
    assert "decided_at is " in problems[(rejected["position"], rejected["tool_call_id"])]
    assert problems[(cancelled["position"], cancelled["tool_call_id"])] == \
        "the decision event has no row: the row was removed"
    assert problems[(confirmed["position"], confirmed["tool_call_id"])] == \
        "the decision event has no row: the row was removed"
    assert problems[(100000, confirmed["tool_call_id"])].startswith(
        "no decision event at its position")
    assert problems[(None, None)] == ("the decisions counter says 17, the table holds 11 "
                                      "rows: it was altered")
    assert rows["differ"] == 5


def test_a_row_that_names_another_event_is_named(store: Store) -> None:
    row = _decision(store, "confirmed")
    _sql(store, "UPDATE signoff_decision_events SET version = 2 WHERE position = %s",
         row["position"])
    rows = store.verify(rows=True).read_models
    assert rows is not None
    [named] = rows["named"]
    assert named["problem"].startswith("it names the event at version 2 with hash ")


def test_rows_projected_before_their_events_were_recorded_check_until_a_rebuild(
        store: Store) -> None:
    store.projections.catch_up(AuditProjection.name)
    _sql(store, "DELETE FROM signoff_decision_events")
    report = store.verify(rows=True)
    assert report.intact and report.read_models is not None
    assert report.read_models["unbound"] == 12  # compared column by column all the same
    store.projections.rebuild(AuditProjection.name)
    assert store.verify(rows=True).read_models["unbound"] == 0  # type: ignore[index]


def _cli(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SIGNOFF_DATABASE_URL": url}
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_verify_names_the_row_and_log_only_skips_it(store: Store) -> None:
    row = _decision(store, "confirmed")
    url = store.settings.database_url
    assert _cli("audit", "verify", url=url).returncode == 0
    _sql(store, "UPDATE signoff_decisions SET actor = 'mallory' WHERE position = %s",
         row["position"])
    verified = _cli("audit", "verify", url=url)
    assert verified.returncode == 1, verified.stdout + verified.stderr
    assert verified.stdout.startswith("BROKEN: 102 events of 12 runs")
    assert "decision rows: 12 checked against the log up to position 102; 1 differ" \
        in verified.stdout
    assert (f"position {row['position']}, run {row['run_id']} version "
            in verified.stdout)
    assert f"call {row['tool_call_id']}: actor is 'mallory', the event says " \
        f"{row['actor']!r}" in verified.stdout
    as_json = json.loads(_cli("audit", "verify", "--json", url=url).stdout)
    assert as_json["read_models"]["named"][0]["problem"].startswith("actor is 'mallory'")
    log_only = _cli("audit", "verify", "--log-only", url=url)
    assert log_only.returncode == 0, log_only.stdout
    assert log_only.stdout.startswith("INTACT") and "decision rows" not in log_only.stdout


def test_get_audit_verify_names_the_row(store_url: str, tmp_path: Path) -> None:
    s = filled_store(store_url)
    row = _decision(s, "confirmed")
    _sql(s, "UPDATE signoff_decisions SET actor = 'mallory' WHERE position = %s",
         row["position"])
    s.close()
    with live_server(store_url, tmp_path / "server.log") as server, server.client() as c:
        report = c.get("/audit/verify").json()
        assert report["intact"] is False and report["first_broken"] is None
        rows = report["read_models"]
        assert rows["differ"] == 1 and rows["rows"] == 12
        [named] = rows["named"]
        assert named["tool_call_id"] == row["tool_call_id"]
        assert named["problem"].startswith("actor is 'mallory', the event says ")
        log_only = c.get("/audit/verify", params={"log_only": "true"}).json()
        assert log_only["intact"] is True and log_only["read_models"] is None
