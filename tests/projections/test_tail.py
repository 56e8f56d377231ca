"""Following shares the log's tail (projections/tail.py): the projections
read and decode a page once between them, read the log again only after a signal that
something may have been committed, and remember their positions. Whatever the order in
which they follow, their tables equal a rebuild from zero, every event applied once.
"""

from __future__ import annotations

import random
import threading
from typing import Any

import pytest

from projections.runner import Projections
from service.runs import RunService
from tests.projections.bulk import (
    assert_dumps_equal,
    count_writes,
    dump,
    log_positions,
    rebuilt,
    write_runs,
)


def count_reads(app: RunService) -> list[tuple[int, int]]:
    """Each read of the log made through ``app``'s recorder: (start, how many events)."""
    reads: list[tuple[int, int]] = []
    original = app.recorder.select_notifications

    def select(start: Any, limit: int, *args: Any, **kwargs: Any) -> Any:
        page = original(start, limit, *args, **kwargs)
        reads.append((start, len(page)))
        return page

    app.recorder.select_notifications = select  # type: ignore[method-assign]
    return reads


def test_the_projections_read_each_new_page_once_between_them(
        app: RunService, env: dict[str, str]) -> None:
    p = Projections(app, env, batch_size=500)
    try:
        write_runs(app, 5, seed=1)
        reads = count_reads(app)
        head = app.head()
        p.prompt()
        for name in p.views:
            p.follow_up(name)
        # One read of the new events (fewer than a page: the head), for all of them.
        assert reads == [(1, head)]
        assert all(s.position == head for s in p.status())

        # New events, not yet signalled: nothing is read (the notification or prompt
        # that follows every commit signals and wakes the followers).
        write_runs(app, 2, seed=2)
        reads.clear()
        assert sum(p.follow_up(name) for name in p.views) == 0
        assert reads == []

        p.prompt()
        applied = sum(p.follow_up(name) for name in p.views)
        assert applied == len(p.views) * (app.head() - head)
        assert reads == [(head + 1, app.head() - head)]
    finally:
        p.close()


@pytest.mark.parametrize("seed", [3, 4])
def test_following_in_any_order_equals_a_rebuild(app: RunService, env: dict[str, str],
                                                 seed: int) -> None:
    rng = random.Random(seed)
    p = Projections(app, env, batch_size=7)  # pages end anywhere in a run
    try:
        applied = count_writes(p)
        for step in range(30):
            write_runs(app, rng.randint(0, 2), seed=seed * 100 + step)
            if rng.random() < 0.7:
                p.prompt()
            for name in rng.sample(list(p.views), rng.randint(0, len(p.views))):
                p.follow_up(name)
            if rng.random() < 0.1:  # a rebuild meanwhile, in the same process
                p.rebuild(rng.choice(list(p.views)))
        p.prompt()
        for name in p.views:
            p.follow_up(name)
        followed = dump(p)
        assert all(s.lag == 0 for s in p.status())
        # Since its last rebuild, each projection applied each position once, in order.
        positions = log_positions(app)
        for name in p.views:
            seen = applied[name]
            last_start = max((i for i, n in enumerate(seen) if n == positions[0]), default=0)
            assert seen[last_start:] == positions
        assert_dumps_equal(followed, rebuilt(p))
    finally:
        p.close()


def test_a_follower_whose_position_moved_elsewhere_goes_on_from_there(
        app: RunService, env: dict[str, str]) -> None:
    a = Projections(app, env, batch_size=20)
    b = Projections(app, env, batch_size=20)
    try:
        write_runs(app, 3, seed=5)
        a.prompt()
        for name in a.views:
            a.follow_up(name)  # a remembers where it wrote
        remembered = app.head()
        write_runs(app, 2, seed=6)
        for name in b.views:
            b.rebuild(name)  # another process rebuilds: every position moves, to the head
        applied = count_writes(a)
        a.prompt()
        assert sum(a.follow_up(name) for name in a.views) == 0
        for name in a.views:  # a's page is refused once; a reads the position and is done
            assert applied[f"{name}:moved"] == [remembered]
            assert applied[name] == []
        assert_dumps_equal(dump(a), rebuilt(b))
    finally:
        a.close()
        b.close()


def test_following_far_behind_stops_between_pages_when_told(
        app: RunService, env: dict[str, str]) -> None:
    write_runs(app, 5, seed=7)
    p = Projections(app, env, batch_size=10)
    try:
        pages = iter([False, False, True])  # asked before each page: stop before the third
        name = next(iter(p.views))
        assert p.follow_up(name, stop=lambda: next(pages)) == 20
        assert p.status()[0].position == log_positions(app)[19]
        assert p.follow_up(name) == app.head() - 20  # and goes on from there
    finally:
        p.close()


@pytest.mark.parametrize("seed", [8, 9])
def test_following_together_in_one_transaction_equals_a_rebuild(
        app: RunService, env: dict[str, str], seed: int,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The follower's rounds: while every projection is at the same position, a page is
    written to all of them in one transaction; one knocked off (a rebuild, a page of its
    own, a new runner after a crash between two saves) goes on by itself until they meet
    again. Every event is applied once to each, and the tables equal a rebuild."""
    import projections.runner as runner

    together: list[int] = []
    original = runner.write_together

    def write_together(views: Any, events: Any, *, after: int | None = None) -> None:
        original(views, events, after=after)
        together.append(len(views))

    monkeypatch.setattr(runner, "write_together", write_together)
    rng = random.Random(seed)
    stop = threading.Event()
    p = Projections(app, env, batch_size=5)
    applied = count_writes(p)
    try:
        for step in range(30):
            write_runs(app, rng.randint(0, 2), seed=seed * 100 + step)
            p.prompt()
            p._round(stop)
            roll = rng.random()
            if roll < 0.1:
                p.rebuild(rng.choice(list(p.views)))
            elif roll < 0.2:
                p.follow_up(rng.choice(list(p.views)), pages=1)
            elif roll < 0.25:  # the process ends between two saves; another follows on
                p.close()
                p = Projections(app, env, batch_size=5)
                applied = count_writes(p)
        p.prompt()
        while p._round(stop) or any(s.lag for s in p.status()):
            pass
        assert together and set(together) == {len(p.views)}
        positions = log_positions(app)
        for name in p.views:  # since its last rebuild (or this runner's start): once each
            seen = applied[name]
            first = max((i for i, n in enumerate(seen) if n == positions[0]), default=0)
            assert len(seen[first:]) == len(set(seen[first:]))
        assert_dumps_equal(dump(p), rebuilt(p))
    finally:
        p.close()
