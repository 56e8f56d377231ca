"""The domain and the service type-check with ``mypy --strict`` (and pydantic's plugin:
``[tool.mypy]`` in pyproject.toml). Every ``# type: ignore`` there says why on its line."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ("domain", "service")


def test_the_domain_and_the_service_type_check_strictly() -> None:
    out = subprocess.run([sys.executable, "-m", "mypy", *CHECKED], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_type_ignore_says_why() -> None:
    """On its line (``# type: ignore[code]  # why``), or in a comment on the line above."""
    unexplained = []
    for package in CHECKED:
        for path in sorted((ROOT / package).rglob("*.py")):
            lines = path.read_text().splitlines()
            for n, line in enumerate(lines):
                m = re.search(r"# type: ignore(\[[^\]]*\])?(.*)$", line)
                if m and not m.group(2).strip() and not (
                        n and lines[n - 1].strip().startswith("#")):
                    unexplained.append(f"{path.relative_to(ROOT)}:{n + 1}")
    assert unexplained == []
