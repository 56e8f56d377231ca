"""signoff benchmarks: ``python -m bench`` (see bench/README.md).

Sections (``--sections``, default all but loadgen), each on fresh stores: SQLite files
and databases on one throwaway PostgreSQL the benchmark starts itself (loopback only,
stopped at the end); every server it starts is stopped by its PID; everything is bounded
in count and time.

- cycles: HITL cycles over real HTTP (start a run that pauses on a confirmation,
  continue it confirming, the run completes), offline model, at 1 / 8 / 32 clients.
- appends: event appends per second through the service's write path vs raw
  single-row inserts into the same database.
- growth: per-cycle cost of a session's first runs vs its 10,000th; loading a run of
  1,000 events with and without snapshots.
- storage: bytes stored per cycle (event log, snapshots, read models).
- memory: the server's peak RSS after a load (``--memory-cycles 100000`` for the long run).
- workers: ``signoff serve --workers 1, 2, 4`` beside one ``signoff project`` on
  PostgreSQL, 32 clients; then every result checked consistent (exit 1 if not).
- loadgen (only when named): what the load generator itself costs, httpx vs http.client,
  threads in one process vs several.
- floor (only when named): uvicorn and FastAPI alone with the Agno routes' shape (no
  store, no domain): what the framework costs a cycle on this machine.
- cost (only when named): the default setup's CPU per cycle beside the floor's, in one
  run, at each client count; bytes, WAL, commits and rows per cycle.

Every table is printed with the machine (cores, CPU, load average), the versions and the
settings it ran with.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import machine  # noqa: E402

SECTIONS = ("cycles", "appends", "growth", "storage", "memory", "workers")
EXTRA = ("loadgen", "floor", "cost")


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _setups(text: str) -> list[str]:
    setups = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in setups if x not in ("inline", "process")]
    if bad or not setups:
        raise argparse.ArgumentTypeError(f"not a setup: {', '.join(bad) or text!r} "
                                         "(inline, process)")
    return setups


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help=f"comma-separated, of {', '.join(SECTIONS + EXTRA)} (default: "
                   "all but loadgen, floor and cost)")
    p.add_argument("--stores", default="sqlite,postgres",
                   help="sqlite, postgres or both (workers runs on postgres only)")
    p.add_argument("--clients", type=_ints, default=[1, 8, 32],
                   help="concurrent clients per row of cycles (the largest for memory, "
                   "workers, loadgen)")
    p.add_argument("--cycles", type=int, default=400,
                   help="cycles per row (cycles, loadgen)")
    p.add_argument("--seconds", type=float, default=120.0,
                   help="at most this long for any one load")
    p.add_argument("--projections", type=_setups, default=["inline"],
                   help="cycles: setups, comma-separated: inline (the server's own, the "
                   "default) and/or process (SIGNOFF_PROJECTIONS=off beside one "
                   "`signoff project`)")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                   default="info", help="cycles: the server's SIGNOFF_LOG_LEVEL")
    p.add_argument("--client", choices=("http.client", "httpx"), default="http.client",
                   help="the load generator's HTTP client")
    p.add_argument("--client-procs", type=int, default=1,
                   help="spread the clients over this many processes")
    p.add_argument("--repeat", type=int, default=1, help="rounds of loadgen")
    p.add_argument("--threads", type=_ints, default=[1, 8, 32], help="appends: threads")
    p.add_argument("--appends-seconds", type=float, default=5.0,
                   help="appends: seconds per figure")
    p.add_argument("--appends-cap", type=int, default=200_000,
                   help="appends: at most this many events per figure")
    p.add_argument("--growth-runs", type=int, default=10_000,
                   help="growth: the session's runs in all (the last window ends there)")
    p.add_argument("--growth-window", type=int, default=100,
                   help="growth: cycles measured at the start and at the end")
    p.add_argument("--long-run-events", type=int, default=1000,
                   help="growth: events of the long run loaded with and without snapshots")
    p.add_argument("--storage-cycles", type=int, default=1000, help="storage: cycles")
    p.add_argument("--memory-cycles", type=int, default=5000,
                   help="memory: cycles (100000 for issue 7's target)")
    p.add_argument("--memory-seconds", type=float, default=600.0,
                   help="memory: at most this long")
    p.add_argument("--max-connections", type=int, default=400,
                   help="the throwaway PostgreSQL's max_connections")
    p.add_argument("--pool-size", type=int, default=None,
                   help="SIGNOFF_POSTGRES_POOL_SIZE for every server and application the "
                   "benchmark starts (default: the service's own)")
    p.add_argument("--workers", type=_ints, default=[1, 2, 4], help="workers: counts")
    p.add_argument("--workers-cycles", type=int, default=2000,
                   help="workers: cycles per worker count")
    return p


def main(argv: list[str] | None = None) -> int:
    from bench import appends, cost, cycles, floor, growth, workers
    from bench.common import Stores

    args = parser().parse_args(argv)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS + EXTRA)
    if unknown:
        parser().error(f"unknown sections: {', '.join(sorted(unknown))}")
    kinds = [k.strip() for k in args.stores.split(",") if k.strip()]
    runners = {"cycles": cycles.cycles, "loadgen": cycles.loadgen, "appends": appends.appends,
               "growth": growth.growth, "storage": cycles.storage, "memory": cycles.memory,
               "workers": workers.workers, "floor": floor.floor,
               "cost": cost.cost}
    print(f"python -m bench {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip())
    print(f"started {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; machine: {machine()}")
    failed = 0
    if args.pool_size is not None:  # servers, `signoff project` and in-process apps
        os.environ["SIGNOFF_POSTGRES_POOL_SIZE"] = str(args.pool_size)
    with contextlib.ExitStack() as stack:
        stores = Stores(stack, args.max_connections)
        for section in sections:
            for kind in kinds:
                if section == "workers" and kind != "postgres":
                    continue
                if section == "floor" and kind != kinds[0]:  # no store: once
                    continue
                failed += runners[section](stores, kind, args)
    print(f"\nfinished {time.strftime('%Y-%m-%d %H:%M:%S %Z')}"
          + (f"; {failed} errors or inconsistencies" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    # Stopped with SIGTERM: unwind, so that the servers it started are stopped too.
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
