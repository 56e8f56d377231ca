"""Stored events compressed (``SIGNOFF_COMPRESS``, ``service/compression.py``): a store
written with compression and one without both verify, export and import; a store keeps
reading as compression is turned on or off; compressed, it stores fewer bytes."""

from __future__ import annotations

import json
import sqlite3
import zlib
from contextlib import closing
from pathlib import Path

import pytest

from bootstrap import build_app
from service import audit, compression
from service.archive import export_events, import_events
from service.config import Settings
from service.runs import RunService
from service.views import run_view
from tests.golden.record import populate


def _states(path: Path) -> list[bytes]:
    with closing(sqlite3.connect(path)) as conn:
        return [bytes(s) for (s,) in conn.execute("SELECT state FROM stored_events "
                                                  "ORDER BY rowid")]


def _views(app: RunService, run_ids: list[str]) -> list[dict[str, object]]:
    return [run_view(app.get_run(run_id)) for run_id in run_ids]


def _record(line: str) -> dict[str, object]:
    """An exported line without its log position (an import renumbers positions)."""
    record = json.loads(line)
    record.pop("position", None)
    return dict(record)


def _open(path: Path, compress: bool) -> RunService:
    return build_app(Settings(database_url=f"sqlite:///{path}", compress=compress))


def test_a_store_reads_on_as_compression_is_turned_on_and_off(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    app = _open(path, compress=False)
    first = populate(app)
    app.close()
    assert all(s.startswith(b"{") for s in _states(path))  # uncompressed JSON

    app = _open(path, compress=True)
    second = populate(app)
    views = _views(app, first + second)
    app.close()
    states = _states(path)
    assert states[-1][:1] == b"\x78"  # zlib's header: written compressed from then on

    app = _open(path, compress=False)  # and back: both kinds still read
    assert _views(app, first + second) == views
    report = audit.verify_log(app)
    assert report.intact and report.runs == len(first + second)
    app.close()


@pytest.mark.parametrize(("source", "target"), [(True, False), (False, True)],
                         ids=["compressed-to-plain", "plain-to-compressed"])
def test_export_and_import_between_a_compressed_and_an_uncompressed_store(
        tmp_path: Path, source: bool, target: bool) -> None:
    a = _open(tmp_path / "a.db", compress=source)
    run_ids = populate(a)
    export = tmp_path / "export.jsonl"
    with export.open("w") as f:
        f.writelines(export_events(a))
    b = _open(tmp_path / "b.db", compress=target)
    assert import_events(b, export.open()) == a.head()
    assert _views(b, run_ids) == _views(a, run_ids)
    for app in (a, b):
        report = audit.verify_log(app)
        assert report.intact and report.runs == len(run_ids)
    exported = [_record(line) for line in export.open()]
    assert [_record(line) for line in export_events(b)] == exported
    a.close()
    b.close()


def test_compressed_events_take_fewer_bytes(tmp_path: Path) -> None:
    sizes = {}
    for compress in (False, True):
        path = tmp_path / f"{compress}.db"
        app = _open(path, compress=compress)
        populate(app)
        app.close()
        sizes[compress] = sum(len(s) for s in _states(path))
    assert sizes[True] < 0.8 * sizes[False]


def test_every_dictionary_stays_as_it_was_written() -> None:
    """States name their dictionary by its Adler-32: one changed would leave every state
    written with it unreadable. (A new dictionary is added beside the others.)"""
    assert sorted(compression.DICTIONARIES) == [0xE0A6E923]
    for dict_id, dictionary in compression.DICTIONARIES.items():
        assert zlib.adler32(dictionary) == dict_id


def test_states_from_before_the_dictionary_still_read(tmp_path: Path) -> None:
    """A store written with zlib alone (no dictionary) reads, verifies and goes on with
    states written with the dictionary beside them."""
    path = tmp_path / "s.db"
    app = _open(path, compress=False)
    first = populate(app)
    app.close()
    with closing(sqlite3.connect(path)) as conn:  # as the compressor before wrote them
        conn.executemany("UPDATE stored_events SET state = ? WHERE state = ?",
                         [(zlib.compress(s), s) for s in _states(path)])
        conn.commit()
    app = _open(path, compress=True)
    second = populate(app)
    states = _states(path)
    assert not states[0][1] & 0x20 and states[-1][1] & 0x20  # zlib alone, then with it
    assert all(v["status"] for v in _views(app, first + second))
    report = audit.verify_log(app)
    assert report.intact and report.runs == len(first + second)
    app.close()


def test_the_dictionary_takes_a_third_off_what_zlib_alone_stores() -> None:
    states = [json.dumps(line).encode() for line in _golden_states()]
    alone = sum(len(zlib.compress(s)) for s in states)
    with_dictionary = sum(len(compression.Zlib().compress(s)) for s in states)
    assert with_dictionary < 0.75 * alone
    assert all(compression.Zlib().decompress(compression.Zlib().compress(s)) == s
               for s in states)


def _golden_states() -> list[object]:
    """Every event state of the golden histories (tests/golden), as stored."""
    app = RunService(env={"PERSISTENCE_MODULE": "eventsourcing.popo",
                          "COMPRESSOR_TOPIC": "service.compression:Plain"})
    populate(app)
    return [json.loads(app.mapper.to_stored_event(e).state) for _, e in app.log()]


def test_what_is_not_a_state_of_ours_is_a_zlib_error() -> None:
    """Ciphertext read without its key (the store's key check) is refused as zlib would
    refuse it, whatever dictionary its bytes seem to name."""
    for data in (b"\x78\x20\x00\x00\x00\x01rest", b"\x78\xbb\xde\xad\xbe\xefrest", b"\x78"):
        with pytest.raises(zlib.error):
            compression.Zlib().decompress(data)
