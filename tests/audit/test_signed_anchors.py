"""Signed anchors: with SIGNOFF_ANCHOR_SIGNING_KEY, every checkpoint and the head carry an
Ed25519 signature. Someone with write access to the database but not the key cannot
make an anchor that verifies: an anchor re-computed, or its signature altered or
removed, is reported by ``verify`` (SQLite and PostgreSQL); exports carry the
signatures and ``import --public-key`` checks them; the public key is published."""

from __future__ import annotations

import base64
import itertools
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from domain import chain
from projections import anchors
from service.archive import ImportError_, check_export, export_events
from service.config import Settings
from tests.audit.store import Store, filled_store
from tests.golden.record import populate
from tests.support.server import live_server

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
ROOT = Path(__file__).resolve().parents[2]


def _new_key() -> tuple[str, str]:
    """A signing key (base64 of its raw bytes) and its public key (the same form)."""
    key = Ed25519PrivateKey.generate()
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                            serialization.NoEncryption())
    return base64.b64encode(raw).decode(), chain.public_text(key.public_key())


KEY, PUBLIC = _new_key()


@pytest.fixture
def store(store_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    monkeypatch.setattr(anchors, "EVERY", 40)  # checkpoints at 40 and 80 events, and the head
    s = filled_store(store_url, anchor_signing_key=KEY)
    yield s
    s.close()


def _sql(store: Store, statement: str, *params: Any) -> None:
    with store.sql() as conn:
        conn.execute(store.q(statement), params)


def test_every_anchor_is_signed_and_verifies(store: Store) -> None:
    found = store.stored_anchors()
    assert [(a["kind"], a["events"]) for a in found] == [
        ("checkpoint", 40), ("checkpoint", 80), ("head", 102)]
    public = chain.public_key(PUBLIC)
    for a in found:
        assert a["signed_by"] == PUBLIC
        public.verify(base64.b64decode(a["signature"]), chain.signed_text(a).encode())
    assert chain.signed_text(found[0]) == anchors.anchor_text(found[0])  # EVENTS:HASH
    assert chain.signed_text(found[-1]) == f"102:{found[-1]['hash']}"  # the head: EVENTS:HASH
    report = store.verify()
    assert report.intact, report.as_dict()
    assert (report.signatures_checked, report.bad_signatures) == (3, [])


def test_an_anchor_recomputed_without_the_key_is_reported(store: Store) -> None:
    """An insider deletes a run, then rewrites the checkpoint after it to match the log
    as it now is (hash and runs digest, as anyone can compute them): the log agrees with
    the table, but the signature does not."""
    gone = store.run_ids[0]
    store.delete(gone)
    forged = {"kind": "checkpoint", "events": 80, "hash": "ab" * 32, "runs": "cd" * 32}
    _sql(store, "UPDATE signoff_anchor_checkpoints SET hash = %s, runs = %s "
         "WHERE events = 80", forged["hash"], forged["runs"])
    report = store.verify()
    assert not report.intact
    bad = {(b["kind"], b["events"]): b["problem"] for b in report.bad_signatures}
    assert bad[("checkpoint", 80)] == ("its signature does not verify with the public key: "
                                       "the anchor or its signature was altered")


def test_an_altered_signature_and_a_removed_one_are_reported(store: Store) -> None:
    other = base64.b64encode(Ed25519PrivateKey.generate().sign(b"40:x:y")).decode()
    _sql(store, "UPDATE signoff_anchor_signatures SET signature = %s "
         "WHERE kind = 'checkpoint' AND events = 40", other)
    _sql(store, "DELETE FROM signoff_anchor_signatures WHERE kind = 'head'")
    report = store.verify()
    assert not report.intact
    assert report.first_broken is None and report.anchor_mismatch is None  # the log is sound
    problems = {(b["kind"], b["events"]): b["problem"] for b in report.bad_signatures}
    assert problems[("checkpoint", 40)].startswith("its signature does not verify")
    assert problems[("head", 102)].startswith("unsigned")
    assert report.signatures_checked == 3


def test_anchors_of_another_key_fail_against_the_public_key_given(
        store: Store, tmp_path: Path) -> None:
    _, other = _new_key()
    checked = Settings(database_url=store.settings.database_url, anchor_public_key=other)
    report = Store(checked, store.app, store.projections, store.run_ids).verify()
    assert len(report.bad_signatures) == 3 and not report.intact
    assert f"it names another signing key ({PUBLIC})" in report.bad_signatures[0]["problem"]
    both = Settings(database_url=store.settings.database_url,
                    anchor_public_key=f"{other},{PUBLIC}")  # a key rotated: both listed
    assert Store(both, store.app, store.projections, store.run_ids).verify().intact


def test_without_a_key_nothing_is_signed_and_a_public_key_then_reports_it(
        tmp_path: Path) -> None:
    s = filled_store(f"sqlite:///{tmp_path / 'plain.db'}")
    try:
        assert all(a["signature"] is None for a in s.stored_anchors())
        assert s.verify().intact  # no key configured: signatures are not checked
        keyed = Settings(database_url=s.settings.database_url, anchor_public_key=PUBLIC)
        report = Store(keyed, s.app, s.projections, s.run_ids).verify()
        assert [b["problem"][:8] for b in report.bad_signatures] == ["unsigned"]
        # A rebuild with the key signs what the log holds.
        s.projections.views[anchors.AnchorsProjection.name].model.signer = \
            chain.signing_key(KEY)
        s.projections.rebuild(anchors.AnchorsProjection.name)
        assert Store(keyed, s.app, s.projections, s.run_ids).verify().intact
    finally:
        s.close()


def test_exports_carry_the_signatures_and_import_checks_them(store: Store,
                                                              tmp_path: Path) -> None:
    store.run_ids += populate(store.app)
    lines = list(export_events(store.app, anchors=store.anchor()))
    header = json.loads(lines[0])
    assert [a["kind"] for a in header["anchors"]] == ["checkpoint"] * 5 + ["head"]
    assert all(a["signature"] for a in header["anchors"])
    keys = [chain.public_key(PUBLIC)]
    assert check_export(lines, public_keys=keys).signed == 6

    forged = dict(header)
    forged["anchors"] = [dict(a) for a in header["anchors"]]
    forged["anchors"][1]["hash"] = "0" * 64
    with pytest.raises(ImportError_, match=r"line 1: the export's anchor of 80 events "
                       r"\(checkpoint, position \d+\): its signature does not verify"):
        check_export([json.dumps(forged) + "\n", *lines[1:]], public_keys=keys)
    stripped = {**header, "anchors": [{**a, "signature": None} for a in header["anchors"]]}
    with pytest.raises(ImportError_, match="unsigned"):
        check_export([json.dumps(stripped) + "\n", *lines[1:]], public_keys=keys)
    _, other = _new_key()
    with pytest.raises(ImportError_, match="does not verify"):
        check_export(lines, public_keys=[chain.public_key(other)])


def _cli(*args: str, url: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "SIGNOFF_DATABASE_URL": url, "SIGNOFF_ANCHOR_SIGNING_KEY": "",
            "SIGNOFF_ANCHOR_PUBLIC_KEY": "", **env}
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, env=full,
                          capture_output=True, text=True, timeout=120)


def test_the_commands(tmp_path: Path) -> None:
    a, b = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    filled_store(a, anchor_signing_key=KEY).close()
    printed = _cli("audit", "public-key", url=a, SIGNOFF_ANCHOR_SIGNING_KEY=KEY)
    assert printed.returncode == 0 and printed.stdout.strip() == PUBLIC
    pem = _cli("audit", "public-key", "--pem", url=a, SIGNOFF_ANCHOR_SIGNING_KEY=KEY)
    assert chain.public_text(chain.public_key(pem.stdout)) == PUBLIC
    assert _cli("audit", "public-key", url=a).returncode == 1  # no signing key

    # An operator without the signing key verifies with the public key alone.
    ok = _cli("audit", "verify", "--public-key", PUBLIC, url=a)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "signatures: 1 of 1 anchors signed and verified" in ok.stdout
    export = tmp_path / "x.jsonl"
    assert _cli("audit", "export", "-o", str(export), url=a).returncode == 0
    imported = _cli("audit", "import", str(export), "--public-key", PUBLIC, url=b)
    assert imported.returncode == 0, imported.stderr

    conn = sqlite3.connect(tmp_path / "a.db")
    with conn:  # an insider moves the head (its log hash) without the key
        conn.execute("UPDATE signoff_anchor_head SET hash = ?", ("f" * 64,))
    conn.close()
    broken = _cli("audit", "verify", "--log-only", url=a, SIGNOFF_ANCHOR_PUBLIC_KEY=PUBLIC)
    assert broken.returncode == 1
    assert "anchor of 102 events (head, position 102): its signature does not verify" \
        in broken.stdout
    bad_key = _cli("audit", "verify", "--public-key", "not a key", url=a)
    assert bad_key.returncode == 2 and "--public-key: is neither PEM nor base64" in \
        bad_key.stderr


def test_the_public_key_and_signed_anchors_over_http(store_url: str, tmp_path: Path) -> None:
    filled_store(store_url, anchor_signing_key=KEY).close()
    with live_server(store_url, tmp_path / "server.log",
                     SIGNOFF_ANCHOR_SIGNING_KEY=KEY) as server, server.client() as c:
        published = c.get("/audit/public-key").json()
        assert published["public_keys"] == [PUBLIC] and published["signing"] is True
        assert chain.public_text(chain.public_key(published["pem"][0])) == PUBLIC
        found = c.get("/audit/anchors").json()
        head = found[-1]
        assert head["kind"] == "head" and head["signature"]
        chain.public_key(PUBLIC).verify(base64.b64decode(head["signature"]),
                                        f"{head['events']}:{head['hash']}".encode())
        report = c.get("/audit/verify").json()
        assert report["signatures_checked"] == 1 and report["bad_signatures"] == []


def test_the_signature_script_in_the_docs_checks_an_export(store: Store,
                                                          tmp_path: Path) -> None:
    """docs/audit.md's "Checking the signatures", run as written."""
    doc = (ROOT / "docs" / "audit.md").read_text()
    section = doc[doc.index("### Checking the signatures"):]
    script = tmp_path / "signatures.py"
    script.write_text(section.split("```python\n", 1)[1].split("```", 1)[0])
    export = tmp_path / "x.jsonl"
    export.write_text("".join(export_events(store.app, anchors=store.anchor())))

    def check(public: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(script), str(export), public],
                              capture_output=True, text=True, timeout=60)

    ok = check(PUBLIC)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.split() == ["signed:", "3", "anchors"]
    assert check(_new_key()[1]).returncode != 0


def test_a_checkpoint_that_carries_a_runs_digest_still_verifies(store: Store) -> None:
    """Checkpoints are written without a runs digest (the log hash binds the same
    events); one written when they carried it (signed over ``EVENTS:HASH:RUNS``) still
    verifies, and its digest altered is named."""
    report = store.verify()
    assert report.intact and report.head is not None
    signer = chain.signing_key(KEY)
    heads: dict[str, tuple[str, int, str]] = {}
    for _, e in itertools.islice(store.app.log(), 40):  # the heads after 40 events
        heads[str(e.originator_id)] = (str(e.originator_id), e.originator_version,
                                       chain.link_of(e))
    runs = chain.runs_digest(heads.values())
    legacy = {"kind": "checkpoint", "events": 40, "hash": store.stored_anchors()[0]["hash"],
              "runs": runs}
    _sql(store, "UPDATE signoff_anchor_checkpoints SET runs = %s WHERE events = 40", runs)
    _sql(store, "UPDATE signoff_anchor_signatures SET signature = %s "
         "WHERE kind = 'checkpoint' AND events = 40", chain.sign(signer, legacy))
    report = store.verify()
    assert report.intact and report.bad_signatures == [], report.as_dict()
    _sql(store, "UPDATE signoff_anchor_checkpoints SET runs = %s WHERE events = 40", "ef" * 32)
    report = store.verify()
    assert not report.intact
