"""Generated docs stay in step with the code they are made from."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_the_api_reference_is_made_from_the_openapi_document(tmp_path: Path) -> None:
    from api.app import create_app
    from api.reference import reference
    from service.config import Settings

    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'x.db'}"))
    spec = json.loads(json.dumps(app.openapi()))
    assert (DOCS / "api-reference.md").read_text() == reference(spec), \
        "run: python -m api.reference > docs/api-reference.md"


ROOT = DOCS.parent
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md")), *sorted(ROOT.glob("*/README.md"))]
# A Markdown link's target, or a path in backticks that starts with ./ or ../
LINK = re.compile(r"\]\(([^)\s]+)\)|`(\.\.?/[^`\s]+)`")


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_docs_link_only_inside_the_repository(page: Path) -> None:
    """What the docs point to ships with them: no path out of the repository (notes kept
    beside the clone are not in it), and every relative link names a file that exists."""
    text = page.read_text()
    assert "shared/notes" not in text
    for match in LINK.finditer(text):
        target = (match.group(1) or match.group(2)).split("#")[0]
        if not target or "://" in target or target.startswith("mailto:"):
            continue
        path = (page.parent / target).resolve()
        assert path.is_relative_to(ROOT), f"{page.name} points outside the repository: {target}"
        assert path.exists(), f"{page.name} links to {target}, which does not exist"


def test_the_projections_page_names_every_projection() -> None:
    from projections.runner import projection_names

    text = (DOCS / "projections.md").read_text()
    table = text[text.index("| projection | tables |"):].split("\n\n")[0]
    rows = set(re.findall(r"^\| `(\w+)` \|", table, re.M))
    assert rows == set(projection_names()), f"docs/projections.md's table: {sorted(rows)}"


def test_the_api_page_gives_every_field_of_a_new_key() -> None:
    from api.routes.keys import NewKey

    [row] = [ln for ln in (DOCS / "api.md").read_text().splitlines()
             if ln.startswith("| `POST /keys` |")]
    for field in NewKey.model_fields:
        assert f'"{field}"' in row, f"docs/api.md's POST /keys body lacks {field!r}"
