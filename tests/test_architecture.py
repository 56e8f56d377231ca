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
    from api.app import create_app
    from api.reference import policy_table

    security = (Path(__file__).parent.parent / "docs" / "security.md").read_text()
    assert policy_table(create_app()) in security


def test_no_function_is_too_complex_to_read() -> None:
    """Cyclomatic complexity (radon) of at most 20 for every function of the service's
    packages (bench/ and tests/ aside)."""
    from radon.complexity import cc_visit

    root = Path(__file__).parent.parent
    over = [f"{path.relative_to(root)}:{f.lineno} {f.name} ({f.complexity})"
            for package in ("domain", "service", "agent", "api", "projections", "cli")
            for path in sorted((root / package).rglob("*.py"))
            for block in cc_visit(path.read_text())
            for f in getattr(block, "methods", None) or [block]
            if f.complexity > 20]
    assert over == []



PACKAGES = ("domain", "service", "agent", "api", "projections", "cli", "bootstrap")


def test_no_module_is_over_400_lines() -> None:
    root = Path(__file__).parent.parent
    sizes = {path.relative_to(root): len(path.read_text().splitlines())
             for package in PACKAGES for path in sorted((root / package).rglob("*.py"))}
    assert {path: n for path, n in sizes.items() if n > 400} == {}


def test_no_import_cycle() -> None:
    """No module imports, directly or through others, a module that imports it (imports
    made only for type checking aside; a package's ``__init__`` importing its own
    modules is no cycle of ours)."""
    import grimp

    graph = grimp.build_graph(*PACKAGES, "bench", exclude_type_checking_imports=True)
    cycles = []
    for module in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            back = graph.find_shortest_chain(importer=imported, imported=module)
            if back is not None:
                cycles.append(" -> ".join((module, *back)))
    assert cycles == []
