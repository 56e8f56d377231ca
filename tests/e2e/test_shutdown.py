"""Graceful shutdown: on SIGTERM, a request in flight (a tool running) finishes and
records every step; new connections are refused; nothing is half-recorded."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

from bootstrap import build_app
from service import audit
from service.config import Settings
from tests.e2e.flows import decided, form, pending
from tests.support.server import live_server


def test_sigterm_lets_a_request_in_flight_finish(tmp_path: Path) -> None:
    block = tmp_path / "block"
    block.touch()
    url = f"sqlite:///{tmp_path / 'signoff.db'}"
    with live_server(url, tmp_path / "server.log", SIGNOFF_TEST_BLOCK=str(block)) as server:
        with server.client() as c:
            r = c.post("/agents/ops/runs", files=form(
                message='call slow_delete {"table_name": "users"}', stream="false"))
            run = r.json()
            tools = [decided(t, confirmed=True) for t in pending(run)]
            answer: dict[str, object] = {}

            def confirm() -> None:
                with server.client() as c2:
                    resp = c2.post(f"/agents/ops/runs/{run['run_id']}/continue",
                                   files=form(tools=tools, stream="false"))
                    answer["status"], answer["body"] = resp.status_code, resp.json()

            t = threading.Thread(target=confirm)
            t.start()
            deadline = time.monotonic() + 10  # the tool has started: it blocks now
            while c.get(f"/runs/{run['run_id']}").json()["tool_calls"][0]["state"] != \
                    "running":
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGTERM)
        time.sleep(0.5)
        assert server.proc.poll() is None  # still finishing the request in flight
        block.unlink()  # the tool finishes
        t.join(20)
        server.proc.wait(20)
    assert answer["status"] == 200
    assert answer["body"]["status"] == "COMPLETED"  # type: ignore[index]
    store = build_app(Settings(database_url=url))
    try:
        done = store.get_run(run["run_id"])
        assert str(done.status) == "COMPLETED"
        assert done.calls[tools[0]["tool_call_id"]].result == "Dropped users"
        assert audit.verify_log(store).intact
    finally:
        store.close()
