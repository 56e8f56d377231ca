"""Who may import whom, as the pyproject's import-linter contracts say."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_import_contracts_hold() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_the_roles_table_in_the_docs_is_the_policy() -> None:
    from api.auth import policy_table

    assert policy_table() in (Path(__file__).parent.parent / "docs" / "security.md").read_text()
