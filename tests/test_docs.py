"""Generated docs stay in step with the code they are made from."""

from __future__ import annotations

import json
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_the_api_reference_is_made_from_the_openapi_document(tmp_path: Path) -> None:
    from api.app import create_app
    from api.reference import reference
    from service.config import Settings

    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'x.db'}"))
    spec = json.loads(json.dumps(app.openapi()))
    assert (DOCS / "api-reference.md").read_text() == reference(spec), \
        "run: python -m api.reference > docs/api-reference.md"
