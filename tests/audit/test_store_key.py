"""A store knows its key (service/storekey.py): a process given no key, another key, or a
key for a plaintext store is refused before it writes anything; a store encrypted before
the key check existed gets its check from the right key; rotating the key by export and
import gives the new store the new key's check. On SQLite and PostgreSQL."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest
from eventsourcing.cryptography import AESCipher

from bootstrap import build_app
from domain.keys import ApiKey, Role
from service.config import Settings, eventsourcing_env
from service.keys import create_key, new_secret
from service.runs import RunService
from service.storekey import StoreKeyError
from tests.audit.store import filled_store
from tests.e2e.flows import form
from tests.support.server import ROOT, free_port, live_server

NOT_SET = "the store is encrypted and SIGNOFF_CIPHER_KEY is not set"
NOT_ITS_KEY = "SIGNOFF_CIPHER_KEY is not this store's key"
PLAINTEXT = "SIGNOFF_CIPHER_KEY is set but the store holds plaintext events"


def _cli(url: str, key: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SIGNOFF_DATABASE_URL": url, "SIGNOFF_CIPHER_KEY": key,
           "SIGNOFF_MODEL": "offline", "SIGNOFF_PORT": str(free_port())}
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def _open(url: str, key: str = "") -> RunService:
    return build_app(Settings(database_url=url, cipher_key=key))


def _head(url: str, key: str = "") -> int:
    app = _open(url, key)
    try:
        return app.head()
    finally:
        app.close()


def _sql(url: str, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run one statement on the store's database (``%s`` parameters), committed."""
    if url.startswith("postgres"):
        with psycopg.connect(url) as conn:
            cursor = conn.execute(statement, params)
            return cursor.fetchall() if cursor.description else []
    with closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn:
        rows = conn.execute(statement.replace("%s", "?"), params).fetchall()
        conn.commit()
        return rows


def _table(url: str, purpose: str) -> str:
    return ("signoff_" if url.startswith("postgres") else "stored_") + purpose


def _checks(url: str) -> int:
    """Rows in the key check's table: 1 once the store's key check is recorded."""
    return int(_sql(url, f"SELECT COUNT(*) FROM {_table(url, 'keycheck')}")[0][0])


def _new_key(app: RunService, name: str) -> UUID:
    return create_key(app, name=name, role=Role.ADMIN, created_by="test")[1].id


def test_no_key_or_another_key_is_refused_and_the_store_goes_on_with_its_own(
        store_url: str, tmp_path: Path) -> None:
    key, other = AESCipher.create_key(32), AESCipher.create_key(32)
    made = _cli(store_url, key, "keys", "create", "--name", "ann", "--role", "client")
    assert made.returncode == 0, made.stderr
    head = _head(store_url, key)
    assert head == 1

    # What the tester did: a command with no key, and with another key.
    for given, problem in (("", NOT_SET), (other, NOT_ITS_KEY)):
        refused = _cli(store_url, given, "keys", "create", "--name", "eve", "--role", "admin")
        assert refused.returncode == 2 and refused.stdout == ""
        assert refused.stderr.startswith(f"signoff: cannot open the store: {problem}")
        assert "nothing was written" in refused.stderr
        served = _cli(store_url, given, "serve")
        assert served.returncode == 2
        assert served.stderr.startswith(f"signoff: cannot start: {problem}")
    assert _head(store_url, key) == head
    assert _checks(store_url) == 1  # recorded when the new store was opened with its key

    # The right key: it serves (a run starts and pauses), and the whole record verifies.
    secret = made.stdout.strip()
    with live_server(store_url, tmp_path / "server.log", SIGNOFF_CIPHER_KEY=key) as server, \
            server.client(headers={"Authorization": f"Bearer {secret}"}) as c:
        r = c.post("/agents/data_manager/runs", files=form(
            message="Delete 50 old records from the users table", stream="false"))
        assert r.status_code == 200 and r.json()["status"] == "PAUSED", r.text
    verified = _cli(store_url, key, "audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.startswith(f"INTACT: {_head(store_url, key)} events of 1 runs")
    listed = _cli(store_url, key, "keys", "list")
    assert listed.returncode == 0 and " ann " in listed.stdout


def test_a_key_given_for_a_plaintext_store_is_refused(store_url: str) -> None:
    app = _open(store_url)
    _new_key(app, "adm")
    app.close()
    key = AESCipher.create_key(32)
    refused = _cli(store_url, key, "keys", "create", "--name", "eve", "--role", "admin")
    assert refused.returncode == 2
    assert refused.stderr.startswith(f"signoff: cannot open the store: {PLAINTEXT}")
    assert _head(store_url) == 1 and _checks(store_url) == 0  # still plaintext, unchanged


def test_a_store_encrypted_before_the_check_existed_gets_it_from_its_key_only(
        store_url: str) -> None:
    key, other = AESCipher.create_key(32), AESCipher.create_key(16)
    app = _open(store_url, key)
    _new_key(app, "adm")
    _new_key(app, "bob")
    app.close()
    _sql(store_url, f"DELETE FROM {_table(store_url, 'keycheck')}")  # as written before it

    # A process from before the check, with another key, appended an event: neither key
    # can now be blessed by the newest event alone.
    old = RunService(env=eventsourcing_env(Settings(database_url=store_url, cipher_key=other)))
    eve = ApiKey.issue(new_secret(), name="eve", role=Role.ADMIN, created_by="test")
    old.save(eve)  # saved as is: create_key reads the keys, which this key cannot
    rogue = eve.id
    old.close()
    for given in (key, other):
        with pytest.raises(StoreKeyError, match="not all written with one key"):
            _open(store_url, given)
    rid = rogue if store_url.startswith("postgres") else rogue.hex
    _sql(store_url, f"DELETE FROM {_table(store_url, 'events')} WHERE originator_id = %s",
         rid)  # the way out of that: delete the event

    for given, problem in ((other, NOT_ITS_KEY + r" \(its first and newest events"),
                           ("", NOT_SET)):
        with pytest.raises(StoreKeyError, match=problem):
            _open(store_url, given)
    assert _checks(store_url) == 0  # a refused key is never recorded
    assert _head(store_url, key) == 2  # the right key: the check is recorded now
    assert _checks(store_url) == 1
    with pytest.raises(StoreKeyError, match=NOT_ITS_KEY + r" \(its key check"):
        _open(store_url, other)


def test_rotating_the_key_by_export_and_import(store_url: str, tmp_path: Path) -> None:
    old, new = AESCipher.create_key(32), AESCipher.create_key(32)
    source_url = f"sqlite:///{tmp_path / 'old.db'}"
    filled_store(source_url, old).close()
    export = tmp_path / "record.jsonl"
    exported = _cli(source_url, old, "audit", "export", "-o", str(export))
    assert exported.returncode == 0, exported.stderr

    imported = _cli(store_url, new, "audit", "import", str(export))
    assert imported.returncode == 0, imported.stdout + imported.stderr
    assert "imported 102 events of 12 runs" in imported.stderr
    assert imported.stdout.startswith("INTACT: 102 events of 12 runs")
    assert _checks(store_url) == 1  # the new key's
    for given, problem in ((old, NOT_ITS_KEY), ("", NOT_SET)):
        with pytest.raises(StoreKeyError, match=problem):
            _open(store_url, given)
    assert _head(store_url, new) == 102
