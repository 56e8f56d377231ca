"""The test suite's own configuration: a failing Hypothesis test reports the example that
failed (schemathesis's pytest plugin, when loaded, prints the example's values empty)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_a_failing_property_reports_its_example(tmp_path: Path) -> None:
    (tmp_path / "test_property.py").write_text(
        "from hypothesis import given, strategies as st\n"
        "@given(st.integers(min_value=0))\n"
        "def test_small(n):\n"
        "    assert n < 5\n")
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-c", str(ROOT / "pyproject.toml"),
         "--rootdir", str(tmp_path), "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "n=5," in out.stdout, out.stdout
