"""docker-compose.yml and the Dockerfile, checked without Docker."""

from __future__ import annotations

import os
import re
import subprocess
import sys
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


def _dockerfile_healthcheck() -> str:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    [line] = [ln.strip() for ln in text.splitlines() if ln.startswith("HEALTHCHECK ")]
    return line


def test_every_service_has_a_health_check_that_fits_it_and_a_restart_policy() -> None:
    """A service's check must test what it runs: the API's HTTP /health, the projection
    process (no HTTP) `signoff project status`, PostgreSQL pg_isready. A service with no
    check of its own would inherit the image's, which polls the API's port."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    image_check = _dockerfile_healthcheck()
    assert "/health" in image_check  # the image's default command is `serve`
    expected = {"serve": "/health", "project": "project status"}
    for name, service in compose["services"].items():
        assert service.get("restart") in ("always", "unless-stopped", "on-failure"), name
        check = service.get("healthcheck")
        assert check and not check.get("disable"), f"{name} has no health check"
        test = " ".join(check["test"][1:]) if isinstance(check["test"], list) else check["test"]
        if "image" in service:
            assert service["image"].startswith("postgres") and "pg_isready" in test, name
            continue
        [command] = service["command"]
        assert expected[command] in test, (name, test)
        if command == "project":
            assert "http" not in test and check["test"][:2] == ["CMD", "signoff"], name


def test_the_api_health_check_uses_the_configured_port() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    api = compose["services"]["signoff"]
    port = api["environment"]["SIGNOFF_PORT"]
    assert f"127.0.0.1:{port}/health" in " ".join(api["healthcheck"]["test"])
    assert "SIGNOFF_PORT" in _dockerfile_healthcheck()


def test_time_zones_come_with_the_declared_dependencies() -> None:
    """Analytics' ``tz=`` needs the IANA time zone database. A slim image may lack the
    system's (/usr/share/zoneinfo); the ``tzdata`` package, a dependency installed with
    the wheels, is zoneinfo's fallback. Checked with the system's database hidden
    (``PYTHONTZPATH`` empty), as in an image without it."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    names = [re.split(r"[\[<>=!~ ;]", d, maxsplit=1)[0].lower()
             for d in pyproject["project"]["dependencies"]]
    assert "tzdata" in names
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    assert not any("--no-deps" in ln for ln in lines)  # the wheels bring it along
    code = ("import zoneinfo; assert zoneinfo.TZPATH == (), zoneinfo.TZPATH; "
            "from datetime import datetime; "
            "print(datetime(2030, 7, 1, tzinfo=zoneinfo.ZoneInfo('Europe/Paris')).utcoffset())")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONTZPATH": ""},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "2:00:00"
