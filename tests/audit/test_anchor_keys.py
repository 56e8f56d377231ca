"""Anchors bind the count of events, the log hash and every run's head, not positions:
a log with gaps survives export and import; a run cut short or stripped of its hashes
is named by its own check; an export with lines removed or altered is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bootstrap import build_app, build_projections
from domain.run import Run
from projections import anchors
from service import audit
from service.archive import ImportError_, check_export, export_events, import_events
from service.config import Settings
from tests.audit.store import Store, filled_store
from tests.golden.record import populate

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _export(store: Store, path: Path) -> list[str]:
    path.write_text("".join(export_events(store.app, anchors=store.anchor())))
    return path.read_text().splitlines(keepends=True)


def test_a_log_with_gaps_exported_imported_verifies_with_an_anchor_kept(
        store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(anchors, "EVERY", 100)
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'source.db'}")
    app = build_app(settings)
    run_ids = populate(app)
    lost = Run.start(agent_id="ops", agent_name="Ops", user_id="u", session_id="s",
                     input="x")
    app.save(lost)
    run_ids += populate(app)
    source = Store(settings, app, build_projections(settings), run_ids)
    source.delete(str(lost.id))  # a burned position, as a save that lost a race leaves
    kept = next(a for a in source.anchor() if a["events"] == 200)
    assert kept["position"] == 201  # the gap is before it
    lines = _export(source, tmp_path / "x.jsonl")

    target = build_app(Settings(database_url=store_url))
    assert check_export(lines, [kept]).anchors_checked == 5  # 100, 200, head, own, kept
    assert import_events(target, lines) == 204
    for text in (anchors.anchor_text(kept), f"201:200:{kept['hash']}"):  # new, deprecated
        anchor, deprecated = anchors.parse_anchor(text)
        assert deprecated == text.startswith("201:")
        report = audit.verify_log(target, [anchor])
        assert report.intact, report.as_dict()
    target.close()
    source.close()


@pytest.fixture
def store(store_url: str) -> Store:
    s = filled_store(store_url)
    yield s  # type: ignore[misc]
    s.close()


def test_a_runs_last_event_deleted_is_named_by_its_own_check(store: Store) -> None:
    run_id = store.run_ids[3]
    last = store.rows(run_id)[-1][0]
    store.delete(run_id, last)
    assert audit.verify_run(store.app, run_id).intact  # its chain alone cannot tell
    report = store.verify_run(run_id)  # the anchors saw version `last`
    assert not report.intact
    assert (report.first_broken.version, report.anchored["version"]) == (last, last)
    assert report.first_broken.problem.startswith("truncated")


def test_a_run_stripped_of_its_hashes_and_edited_is_named(store: Store) -> None:
    run_id = store.run_ids[0]
    for version, _, _ in store.rows(run_id):
        def downgrade(state: dict, version: int = version) -> None:
            state.pop("hash", None)
            state.pop("class_version", None)  # read as an event from before the chain
            if version == 2:
                state["input"] = "edited"
        store.edit(run_id, version, downgrade)
    alone = audit.verify_run(store.app, run_id)
    assert alone.intact and alone.unchained == len(store.rows(run_id))  # the old hole
    broken = store.verify_run(run_id).first_broken
    assert broken is not None and "rewritten" in broken.problem


def test_an_incomplete_or_altered_export_is_refused(store: Store, tmp_path: Path) -> None:
    lines = _export(store, tmp_path / "x.jsonl")
    assert json.loads(lines[0])["anchors"] and json.loads(lines[-1])["export"]["events"] == 102
    assert check_export(lines).events == 102
    gone = store.run_ids[5]
    events = [json.loads(line) for line in lines[1:-1]]

    def without(run_id: str) -> list[str]:
        return [lines[0], *(line for line, e in zip(lines[1:-1], events, strict=True)
                            if e["run_id"] != run_id), lines[-1]]

    downgraded = list(lines)
    for i, e in enumerate(events, start=1):
        if e["run_id"] == gone:
            downgraded[i] = json.dumps({**e, "hash": None, "prev": "0" * 64}) + "\n"
    altered = list(lines)
    altered[10] = altered[10].replace('"data": {', '"data": {"x": 1, ', 1)
    for bad, why in [(without(gone), "removed"), (lines[:-1], "no trailer"),
                     (downgraded, "does not match"), (altered, "does not match its hash")]:
        with pytest.raises(ImportError_, match=why):
            check_export(bad)
    # An anchor the auditor kept, over an export whose own anchors were rewritten to fit.
    kept, _ = anchors.parse_anchor(anchors.anchor_text(store.stored_anchors()[-1]))
    check_export(lines, [kept])
    with pytest.raises(ImportError_, match="kept anchor"):
        check_export(without(gone)[1:-1], [kept])  # no anchors of its own
