"""The README's commands, as written, on a fresh clone of this checkout's HEAD.

A newcomer clones, starts the README's two commands at once (`make serve` and `make test`:
each sets `.venv` up, one waits for the other), then follows "Five minutes": the seed's
flow, a client and a reviewer key, the queue, the inbox. The README and the Makefile are
read from the clone, so what is tested is what is committed.

`make test` here is the README's command limited to collecting the suite
(`PYTEST_ARGS="--collect-only -q"`): its set-up is the same, and every test module imports
in the new venv; the suite itself is not run again. pip's cache is the user's own, so the
install takes about 20 s on two cores once the wheels are cached, and the test about 40 s.
The only change to the commands is the port (the README's 7777 may be taken):
`SIGNOFF_PORT` is set, and 7777 in the commands is replaced by it.

Marked e2e; deselect it alone with ``-k "not test_readme"``. It skips when git, make,
flock or curl is missing, except under CI=true, where it fails.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.support.server import free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
SETUP_TIMEOUT = 600  # both set-ups, serialized; about 30 s with pip's cache warm
HEALTH_TIMEOUT = 60  # `make serve`'s service answering /health once its set-up is done
FLOW_TIMEOUT = 120  # the five minutes' commands
TEST_ARGS = "--collect-only -q"
FENCE = re.compile(r"^```bash\n(.*?)^```", re.M | re.S)
# The environment a newcomer's shell has: nothing of signoff's, of an outer pytest or make
# (its jobserver), or of an activated venv.
DROPPED = ("SIGNOFF_", "PYTEST_", "MAKE", "MFLAGS", "VIRTUAL_ENV", "PYTHONPATH", "OPENAI_")


def _need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        message = f"the README's commands need {', '.join(missing)}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and {message}: this test must run in CI", pytrace=False)
        pytest.skip(message)


def _section(readme: str, heading: str) -> str:
    """The text under the ``## heading...`` line, up to the next ``## ``."""
    match = re.search(rf"^## {re.escape(heading)}.*?\n(.*?)(?=^## |\Z)", readme, re.M | re.S)
    assert match, f"README.md has no section '## {heading}'"
    return match.group(1)


def _clone(dest: Path) -> None:
    """A clone of the commit checked out here (HEAD), as a newcomer gets it."""
    probe = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--git-dir"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        message = f"git cannot read {ROOT}: {probe.stderr.strip()}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and {message}", pytrace=False)
        pytest.skip(message)
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()
    subprocess.run(["git", "clone", "--quiet", "--no-checkout", str(ROOT), str(dest)],
                   check=True, timeout=120)
    subprocess.run(["git", "-C", str(dest), "checkout", "--quiet", "--detach", head],
                   check=True, timeout=120)


def _tail(text: str, lines: int = 40) -> str:
    """A log's last lines, for a failure's message (pip's lists are long)."""
    return "\n".join(text.splitlines()[-lines:])


def _start(args: list[str], cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    # A session of its own: stopping it stops make and what make started (by group id).
    with log.open("wb") as out:
        return subprocess.Popen(args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        if proc.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # anything make's child left behind


def _wait_for_health(url: str, serve: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + HEALTH_TIMEOUT
    while time.monotonic() < deadline:
        if serve.poll() is not None:
            pytest.fail(f"make serve exited {serve.returncode}:\n{_tail(log.read_text())}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    pytest.fail(f"make serve: no /health within {HEALTH_TIMEOUT} s:\n{_tail(log.read_text())}")


def test_the_readme_commands_work_as_written_on_a_fresh_clone(tmp_path: Path) -> None:
    _need("git", "make", "flock", "curl")
    clone = tmp_path / "clone"
    _clone(clone)
    readme = (clone / "README.md").read_text()

    # "The two commands": `make serve` and `make test`, run from the clone.
    [two] = FENCE.findall(_section(readme, "The two commands"))
    commands = [line.split("#")[0].strip() for line in two.splitlines() if line.strip()]
    assert commands == ["make serve", "make test"], commands

    port = free_port()
    url = f"http://localhost:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(DROPPED)}
    env["SIGNOFF_PORT"] = str(port)
    serve_log, test_log = tmp_path / "serve.log", tmp_path / "test.log"
    started = time.monotonic()
    serve = _start(shlex.split(commands[0]), clone, env, serve_log)
    test = _start([*shlex.split(commands[1]), f"PYTEST_ARGS={TEST_ARGS}"], clone, env, test_log)
    try:
        try:
            test.wait(SETUP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"make test: not done in {SETUP_TIMEOUT} s:\n{_tail(test_log.read_text())}"
                        f"\nmake serve:\n{_tail(serve_log.read_text())}")
        logs = {"serve": serve_log.read_text(), "test": test_log.read_text()}
        assert test.returncode == 0, f"make test exited {test.returncode}:\n{_tail(logs['test'])}"
        assert re.search(r"^\d+ tests collected", logs["test"], re.M), _tail(logs["test"])
        _wait_for_health(url, serve, serve_log)
        setup_seconds = time.monotonic() - started
        logs["serve"] = serve_log.read_text()

        # One make set the venv up while the other said it waited, then found it ready;
        # neither saw the other's pip half-installed (`No module named 'pip._vendor...'`).
        both = logs["serve"] + logs["test"]
        make = "\n".join(ln for ln in both.splitlines() if ln.startswith("make"))
        assert both.count("make: setting up .venv") == 1, make
        assert "waiting for it to finish" in both, make
        assert all(log.count("make: .venv is ready") == 1 for log in logs.values()), make
        assert "pip._vendor" not in both and "Traceback" not in both, _tail(both)

        # "Five minutes": every command of the section, in order, in one shell (the
        # variables carry over). curl fails on an HTTP error status, with the body.
        five = FENCE.findall(_section(readme, "Five minutes"))
        assert five, "README.md: no commands under '## Five minutes'"
        script = ["set -euo pipefail",
                  'curl() { command curl --silent --show-error --fail-with-body '
                  '--max-time 60 "$@"; }']
        for i, block in enumerate(five):
            script += [f"echo '::block {i}::'", block.replace(":7777", f":{port}")]
        script += ["echo '::variables::'", 'echo "$RUN_ID"', 'echo "$REVIEWER"']
        flow = subprocess.run(["bash", "-c", "\n".join(script)], cwd=clone, env=env,
                              capture_output=True, text=True, timeout=FLOW_TIMEOUT)
        assert flow.returncode == 0, f"{flow.stdout}\n{flow.stderr}"
        out, variables = flow.stdout.split("::variables::\n")
        run_id, reviewer = variables.split()

        # The seed's run paused on delete_records, was confirmed, and completed.
        assert "RunPaused" in out and "delete_records" in out, out
        assert run_id in out, out
        # The reviewer's queue has the client's run waiting on delete_records.
        auth = {"Authorization": f"Bearer {reviewer}"}
        queue = httpx.get(f"{url}/queue", headers=auth, timeout=10)
        assert queue.status_code == 200, queue.text
        assert "delete_records" in queue.text and run_id not in queue.text, queue.text
        # The seed's run is over; the new one is the client's.
        assert httpx.get(f"{url}/runs/{run_id}", headers=auth, timeout=10).json()["status"] \
            == "COMPLETED"
        # "http://localhost:7777/ says where things are", and the inbox is there.
        assert httpx.get(f"{url}/", timeout=10).json()["inbox"] == "/inbox"
        assert httpx.get(f"{url}/inbox", timeout=10).status_code == 200
    finally:
        _stop(serve)
        _stop(test)
    print(f"set-up (clone, both makes, /health): {setup_seconds:.0f} s; "
          f"total {time.monotonic() - started:.0f} s")
    shutil.rmtree(clone, ignore_errors=True)  # the venv: a few hundred MB
