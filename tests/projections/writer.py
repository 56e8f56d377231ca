"""``python -m tests.projections.writer DATABASE_URL RUNS SEED``: drive RUNS runs through
the agent loop into the store, from a process of its own (another writer of the log)."""

from __future__ import annotations

import sys

from service.config import Settings, eventsourcing_env
from service.runs import RunService
from tests.projections.bulk import write_runs


def main() -> None:
    url, runs, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    app = RunService(env=eventsourcing_env(Settings(database_url=url, postgres_pool_size=2)))
    try:
        write_runs(app, runs, seed)
    finally:
        app.close()


if __name__ == "__main__":
    main()
