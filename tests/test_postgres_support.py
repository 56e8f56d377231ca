"""Tests for the throwaway PostgreSQL server used by the rest of the suite."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import pytest

from tests.support.postgres import PgServer, throwaway_postgres

pytestmark = pytest.mark.postgres


def _show(server: PgServer, setting: str) -> str:
    with psycopg.connect(server.url) as conn:
        row = conn.execute(f"SHOW {setting}").fetchone()
    assert row is not None
    return row[0]


def test_server_is_up_with_real_durability_settings(pg_server: PgServer) -> None:
    with psycopg.connect(pg_server.url) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    assert _show(pg_server, "synchronous_commit") == "on"
    assert _show(pg_server, "fsync") == "on"
    assert _show(pg_server, "max_connections") == "200"
    assert pg_server.url == f"postgresql://postgres@127.0.0.1:{pg_server.port}/postgres"


def test_listens_on_loopback_only(pg_server: PgServer) -> None:
    assert _show(pg_server, "listen_addresses") == "127.0.0.1"
    assert str(pg_server.data_dir.parent) in _show(pg_server, "unix_socket_directories")


def test_create_database_is_isolated(pg_server: PgServer) -> None:
    a = pg_server.create_database("iso_a")
    b = pg_server.create_database("iso_b")
    assert (a.port, a.dbname, b.dbname) == (pg_server.port, "iso_a", "iso_b")
    with psycopg.connect(a.url) as conn:
        conn.execute("create table t (x int)")
        conn.execute("insert into t values (42)")
    with psycopg.connect(b.url) as conn:
        assert conn.execute("select to_regclass('t')").fetchone() == (None,)
    with psycopg.connect(a.url) as conn:
        assert conn.execute("select current_database(), x from t").fetchone() == ("iso_a", 42)
    a.drop_database()
    b.drop_database()


def test_pg_database_fixture_gives_empty_database(pg_database: PgServer) -> None:
    assert pg_database.dbname.startswith("test_")
    with psycopg.connect(pg_database.url) as conn:
        assert conn.execute("select current_database()").fetchone() == (pg_database.dbname,)
        tables = conn.execute(
            "select count(*) from pg_tables where schemaname = 'public'"
        ).fetchone()
        assert tables == (0,)


def test_stop_immediate_then_start_keeps_committed_data(pg_bin: Path) -> None:
    with throwaway_postgres(pg_bin) as server:
        with psycopg.connect(server.url) as conn:
            conn.execute("create table t (x int)")
            conn.execute("insert into t values (1)")
        server.stop_immediate()
        with pytest.raises(ProcessLookupError):
            os.kill(server.pid, 0)
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(server.url, connect_timeout=2)

        restarted = server.start()
        assert restarted.port == server.port
        assert restarted.pid != server.pid
        with psycopg.connect(restarted.url) as conn:
            assert conn.execute("select x from t").fetchone() == (1,)
        base = server.data_dir.parent

    # the context manager stopped its server and removed its files
    with pytest.raises(ProcessLookupError):
        os.kill(restarted.pid, 0)
    assert not base.exists()
