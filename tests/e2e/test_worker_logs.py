"""``signoff serve --workers 2``: every line on stderr, uvicorn's own included (the
supervisor's and each worker's, a worker started again after one died, and the last
lines of each worker stopped by SIGTERM), is signoff's JSON; only the command's own banner
(``signoff: ...``, printed before logging is set up) is not."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.server import ROOT, free_port

pytestmark = pytest.mark.e2e


def json_lines(log: Path) -> list[dict[str, Any]]:
    """The log's lines, parsed: a line that is not JSON fails the test (the banner aside)."""
    return [json.loads(line) for line in log.read_text().splitlines()
            if line.strip() and not line.startswith("signoff: ")]


def pids(log: Path, message: str) -> list[int]:
    """The process ids uvicorn names in lines ``message [PID]``, in order."""
    pattern = re.compile(re.escape(message) + r" \[(\d+)\]")
    return [int(m.group(1)) for line in json_lines(log)
            if (m := pattern.fullmatch(line["message"]))]


def wait_for(what: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while not what():
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)


def healthy(base: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"{base}/health", timeout=1).status_code == 200
    return False


def test_two_workers_log_only_json_lines(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
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
        # Both workers up; then one killed, which the supervisor starts again.
        wait_for(lambda: len(pids(log, "Started server process")) == 2 and healthy(base),
                 proc, log)
        killed = pids(log, "Started server process")[0]
        os.kill(killed, signal.SIGKILL)
        wait_for(lambda: len(pids(log, "Started server process")) == 3 and healthy(base),
                 proc, log)
        assert httpx.get(f"{base}/agents", timeout=5).status_code == 200
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    messages = [(p["logger"], p["message"]) for p in json_lines(log)]
    assert ("uvicorn.error", f"Started parent process [{proc.pid}]") in messages
    assert ("uvicorn.error", f"Child process [{killed}] died") in messages
    assert ("uvicorn.error", f"Stopping parent process [{proc.pid}]") in messages
    assert any(logger == "signoff.http" for logger, _ in messages)
    # Each worker stopped by SIGTERM wrote its last lines before it ended.
    stopped = [pid for pid in pids(log, "Started server process") if pid != killed]
    assert sorted(pids(log, "Finished server process")) == sorted(stopped)
