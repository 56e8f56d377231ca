"""signoff benchmarks: ``python -m bench`` (see bench/README.md).

HITL cycles over real HTTP: start a run that pauses on a confirmation (stream=false),
continue it with the confirmation, the run completes. A real ``signoff serve`` process
(uvicorn, offline model) on SQLite and on a throwaway PostgreSQL the benchmark starts
itself; clients are threads in this process, on loopback only, bounded in count and time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.postgres import throwaway_postgres  # noqa: E402
from tests.support.server import live_server  # noqa: E402

MESSAGE = "Delete 50 old records from the users table"


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import eventsourcing
    import fastapi
    import psycopg
    import uvicorn

    versions = (f"python {platform.python_version()}, eventsourcing "
                f"{_version('eventsourcing', eventsourcing)}, fastapi {fastapi.__version__}, "
                f"uvicorn {uvicorn.__version__}, psycopg {psycopg.__version__}")
    return f"{os.cpu_count()} cores, {cpu}; {versions}"


def _version(name: str, module: object) -> str:
    from importlib.metadata import version

    return getattr(module, "__version__", None) or version(name)


def cycle(client: httpx.Client, timings: dict[str, list[float]]) -> None:
    t0 = time.perf_counter()
    r = client.post("/agents/data_manager/runs", data={"message": MESSAGE, "stream": "false"})
    t1 = time.perf_counter()
    r.raise_for_status()
    run = r.json()
    assert run["status"] == "PAUSED", run["status"]
    tools = run["tools"]
    for t in tools:
        t["confirmed"] = True
    r = client.post(f"/agents/data_manager/runs/{run['run_id']}/continue",
                    data={"tools": json.dumps(tools), "stream": "false"})
    t2 = time.perf_counter()
    r.raise_for_status()
    assert r.json()["status"] == "COMPLETED", r.json()["status"]
    timings["start"].append(t1 - t0)
    timings["continue"].append(t2 - t1)


def load(url: str, clients: int, cycles: int) -> dict[str, float]:
    """``cycles`` HITL cycles spread over ``clients`` threads; figures of that run."""
    timings: dict[str, list[float]] = {"start": [], "continue": []}
    errors: list[BaseException] = []
    per_client = max(1, cycles // clients)
    barrier = threading.Barrier(clients + 1)

    def worker() -> None:
        with httpx.Client(base_url=url, timeout=60) as c:
            barrier.wait()
            for _ in range(per_client):
                try:
                    cycle(c, timings)
                except Exception as e:  # counted, reported
                    errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    done = len(timings["continue"])

    def pct(xs: list[float], q: float) -> float:
        return statistics.quantiles(xs, n=100)[q - 1] * 1000 if len(xs) > 1 else float("nan")

    return {"clients": clients, "cycles": done, "errors": len(errors),
            "cycles_per_s": done / elapsed,
            "start_p50_ms": pct(timings["start"], 50), "start_p99_ms": pct(timings["start"], 99),
            "continue_p50_ms": pct(timings["continue"], 50),
            "continue_p99_ms": pct(timings["continue"], 99)}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):  # peak resident set size
            return int(line.split()[1]) / 1024
    return float("nan")


@contextmanager
def store(kind: str, tmp: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp / 'bench.db'}"
    else:
        with throwaway_postgres() as pg:
            yield pg.url


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--cycles", type=int, default=400, help="cycles per concurrency level")
    args = parser.parse_args()

    print(f"machine: {machine()}")
    print(f"workload: HITL cycle = start (pauses) + continue (confirm, completes), over HTTP, "
          f"{args.cycles} cycles per row, offline model, 1 uvicorn worker")
    header = (f"{'store':<9}{'clients':>8}{'cycles':>8}{'errors':>7}{'cycles/s':>10}"
              f"{'start p50':>11}{'p99':>8}{'cont. p50':>11}{'p99':>8}{'peak RSS':>10}")
    print(header)
    for kind in args.stores.split(","):
        with tempfile.TemporaryDirectory() as tmp, store(kind, Path(tmp)) as url, \
                live_server(url, Path(tmp) / "server.log") as server:
            assert server.proc is not None
            load(server.url, 4, 40)  # warm-up
            for clients in (int(c) for c in args.clients.split(",")):
                r = load(server.url, clients, args.cycles)
                print(f"{kind:<9}{r['clients']:>8}{r['cycles']:>8}{r['errors']:>7}"
                      f"{r['cycles_per_s']:>10.1f}{r['start_p50_ms']:>9.1f}ms"
                      f"{r['start_p99_ms']:>6.1f}ms{r['continue_p50_ms']:>9.1f}ms"
                      f"{r['continue_p99_ms']:>6.1f}ms{rss_mb(server.proc.pid):>8.0f}MB",
                      flush=True)


if __name__ == "__main__":
    main()
