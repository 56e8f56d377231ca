"""The load generator: clients running HITL cycles against a ``signoff serve``.

A client is a thread holding one keep-alive HTTP/1.1 connection (``http.client``, the
default) or one ``httpx.Client`` (``--client httpx``, what the benchmarks used before);
clients may be spread over a few processes (``procs``). The clients share the machine's
cores with the server, so what they cost is taken from it: each result carries the
clients' own CPU time (``time.process_time`` of their processes), and
``python -m bench --sections loadgen`` measures both kinds side by side.

A cycle: ``POST /agents/data_manager/runs`` (a form, ``stream=false``; the offline model
proposes ``delete_records`` and the run pauses), then ``POST .../continue`` confirming
the call (the run completes). Any other answer is an error, counted with its reason.
Loopback only; bounded in count (``cycles``) and time (``seconds``).
"""

from __future__ import annotations

import http.client
import json
import multiprocessing
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

MESSAGE = "Delete 50 old records from the users table"
AGENT = "data_manager"
KINDS = ("http.client", "httpx")


class Failed(Exception):
    """An answer other than the one a HITL cycle expects."""


class HttpClient:
    """One keep-alive connection (``http.client``): a request costs a few dozen µs of
    client CPU, against a few hundred for httpx's."""

    def __init__(self, url: str, timeout: float = 60.0) -> None:
        parts = urlsplit(url)
        assert parts.hostname == "127.0.0.1", "loopback only"
        self.host, self.port, self.timeout = parts.hostname, parts.port or 80, timeout
        self.conn: http.client.HTTPConnection | None = None

    def post(self, path: str, fields: dict[str, str]) -> tuple[int, Any]:
        body = urlencode(fields)
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        for attempt in (1, 2):  # a keep-alive connection the server closed: once more
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port,
                                                       timeout=self.timeout)
            try:
                self.conn.request("POST", path, body, headers)
                r = self.conn.getresponse()
                data = r.read()
            except (ConnectionError, http.client.BadStatusLine,
                    http.client.RemoteDisconnected):
                self.close()
                if attempt == 2:
                    raise
                continue
            return r.status, _json(data)
        raise AssertionError("unreachable")  # pragma: no cover

    def get(self, path: str) -> tuple[int, Any]:
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        self.conn.request("GET", path)
        r = self.conn.getresponse()
        return r.status, _json(r.read())

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class HttpxClient:
    def __init__(self, url: str, timeout: float = 60.0) -> None:
        import httpx

        self.client = httpx.Client(base_url=url, timeout=timeout)

    def post(self, path: str, fields: dict[str, str]) -> tuple[int, Any]:
        r = self.client.post(path, data=fields)
        return r.status_code, _json(r.content)

    def get(self, path: str) -> tuple[int, Any]:
        r = self.client.get(path)
        return r.status_code, _json(r.content)

    def close(self) -> None:
        self.client.close()


def _json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return data[:200].decode(errors="replace")


def connect(url: str, kind: str = "http.client") -> HttpClient | HttpxClient:
    return HttpClient(url) if kind == "http.client" else HttpxClient(url)


def hitl_cycle(client: HttpClient | HttpxClient, *, session_id: str | None = None,
               user_id: str | None = None) -> tuple[float, float, str]:
    """One HITL cycle: (start seconds, continue seconds, run id); ``Failed`` otherwise."""
    fields = {"message": MESSAGE, "stream": "false"}
    if session_id:
        fields["session_id"] = session_id
    if user_id:
        fields["user_id"] = user_id
    t0 = time.perf_counter()
    status, run = client.post(f"/agents/{AGENT}/runs", fields)
    t1 = time.perf_counter()
    if status != 200 or not isinstance(run, dict) or run.get("status") != "PAUSED":
        raise Failed(f"start: {status} {str(run)[:120]}")
    tools = [{**t, "confirmed": True} for t in run["tools"]]
    fields = {"tools": json.dumps(tools), "stream": "false"}
    if session_id:
        fields["session_id"] = session_id
    status, done = client.post(f"/agents/{AGENT}/runs/{run['run_id']}/continue", fields)
    t2 = time.perf_counter()
    if status != 200 or not isinstance(done, dict) or done.get("status") != "COMPLETED":
        raise Failed(f"continue: {status} {str(done)[:120]}")
    return t1 - t0, t2 - t1, run["run_id"]


@dataclass
class Result:
    """What the clients saw (merged over their processes)."""

    clients: int = 0
    start: list[float] = field(default_factory=list)
    cont: list[float] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)  # every run that completed (200s)
    errors: Counter[str] = field(default_factory=Counter)
    elapsed: float = 0.0
    client_cpu: float = 0.0  # seconds of CPU the clients' processes used meanwhile

    @property
    def cycles(self) -> int:
        return len(self.cont)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def rate(self) -> float:
        return self.cycles / self.elapsed if self.elapsed else float("nan")

    def merge(self, other: Result) -> None:
        self.start += other.start
        self.cont += other.cont
        self.run_ids += other.run_ids
        self.errors.update(other.errors)
        self.elapsed = max(self.elapsed, other.elapsed)
        self.client_cpu += other.client_cpu


def pct(xs: list[float], q: int) -> float:
    """The q-th percentile, in ms."""
    if len(xs) < 2:
        return xs[0] * 1000 if xs else float("nan")
    return statistics.quantiles(xs, n=100, method="inclusive")[q - 1] * 1000


def _threads(url: str, clients: int, cycles: int, seconds: float, kind: str,
             start_at: float | None = None) -> Result:
    """``clients`` threads in this process; at most ``cycles`` cycles in all, for at most
    ``seconds``."""
    result = Result(clients=clients)
    lock = threading.Lock()
    claimed = [0]
    barrier = threading.Barrier(clients + 1)
    deadline = [0.0]

    def claim() -> bool:
        with lock:
            if claimed[0] >= cycles or time.perf_counter() >= deadline[0]:
                return False
            claimed[0] += 1
            return True

    def worker() -> None:
        c = connect(url, kind)
        try:
            barrier.wait()
            while claim():
                try:
                    s, k, run_id = hitl_cycle(c)
                except Exception as e:  # counted, reported
                    with lock:
                        result.errors[f"{type(e).__name__}: {e}"[:160]] += 1
                    c.close()
                    continue
                with lock:
                    result.start.append(s)
                    result.cont.append(k)
                    result.run_ids.append(run_id)
        finally:
            c.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    if start_at is not None:
        time.sleep(max(0.0, start_at - time.time()))
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    deadline[0] = t0 + seconds
    barrier.wait()
    for t in threads:
        t.join(seconds + 120)
    result.elapsed = time.perf_counter() - t0
    result.client_cpu = time.process_time() - cpu0
    return result


def _in_process(args: tuple[Any, ...], out: Any) -> None:
    out.put(_threads(*args))


def run_load(url: str, clients: int, *, cycles: int, seconds: float = 600.0,
             kind: str = "http.client", procs: int = 1) -> Result:
    """``clients`` clients (threads, spread over ``procs`` processes) running HITL
    cycles back to back: ``cycles`` in all, or as many as fit in ``seconds``."""
    if procs <= 1 or clients < 2:
        return _threads(url, clients, cycles, seconds, kind)
    procs = min(procs, clients)
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    start_at = time.time() + 2.0  # every process started and connected by then
    workers = []
    for i in range(procs):
        n = clients // procs + (1 if i < clients % procs else 0)
        quota = cycles // procs + (1 if i < cycles % procs else 0)
        p = ctx.Process(target=_in_process, args=((url, n, quota, seconds, kind, start_at),
                                                  out), daemon=True)
        p.start()
        workers.append(p)
    result = Result(clients=clients)
    for _ in workers:
        result.merge(out.get(timeout=seconds + 180))
    for p in workers:
        p.join(30)
    return result
