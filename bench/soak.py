"""signoff load soak: ``python -m bench.soak`` (see bench/README.md).

Many concurrent clients run HITL cycles for minutes against one ``signoff serve``
(uvicorn, one worker, offline model, projections in the process) on a throwaway
PostgreSQL this command starts itself. A cycle: start a run that pauses on a
confirmation (``stream=false``), continue it confirming the call; the run completes.
Loopback only, bounded in count and time (``--seconds``, ``--max-cycles``).

Reported: errors (any answer but the expected 200, any transport error: must be 0),
throughput, latency (p50, p99, max) of each request kind, and the server's resident
memory (VmRSS) after the warm-up, as the runs pile up, and at the end: it must not grow
with the number of runs served; and at each memory sample, what each table takes
(``bench/storage.py``): the read models whose rows leave with the runs (the queue) must
stay the same size however many runs are served. Exits 1 if there was any error.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import machine, store  # noqa: E402
from bench.load import MESSAGE  # noqa: E402
from bench.storage import Table, report, snapshot  # noqa: E402
from tests.support.server import live_server  # noqa: E402


@dataclass
class Tally:
    """What the clients saw, shared by their threads."""

    latencies: dict[str, list[float]] = field(
        default_factory=lambda: {"start": [], "continue": []})
    errors: Counter[str] = field(default_factory=Counter)
    cycles: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def error(self, what: str) -> None:
        with self.lock:
            self.errors[what] += 1


def cycle(client: httpx.Client, tally: Tally) -> None:
    t0 = time.perf_counter()
    r = client.post("/agents/data_manager/runs", data={"message": MESSAGE, "stream": "false"})
    t1 = time.perf_counter()
    if r.status_code != 200 or r.json()["status"] != "PAUSED":
        tally.error(f"start: {r.status_code} {r.text[:120]}")
        return
    run = r.json()
    tools = [{**t, "confirmed": True} for t in run["tools"]]
    r = client.post(f"/agents/data_manager/runs/{run['run_id']}/continue",
                    data={"tools": json.dumps(tools), "stream": "false"})
    t2 = time.perf_counter()
    if r.status_code != 200 or r.json()["status"] != "COMPLETED":
        tally.error(f"continue: {r.status_code} {r.text[:120]}")
        return
    with tally.lock:
        tally.latencies["start"].append(t1 - t0)
        tally.latencies["continue"].append(t2 - t1)
        tally.cycles += 1


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_soak(url: str, pid: int, clients: int, seconds: float, max_cycles: int,
             sample_every: float, each: Callable[[int], None] = lambda cycles: None,
             ) -> tuple[Tally, float, list[tuple[float, int, float]]]:
    """Load for ``seconds`` (or until ``max_cycles``); (tally, elapsed, RSS samples as
    (seconds, cycles done, MB)). ``each`` is called with the cycles done at each sample."""
    tally = Tally()
    stop = threading.Event()
    barrier = threading.Barrier(clients + 1)

    def worker() -> None:
        with httpx.Client(base_url=url, timeout=60) as c:
            barrier.wait()
            while not stop.is_set():
                try:
                    cycle(c, tally)
                except Exception as e:  # counted, reported
                    tally.error(f"{type(e).__name__}: {e}"[:160])
                if tally.cycles >= max_cycles:
                    stop.set()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    samples = [(0.0, 0, rss_mb(pid))]
    each(0)
    while not stop.wait(min(sample_every, max(0.0, t0 + seconds - time.perf_counter()))):
        elapsed = time.perf_counter() - t0
        samples.append((elapsed, tally.cycles, rss_mb(pid)))
        each(tally.cycles)
        if elapsed >= seconds:
            break
    stop.set()
    for t in threads:
        t.join(120)
    elapsed = time.perf_counter() - t0
    samples.append((elapsed, tally.cycles, rss_mb(pid)))
    each(tally.cycles)
    return tally, elapsed, samples


def pct(xs: list[float], q: int) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[q - 1] * 1000 \
        if len(xs) > 1 else float("nan")


def slope_mb_per_1000(samples: list[tuple[float, int, float]]) -> float:
    """Least-squares slope of RSS against runs served, in MB per 1,000 runs."""
    xs = [c for _, c, _ in samples]
    ys = [m for _, _, m in samples]
    if len(set(xs)) < 2:
        return float("nan")
    return statistics.linear_regression(xs, ys).slope * 1000


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=180.0, help="at most (default 180)")
    parser.add_argument("--max-cycles", type=int, default=200_000,
                        help="stop sooner once this many cycles are done")
    parser.add_argument("--store", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--sample-every", type=float, default=15.0,
                        help="seconds between memory samples")
    args = parser.parse_args()
    if not (1 <= args.clients <= 256 and 0 < args.seconds <= 3600):
        parser.error("--clients 1..256, --seconds up to 3600")

    print(f"machine: {machine()}")
    print(f"workload: {args.clients} clients for {args.seconds:g} s (at most "
          f"{args.max_cycles} cycles), HITL cycle = start (pauses) + continue (confirm, "
          f"completes), offline model, 1 uvicorn worker, projections in the process, "
          f"{args.store}", flush=True)
    with tempfile.TemporaryDirectory() as tmp, store(args.store, Path(tmp)) as db, \
            live_server(db, Path(tmp) / "server.log") as server:
        assert server.proc is not None
        assert urlsplit(server.url).hostname == "127.0.0.1"  # loopback only
        pid = server.proc.pid
        # Warm-up at full concurrency (imports, pools, threads, buffers), so that what
        # memory grows by afterwards is what the runs served cost.
        run_soak(server.url, pid, args.clients, 15, 1000, 15)
        tables: list[tuple[int, dict[str, Table]]] = []
        tally, elapsed, samples = run_soak(
            server.url, pid, args.clients, args.seconds, args.max_cycles,
            args.sample_every, lambda cycles: tables.append((cycles, snapshot(db))))

    errors = sum(tally.errors.values())
    requests = 2 * tally.cycles + errors
    print(f"cycles {tally.cycles} ({tally.cycles} runs completed) in {elapsed:.0f} s; "
          f"errors {errors}")
    print(f"throughput: {tally.cycles / elapsed:.1f} cycles/s, {requests / elapsed:.1f} "
          f"requests/s")
    print(f"{'request':<10}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    everything: list[float] = []
    for kind, xs in tally.latencies.items():
        everything += xs
        print(f"{kind:<10}{pct(xs, 50):>9.1f}{pct(xs, 99):>9.1f}"
              f"{max(xs, default=float('nan')) * 1000:>9.1f}")
    print(f"{'all':<10}{pct(everything, 50):>9.1f}{pct(everything, 99):>9.1f}"
          f"{max(everything, default=float('nan')) * 1000:>9.1f}")
    print("server RSS (after the warm-up; then as runs are served):")
    for seconds, cycles, mb in samples:
        print(f"  {seconds:>6.0f} s  {cycles:>7} runs  {mb:>7.1f} MB")
    print(f"server RSS: start {samples[0][2]:.1f} MB, end {samples[-1][2]:.1f} MB, max "
          f"{max(m for _, _, m in samples):.1f} MB; slope over the soak "
          f"{slope_mb_per_1000(samples):+.2f} MB per 1,000 runs")
    print("storage per table (indexes included), as runs were served after the warm-up:")
    for line in report(tables):
        print(f"  {line}")
    for what, n in tally.errors.most_common(10):
        print(f"error x{n}: {what}")
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
