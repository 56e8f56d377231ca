"""OpenTelemetry traces (SIGNOFF_TRACES=console: one JSON span per line on stderr):
requests, model calls, tool executions and saves, with the run id; none when off."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tests.e2e.flows import decided, form, pending
from tests.support.server import live_server

SEED = "Delete 50 old records from the users table"


def _spans(log: str) -> list[dict[str, Any]]:
    spans = []
    for line in log.splitlines():
        if line.startswith('{"name"'):
            spans.append(json.loads(line))
    return spans


def _seed_flow(server: Any) -> str:
    with server.client() as c:
        run = c.post("/agents/data_manager/runs", files=form(message=SEED, stream="false"))
        run = run.json()
        tools = [decided(t, confirmed=True) for t in pending(run)]
        done = c.post(f"/agents/data_manager/runs/{run['run_id']}/continue",
                      files=form(tools=tools, stream="false")).json()
        assert done["status"] == "COMPLETED"
    return str(run["run_id"])


def test_a_run_is_traced_with_its_run_id(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'signoff.db'}"
    with live_server(url, tmp_path / "server.log", SIGNOFF_TRACES="console") as server:
        run_id = _seed_flow(server)
        # A request's span ends (and is written) just after its answer is sent.
        deadline = time.monotonic() + 10
        while "/continue" not in " ".join(s["name"] for s in _spans(server.log_path.read_text())
                                          if s["kind"] == "SpanKind.SERVER"):
            assert time.monotonic() < deadline, "the continue request's span never came"
            time.sleep(0.05)
        log = server.log_path.read_text()
    spans = _spans(log)
    names = {s["name"] for s in spans}
    assert {"signoff.save", "signoff.model", "signoff.tool"} <= names
    server = [s for s in spans if s["kind"] == "SpanKind.SERVER"]
    assert "POST /agents/{agent_id}/runs/{run_id}/continue" in {s["name"] for s in server}
    continued = next(s for s in server if s["name"].endswith("/continue"))
    assert continued["attributes"]["signoff.run_id"] == run_id
    tool = next(s for s in spans if s["name"] == "signoff.tool")
    assert tool["attributes"]["signoff.run_id"] == run_id
    assert tool["attributes"]["signoff.tool"] == "delete_records"
    assert tool["attributes"]["signoff.outcome"] == "ok"
    saves = [s for s in spans if s["name"] == "signoff.save"]
    assert any(run_id in s["attributes"].get("signoff.run_id", "") for s in saves)
    # The save and the tool of the continue request share the request's trace.
    request_traces = {s["context"]["trace_id"] for s in spans if s["kind"] == "SpanKind.SERVER"}
    assert tool["context"]["trace_id"] in request_traces


def test_no_spans_when_traces_are_off(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'signoff.db'}"
    with live_server(url, tmp_path / "server.log") as server:
        _seed_flow(server)
        assert _spans(server.log_path.read_text()) == []
