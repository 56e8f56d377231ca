"""A save's log lines are written together, by the standard library's queue listener:
``logs.held()`` holds what this thread logs until the block ends and then queues it as
one record; the listener writes each record in one ``write``, in order (at once on
``logs.flush()``, at exit, or when the handler is replaced). Other threads' lines are not
held; an error inside the block loses no line. A process uvicorn's logging config set up
writes its queued lines before SIGTERM ends it, and a library's warning is a line too."""

from __future__ import annotations

import io
import json
import logging
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

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
        handler.close()


def messages(text: str) -> list[str]:
    return [json.loads(line)["message"] for line in text.splitlines()]


def test_held_lines_are_one_write_in_order(stream: Writes) -> None:
    log = logging.getLogger("signoff.test")
    with logs.held():
        for i in range(5):
            log.info("line %d", i)
        logs.flush()
        assert stream.writes == []  # nothing queued yet
    logs.flush()
    assert len(stream.writes) == 1
    assert messages(stream.getvalue()) == [f"line {i}" for i in range(5)]


def test_nested_blocks_write_once_at_the_outermost_end(stream: Writes) -> None:
    log = logging.getLogger("signoff.test")
    with logs.held():
        log.info("a")
        with logs.held():
            log.info("b")
        logs.flush()
        assert stream.writes == []
        log.info("c")
    logs.flush()
    assert messages(stream.getvalue()) == ["a", "b", "c"]
    assert len(stream.writes) == 1


def test_an_error_in_the_block_loses_no_line(stream: Writes) -> None:
    log = logging.getLogger("signoff.test")
    with pytest.raises(RuntimeError), logs.held():
        log.info("before the error")
        raise RuntimeError("boom")
    logs.flush()
    assert messages(stream.getvalue()) == ["before the error"]
    log.info("after")  # not held any more
    logs.flush()
    assert messages(stream.getvalue())[-1] == "after"


def test_other_threads_are_not_held(stream: Writes) -> None:
    log = logging.getLogger("signoff.test")
    with logs.held():
        log.info("held")
        t = threading.Thread(target=log.info, args=("from another thread",))
        t.start()
        t.join()
        logs.flush()
        assert messages(stream.getvalue()) == ["from another thread"]
    logs.flush()
    assert messages(stream.getvalue()) == ["from another thread", "held"]


def test_the_listener_writes_without_being_asked(stream: Writes) -> None:
    logging.getLogger("signoff.test").info("on its own")
    deadline = time.monotonic() + 5
    while not stream.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert messages(stream.getvalue()) == ["on its own"]


def test_many_threads_blocks_stay_whole_and_in_order(stream: Writes) -> None:
    log = logging.getLogger("signoff.test")

    def work(t: int) -> None:
        for b in range(50):
            with logs.held():
                for i in range(3):
                    log.info("%d %d %d", t, b, i)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    logs.flush()
    lines = [tuple(map(int, m.split())) for m in messages(stream.getvalue())]
    assert len(lines) == 8 * 50 * 3
    # A block's three lines are next to each other; each thread's blocks in its order.
    for k in range(0, len(lines), 3):
        t, b, _ = lines[k]
        assert lines[k:k + 3] == [(t, b, 0), (t, b, 1), (t, b, 2)]
    for t in range(8):
        assert [b for (tt, b, i) in lines if tt == t and i == 0] == list(range(50))


def test_a_replaced_handler_writes_what_it_had_queued(stream: Writes) -> None:
    log = logging.getLogger("signoff.test")
    with logs.held():
        log.info("queued last")
    logs.configure(Settings(log_format="json", log_level="info"), io.StringIO())
    assert messages(stream.getvalue()) == ["queued last"]


def test_a_closed_handler_a_logger_still_reaches_never_blocks(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Once closed (its listener stopped), a handler some logger still holds drops what it
    is given: no line waits for room in a queue nobody reads (a test process hung so,
    in an HTTP client's log line)."""
    monkeypatch.setattr(logs, "MAX_QUEUED", 5)
    handler = logs._Handler(io.StringIO(), logging.Formatter())
    handler.close()
    log = logging.getLogger("signoff.test.closed")
    log.addHandler(handler)
    log.propagate = False
    try:
        done = threading.Event()

        def emit() -> None:
            for n in range(50):
                log.warning("line %d", n)
            with logs.held():
                log.warning("held")
            done.set()

        threading.Thread(target=emit, daemon=True).start()
        assert done.wait(5), "a closed handler blocked its logger"
    finally:
        log.removeHandler(handler)


class Stuck(Writes):
    """A stream whose writes wait until ``release`` is set (a pipe nobody reads)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def write(self, s: str) -> int:
        self.release.wait()
        return super().write(s)


def test_a_stuck_stream_holds_up_the_logging_thread_not_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(logs, "MAX_QUEUED", 20)
    out = Stuck()
    logs.configure(Settings(log_format="json", log_level="info"), out)
    handler = logs._handler
    assert handler is not None
    log = logging.getLogger("signoff.test")
    t = threading.Thread(target=lambda: [log.info("line %d", i) for i in range(100)])
    t.start()
    t.join(0.5)
    assert t.is_alive()  # waiting for room in the queue, as it would for the stream
    assert handler.queue.qsize() <= 20
    out.release.set()
    t.join(5)
    assert not t.is_alive()
    logs.flush()
    assert messages(out.getvalue()) == [f"line {i}" for i in range(100)]
    logging.getLogger().removeHandler(handler)
    handler.close()


def test_a_process_stopped_by_sigterm_writes_its_queued_lines_first() -> None:
    # As uvicorn's server ends: SIGTERM raised again under the handler found at start.
    code = """if True:
        import logging, logging.config, signal
        from service import logs
        from service.config import Settings
        logging.config.dictConfig(logs.uvicorn_log_config(Settings(log_format="json")))
        log = logging.getLogger("uvicorn.error")
        for i in range(2000):
            log.info("line %d", i)
        signal.raise_signal(signal.SIGTERM)
    """
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == -signal.SIGTERM, out.stderr
    assert messages(out.stderr) == [f"line {i}" for i in range(2000)]


def test_a_warning_is_a_line_of_the_log() -> None:
    logging.captureWarnings(False)  # as in a new process (pytest records warnings itself)
    out = io.StringIO()
    logs.configure(Settings(log_format="json", log_level="info"), out)
    warnings.warn("a library's warning", UserWarning, stacklevel=1)
    logs.flush()
    [line] = [json.loads(text) for text in out.getvalue().splitlines()]
    assert (line["logger"], line["level"]) == ("py.warnings", "warning")
    assert "a library's warning" in line["message"]
    logging.captureWarnings(False)
    root = logging.getLogger()
    handler = logs._handler
    assert handler is not None
    root.removeHandler(handler)
    handler.close()
