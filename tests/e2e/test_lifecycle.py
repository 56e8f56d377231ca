"""The run lifecycle over HTTP, on SQLite and on a throwaway PostgreSQL: no outcome lost,
no authority leaked (service/lifecycle.py, service/access.py).

- A cancel racing a running tool: the tool's outcome is still recorded, once per
  execution, and no model turn follows it.
- A process killed while a tool runs: the run reaches the queue, in doubt, with no
  request about it (the sweeper settles it).
- Another client's continue on a stale run writes nothing.
- An ``Idempotency-Key`` is bound to its request and its caller.
- A cancel is authorized like a decision.

``send_letter`` (tests/support/agents.py) blocks while a file exists and writes one line
per execution to another: the test counts executions by that side effect.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.flows import assert_problem, decided, events, form, pending
from tests.e2e.test_roles import _cli
from tests.support.server import LiveServer, live_server

pytestmark = pytest.mark.e2e

ROUNDS = 20
WAIT_S = 20.0


def letter(to: str) -> str:
    return f'call send_letter {{"to": "{to}"}}'


def wait_until(what: str, check: Callable[[], Any], timeout: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.02)
    raise AssertionError(f"not within {timeout:g} s: {what}")


def paused(c: httpx.Client, message: str, agent: str = "mailer") -> dict[str, Any]:
    r = c.post(f"/agents/{agent}/runs", files=form(message=message, stream="false"))
    assert r.status_code == 200, r.text
    run: dict[str, Any] = r.json()
    assert run["status"] == "PAUSED", run
    return run


def confirm_form(run: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return form(tools=[decided(t, confirmed=True) for t in pending(run)], stream="false",
                **fields)


def call_state(c: httpx.Client, run_id: str) -> str:
    [call] = c.get(f"/runs/{run_id}").json()["tool_calls"]
    return str(call["state"])


def head(c: httpx.Client) -> int:
    return int(c.get("/health").json()["log_head"])


# ------------------------------------------------------ cancel racing a tool

def test_a_cancel_racing_a_running_tool_loses_no_outcome(store_url: str,
                                                         tmp_path: Path) -> None:
    block, effects = tmp_path / "block", tmp_path / "effects"
    with live_server(store_url, tmp_path / "server.log", SIGNOFF_TEST_BLOCK=str(block),
                     SIGNOFF_TEST_EFFECTS=str(effects)) as server, server.client() as c:
        runs = [paused(c, letter(f"r{i}")) for i in range(ROUNDS)]
        block.touch()
        answers: dict[str, httpx.Response | BaseException] = {}

        def confirm(run: dict[str, Any]) -> None:
            try:
                with server.client() as own:
                    answers[run["run_id"]] = own.post(
                        f"/agents/mailer/runs/{run['run_id']}/continue", files=confirm_form(run))
            except BaseException as e:  # reported below
                answers[run["run_id"]] = e

        threads = [threading.Thread(target=confirm, args=(r,), daemon=True) for r in runs]
        for t in threads:
            t.start()
        try:
            # Every confirm has committed its decision and the tool's start; the tools block.
            for run in runs:
                wait_until("the tool runs", lambda r=run: call_state(c, r["run_id"]) == "running")
            for run in runs:  # each cancel lands while its tool runs
                r = c.post(f"/runs/{run['run_id']}/cancel", json={"reason": "changed my mind"})
                assert r.status_code == 200, r.text
                assert r.json()["status"] == "CANCELLED"
        finally:
            block.unlink(missing_ok=True)
            for t in threads:
                t.join(WAIT_S)
        for run in runs:
            answer = answers[run["run_id"]]
            assert isinstance(answer, httpx.Response), answer
            assert answer.status_code == 200, answer.text
            assert answer.json()["status"] == "CANCELLED"

        executions = effects.read_text().splitlines()
        recorded = 0
        for run in runs:
            history = [e["type"] for e in events(c, run["run_id"])]
            recorded += history.count("ToolExecuted")
            cancelled = history.index("RunCancelled")
            # The outcome comes after the cancel, and nothing after it: no model turn.
            assert history[cancelled:] == ["RunCancelled", "ToolExecuted"], history
            assert call_state(c, run["run_id"]) == "executed"
        assert sorted(executions) == sorted(f"r{i}" for i in range(ROUNDS))
        assert recorded == len(executions) == ROUNDS


# ------------------------------------------------- a process killed mid-tool

def test_a_run_left_running_by_a_killed_process_reaches_the_queue_unasked(
        store_url: str, tmp_path: Path) -> None:
    block, effects = tmp_path / "block", tmp_path / "effects"
    with live_server(store_url, tmp_path / "server.log", SIGNOFF_TOOL_TIMEOUT="1",
                     SIGNOFF_EXPIRY_INTERVAL="0.2", SIGNOFF_TEST_BLOCK=str(block),
                     SIGNOFF_TEST_EFFECTS=str(effects)) as server:
        with server.client() as c:
            run = paused(c, letter("ann"))
        run_id = run["run_id"]
        block.touch()

        def confirm() -> None:
            try:
                with server.client() as own:
                    own.post(f"/agents/mailer/runs/{run_id}/continue", files=confirm_form(run))
            except httpx.HTTPError:
                pass  # the server dies under it

        worker = threading.Thread(target=confirm, daemon=True)
        worker.start()
        with server.client() as c:
            wait_until("the tool runs", lambda: call_state(c, run_id) == "running")
        server.kill()
        block.unlink()
        worker.join(WAIT_S)
        server.restart()
        started = time.monotonic()
        with server.client() as c:
            # Nobody asks about the run: /queue is a read model and touches no run.
            item = wait_until("the run is in the queue, in doubt", lambda: next(
                (i for i in c.get("/queue").json()["items"] if i["run_id"] == run_id), None))
            waited = time.monotonic() - started
            assert [w["kind"] for w in item["waiting_for"]] == ["in_doubt"]
            state = c.get(f"/runs/{run_id}").json()
            assert state["status"] == "PAUSED"
            assert [p["state"] for p in state["pending"]] == ["in_doubt"]
        assert not effects.exists()  # the tool never finished: nothing ran twice
        assert waited < 1 + 0.2 + 5, waited  # the tool timeout, a sweep, and slack


# ------------------------------------------------------------- with keys

KEYS = {  # name: options of `signoff keys create`
    "adm": ["--role", "admin"], "ann": ["--role", "client"], "bob": ["--role", "client"],
    "rita": ["--role", "reviewer"], "sam": ["--role", "reviewer", "--agent", "data_manager"],
    "tina": ["--role", "reviewer", "--agent", "mailer", "--tool", "other_tool"],
    "audrey": ["--role", "auditor"],
}


class Keyed:
    def __init__(self, server: LiveServer, secrets: dict[str, str], block: Path) -> None:
        self.server = server
        self.secrets = secrets
        self.block = block

    def as_(self, who: str) -> httpx.Client:
        return self.server.client(headers={"Authorization": f"Bearer {self.secrets[who]}"})


@pytest.fixture(scope="module", params=["sqlite",
                                        pytest.param("postgres", marks=pytest.mark.postgres)])
def keyed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
          ) -> Iterator[Keyed]:
    tmp = tmp_path_factory.mktemp("keyed")
    db = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp / 'signoff.db'}"
    else:
        db = request.getfixturevalue("pg_server").create_database(
            f"test_{uuid.uuid4().hex[:12]}")
        url = str(db.url)
    secrets = {name: _cli(url, "keys", "create", "--name", name, *options)
               for name, options in KEYS.items()}
    block = tmp / "block"
    try:
        with live_server(url, tmp / "server.log", SIGNOFF_TOOL_TIMEOUT="1",
                         SIGNOFF_EXPIRY_INTERVAL="0", SIGNOFF_TEST_BLOCK=str(block)) as server:
            yield Keyed(server, secrets, block)
    finally:
        block.unlink(missing_ok=True)
        if db is not None:
            db.drop_database()


def test_another_clients_continue_on_a_stale_run_records_nothing(keyed: Keyed) -> None:
    """A run left RUNNING by a killed process, its tool's deadline past: only a caller
    who may act on it settles it (in doubt); anyone else's request writes nothing."""
    server = keyed.server
    with keyed.as_("ann") as ann:
        run = paused(ann, letter("stale"))
    run_id = run["run_id"]
    keyed.block.touch()

    def confirm() -> None:
        try:
            with keyed.as_("rita") as reviewer:
                reviewer.post(f"/agents/mailer/runs/{run_id}/continue",
                              files=confirm_form(run))
        except httpx.HTTPError:
            pass  # the server dies under it

    worker = threading.Thread(target=confirm, daemon=True)
    worker.start()
    try:
        with keyed.as_("ann") as ann:
            wait_until("the tool runs", lambda: call_state(ann, run_id) == "running")
        server.kill()
    finally:
        keyed.block.unlink(missing_ok=True)
        worker.join(WAIT_S)
    server.restart()  # no sweeper here (SIGNOFF_EXPIRY_INTERVAL=0)
    with keyed.as_("audrey") as audrey, keyed.as_("bob") as bob, keyed.as_("ann") as ann:
        [call] = audrey.get(f"/runs/{run_id}").json()["tool_calls"]
        deadline = call["deadline"]
        wait_until("the call's deadline passes", lambda: _past(deadline), timeout=5)
        before = head(audrey)
        assert_problem(bob.post(f"/agents/mailer/runs/{run_id}/continue",
                                files=confirm_form(run)), 404)
        assert_problem(bob.get(f"/runs/{run_id}"), 404)
        assert_problem(bob.post(f"/runs/{run_id}/cancel"), 404)
        assert audrey.get(f"/runs/{run_id}").json()["status"] == "RUNNING"  # read only
        assert head(audrey) == before  # nothing recorded for bob, nor for the auditor
        settled = ann.get(f"/runs/{run_id}").json()  # the run's client: settled on read
        assert settled["status"] == "PAUSED"
        assert [p["state"] for p in settled["pending"]] == ["in_doubt"]


def _past(iso: str) -> bool:
    return datetime.now(UTC) > datetime.fromisoformat(iso)


def test_an_idempotency_key_is_bound_to_its_request_and_its_caller(keyed: Keyed) -> None:
    with keyed.as_("rita") as rita, keyed.as_("ann") as ann:
        run = paused(ann, letter("key"))
        path = f"/agents/mailer/runs/{run['run_id']}/continue"
        key = {"Idempotency-Key": f"k-{uuid.uuid4()}"}
        first = rita.post(path, files=confirm_form(run), headers=key)
        assert first.status_code == 200, first.text
        assert first.json()["status"] == "COMPLETED"
        before = head(rita)

        again = rita.post(path, files=confirm_form(run), headers=key)  # the same request
        assert again.status_code == 200, again.text
        assert again.json()["run_id"] == run["run_id"]
        assert again.json()["status"] == "COMPLETED"

        rejection = form(tools=[decided(t, confirmed=False) for t in pending(run)],
                         stream="false")
        other = assert_problem(rita.post(path, files=rejection, headers=key), 422)
        assert "another request" in other["detail"]
        stranger = assert_problem(ann.post(path, files=confirm_form(run), headers=key), 422)
        assert "another actor" in stranger["detail"]
        assert head(rita) == before
        decisions = [e for e in events(rita, run["run_id"]) if e["type"] == "ToolConfirmed"]
        assert [d["payload"]["decided_by"] for d in decisions] == ["rita"]


@pytest.mark.parametrize(("who", "status"), [
    ("ann", 200),  # the run's own client
    ("rita", 200),  # a reviewer of every agent and tool
    ("bob", 404),  # another client: the run does not exist for it
    ("sam", 403),  # a reviewer of another agent
    ("tina", 403),  # a reviewer of this agent, but another tool
    ("audrey", 403),  # an auditor only reads
    ("adm", 403),  # an admin manages keys
])
def test_a_cancel_is_authorized_like_a_decision(keyed: Keyed, who: str, status: int) -> None:
    with keyed.as_("ann") as ann, keyed.as_(who) as caller:
        run = paused(ann, letter(who))
        before = head(ann)
        r = caller.post(f"/runs/{run['run_id']}/cancel", json={"reason": "no"})
        agno = caller.post(f"/agents/mailer/runs/{run['run_id']}/cancel")
        if status == 200:
            assert r.status_code == 200, r.text
            assert r.json()["cancelled_by"] == who  # the caller, never the requester
            assert_problem(agno, 409)  # already cancelled
        else:
            assert_problem(r, status)
            assert_problem(agno, status)
            assert head(ann) == before
            assert ann.get(f"/runs/{run['run_id']}").json()["status"] == "PAUSED"


# ---------------------------------------------------------- without keys

def test_without_keys_the_actor_is_the_user_named_or_anonymous(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'signoff.db'}"
    with live_server(url, tmp_path / "server.log") as server, server.client() as c:
        named = paused(c, letter("x"))  # started by the form's default user: none
        r = c.post(f"/agents/mailer/runs/{named['run_id']}/continue",
                   files=confirm_form(named, user_id="rev"))
        assert r.status_code == 200, r.text
        anonymous = paused(c, letter("y"))
        r = c.post(f"/agents/mailer/runs/{anonymous['run_id']}/continue",
                   files=form(tools=json.dumps([decided(t, confirmed=True)
                                                for t in pending(anonymous)]),
                              stream="false"))
        assert r.status_code == 200, r.text
        actors = [e["payload"]["decided_by"] for run in (named, anonymous)
                  for e in events(c, run["run_id"]) if e["type"] == "ToolConfirmed"]
        assert actors == ["rev", "anonymous"]
