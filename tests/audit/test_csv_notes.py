"""The CSV export of the decision trail tells an empty note from none (issue 16, point
9): an empty note is a quoted empty field (``""``), no note an empty field, as
PostgreSQL's ``COPY … CSV`` reads them ('' and NULL; loaded by PostgreSQL itself here).
Every other field is written as the csv module writes it."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from bootstrap import build_app, build_projections
from domain.run import Run
from domain.values import Requirement
from projections.audit import COLUMNS, AuditProjection, iter_decisions
from projections.csvfile import decisions_csv
from service.config import Settings

ARGS = {"table_name": "a,b", "say": 'he said "no"', "lines": "one\ntwo"}
NOTE = 'checked, "twice"\nreally'


def _decided(note: str | None, rejected: bool = False) -> Run:
    run = Run.start(agent_id="ops", agent_name="Ops", user_id="u", session_id="s",
                    input="x")
    run.record_model_response(model="m", provider="p", content=None, tool_calls=[
        {"id": "c1", "name": "delete_records", "args": ARGS}])
    run.request_tool_call(tool_call_id="c1", tool_name="delete_records", tool_args=ARGS,
                          requires=Requirement.CONFIRMATION)
    run.pause()
    if rejected:
        run.reject_tool("c1", decided_by="bob", reason=note)
    else:
        run.confirm_tool("c1", decided_by="bob", note=note)
    return run


def _fields(line: str) -> list[tuple[str, bool]]:
    """A CSV line's fields, each with whether it was quoted (what the csv module of
    Python 3.11 cannot say)."""
    out, i = [], 0
    while True:
        if line.startswith('"', i):
            j, text = i + 1, ""
            while True:
                k = line.index('"', j)
                text += line[j:k]
                if line.startswith('""', k):
                    text, j = text + '"', k + 2
                    continue
                i = k + 1
                break
            out.append((text, True))
        else:
            k = line.find(",", i)
            k = len(line) if k < 0 else k
            out.append((line[i:k], False))
            i = k
        if i >= len(line):
            return out
        i += 1  # the comma


@pytest.fixture
def rows(store_url: str) -> Iterator[tuple[str, list[dict[str, Any]], str]]:
    settings = Settings(database_url=store_url)
    app = build_app(settings)
    runs = [_decided(""), _decided(None), _decided("", rejected=True),
            _decided(None, rejected=True), _decided(NOTE)]
    app.save(*runs)
    projections = build_projections(settings, [AuditProjection.name])
    try:
        projections.catch_up(AuditProjection.name)
        found = list(iter_decisions(projections.views[AuditProjection.name].read))
        yield "".join(decisions_csv(found)), found, store_url
    finally:
        projections.close()
        projections.store.close()
        app.close()


def test_an_empty_note_is_quoted_and_no_note_is_an_empty_field(
        rows: tuple[str, list[dict[str, Any]], str]) -> None:
    text, found, _ = rows
    assert [r["note"] for r in found] == ["", None, "", None, NOTE]
    lines = text.split("\r\n")  # (the last note's line break is a "\n" of its own)
    assert lines[0] == ",".join(COLUMNS) and lines[-1] == "" and len(lines) == 7
    note = COLUMNS.index("note")
    assert [_fields(line)[note] for line in lines[1:-1]] == [
        ("", True), ("", False), ("", True), ("", False), (NOTE, True)]
    # The csv module reads every value back (it reads both notes as ''): nothing else
    # changed.
    parsed = list(csv.DictReader(io.StringIO(text, newline="")))
    assert [json.loads(p["args_requested"]) for p in parsed] == [ARGS] * 5
    assert [p["note"] for p in parsed] == ["", "", "", "", NOTE]
    assert [p["decision"] for p in parsed] == ["confirmed"] * 2 + ["rejected"] * 2 + [
        "confirmed"]


@pytest.mark.parametrize("store_url", [pytest.param("postgres", marks=pytest.mark.postgres)],
                         indirect=True)
def test_postgresql_copy_loads_an_empty_note_as_empty_and_none_as_null(
        rows: tuple[str, list[dict[str, Any]], str]) -> None:
    text, _, url = rows
    columns = ", ".join(f"{c} TEXT" for c in COLUMNS)
    with psycopg.connect(url) as conn:
        conn.execute(f"CREATE TEMPORARY TABLE loaded ({columns})")
        with conn.cursor().copy("COPY loaded FROM STDIN WITH (FORMAT csv, HEADER true)") as cp:
            cp.write(text)
        notes = conn.execute("SELECT note FROM loaded ORDER BY position::bigint").fetchall()
        args = conn.execute("SELECT DISTINCT args_requested FROM loaded").fetchall()
    assert [n for (n,) in notes] == ["", None, "", None, NOTE]
    assert [json.loads(a) for (a,) in args] == [ARGS]
