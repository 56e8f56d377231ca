"""Before and after: the same HITL load on two checkouts of signoff, alternating.

``python -m bench.ab BEFORE AFTER [--rounds 3] [--seconds 20] [--setups ...]``: BEFORE
and AFTER are checkouts (e.g. ``git worktree add /tmp/before <commit>``); each server and
``signoff project`` runs from its checkout's code (``python -m cli``, that directory as
the working directory) with this environment's packages. For each round, for each setup,
each checkout serves a fresh store while ``--clients`` ``http.client`` clients (32, or
each count of a list in turn) run cycles for ``--seconds``: cycles/s, p50s, and the CPU
per cycle of the server, ``signoff project`` and PostgreSQL. On a shared machine one
run's figures move by 10-20% from minute to minute: compare the two checkouts within a
round, and over rounds.

Setups: ``sqlite-inline`` and ``postgres-inline`` (projections in the server process, the
default), ``postgres-process`` (``SIGNOFF_PROJECTIONS=off`` beside one ``signoff
project``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench.common import machine, stop, tree_cpu, wait_healthy
from bench.load import pct, run_load
from tests.support.postgres import throwaway_postgres
from tests.support.server import free_port

SETUPS = ("sqlite-inline", "postgres-inline", "postgres-process")


def _popen(tree: Path, args: list[str], env: dict[str, str], log: Path,
           ) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "cli", *args], cwd=tree, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def measure(tree: Path, setup: str, url: str, pg_pid: int | None, seconds: float,
            tmp: Path, clients: int = 32) -> str:
    port = free_port()
    env = {**os.environ, "SIGNOFF_DATABASE_URL": url, "SIGNOFF_HOST": "127.0.0.1",
           "SIGNOFF_PORT": str(port), "SIGNOFF_MODEL": "offline",
           "SIGNOFF_AGENTS": "agent.demo", "PYTHONPATH": str(tree)}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        if setup.endswith("process"):
            env["SIGNOFF_PROJECTIONS"] = "off"
            procs.append(_popen(tree, ["project"], env, tmp / f"project-{port}.log"))
        server = _popen(tree, ["serve"], env, tmp / f"serve-{port}.log")
        procs.insert(0, server)
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, server, lambda: f"{tree}: signoff serve did not start", timeout=60)
        run_load(base, 4, cycles=100)  # warm-up
        pids = [p.pid for p in procs] + ([pg_pid] if pg_pid else [])
        cpu0 = [tree_cpu(p) for p in pids]
        r = run_load(base, clients, cycles=1_000_000, seconds=seconds)
        cpu = [(tree_cpu(p) - c) / max(r.cycles, 1) * 1000 for p, c in zip(pids, cpu0,
                                                                            strict=True)]
    finally:
        for p in procs:
            stop(p)
    return (f"{r.rate:>9.1f}{pct(r.start, 50):>9.1f}ms{pct(r.cont, 50):>9.1f}ms"
            f"{' / '.join(f'{c:.2f}' for c in cpu):>34}{r.error_count:>7}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("before", type=Path)
    p.add_argument("after", type=Path)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--setups", default=",".join(SETUPS))
    p.add_argument("--clients", default="32", help="a count, or several: 1,8,32")
    args = p.parse_args(argv)
    counts = [int(n) for n in args.clients.split(",") if n]
    setups = [s for s in args.setups.split(",") if s]
    bad = set(setups) - set(SETUPS)
    if bad:
        p.error(f"unknown setups: {', '.join(sorted(bad))} (of {', '.join(SETUPS)})")
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    print(f"python -m bench.ab {' '.join(argv if argv is not None else sys.argv[1:])}")
    print(f"machine: {machine()}; {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    for name, tree in trees.items():
        rev = subprocess.run(["git", "-C", str(tree), "log", "-1", "--format=%h %s"],
                             capture_output=True, text=True).stdout.strip()
        print(f"{name}: {tree} ({rev[:70]})")
    print(f"{args.clients} clients (http.client), one worker, a fresh store per row, "
          f"{args.seconds:g} s per row")
    print(f"{'round':<6}{'code':<8}{'setup':<18}{'clients':>8}{'cycles/s':>9}{'start p50':>11}"
          f"{'cont. p50':>11}{'CPU ms/cycle: server/project/PG':>34}{'errors':>7}")
    failed = 0
    with tempfile.TemporaryDirectory(prefix="signoff-ab-") as tmpdir, \
            throwaway_postgres(max_connections=200) as pg:
        tmp = Path(tmpdir)
        for round_ in range(1, args.rounds + 1):
            for setup in setups:
                for clients in counts:
                    for name, tree in trees.items():
                        if setup.startswith("sqlite"):
                            url, pg_pid = f"sqlite:///{tmp / (uuid.uuid4().hex + '.db')}", None
                        else:
                            url = pg.create_database(f"ab_{uuid.uuid4().hex[:8]}").url
                            pg_pid = pg.pid
                        line = measure(tree, setup, url, pg_pid, args.seconds, tmp, clients)
                        failed += int(line.split()[-1])
                        print(f"{round_:<6}{name:<8}{setup:<18}{clients:>8}{line}", flush=True)
    print("(CPU ms/cycle: the server, then `signoff project` if it runs, then PostgreSQL's "
          "processes if the store is PostgreSQL)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
