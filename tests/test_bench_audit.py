"""``python -m bench.audit --runs N`` runs every audit command at a tiny size (no timing
asserted): each phase succeeds, prints its row, and verify checks a decision row for
every decision the mix makes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.auditcli import decided_run

ROOT = Path(__file__).resolve().parents[1]


def test_the_mix_makes_every_kind_of_decision() -> None:
    topics = {type(e).__name__ for i in range(20) for e in decided_run(i).collect_events()}
    assert {"ToolConfirmed", "ToolRejected", "ExternalResultProvided", "UserInputProvided",
            "RunCancelled", "RunCompleted"} <= topics


def test_every_command_runs_and_prints_its_row() -> None:
    out = subprocess.run([sys.executable, "-m", "bench.audit", "--runs", "40", "--stores",
                          "sqlite"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [line for line in out.stdout.splitlines() if line.startswith("sqlite ")]
    phases = [line[9:27].strip() for line in lines]
    assert phases[:-1] == ["fill", "project anchors", "project audit", "verify",
                           "verify --log-only", "export", "export csv", "import"], out.stdout
    counts = {phase: int(line[27:36]) for phase, line in zip(phases[:-1], lines[:-1], strict=True)}
    assert counts["export csv"] == 40  # rows: 2 runs left paused, 2 with two calls
    assert len({n for p, n in counts.items() if p != "export csv"}) == 1  # every event
    assert "decision rows checked by verify: 40;" in out.stdout, out.stdout
