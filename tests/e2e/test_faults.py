"""PostgreSQL goes away and comes back while clients keep working.

A real ``signoff serve`` (projections off) and a ``signoff project`` process beside it,
on a PostgreSQL server of this test's own. Client threads keep starting runs that pause
on a confirmation and confirming them over HTTP, as a careful client does: a decision
that got no definite answer (a 503) is sent again with the same ``Idempotency-Key``.
Meanwhile PostgreSQL is crash-stopped (``pg_ctl stop -m immediate``), left down until
the service answers 503 at once, and started again.

What must hold:

* every answer is 200, 409 or 503 (a 503 with ``Retry-After``, as a problem); no 500, no
  reset connection, no request left hanging;
* while the store is down, the service says so at once (after the first 503);
* it recovers by itself: decisions are acknowledged again soon after the restart;
* every acknowledged decision (a 200) is in the store exactly once, with its key;
* every run in the store, including any whose start was answered 503 though it was
  committed, can be finished, and then every run replays and the log verifies;
* the projection process resumed from its tracked positions: the audit trail holds each
  decision event exactly once, and the queue is empty once every run is finished.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from service import audit
from service.config import Settings, eventsourcing_env
from service.runs import RunService
from tests.e2e.flows import PROBLEM
from tests.support.postgres import PgServer, throwaway_postgres
from tests.support.server import ROOT, LiveServer, live_server

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

CLIENTS = 4
DECISIONS = ("ToolConfirmed", "ToolRejected", "ExternalResultProvided", "UserInputProvided")


@dataclass
class Traffic:
    """What the clients saw."""

    statuses: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)  # transport errors, odd answers
    acknowledged: list[tuple[str, str, str]] = field(default_factory=list)  # run, call, key
    times_503: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def saw(self, r: httpx.Response) -> None:
        with self.lock:
            self.statuses[r.status_code] += 1
            if r.status_code == 503:
                self.times_503.append(time.monotonic())
        if r.status_code not in (200, 409, 503):
            self.failures.append(f"{r.request.method} {r.request.url.path}: "
                                 f"{r.status_code} {r.text[:300]}")
        elif r.status_code >= 400 and (r.headers["content-type"] != PROBLEM
                                       or r.json()["status"] != r.status_code):
            self.failures.append(f"{r.status_code} is not a problem: {r.text[:300]}")
        elif r.status_code == 503 and r.headers.get("retry-after") != "1":
            self.failures.append(f"503 without Retry-After: {r.headers}")

    def acked(self) -> int:
        with self.lock:
            return len(self.acknowledged)

    def first_503_after(self, moment: float) -> float | None:
        with self.lock:
            return next((t for t in self.times_503 if t > moment), None)


def client(url: str, traffic: Traffic, stop: threading.Event, n: int) -> None:
    """Start a run, confirm its call; a decision without a definite answer is sent again
    with the same key until it gets one."""
    with httpx.Client(base_url=url, timeout=60) as c:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                r = c.post("/agents/data_manager/runs", data={
                    "message": f"Delete {i} records from table c{n}", "stream": "false"})
                traffic.saw(r)
                if r.status_code != 200:
                    stop.wait(0.1)
                    continue
                run = r.json()
                tools = [{**t, "confirmed": True} for t in run["tools"]]
                key = uuid.uuid4().hex
                while True:
                    r = c.post(f"/agents/data_manager/runs/{run['run_id']}/continue",
                               data={"tools": json.dumps(tools), "stream": "false"},
                               headers={"Idempotency-Key": key})
                    traffic.saw(r)
                    if r.status_code == 200:
                        with traffic.lock:
                            traffic.acknowledged.append(
                                (run["run_id"], tools[0]["tool_call_id"], key))
                        break
                    if r.status_code != 503:
                        break
                    time.sleep(0.1)
            except httpx.TransportError as e:
                traffic.failures.append(f"transport error: {e!r}")
                stop.wait(0.1)


class Projector:
    """``python -m cli project`` beside the API (SIGNOFF_PROJECTIONS=off)."""

    def __init__(self, url: str, log_path: Path) -> None:
        env = {**os.environ, "SIGNOFF_DATABASE_URL": url, "SIGNOFF_POSTGRES_POOL_SIZE": "2",
               "PYTHONPATH": str(ROOT)}
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "cli", "project"], cwd=ROOT,
                                         env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        # Following the log once it has said where each projection stands.
        wait_for(lambda: self.log().count("signoff project:") >= 3 or not self.alive(),
                 "signoff project to start", 30)
        assert self.alive(), self.log()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def pg(pg_bin: Path) -> Iterator[PgServer]:
    """A PostgreSQL server of this test's own (it is crash-stopped)."""
    with throwaway_postgres(pg_bin) as server:
        yield server.create_database("faults")


@pytest.fixture
def service(pg: PgServer, tmp_path: Path) -> Iterator[LiveServer]:
    with live_server(pg.url, tmp_path / "server.log", SIGNOFF_PROJECTIONS="off",
                     SIGNOFF_READY_MAX_LAG="0", SIGNOFF_TOOL_TIMEOUT="1",
                     SIGNOFF_POSTGRES_POOL_SIZE="4") as server:
        projector = Projector(pg.url, tmp_path / "project.log")
        server.projector = projector  # type: ignore[attr-defined]
        try:
            yield server
        finally:
            projector.stop()


def wait_for(condition: Any, what: str, timeout: float) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - started


def test_postgres_crash_and_restart_under_traffic(pg: PgServer, service: LiveServer) -> None:
    test_started = time.monotonic()
    traffic, stop = Traffic(), threading.Event()
    threads = [threading.Thread(target=client, args=(service.url, traffic, stop, n))
               for n in range(CLIENTS)]
    for t in threads:
        t.start()
    c = service.client()
    try:
        wait_for(lambda: traffic.acked() >= 10, "decisions before the crash", 20)

        # Crash-stop PostgreSQL: within seconds, the requests waiting on it and every
        # new one get 503s.
        pg.stop_immediate()
        down_at = time.monotonic()
        wait_for(lambda: traffic.first_503_after(down_at), "a 503", 10)
        first_503 = traffic.first_503_after(down_at)
        assert first_503 is not None
        wait_for(lambda: c.get("/health").status_code == 503, "/health to say so", 5)
        started = time.monotonic()
        r = c.get("/health")
        assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
        assert time.monotonic() - started < 0.5, "a 503 while down must come at once"
        assert c.get("/openapi.json").status_code == 200  # needs no store
        time.sleep(1.0)  # clients keep getting 503s

        # Start it again: the service recovers by itself.
        pg.start()
        print(f"first 503 {first_503 - down_at:.1f} s after PostgreSQL stopped")
        acked = traffic.acked()
        recovery = wait_for(lambda: traffic.acked() >= acked + 10,
                            "decisions after the restart", 20)
        print(f"down for {time.monotonic() - down_at - recovery:.1f} s; ten decisions "
              f"acknowledged {recovery:.1f} s after the restart")
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not any(t.is_alive() for t in threads), "a client is left hanging"
    assert not traffic.failures, traffic.failures[:5]
    assert set(traffic.statuses) <= {200, 409, 503}, traffic.statuses
    assert traffic.statuses[503] > 0 and traffic.statuses[200] > 0, traffic.statuses
    print(f"answers: {dict(traffic.statuses)}; decisions acknowledged: "
          f"{len(traffic.acknowledged)}")

    store = RunService(env=eventsourcing_env(Settings(database_url=pg.url,
                                                      postgres_pool_size=2)))
    try:
        # Every acknowledged decision is in the store exactly once, with its key.
        for run_id, call_id, key in traffic.acknowledged:
            decided = [e for e in store.run_events(run_id) if type(e).__name__ in DECISIONS
                       and e.tool_call_id == call_id]
            assert [e.request_key for e in decided] == [key], (run_id, call_id, decided)

        # Every run in the store can be finished (some were left paused, running or in
        # doubt by the crash; some were stored though their start got a 503).
        run_ids = {str(e.originator_id) for _, e in store.log()
                   if type(e).__name__ == "RunStarted"}
        assert len(run_ids) >= len(traffic.acknowledged)
        t0 = time.monotonic()
        finish_all(c, run_ids)
        print(f"{len(run_ids)} runs finished in {time.monotonic() - t0:.1f} s")

        # Every run replays, and the log verifies (also against the projection's anchors).
        versions: dict[str, list[int]] = {}
        decision_positions = []
        for position, e in store.log():
            versions.setdefault(str(e.originator_id), []).append(e.originator_version)
            if type(e).__name__ in DECISIONS:
                decision_positions.append(position)
        for run_id in run_ids:
            assert versions[run_id] == list(range(1, len(versions[run_id]) + 1))
            assert store.get_run(run_id).status.is_final
        report = audit.verify_log(store)
        assert report.intact and report.runs == len(run_ids), report.as_dict()
    finally:
        store.close()

    # The projection process reconnected and went on from its positions: each decision
    # event is in the audit trail exactly once, nothing waits in the queue.
    projector: Projector = service.projector  # type: ignore[attr-defined]
    assert projector.alive(), projector.log()[-3000:]
    assert "reconnecting" in projector.log()
    wait_for(lambda: c.get("/ready").status_code == 200, "the projections to catch up", 20)
    assert sorted(row["position"] for row in audit_rows(c)
                  if row["decision"] != "cancelled") == sorted(decision_positions)
    assert c.get("/queue").json()["total"] == 0
    verified = c.get("/audit/verify").json()
    assert verified["intact"] and verified["anchors_checked"] >= 1, verified
    c.close()
    assert time.monotonic() - test_started < 55


def finish_all(c: httpx.Client, run_ids: set[str]) -> None:
    """Confirm whatever waits, until every run has ended (a run left running by the crash
    is recovered on its next read, once its deadline of 1 s has passed)."""
    deadline = time.monotonic() + 30
    left = set(run_ids)
    while left:
        assert time.monotonic() < deadline, f"{len(left)} runs could not be finished"
        for run_id in sorted(left):
            run = c.get(f"/agents/data_manager/runs/{run_id}").json()
            if run["status"] in ("COMPLETED", "CANCELLED", "ERROR"):
                assert run["status"] == "COMPLETED", run
                left.discard(run_id)
            elif run["status"] == "PAUSED":
                tools = [{**t, "confirmed": True} for t in run["tools"]]
                r = c.post(f"/agents/data_manager/runs/{run_id}/continue",
                           data={"tools": json.dumps(tools), "stream": "false"})
                assert r.status_code in (200, 409), r.text
        if left:
            time.sleep(0.2)


def audit_rows(c: httpx.Client) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 500, **({"cursor": cursor} if cursor else {})}
        page = c.get("/audit/decisions", params=params).json()
        rows += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            return rows
