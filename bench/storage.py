"""What each table of a store takes, sampled while runs are served: does a table whose live
rows do not follow the runs (the queue, the tracking rows, the counters) stay the same
size, and how many bytes a run leaves in the others.

``snapshot(url)``: per table (its indexes and, on PostgreSQL, its TOAST included) the bytes
it takes, its live rows and, on PostgreSQL, its dead row versions, and the rows inserted,
updated (and of them HOT: heap-only, no index entry written) and deleted so far
(``pg_stat_user_tables``, which a backend updates at most once a second). SQLite's figures come from
``dbstat`` (pages in use; a freed page is in the file's ``freelist`` until reused).
"""

from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import psycopg


@dataclass(frozen=True)
class Table:
    bytes: int
    live: int
    dead: int = 0
    updates: int = 0
    hot: int = 0
    inserts: int = 0
    deletes: int = 0


def snapshot(url: str) -> dict[str, Table]:
    if url.startswith("sqlite"):
        return _sqlite(Path(url[len("sqlite:///"):]))
    return _postgres(url)


def _sqlite(path: Path) -> dict[str, Table]:
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as conn:
        owner = dict(conn.execute("SELECT name, tbl_name FROM sqlite_schema "
                                  "WHERE type IN ('table', 'index')").fetchall())
        sizes: dict[str, int] = {}
        for name, size in conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name"):
            table = owner.get(name, name)
            sizes[table] = sizes.get(table, 0) + size
        page = conn.execute("PRAGMA page_size").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        out = {t: Table(n, conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0])
               for t, n in sizes.items() if t in owner.values() and not t.startswith("sqlite_")}
    out["(free pages)"] = Table(free * page, 0)
    return out


def _postgres(url: str) -> dict[str, Table]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT relname, pg_total_relation_size(relid), n_live_tup, n_dead_tup, "
            "n_tup_upd, n_tup_hot_upd, n_tup_ins, n_tup_del FROM pg_stat_user_tables"
        ).fetchall()
    return {r[0]: Table(*r[1:]) for r in rows}


def report(samples: list[tuple[int, dict[str, Table]]]) -> list[str]:
    """Lines: each table's bytes at the first sample, half-way and at the end (by runs
    served), its live and dead rows and HOT share at the end, and the bytes it grew by
    per run served between the first sample and the end."""
    (r0, first), (rh, half), (rn, last) = samples[0], samples[len(samples) // 2], samples[-1]
    runs = max(1, rn - r0)
    lines = [f"{'table':<34}{f'KB@{r0}':>11}{f'KB@{rh}':>11}{f'KB@{rn}':>11}"
             f"{'B/run':>8}{'live':>9}{'dead':>8}{'HOT %':>7}"]
    for name in sorted(last, key=lambda n: -last[n].bytes):
        t = last[name]
        a, h = first.get(name, Table(0, 0)), half.get(name, Table(0, 0))
        hot = f"{100 * t.hot / t.updates:.0f}" if t.updates else "-"
        lines.append(f"{name:<34}{a.bytes / 1024:>11.0f}{h.bytes / 1024:>11.0f}"
                     f"{t.bytes / 1024:>11.0f}{(t.bytes - a.bytes) / runs:>8.0f}"
                     f"{t.live:>9}{t.dead:>8}{hot:>7}")
    return lines
