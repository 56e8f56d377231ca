"""Projection catch-up speed: ``python -m bench.catchup`` (see bench/README.md).

Fills a store with complete HITL runs (10 events each: started, model responded, call
requested, paused, confirmed, continued, tool started, tool executed, model responded,
completed; every third run rejected instead), written straight through the domain and
the application (100 runs per transaction), then rebuilds each projection from zero and
reports events per second. PostgreSQL is a throwaway server the benchmark starts itself.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import machine, store  # noqa: E402
from domain.run import Run  # noqa: E402
from domain.values import Requirement  # noqa: E402
from projections.runner import Projections  # noqa: E402
from service.config import Settings, eventsourcing_env  # noqa: E402
from service.runs import RunService  # noqa: E402

TOOLS = ("delete_records", "send_notification", "issue_refund")


def a_run(i: int) -> Run:
    run = Run.start(agent_id=f"agent{i % 3}", agent_name="Agent", user_id=f"user{i % 50}",
                    session_id=f"s{i % 200}", input="Delete 50 old records from the users table")
    call_id = f"call_{i}"
    args = {"table_name": "users", "count": i % 100}
    run.record_model_response(model="offline", provider="signoff", content=None,
                              tool_calls=[{"id": call_id, "name": TOOLS[i % 3], "args": args}])
    run.request_tool_call(tool_call_id=call_id, tool_name=TOOLS[i % 3], tool_args=args,
                          requires=Requirement.CONFIRMATION)
    run.pause()
    if i % 3 == 2:
        run.reject_tool(call_id, decided_by=f"reviewer{i % 7}", reason="not today")
        run.continue_run()
        run.record_model_response(model="offline", provider="signoff",
                                  content="Done. not today", tool_calls=[])
        run.complete("Done. not today")
    else:
        run.confirm_tool(call_id, decided_by=f"reviewer{i % 7}", note="ok")
        run.continue_run()
        run.start_tool(call_id, deadline=datetime.now(UTC) + timedelta(minutes=5))
        run.record_tool_result(call_id, "Deleted")
        run.record_model_response(model="offline", provider="signoff", content="Done. Deleted",
                                  tool_calls=[])
        run.complete("Done. Deleted")
    return run


def fill(app: RunService, runs: int) -> tuple[int, float]:
    t0 = time.perf_counter()
    for start in range(0, runs, 100):
        app.save(*(a_run(i) for i in range(start, min(runs, start + 100))))
    return app.head(), time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.catchup", description=__doc__)
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--runs", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"workload: {args.runs} runs written 100 per transaction, then each projection "
          f"rebuilt from zero, pages of {args.batch_size} events per transaction")
    print(f"{'store':<9}{'events':>10}{'write ev/s':>12}{'projection':>12}{'rebuild s':>11}"
          f"{'events/s':>10}")
    for kind in args.stores.split(","):
        with tempfile.TemporaryDirectory() as tmp, store(kind, Path(tmp)) as url:
            env = eventsourcing_env(Settings(database_url=url))
            app = RunService(env=env)
            events, seconds = fill(app, args.runs)
            projections = Projections(app, env, batch_size=args.batch_size)
            for name in projections.views:
                t0 = time.perf_counter()
                applied = projections.rebuild(name)
                took = time.perf_counter() - t0
                print(f"{kind:<9}{events:>10}{events / seconds:>12.0f}{name:>12}{took:>11.2f}"
                      f"{applied / took:>10.0f}", flush=True)
            projections.close()
            app.close()


if __name__ == "__main__":
    main()
