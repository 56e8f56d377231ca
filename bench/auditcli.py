"""``python -m bench.audit --runs N``: the audit commands at N runs (bench/README.md).

Fills a store with N runs carrying the decisions reviewers make (``decided_run``: 100 runs
per transaction, as ``bench.catchup`` writes them), then runs each command an auditor
runs in a process of its own (``python -m cli ...``: the time includes starting Python,
about half a second), and reports its wall time, its peak resident memory (``VmHWM``,
read as it exits) and its resident memory sampled at each tenth of its time:

- ``project anchors``, ``project audit``: ``signoff project rebuild`` of the two read
  models verify reads (a fresh store has neither);
- ``verify``: ``signoff audit verify``, the default: every chain, the log against its
  anchors, and every decision row against the event it came from;
- ``verify --log-only``: the same without the decision rows;
- ``export``: ``signoff audit export -o FILE`` (JSON Lines, format 2, with its anchors);
- ``export csv``: ``signoff audit export --format csv -o FILE`` (the decision trail);
- ``import``: ``signoff audit import FILE`` into an empty store: the export checked
  whole, imported, and the store verified.

Each must succeed (verify: INTACT) or the benchmark stops.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import ROOT, Stores, machine, status_mb
from bootstrap import build_app
from domain.run import Run
from domain.values import Requirement
from service.config import Settings

TOOLS = ("delete_records", "send_notification", "issue_refund", "archive_table")
REVIEWERS = 7
_IN = [{"name": "email", "type": "string", "description": "whom to notify"}]


def _started(i: int) -> Run:
    return Run.start(agent_id=f"agent{i % 3}", agent_name="Agent", user_id=f"user{i % 50}",
                     session_id=f"s{i % 200}", input=f"Clean up table t{i % 100}")


def _asked(run: Run, i: int, n: int, requires: Requirement, **more: Any) -> str:
    call_id = f"call_{i}_{n}"
    tool = TOOLS[(i + n) % len(TOOLS)]
    args = {"table_name": f"t{i % 100}", "count": i % 1000}
    run.request_tool_call(tool_call_id=call_id, tool_name=tool, tool_args=args,
                          requires=requires, **more)
    return call_id


def _ran(run: Run, *call_ids: str) -> None:
    for call_id in call_ids:
        run.start_tool(call_id, deadline=datetime.now(UTC) + timedelta(minutes=5))
        run.record_tool_result(call_id, "Deleted")


def _ended(run: Run) -> None:
    run.record_model_response(model="offline", provider="signoff", content="Done.",
                              tool_calls=[])
    run.complete("Done.")


def decided_run(i: int) -> Run:
    """One run of the mix (by ``i % 20``): 8 in 20 confirmed (one with edited
    arguments, half with a note), 3 rejected (with and without a reason), 2 given an
    external result and 1 rejected, 2 given user input, 1 with two calls (one confirmed,
    one rejected), 1 cancelled while paused, 1 left paused, 1 confirmed with a note a
    spreadsheet would take for a formula."""
    kind, who = i % 20, f"reviewer{i % REVIEWERS}"
    run = _started(i)
    calls = 2 if kind == 16 else 1
    run.record_model_response(model="offline", provider="signoff", content=None, tool_calls=[
        {"id": f"call_{i}_{n}", "name": TOOLS[(i + n) % len(TOOLS)],
         "args": {"table_name": f"t{i % 100}", "count": i % 1000}} for n in range(calls)])
    if kind in (11, 12, 13):
        call = _asked(run, i, 0, Requirement.EXTERNAL_EXECUTION)
    elif kind in (14, 15):
        call = _asked(run, i, 0, Requirement.USER_INPUT, user_input_schema=_IN)
    else:
        call = _asked(run, i, 0, Requirement.CONFIRMATION)
    other = _asked(run, i, 1, Requirement.CONFIRMATION) if calls == 2 else None
    run.pause()
    if kind == 18:
        return run  # left paused: in the queue
    if kind == 17:
        run.cancel(cancelled_by=who, reason="duplicate")
        return run
    ran = _decide(run, kind, call, who)
    if other:
        run.reject_tool(other, decided_by=who, reason="one is enough")
    run.continue_run()
    _ran(run, *ran)
    _ended(run)
    return run


def _decide(run: Run, kind: int, call: str, who: str) -> list[str]:
    """The decision on the run's first call; the calls that then run."""
    if kind < 8 or kind in (16, 19):
        note = ("=HYPERLINK(\"x\")" if kind == 19 else
                "checked" if kind % 2 else None)
        edited = {"table_name": "t0", "count": 1} if kind == 3 else None
        run.confirm_tool(call, decided_by=who, note=note, approved_args=edited)
        return [call]
    if kind in (8, 9, 10, 13):
        run.reject_tool(call, decided_by=who, reason=None if kind == 9 else "not today")
    elif kind in (11, 12):
        run.provide_external_result(call, decided_by=who, result="paid")
    else:  # user input: the tool then runs with it
        run.provide_user_input(call, decided_by=who, values={"email": "ann@example.com"})
        return [call]
    return []


def fill(url: str, key: str, runs: int) -> tuple[int, float]:
    app = build_app(Settings(database_url=url, cipher_key=key))
    try:
        t0 = time.perf_counter()
        for start in range(0, runs, 100):
            app.save(*(decided_run(i) for i in range(start, min(runs, start + 100))))
        return app.head(), time.perf_counter() - t0
    finally:
        app.close()


# ``python -m cli ARGS`` that writes its peak resident memory (VmHWM, MB) to a file as it
# exits; nothing but the standard library is loaded beside it. (Not the child's
# ``ru_maxrss``: it counts the benchmark's own memory, copied by the fork before the exec.)
_PEAK = """
import atexit, runpy, sys
peak, sys.argv = sys.argv[1], ["signoff", *sys.argv[2:]]
def report():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            open(peak, "w").write(str(int(line.split()[1]) / 1024))
atexit.register(report)
runpy.run_module("cli", run_name="__main__", alter_sys=True)
"""


def command(args: list[str], url: str, key: str, log: Path) -> dict[str, Any]:
    """``python -m cli ARGS`` against ``url``: wall seconds, peak RSS (VmHWM, MB), RSS
    sampled every 0.1 s, exit status, and what it printed."""
    env = {**os.environ, "SIGNOFF_DATABASE_URL": url, "SIGNOFF_CIPHER_KEY": key,
           "PYTHONPATH": str(ROOT)}
    out, err = log.with_suffix(".out"), log.with_suffix(".err")
    peak = log.with_suffix(".peak")
    with out.open("w") as o, err.open("w") as e:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", _PEAK, str(peak), *args], cwd=ROOT,
                                env=env, stdout=o, stderr=e)
        samples: list[float] = []
        while True:
            pid, status = os.waitpid(proc.pid, os.WNOHANG)
            if pid:
                break
            rss = status_mb(proc.pid, "VmRSS")
            if rss == rss:  # not NaN: the process is still there
                samples.append(rss)
            time.sleep(0.1)
        seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"seconds": seconds, "peak": float(peak.read_text() or "nan"), "samples": samples,
            "status": proc.returncode, "out": out.read_text(), "err": err.read_text()}


def _tenths(samples: list[float]) -> str:
    if not samples:
        return ""
    return " ".join(f"{samples[min(len(samples) - 1, len(samples) * k // 10)]:.0f}"
                    for k in range(1, 11))


def _row(store: str, phase: str, count: int, r: dict[str, Any]) -> None:
    rate = f"{count / r['seconds']:>10,.0f}" if count else f"{'':>10}"
    print(f"{store:<9}{phase:<18}{count:>9}{r['seconds']:>9.1f}{rate}{r['peak']:>10.0f}  "
          + _tenths(r["samples"]), flush=True)


def _ok(name: str, r: dict[str, Any]) -> dict[str, Any]:
    if r["status"] != 0:
        raise SystemExit(f"{name} exited {r['status']}:\n{r['out'][-3000:]}\n"
                         f"{r['err'][-3000:]}")
    return r


def _count(pattern: str, text: str) -> int:
    found = re.search(pattern, text)
    return int(found.group(1)) if found else 0


def one_store(kind: str, stores: Stores, runs: int, key: str) -> None:
    url = stores.fresh(kind, "audit")
    events, secs = fill(url, key, runs)
    print(f"{kind:<9}{'fill':<18}{events:>9}{secs:>9.1f}{events / secs:>10,.0f}", flush=True)

    def run(phase: str, args: list[str], count: int, target: str = url) -> dict[str, Any]:
        r = _ok(phase, command(args, target, key, stores.log(phase.replace(" ", "-"))))
        _row(kind, phase, count or _count(r"exported (\d+)", r["err"]), r)
        return r

    for name in ("anchors", "audit"):
        run(f"project {name}", ["project", "rebuild", name], events)
    full = run("verify", ["audit", "verify"], events)
    assert full["out"].startswith("INTACT"), full["out"]
    rows = _count(r"decision rows: (\d+) checked", full["out"])
    run("verify --log-only", ["audit", "verify", "--log-only"], events)
    export = stores.tmp / f"{kind}-export.jsonl"
    run("export", ["audit", "export", "-o", str(export)], events)
    csv = stores.tmp / f"{kind}-decisions.csv"
    run("export csv", ["audit", "export", "--format", "csv", "-o", str(csv)], 0)
    target = stores.fresh(kind, "imported")
    imported = run("import", ["audit", "import", str(export)], events, target)
    assert "INTACT" in imported["out"], imported["out"]
    print(f"{kind:<9}decision rows checked by verify: {rows}; export "
          f"{export.stat().st_size / 1e6:.0f} MB, csv {csv.stat().st_size / 1e6:.0f} MB",
          flush=True)
    export.unlink()
    csv.unlink()


def run_commands(runs: int, kinds: list[str], key: str) -> None:
    print(f"machine: {machine()}")
    print(f"workload: {runs} runs with decisions (confirmed, edited, rejected, external "
          "results, user input, two calls, cancelled; 1 in 20 left paused), "
          f"{'encrypted (AES-GCM) and compressed' if key else 'not encrypted'}; each "
          "command in a process of its own; peak RSS (VmHWM) and RSS at each tenth of "
          "its time")
    print(f"{'store':<9}{'phase':<18}{'events':>9}{'seconds':>9}{'per s':>10}"
          f"{'peak MB':>10}  RSS at 10%, 20%, ... 100% of the time (MB)")
    for kind in kinds:
        with contextlib.ExitStack() as stack:
            one_store(kind, Stores(stack), runs, key)
