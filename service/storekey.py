"""A store knows its key: the key check, tried by every process that opens the store.

An encrypted store holds a **key check**: one ``KeyCheck.Created`` event of an aggregate
with a fixed id, written through the application's own mapper (so encoded, compressed
and encrypted with ``SIGNOFF_CIPHER_KEY`` exactly as every event is: AES-GCM, which also
authenticates it) into a table of its own, made by the recorder's own factory
(``factory.aggregate_recorder("keycheck")``: ``signoff_keycheck`` on PostgreSQL,
``stored_keycheck`` on SQLite), the way eventsourcing keeps snapshots beside the events.

Why that table and not the event log: the check is then no event of the log. It has no
position, so the log's head, the anchors and the log hash, ``audit verify``, ``audit
export``, ``audit import`` (which wants a store with no events) and the projections see
exactly what they saw before; and it needs no code of its own to encrypt or decode (the
application's mapper does both), nor a table definition of its own (the aggregate
recorder's). Decrypting it is the whole test: GCM refuses any other key.

``check_store_key(app)`` runs where the application is opened (``bootstrap/__init__.py``
``build_app``, which ``signoff serve``, ``signoff project`` and every command that opens
the store go through), before anything is written, and raises ``StoreKeyError`` naming
the problem:

- a key check is recorded: with no key given, the store is encrypted (refused); with a
  key, the check must decrypt with it (else: not the store's key, refused);
- no key check and no event (a new store): with a key, the check is recorded now, and
  the store is encrypted from then on, even while it has no event; without one, nothing
  is recorded (a plaintext store);
- no key check but events (a plaintext store, or one encrypted before the check
  existed): its first and newest events are tried with the key given (``_reads``). Both
  readable with the key given: with a key, the check is recorded now; without one, a
  plaintext store, nothing to record. Otherwise refused: encrypted and no key given,
  plaintext and a key given, or not the store's key. The first event too, because a
  store that a process without the check already wrote to with a wrong key reads with
  that wrong key at its newest event only: recording the wrong key's check there would
  bless it.
"""

from __future__ import annotations

import zlib
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate
from eventsourcing.persistence import EventStore, Mapper, RecordConflictError

from service.compression import Zlib

KEY_CHECK_ID = uuid5(UUID("6f1c1a52-0d5e-4e3c-9d8e-5b1f2c0a7e41"), "signoff key check")
TABLE = "keycheck"  # purpose: signoff_keycheck (PostgreSQL), stored_keycheck (SQLite)
CHECK = "signoff store key check"


class StoreKeyError(Exception):
    """The store cannot be opened with the key given (or without one): nothing was
    written."""


class KeyCheck(Aggregate):
    """The store's key check: its one event, encrypted with the store's key."""

    @staticmethod
    def create_id(*_: Any, **__: Any) -> UUID:
        return KEY_CHECK_ID

    def __init__(self, check: str = CHECK) -> None:
        self.check = check


_NO_KEY = ("the store is encrypted and SIGNOFF_CIPHER_KEY is not set: set it to the key "
           "the store was written with")
_WRONG_KEY = ("SIGNOFF_CIPHER_KEY is not this store's key ({what} cannot be decrypted with "
              "it): set the key the store was written with")
_PLAINTEXT = ("SIGNOFF_CIPHER_KEY is set but the store holds plaintext events (written "
              "without a key): unset it, or encrypt the record by `signoff audit export` "
              "and `signoff audit import` into a new store with the key")
_MIXED = ("the store's events were not all written with one key: the event at position "
          "{first} {first_reads}, the one at position {newest} {newest_reads}")
_END = "; nothing was written"


def check_store_key(app: Any) -> None:
    """Raise ``StoreKeyError`` unless the key configured for ``app`` (a ``RunService``) is
    the store's, recording the store's key check when it has none yet and the key given
    proves to be its key. Writes nothing else."""
    store = EventStore(app.mapper, app.factory.aggregate_recorder(TABLE))
    keyed = app.mapper.cipher is not None
    for _ in range(2):
        if store.recorder.select_events(KEY_CHECK_ID, limit=1):
            _try_check(store, keyed)
            return
        _check_events(app, keyed)
        if not keyed:  # a plaintext store (or a new one): nothing to record
            return
        try:
            store.put(KeyCheck().collect_events())
            return
        except RecordConflictError:  # another process recorded it first: try that one
            continue
    raise StoreKeyError("the key check could not be recorded" + _END)  # pragma: no cover


def _try_check(store: EventStore[UUID], keyed: bool) -> None:
    if not keyed:
        raise StoreKeyError(_NO_KEY + _END)
    try:
        event = next(store.get(KEY_CHECK_ID, limit=1))
    except ValueError:  # MapperDeserialisationError: GCM refused the key
        raise StoreKeyError(_WRONG_KEY.format(what="its key check") + _END) from None
    if not isinstance(event, KeyCheck.Created):  # pragma: no cover - only this is stored
        raise StoreKeyError(_WRONG_KEY.format(what="its key check") + _END)


def _check_events(app: Any, keyed: bool) -> None:
    """``StoreKeyError`` unless the store's first and newest events (if any) read with the
    key given (or without one, when none is)."""
    head = app.head()
    if not head:
        return
    ends = app.recorder.select_notifications(1, 1)
    if ends[0].id != head:
        ends += app.recorder.select_notifications(head, 1)
    reads = [_reads(app.mapper, n) for n in ends]
    if all(reads):
        return
    # Plaintext: readable with no key, compressed or not.
    unkeyed: Mapper[Any] = Mapper(transcoder=app.mapper.transcoder, compressor=Zlib())
    plain = [_reads(unkeyed, n) for n in ends] if keyed else reads
    if not any(reads) and not keyed:
        raise StoreKeyError(_NO_KEY + _END)
    if keyed and all(plain):
        raise StoreKeyError(_PLAINTEXT + _END)
    if not any(reads) and not any(plain):
        what = "its first and newest events" if len(ends) > 1 else "its newest event"
        raise StoreKeyError(_WRONG_KEY.format(what=what) + _END)

    def state(i: int) -> str:
        if plain[i]:
            return "is plaintext"
        return "reads with this key" if reads[i] else \
            ("does not read with this key" if keyed else "cannot be read without a key")

    raise StoreKeyError(_MIXED.format(first=ends[0].id, newest=ends[-1].id,
                                      first_reads=state(0), newest_reads=state(-1)) + _END)


def _reads(mapper: Mapper[Any], notification: Any) -> bool:
    """Whether the event's stored state is in the form ``mapper`` writes: decrypted by its
    cipher (AES-GCM authenticates: only with the key it was written with), or, with no
    cipher, plaintext (UTF-8 text once decompressed, which ciphertext is not). What the
    decrypted text then says is not a key's business: a damaged event in a store written
    with this key opens the store, and its run answers that it is damaged when it is
    read."""
    state = notification.state
    if mapper.cipher is not None:
        try:
            mapper.cipher.decrypt(state)
        except Exception:  # eventsourcing's AESCipher: ValueError on a failed tag
            return False
        return True
    try:
        if mapper.compressor is not None:  # compressed, or stored before compression
            state = mapper.compressor.decompress(state)
        state.decode("utf-8")
    except (zlib.error, UnicodeDecodeError):
        return False
    return True
