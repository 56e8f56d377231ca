"""Section ``growth``: does the cost stay flat as histories grow?

1. One session's runs: the per-cycle time over HTTP (one client, one cycle at a time) of
   the session's first ``--growth-window`` runs, then of its last ones, up to its
   ``--growth-runs``-th. The runs between are written straight through the domain and
   ``app.save`` (100 per transaction: HTTP would take too long), the server's projections
   brought up to date, then the last window is measured over HTTP again. Issue 7's
   target: the 10,000th run within 10% of the first.
2. One run of ``--long-run-events`` events (saved a few events at a time, as a long run
   is): ``app.get_run`` with ``RunService``'s snapshots (every 100 events) and with an
   application that takes none and replays every event.
"""

from __future__ import annotations

import statistics
import time
from argparse import Namespace
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.common import Stores, header, serve, wait_projections
from bench.load import AGENT, MESSAGE, HttpClient, hitl_cycle, pct


def session_run(i: int, session_id: str, user_id: str) -> Any:
    """A completed HITL run of the session, as the offline model's cycle records it."""
    from domain.run import Run
    from domain.values import Requirement

    run = Run.start(agent_id=AGENT, agent_name="Data Manager", user_id=user_id,
                    session_id=session_id, input=MESSAGE)
    call_id = f"call_fill_{i}"
    args = {"table_name": "users", "count": 50}
    run.record_model_response(model="offline", provider="signoff", content=None,
                              tool_calls=[{"id": call_id, "name": "delete_records",
                                           "args": args}])
    run.request_tool_call(tool_call_id=call_id, tool_name="delete_records", tool_args=args,
                          requires=Requirement.CONFIRMATION)
    run.pause()
    run.confirm_tool(call_id, decided_by=user_id)
    run.continue_run()
    run.start_tool(call_id, deadline=datetime.now(UTC) + timedelta(minutes=5))
    run.record_tool_result(call_id, "Deleted 50 records from users")
    run.record_model_response(model="offline", provider="signoff", content="Done.",
                              tool_calls=[])
    run.complete("Done.")
    return run


def window(client: HttpClient, n: int, session_id: str, user_id: str) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        hitl_cycle(client, session_id=session_id, user_id=user_id)
        out.append(time.perf_counter() - t0)
    return out


def long_run(app: Any, events: int) -> Any:
    """A run of about ``events`` events: tool calls that need no decision, one after the
    other (model turn, request, start, result), saved every four events."""
    from domain.run import Run

    run = Run.start(agent_id=AGENT, agent_name="Data Manager", user_id="long",
                    session_id="long", input=MESSAGE)
    app.save(run)
    k = 0
    while run.version + 6 <= events:
        k += 1
        call_id = f"call_{k}"
        args = {"table_name": "users", "count": k}
        run.record_model_response(model="offline", provider="signoff", content=None,
                                  tool_calls=[{"id": call_id, "name": "list_tables",
                                               "args": args}])
        run.request_tool_call(tool_call_id=call_id, tool_name="list_tables", tool_args=args)
        run.start_tool(call_id, deadline=datetime.now(UTC) + timedelta(minutes=5))
        run.record_tool_result(call_id, f"{k} tables")
        app.save(run)
    run.record_model_response(model="offline", provider="signoff", content="Done.",
                              tool_calls=[])
    run.complete("Done.")
    app.save(run)
    return run


def timed_loads(app: Any, run_id: Any, n: int, seconds: float = 30.0) -> list[float]:
    out = []
    t_end = time.perf_counter() + seconds
    for _ in range(n):
        t0 = time.perf_counter()
        app.get_run(run_id)
        out.append(time.perf_counter() - t0)
        if time.perf_counter() > t_end:
            break
    return out


def growth(stores: Stores, kind: str, args: Namespace) -> int:
    from service.config import Settings, eventsourcing_env
    from service.runs import RunService

    class NoSnapshots(RunService):  # the same tables; replays every event
        name = "signoff"
        snapshotting_intervals = {}  # type: ignore[misc]

    url = stores.fresh(kind, "growth")
    w, total = args.growth_window, max(args.growth_runs, 2 * args.growth_window)
    header(f"growth: a session's 1st vs {total}th run, a long run's load ({kind})", url,
           workers=1, projections="inline", clients="1 (http.client), one cycle at a time",
           size=f"windows of {w} cycles, {total} runs in the session")
    env = eventsourcing_env(Settings(database_url=url))
    session, user = "growth-session", "growth-user"
    with serve(url, stores.log("growth")) as server:
        client = HttpClient(server.url)
        window(client, w, "warm-up", user)
        first = window(client, w, session, user)
        app = RunService(env=env)
        fill = total - 2 * w
        t0 = time.perf_counter()
        for start in range(w, w + fill, 100):
            app.save(*(session_run(i, session, user) for i in range(start, min(w + fill,
                                                                                start + 100))))
        filled = time.perf_counter() - t0
        caught_up, waited = wait_projections(server.url, timeout=900)
        window(client, 10, "warm-up", user)
        last = window(client, w, session, user)
        # A new session's first runs, measured now: what the machine gives at this moment
        # (other load on shared cores moves both windows alike).
        control = window(client, w, "control-session", user)
        client.close()
    print(f"runs {w + 1}..{w + fill} of the session written through the domain in "
          f"{filled:.1f} s; projections {'caught up' if caught_up else 'NOT caught up'} "
          f"in {waited:.1f} s")
    print(f"{'runs of the session':<30}{'p50 ms':>9}{'mean ms':>9}{'p99 ms':>9}")
    for label, xs in ((f"1..{w}", first), (f"{total - w + 1}..{total}", last),
                      (f"1..{w} of a new session", control)):
        print(f"{label:<30}{pct(xs, 50):>9.2f}{statistics.fmean(xs) * 1000:>9.2f}"
              f"{pct(xs, 99):>9.2f}")
    ratio_p50 = pct(last, 50) / pct(first, 50)
    ratio_mean = statistics.fmean(last) / statistics.fmean(first)
    print(f"last / first: p50 {ratio_p50:.3f}, mean {ratio_mean:.3f} (target: within 10%, "
          f"{'met' if ratio_p50 <= 1.10 else 'missed'} on p50); last / new session: p50 "
          f"{pct(last, 50) / pct(control, 50):.3f}")

    run = long_run(app, args.long_run_events)
    snaps = len(list(app.snapshots.get(run.id))) if app.snapshots else 0
    bare = NoSnapshots(env=env)
    with_snap = timed_loads(app, run.id, 50)
    without = timed_loads(bare, run.id, 50)
    print(f"a run of {run.version} events ({snaps} snapshots): app.get_run")
    print(f"{'':<24}{'p50 ms':>9}{'p99 ms':>9}{'loads':>7}")
    print(f"{'with snapshots (100)':<24}{pct(with_snap, 50):>9.2f}{pct(with_snap, 99):>9.2f}"
          f"{len(with_snap):>7}")
    print(f"{'without snapshots':<24}{pct(without, 50):>9.2f}{pct(without, 99):>9.2f}"
          f"{len(without):>7}")
    bare.close()
    app.close()
    return 0
