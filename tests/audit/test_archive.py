"""Export and import: a store of many runs with every kind of decision goes out as JSON
Lines and comes back into an empty store (encrypted or not, SQLite or PostgreSQL) with
the state and the hashes of every run, and the log's anchor, identical."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.cryptography import AESCipher

from bootstrap import build_app
from domain import chain
from service import audit
from service.archive import ImportError_, check_export, export_events, import_events
from service.config import Settings
from service.views import event_view, run_view
from tests.audit.store import Store, filled_store
from tests.golden.record import populate
from tests.golden.test_golden import load as load_golden

ROOT = Path(__file__).resolve().parents[2]


def _json(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str, sort_keys=True))


def _snapshot(store: Store | Any, run_ids: list[str]) -> dict[str, Any]:
    app = store.app if isinstance(store, Store) else store
    return {r: {"state": _json(run_view(app.get_run(r))),
                "events": [_json(event_view(e)) for e in app.run_events(r)]}
            for r in run_ids}


@pytest.mark.parametrize(("source_key", "target_key"), [
    ("", ""), ("", "new"), ("old", "new")], ids=["plain", "to-encrypted", "re-encrypted"])
def test_round_trip(tmp_path: Path, store_url: str, source_key: str, target_key: str) -> None:
    keys = {"": "", "old": AESCipher.create_key(32), "new": AESCipher.create_key(16)}
    source = filled_store(f"sqlite:///{tmp_path / 'source.db'}", keys[source_key])
    for _ in range(4):  # 60 runs in all: every kind of decision, several times
        source.run_ids += populate(source.app)
    anchor = source.anchor()[-1]
    export = tmp_path / "export.jsonl"
    with export.open("w") as f:
        f.writelines(export_events(source.app))

    target_app = build_app(Settings(database_url=store_url, cipher_key=keys[target_key]))
    assert import_events(target_app, export.open()) == source.app.head() == 510
    target = Store(Settings(database_url=store_url, cipher_key=keys[target_key]), target_app,
                   None, source.run_ids)  # type: ignore[arg-type]
    assert _snapshot(target, source.run_ids) == _snapshot(source, source.run_ids)
    report = audit.verify_log(target_app, [anchor])  # the source's anchor holds here too
    assert report.intact and report.runs == 60 and report.anchors_checked == 1
    with pytest.raises(ImportError_, match="empty"):
        import_events(target_app, export.open())
    target_app.close()
    source.close()


def _docs_script(tmp_path: Path) -> Callable[[Path], subprocess.CompletedProcess[str]]:
    """The checker script of docs/audit.md, as is; run over an export file."""
    doc = (ROOT / "docs" / "audit.md").read_text()
    section = doc[doc.index("### Checking an export with your own script"):]
    script = tmp_path / "check.py"
    script.write_text(section.split("```python\n", 1)[1].split("```", 1)[0])

    def check(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(script), str(path)], capture_output=True,
                              text=True, timeout=60)

    return check


def test_every_exported_line_verifies_with_the_script_in_the_docs(tmp_path: Path) -> None:
    """docs/audit.md gives a third party a script of their own; it is run here, as is,
    over a whole export and over an export of a period."""
    check = _docs_script(tmp_path)
    source = filled_store(f"sqlite:///{tmp_path / 'a.db'}")
    whole, period = tmp_path / "whole.jsonl", tmp_path / "period.jsonl"
    whole.write_text("".join(export_events(source.app)))
    times = sorted(e.timestamp for _, e in source.app.log())
    period.write_text("".join(export_events(source.app, since=times[30], until=times[70])))

    out = check(whole)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["intact;", "log", "hash", source.anchor()[-1]["hash"]]
    assert check(period).returncode == 0
    lines = whole.read_text().splitlines()
    rec = json.loads(lines[40])
    rec["data"]["tool_args" if "tool_args" in rec["data"] else "x"] = {"changed": 1}
    lines[40] = json.dumps(rec)
    whole.write_text("\n".join(lines) + "\n")
    broken = check(whole)
    assert broken.returncode != 0 and "line 41" in broken.stderr
    source.close()


def test_the_script_in_the_docs_checks_exports_of_events_recorded_before_the_chain(
        tmp_path: Path) -> None:
    """Issue 16, point 9: the script failed on a v1 (pre-chain) history. The golden v1
    history, exported whole and as a period, and after one of its paused runs was decided
    today (its new events chained, the first with ``prev`` = 64 zeros), checks; its log
    hash is the one ``verify`` computes. A run's hashes stripped after a hashed line fail."""
    check = _docs_script(tmp_path)
    app = load_golden(ROOT / "tests" / "golden" / "v1")
    v1_only = tmp_path / "v1.jsonl"
    v1_only.write_text("".join(export_events(app)))
    paused = _decide_a_paused_v1_run_today(app)
    mixed, period = tmp_path / "mixed.jsonl", tmp_path / "period.jsonl"
    mixed.write_text("".join(export_events(app)))
    times = sorted(e.timestamp for _, e in app.log())
    period.write_text("".join(export_events(app, since=times[len(times) // 2])))
    report = audit.verify_log(app)
    assert report.intact and 0 < report.unchained < report.events
    for path in (v1_only, mixed, period):
        out = check(path)
        assert out.returncode == 0, (path.name, out.stderr)
    assert check(mixed).stdout.split()[-1] == report.head["hash"]

    # The run decided today, its new lines stripped of their hashes: refused.
    lines = mixed.read_text().splitlines()
    recs = [json.loads(line) for line in lines]
    chained = [i for i, r in enumerate(recs) if r.get("run_id") == paused and r["hash"]]
    assert len(chained) == 2
    recs[chained[1]]["hash"] = None
    mixed.write_text("".join(json.dumps(r) + "\n" for r in recs))
    stripped = check(mixed)
    assert stripped.returncode != 0 and f"line {chained[1] + 1}" in stripped.stderr
    app.close()


def test_export_of_a_period(tmp_path: Path) -> None:
    source = filled_store(f"sqlite:///{tmp_path / 'a.db'}")
    times = sorted(e.timestamp for _, e in source.app.log())
    since, until = times[20], times[60]
    recs = [json.loads(line) for line in export_events(source.app, since=since, until=until)]
    assert recs and all(since <= datetime.fromisoformat(r["timestamp"]) < until for r in recs)
    assert len(recs) == sum(1 for t in times if since <= t < until)
    # A period's first event of a run still names its run's previous hash.
    assert all(r["prev"] != chain.GENESIS for r in recs if r["version"] > 1)
    source.close()


def _cli(*args: str, url: str, key: str = "", **kwargs: Any) -> subprocess.CompletedProcess:
    env = {**os.environ, "SIGNOFF_DATABASE_URL": url, "SIGNOFF_CIPHER_KEY": key}
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, **kwargs)


def test_the_commands(tmp_path: Path) -> None:
    key = _cli("keys", "generate", url="sqlite:///:memory:").stdout.strip()
    a, b = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    source = filled_store(a, key)
    source.close()

    verified = _cli("audit", "verify", url=a, key=key)
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.startswith("INTACT: 102 events of 12 runs")
    anchor = _cli("audit", "anchor", url=a, key=key).stdout.strip()
    assert anchor.startswith("102:") and len(anchor.split(":")) == 3  # EVENTS:HASH:RUNS

    exported = _cli("audit", "export", "-o", str(tmp_path / "x.jsonl"), url=a, key=key)
    assert exported.returncode == 0 and "exported 102 events" in exported.stderr
    assert "exporting" in exported.stderr  # the progress bar
    csv = _cli("audit", "export", "--format", "csv", url=a, key=key)
    assert csv.stdout.startswith("position,run_id,tool_call_id,")
    assert len(csv.stdout.strip().splitlines()) == 1 + 12  # header + every decision

    imported = _cli("audit", "import", str(tmp_path / "x.jsonl"), url=b)
    assert imported.returncode == 0, imported.stderr
    assert "imported 102 events of 12 runs" in imported.stderr
    kept = _cli("audit", "verify", "--anchor", anchor, url=b)
    assert kept.returncode == 0 and "2 anchors" in kept.stdout  # its own head and the kept one

    # (line 1 is the anchors of format 2)
    run_id = json.loads((tmp_path / "x.jsonl").read_text().splitlines()[1])["run_id"]
    one = _cli("audit", "verify", "--run", run_id, "--json", url=b)
    assert json.loads(one.stdout)["intact"] is True
    bad = _cli("audit", "verify", "--anchor", "102:102:" + "f" * 64, url=b)
    assert bad.returncode == 1 and "does not match" in bad.stdout
    wrong_key = _cli("audit", "verify", url=a, key=AESCipher.create_key(32))
    # The store knows its key: a wrong one is refused before anything is read or written.
    assert wrong_key.returncode == 2 and "not this store's key" in wrong_key.stderr


def test_an_event_after_a_run_ended_still_chains(tmp_path: Path) -> None:
    """Verify and export forget a run once it ends (memory holds open runs only); a late
    outcome of a tool that was running when the run was cancelled is still checked."""
    from datetime import UTC, timedelta

    from domain.run import Run
    from domain.values import Requirement

    app = build_app(Settings(database_url=f"sqlite:///{tmp_path / 'a.db'}"))
    run = Run.start(agent_id="ops", agent_name="Ops", user_id="u", session_id="s",
                    input="x")
    run.record_model_response(model="m", provider="p", content=None, tool_calls=[
        {"id": "c1", "name": "slow", "args": {}}])
    run.request_tool_call(tool_call_id="c1", tool_name="slow", tool_args={},
                          requires=Requirement.CONFIRMATION)
    run.pause()
    run.confirm_tool("c1", decided_by="bob")
    run.continue_run()
    run.start_tool("c1", deadline=datetime.now(UTC) + timedelta(minutes=1))
    app.save(run)
    others = [Run.start(agent_id="ops", agent_name="Ops", user_id="u", session_id="s",
                        input=str(i)) for i in range(3)]
    app.save(*others)
    run.cancel(cancelled_by="carol")
    app.save(run)
    app.save(*others)
    run.record_tool_result("c1", "done anyway")  # after RunCancelled
    app.save(run)
    assert audit.verify_log(app, remember=1).intact
    lines = [json.loads(line) for line in export_events(app)]
    lines = [r for r in lines if "run_id" in r]  # not the anchors (format 2)
    late = lines[-1]
    assert late["type"].endswith("ToolExecuted")
    assert late["prev"] == next(r["hash"] for r in lines if r["type"].endswith("RunCancelled"))
    app.close()


def test_an_export_of_a_period_is_refused_by_import_and_leaves_no_store(
        tmp_path: Path) -> None:
    """Issue 16, point 9: importing a ``--since`` export left a broken store (runs without
    their first events, verify BROKEN, and no way to import again). Now it is refused
    before anything is written; the whole export then imports into the same place."""
    a, b = f"sqlite:///{tmp_path / 'a.db'}", tmp_path / "b.db"
    source = filled_store(a)
    since = next(e.timestamp for _, e in source.app.log()
                 if type(e).__name__ == "ToolConfirmed")  # a run's middle
    source.close()
    period, whole = tmp_path / "period.jsonl", tmp_path / "whole.jsonl"
    assert _cli("audit", "export", "--since", since.isoformat(), "-o", str(period),
                url=a).returncode == 0
    first = json.loads(period.read_text().splitlines()[0])
    assert first["version"] > 1

    refused = _cli("audit", "import", str(period), url=f"sqlite:///{b}")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert (f"refused: line 1 (run {first['run_id']} version {first['version']}): the "
            "run's first line is not its version 1: an export of a period (--since) lacks "
            "the run's earlier events") in refused.stderr
    assert "nothing was imported" in refused.stderr and "imported" not in refused.stdout
    if b.exists():  # nothing written: no event
        with sqlite3.connect(b) as conn:
            tables = {t for (t,) in conn.execute("SELECT name FROM sqlite_master")}
            assert "stored_events" not in tables or conn.execute(
                "SELECT count(*) FROM stored_events").fetchone() == (0,)

    assert _cli("audit", "export", "-o", str(whole), url=a).returncode == 0
    imported = _cli("audit", "import", str(whole), url=f"sqlite:///{b}")
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.startswith("INTACT: 102 events of 12 runs")


def test_a_pre_chain_history_continued_today_is_imported_intact(tmp_path: Path) -> None:
    """A run recorded before the hash chain (v1) and decided today: its first chained
    event's ``prev`` is 64 zeros. Import refused it as altered; it checks and imports."""
    app = load_golden(ROOT / "tests" / "golden" / "v1")
    _decide_a_paused_v1_run_today(app)
    lines = list(export_events(app))
    checked = check_export(lines)
    target = build_app(Settings(database_url=f"sqlite:///{tmp_path / 'b.db'}"))
    assert import_events(target, lines) == checked.events == app.head()
    report = audit.verify_log(target, checked.anchors)
    assert report.intact and report.anchors_checked == 1, report.as_dict()
    assert report.head["hash"] == audit.verify_log(app).head["hash"]
    target.close()
    app.close()


def _decide_a_paused_v1_run_today(app: Any) -> str:
    """One of the golden v1 history's paused runs gets its external result and continues
    (its id): its new events are chained, the first with ``prev`` = 64 zeros."""
    expected = json.loads((ROOT / "tests" / "golden" / "v1" / "expected.json").read_text())
    paused = next(r for r, want in expected.items() if want["final"]["status"] == "PAUSED")
    run = app.get_run(paused)
    run.provide_external_result(run.pending_calls()[0].tool_call_id, decided_by="bob",
                                result="paid")
    run.continue_run()
    app.save(run)
    return paused
