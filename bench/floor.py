"""The floor: what uvicorn and FastAPI alone cost a HITL cycle on this machine.

``python -m bench --sections floor`` serves ``app`` below with uvicorn (one worker, as
``signoff serve``) and drives it with the same load generator as ``cycles``: two routes
of the same shape as the Agno ones (an ``async`` route reading the form, one hop to the
thread pool, the run's Agno JSON written back; the same bodies, made by a real cycle of
the run lifecycle and agent loop in memory) and nothing else: no store, no domain, no middleware of
signoff's. What the server costs beyond this per cycle is signoff's own work.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from argparse import Namespace
from typing import Any

from fastapi import FastAPI, Request, Response
from starlette.concurrency import run_in_threadpool

from bench.common import ROOT, Stores, cpu_seconds, header, stop, wait_healthy
from bench.load import AGENT, MESSAGE, pct, run_load
from tests.support.server import free_port


def bodies() -> tuple[dict[str, Any], dict[str, Any]]:
    """The Agno bodies of one real cycle: the paused run, the completed run."""
    from api.agno import run_output
    from bench.workers import confirm_all, memory_lifecycle
    from service.auth import OPEN

    runs = memory_lifecycle()
    try:
        run = runs.drive(runs.open_run(OPEN, AGENT, MESSAGE))
        paused = run_output(run)
        run = runs.decide(OPEN, run.run_id, confirm_all(run), named="floor", drive=True).run
        return paused, run_output(run)
    finally:
        runs.steps.close()


def _app() -> FastAPI:
    paused, done = bodies()
    app = FastAPI()

    def work(body: dict[str, Any]) -> bytes:
        return json.dumps(body).encode()

    @app.post("/agents/{agent_id}/runs")
    async def start(agent_id: str, request: Request) -> Response:
        form = await request.form()
        assert form["message"]
        body = {**paused, "run_id": str(uuid.uuid4())}
        return Response(await run_in_threadpool(work, body), media_type="application/json")

    @app.post("/agents/{agent_id}/runs/{run_id}/continue")
    async def cont(agent_id: str, run_id: str, request: Request) -> Response:
        form = await request.form()
        json.loads(str(form["tools"]))
        body = {**done, "run_id": run_id}
        return Response(await run_in_threadpool(work, body), media_type="application/json")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def floor(stores: Stores, kind: str, args: Namespace) -> int:
    """One table (no store: ``kind`` is not used; run once)."""
    port = free_port()
    log = stores.log("floor")
    header("floor: uvicorn and FastAPI alone, the Agno routes' shape, no store",
           None, workers=1, clients=f"{max(args.clients)} (http.client)",
           size=f"{args.cycles} cycles per row")
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "bench.floor:app_factory", "--factory",
             "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    failed = 0
    try:
        wait_healthy(url, proc, lambda: f"the floor app did not start:\n{log.read_text()}")
        run_load(url, 4, cycles=100)  # warm-up
        print(f"{'clients':>7}{'cycles':>8}{'errors':>7}{'cycles/s':>10}{'start p50':>11}"
              f"{'cont. p50':>11}{'server CPU':>12}{'clients':>9}")
        for n in args.clients:
            cpu0 = cpu_seconds(proc.pid)
            r = run_load(url, n, cycles=args.cycles, seconds=args.seconds)
            server = (cpu_seconds(proc.pid) - cpu0) / max(r.cycles, 1) * 1000
            failed += r.error_count
            print(f"{n:>7}{r.cycles:>8}{r.error_count:>7}{r.rate:>10.1f}"
                  f"{pct(r.start, 50):>9.1f}ms{pct(r.cont, 50):>9.1f}ms{server:>10.2f}ms"
                  f"{r.client_cpu / max(r.cycles, 1) * 1000:>7.2f}ms", flush=True)
    finally:
        stop(proc, 10)
    print("(server CPU: the uvicorn process's CPU per cycle; compare the cycles section's "
          "server column: the difference is signoff's own work per cycle)")
    return failed


def app_factory() -> FastAPI:
    return _app()
