"""The Agno stream's ids and resumption, in process: a run's events and the model turn
under way as messages, each once, whatever the point a stream starts from."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from api.agno import stream_events
from api.agno_stream import CONTENT, LAST, STARTED, Cursor, Position, resume_point
from api.errors import ProblemError
from api.streams import TurnStarted, TurnText
from domain.run import Run

RUN = "5f0e4c1a-0000-4000-8000-000000000000"
TEXT = "All done, twice over."
NOW = datetime(2030, 3, 10, tzinfo=UTC)


def finished_run() -> tuple[Run, list[Any]]:
    """A run that answered with text and completed, and its events (versions 1 to 3)."""
    run = Run.start(agent_id="a", agent_name="A", user_id=None, session_id="s", input="go",
                    instructions="")
    run.record_model_response(model="m", provider="p", content=TEXT, tool_calls=[],
                              input_tokens=3, output_tokens=4)
    run.complete(TEXT)
    return run, list(run.collect_events())


def finished() -> list[Any]:
    return finished_run()[1]


def turn() -> list[TurnStarted | TurnText]:
    """The model turn (version 2) as it went: its start, then its text in three pieces."""
    return [TurnStarted(2, "m", "p", NOW), TurnText(2, 0, "All done, "),
            TurnText(2, 10, "twice "), TurnText(2, 16, "over.")]


def sent(out: list[dict[str, str]]) -> list[tuple[str, str, Any]]:
    return [(m["id"].removeprefix(RUN + ":"), m["event"], json.loads(m["data"]).get("content"))
            for m in out]


def test_a_model_turn_gives_its_start_first_and_its_text_second() -> None:
    run, events = finished_run()
    names = [n for n, _ in stream_events(run, [events[1]])]
    assert (names[STARTED], names[CONTENT]) == ("ModelRequestStarted", "RunContent")


def test_ids_are_read_back_as_the_positions_they_name() -> None:
    assert resume_point(None) is None and resume_point(" ") is None
    assert resume_point(f"{RUN}:7") == (RUN, Position(7, LAST))
    assert resume_point(f"{RUN}:7.0") == (RUN, Position(7, 0))
    assert resume_point(f"{RUN}:7.1.12") == (RUN, Position(7, 1, 12))
    assert resume_point(f"{RUN.upper()}:0") == (RUN, Position(0))
    for bad in ("7", f"{RUN}", f"{RUN}:x", f"{RUN}:7.2.3", f"{RUN}:{2**63}", "nope:1",
                f"{RUN}:1.", f"{RUN}:1.0.0.0"):
        with pytest.raises(ProblemError) as e:
            resume_point(bad)
        assert e.value.status == 422, bad
    for position in (Position(7), Position(7, 0), Position(7, 1, 12)):
        assert resume_point(position.id(RUN)) == (RUN, position)


def live_then_committed(start: Position, folded: int) -> list[tuple[str, str, Any]]:
    """What a stream sends from ``start`` that hears the turn live, then reads the rest."""
    events = finished()
    cursor = Cursor(RUN, None, start)
    out = cursor.committed(events[:folded])
    for n in turn():
        out += cursor.notice(n)
    return sent(out + cursor.committed(events[folded:]))


def test_a_stream_that_hears_the_turn_live_sends_each_piece_once() -> None:
    assert live_then_committed(Position(0), 1) == [
        ("1", "RunStarted", None),
        ("2.0", "ModelRequestStarted", None),
        ("2.1.10", "RunContent", "All done, "),
        ("2.1.16", "RunContent", "twice "),
        ("2.1.21", "RunContent", "over."),
        ("2", "ModelRequestCompleted", None),
        ("3.0", "RunContentCompleted", None),
        ("3", "RunCompleted", TEXT)]


@pytest.mark.parametrize("start", [Position(0), Position(1), Position(2, 0),
                                   Position(2, 1, 10), Position(2, 1, 16), Position(2),
                                   Position(3, 0)])
def test_resumed_from_any_id_every_message_comes_once(start: Position) -> None:
    whole = live_then_committed(Position(0), 1)
    # The events read from the store, the turn already committed: the text as one piece.
    events = finished()
    folded = start.version if start.part == LAST else start.version - 1
    cursor = Cursor(RUN, None, Position(0))
    cursor.committed(events[:folded])
    cursor.position = start
    rest = sent(cursor.committed(events[folded:]))
    before = [m for m in whole if resume_point(f"{RUN}:{m[0]}")[1] <= start]  # type: ignore[index]
    assert [m[1] for m in before + rest if m[1] != "RunContent"] == [
        m[1] for m in whole if m[1] != "RunContent"]
    assert "".join(m[2] for m in before + rest if m[1] == "RunContent") == TEXT


def test_a_piece_of_text_missed_is_not_sent_and_the_answer_fills_it_in() -> None:
    events = finished()
    cursor = Cursor(RUN, None, Position(0))
    out = cursor.committed(events[:1])
    started, _, second, third = turn()
    out += cursor.notice(started) + cursor.notice(second) + cursor.notice(third)
    out += cursor.committed(events[1:])
    assert sent(out)[1:4] == [("2.0", "ModelRequestStarted", None),
                              ("2.1.21", "RunContent", TEXT),
                              ("2", "ModelRequestCompleted", None)]


def test_a_notice_of_a_turn_not_next_is_not_sent() -> None:
    events = finished()
    cursor = Cursor(RUN, None, Position(0))
    assert cursor.notice(turn()[0]) == []  # nothing folded yet: the start comes first
    cursor.committed(events)
    assert [cursor.notice(n) for n in turn()] == [[], [], [], []]  # committed already


def test_the_run_started_event_names_the_agents_model() -> None:
    events = finished()
    cursor = Cursor(RUN, None, Position(0), {"model": "m", "model_provider": "p"})
    [started] = cursor.committed(events[:1])
    assert json.loads(started["data"])["model"] == "m"
