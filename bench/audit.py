"""Verify and export speed, and their memory: ``python -m bench.audit`` (bench/README.md).

Fills a store with complete HITL runs (10 events, or 8 when rejected, as ``bench.catchup``
writes them: 100 runs per transaction, every event hash-chained), then, each in a fresh
process:

- ``verify``: ``signoff audit verify``'s work (``service.audit.verify_log``): every run's
  chain and the log chain, against the anchors;
- ``export``: ``signoff audit export``'s work (``service.archive.export_events``), written
  as JSON Lines to a file.

For each it prints events per second and the process's resident memory (RSS) sampled at
each tenth of the log: flat figures mean memory does not grow with the log. PostgreSQL is
a throwaway server the benchmark starts itself.

With ``--runs N`` instead (``bench/auditcli.py``): N runs with the decisions reviewers
make (confirmed, with and without a note, with edited arguments; rejected; external
results; user input; two calls in a run; cancelled; some left paused), then the commands
an auditor runs, each in a process of its own, timed, with its peak memory:
``signoff project rebuild`` of the anchors and the decision trail, ``signoff audit
verify`` (every chain, the anchors and every decision row against the log: the
default), ``verify --log-only``, ``audit export`` (JSON Lines, with its anchors) and
``--format csv``, and ``audit import`` of that export into an empty store.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.catchup import fill  # noqa: E402
from bench.common import machine, store  # noqa: E402
from bootstrap import build_app  # noqa: E402
from service.config import Settings  # noqa: E402


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def phase(kind: str, url: str, key: str, out: str) -> None:
    """One measurement in this (fresh) process; prints a JSON line."""
    from service import audit
    from service.archive import export_events

    app = build_app(Settings(database_url=url, cipher_key=key))
    head = app.head()
    marks = [head * i // 10 for i in range(1, 11)]
    samples: list[float] = []

    def progress(position: int, _head: int) -> None:
        while marks and position >= marks[0]:
            marks.pop(0)
            samples.append(round(rss_mb(), 1))

    start_rss = rss_mb()
    t0 = time.perf_counter()
    if kind == "verify":
        report = audit.verify_log(app, progress=progress)
        assert report.intact, report.as_dict()
        events = report.events
    else:
        events = 0
        with open(out, "w") as f:
            for line in export_events(app, progress=progress):
                f.write(line)
                events += 1
    seconds = time.perf_counter() - t0
    print(json.dumps({"events": events, "seconds": seconds, "start_rss": start_rss,
                      "samples": samples}))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.audit", description=__doc__)
    parser.add_argument("--stores", default="postgres,sqlite")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int,
                        help="N runs with decisions, through the audit commands")
    parser.add_argument("--encrypted", action="store_true", help="with SIGNOFF_CIPHER_KEY")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--key", default="", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=os.devnull, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        phase(args.phase, args.url, args.key, args.out)
        return
    key = ""
    if args.encrypted:
        from eventsourcing.cryptography import AESCipher

        key = AESCipher.create_key(32)
    if args.runs:
        from bench.auditcli import run_commands

        run_commands(args.runs, args.stores.split(","), key)
        return
    runs = args.events * 3 // 28  # a third of the runs are rejected: 28 events per 3 runs
    print(f"machine: {machine()}")
    print(f"workload: {runs} runs of 10 or 8 events (about {args.events} events), "
          f"{'encrypted (AES-GCM) and compressed' if key else 'not encrypted'}; "
          "each phase in a fresh process; RSS sampled at each tenth of the log")
    print(f"{'store':<9}{'phase':<8}{'events':>9}{'seconds':>9}{'events/s':>10}"
          f"{'RSS start':>11}  RSS at 10%, 20%, ... 100% (MB)")
    for kind in args.stores.split(","):
        with tempfile.TemporaryDirectory() as tmp, store(kind, Path(tmp)) as url:
            app = build_app(Settings(database_url=url, cipher_key=key))
            events, secs = fill(app, runs)
            app.close()
            print(f"{kind:<9}{'fill':<8}{events:>9}{secs:>9.1f}{events / secs:>10,.0f}")
            for name in ("verify", "export"):
                out = subprocess.run(
                    [sys.executable, "-m", "bench.audit", "--phase", name, "--url", url,
                     "--key", key, "--out", str(Path(tmp) / "export.jsonl")],
                    cwd=ROOT, capture_output=True, text=True, check=True)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                print(f"{kind:<9}{name:<8}{r['events']:>9}{r['seconds']:>9.1f}"
                      f"{r['events'] / r['seconds']:>10,.0f}{r['start_rss']:>10.0f}M  "
                      + " ".join(f"{s:.0f}" for s in r["samples"]), flush=True)


if __name__ == "__main__":
    main()
