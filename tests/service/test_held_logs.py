"""A save's log lines are written together: ``logs.held()`` holds what this thread logs
and writes it in one ``write`` when the block ends, in order, before the block returns;
other threads' lines are not held; an error inside the block loses no line."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator

import pytest

from service import logs
from service.config import Settings


class Writes(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, s: str) -> int:
        self.writes.append(s)
        return super().write(s)


@pytest.fixture
def stream() -> Iterator[Writes]:
    out = Writes()
    logs.configure(Settings(log_format="json", log_level="info"), out)
    yield out
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "stream", None) is out]:
        root.removeHandler(handler)


def messages(text: str) -> list[str]:
    return [json.loads(line)["message"] for line in text.splitlines()]


def test_held_lines_are_one_write_in_order(stream: Writes) -> None:
    log = logging.getLogger("signoff.test")
    with logs.held():
        for i in range(5):
            log.info("line %d", i)
        assert stream.writes == []  # nothing written yet
    assert len(stream.writes) == 1
    assert messages(stream.getvalue()) == [f"line {i}" for i in range(5)]


def test_nested_blocks_write_once_at_the_outermost_end(stream: Writes) -> None:
    log = logging.getLogger("signoff.test")
    with logs.held():
        log.info("a")
        with logs.held():
            log.info("b")
        assert stream.writes == []
        log.info("c")
    assert messages(stream.getvalue()) == ["a", "b", "c"]
    assert len(stream.writes) == 1


def test_an_error_in_the_block_loses_no_line(stream: Writes) -> None:
    log = logging.getLogger("signoff.test")
    with pytest.raises(RuntimeError), logs.held():
        log.info("before the error")
        raise RuntimeError("boom")
    assert messages(stream.getvalue()) == ["before the error"]
    log.info("after")  # not held any more
    assert messages(stream.getvalue())[-1] == "after"


def test_other_threads_are_not_held(stream: Writes) -> None:
    log = logging.getLogger("signoff.test")
    with logs.held():
        log.info("held")
        t = threading.Thread(target=log.info, args=("from another thread",))
        t.start()
        t.join()
        assert messages(stream.getvalue()) == ["from another thread"]
    assert messages(stream.getvalue()) == ["from another thread", "held"]
