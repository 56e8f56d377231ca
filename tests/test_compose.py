"""docker-compose.yml and the Dockerfile, checked without Docker."""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_compose_starts_postgresql_and_the_service_wired_to_it() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) >= {"postgres", "signoff"}
    pg = services["postgres"]["environment"]
    app = services["signoff"]
    url = app["environment"]["SIGNOFF_DATABASE_URL"]
    assert url == (f"postgresql://{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}"
                   f"@postgres:5432/{pg['POSTGRES_DB']}")
    assert app["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert app["build"] == "."
    assert any(p.endswith(":7777") for p in app["ports"])
    # One projection process beside the API, on the same database; the API leaves it to it.
    assert app["environment"]["SIGNOFF_PROJECTIONS"] == "off"
    projections = services["projections"]
    assert projections["command"] == ["project"]
    assert projections["environment"]["SIGNOFF_DATABASE_URL"] == url


def test_the_image_runs_as_a_non_root_user_and_serves_by_default() -> None:
    lines = [ln.strip() for ln in (ROOT / "Dockerfile").read_text().splitlines()]
    users = [ln.split()[1] for ln in lines if ln.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert 'ENTRYPOINT ["signoff"]' in lines
    # Everything the wheel needs is copied into the build stage.
    copied = {ln.split()[1] for ln in lines if ln.startswith("COPY ") and "--from" not in ln}
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    assert set(packages) <= copied
