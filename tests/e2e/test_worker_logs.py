"""``signoff serve --workers 2``: every line on stderr, uvicorn's own included (the
supervisor's and each worker's), is signoff's JSON; only the command's own banner
(``signoff: ...``, printed before logging is set up) is not."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.server import ROOT, free_port

pytestmark = pytest.mark.e2e


def test_two_workers_log_only_json_lines(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "SIGNOFF_DATABASE_URL": f"sqlite:///{tmp_path / 's.db'}",
           "SIGNOFF_PORT": str(port), "SIGNOFF_HOST": "127.0.0.1",
           "SIGNOFF_LOG_FORMAT": "json", "SIGNOFF_PROJECTIONS": "off",
           "SIGNOFF_MODEL": "offline", "PYTHONPATH": str(ROOT)}
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "cli", "serve", "--workers", "2"],
                                cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log.read_text()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        assert httpx.get(f"http://127.0.0.1:{port}/agents", timeout=5).status_code == 200
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    parsed = [json.loads(line) for line in lines if not line.startswith("signoff: ")]
    messages = [(p["logger"], p["message"]) for p in parsed]
    assert ("uvicorn.error", f"Started parent process [{proc.pid}]") in messages
    assert sum(m.startswith("Started server process") for _, m in messages) == 2
    assert any(logger == "signoff.http" for logger, _ in messages)
