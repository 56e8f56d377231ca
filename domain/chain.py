"""The hash chain of a run's events: what is hashed, and how; and the Ed25519 signatures
of the log's anchors (below).

Every event of a run carries ``hash``: the SHA-256 of the event's canonical record,
which holds the hash of the run's previous event (``prev``). Changing any stored event,
removing one or swapping two breaks the chain from that event on. The canonical record
of an event is a JSON object with exactly these keys::

    {"run_id":    "<the run's UUID, lower case, with hyphens>",
     "version":   <the event's position in its run: 1, 2, 3 ...>,
     "type":      "<the event's topic, e.g. domain.run:Run.ToolConfirmed>",
     "timestamp": "<ISO 8601, as Python's datetime.isoformat() writes it>",
     "data":      {<every other field of the event>},
     "prev":      "<hash of the run's previous event, or 64 zeros for the first>"}

serialized as compact JSON (no spaces), keys sorted, every non-ASCII character escaped
(``\\uXXXX``), and encoded as UTF-8: in Python,
``json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True)``.
Inside ``data``, a date and time is written as its ISO 8601 string. The export
(``signoff audit export``) writes each event as this record plus its ``hash``, so a
third party can check it with a few lines of their own (docs/audit.md has a script).

Why not RFC 8785 (JCS): its numbers are IEEE doubles, so an integer beyond 2**53 in a
tool's arguments (a 64-bit order id, say) could not be recorded at all. Sorted-key JSON
with ASCII escapes keeps every integer exact; floats are written by Python's shortest
round-trip ``repr``.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from eventsourcing.domain import Aggregate
from eventsourcing.utils import get_topic

GENESIS = "0" * 64
HEADER = ("originator_id", "originator_version", "timestamp", "hash")


def plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


def record(run_id: UUID | str, version: int, topic: str, timestamp: datetime,
           data: dict[str, Any], prev: str | None) -> dict[str, Any]:
    """The canonical record of one event (without its own hash)."""
    return {"run_id": str(run_id), "version": version, "type": topic,
            "timestamp": timestamp.isoformat(), "data": data, "prev": prev or GENESIS}


def canonical(rec: dict[str, Any]) -> bytes:
    return json.dumps(rec, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False, default=plain).encode()


def digest(rec: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(rec)).hexdigest()


def event_data(event: Any) -> dict[str, Any]:
    """An event's own fields: everything but the header the record names separately."""
    return {k: v for k, v in vars(event).items() if k not in HEADER}


def event_record(event: Any, topic: str, prev: str | None) -> dict[str, Any]:
    return record(event.originator_id, event.originator_version, topic, event.timestamp,
                  event_data(event), prev)


def link_of(event: Any, topic: str | None = None) -> str:
    """What an event adds to the log chain: its hash, or, for an event recorded before
    the run chains (no hash), the hash of its record with ``prev`` = 64 zeros."""
    if getattr(event, "hash", None):
        return str(event.hash)
    return digest(event_record(event, topic or get_topic(type(event)), None))


def log_link(log_hash: str, event_hash: str) -> str:
    """The log chain: ``sha256(previous log hash + event hash)``, both hex strings."""
    return hashlib.sha256((log_hash + event_hash).encode()).hexdigest()


class Chained(Aggregate):
    """An aggregate whose events are hash-chained: each carries ``hash``, the digest of
    its record with the previous event's hash (``chain_head``) as ``prev``. Runs and API
    keys are ``Chained``; eventsourcing makes every event class declared on a subclass a
    subclass of its ``Event``."""

    class Event(Aggregate.Event):
        hash: str | None

        # Version 1 events (recorded before the hash chain) have no hash: they read as
        # unchained, and ``signoff audit verify`` reports them as such.
        class_version = 2

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["hash"] = None

        def mutate(self, aggregate: Any) -> Any:
            aggregate = super().mutate(aggregate)
            aggregate.chain_head = self.hash
            return aggregate

    chain_head = None  # the hash of the newest event (a str once there is one)

    @classmethod
    def _create(cls, event_class: Any, *, id: UUID | None = None, **kwargs: Any) -> Any:
        """As eventsourcing's, with the first link of the hash chain."""
        aggregate_id = id or cls.create_id()
        timestamp = event_class.create_timestamp()
        data = {**kwargs, "originator_topic": get_topic(cls)}
        kwargs["hash"] = digest(record(aggregate_id, cls.INITIAL_VERSION,
                                       get_topic(event_class), timestamp, data, None))
        return super()._create(event_class, id=aggregate_id, timestamp=timestamp, **kwargs)

    def trigger_event(self, event_class: Any, **kwargs: Any) -> None:
        """As eventsourcing's, with each event chained to the one before."""
        timestamp = event_class.create_timestamp()
        kwargs["hash"] = digest(record(self.id, self.version + 1, get_topic(event_class),
                                       timestamp, kwargs, self.chain_head))
        super().trigger_event(event_class, timestamp=timestamp, **kwargs)


def runs_digest(heads: Iterable[tuple[str, int, str]]) -> str:
    """The digest of every stream's newest event: (id, version, link) in any order."""
    lines = sorted(f"{run_id}:{version}:{link}" for run_id, version, link in heads)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


# ------------------------------------------------------------------ signed anchors
#
# An anchor may carry an Ed25519 signature (RFC 8032) of its *signed text*, in UTF-8:
# ``EVENTS:HASH`` (neither the head nor a checkpoint is signed with a runs digest: the
# log hash binds the same events, and the digest is worked out when it is read), or
# ``EVENTS:HASH:RUNS`` for a checkpoint of a store anchored when checkpoints carried one.
# The signature is written base64 (88 characters). Keys are given as PEM (PKCS #8 for
# the private key, SubjectPublicKeyInfo for the public one: what ``openssl genpkey
# -algorithm ed25519`` and ``openssl pkey -pubout`` write) or as base64 of their 32 raw
# bytes.


def signed_text(anchor: Mapping[str, Any]) -> str:
    """What an anchor's signature is over (``anchor``: {kind, events, hash, runs})."""
    if anchor.get("kind") == "checkpoint" and anchor.get("runs"):
        return f"{int(anchor['events'])}:{anchor['hash']}:{anchor['runs']}"
    return f"{int(anchor['events'])}:{anchor['hash']}"


def signing_key(text: str) -> Ed25519PrivateKey:
    """An Ed25519 private key from PEM or base64 of its 32 raw bytes; ``ValueError``
    otherwise."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_private_key(text.encode(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"is a {type(key).__name__.removeprefix('_')}, not an Ed25519 "
                             "private key")
        return key
    return Ed25519PrivateKey.from_private_bytes(_raw32(text))


def public_key(text: str) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM or base64 of its 32 raw bytes; ``ValueError``
    otherwise."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_public_key(text.encode())
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("is not an Ed25519 public key")
        return key
    return Ed25519PublicKey.from_public_bytes(_raw32(text))


def _raw32(text: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        raise ValueError("is neither PEM nor base64") from None
    if len(raw) != 32:
        raise ValueError(f"base64 of {len(raw)} bytes, not the 32 of an Ed25519 key")
    return raw


def public_text(key: Ed25519PublicKey) -> str:
    """A public key as base64 of its 32 raw bytes (how it is printed and compared)."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def public_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def sign(key: Ed25519PrivateKey, anchor: Mapping[str, Any]) -> str:
    """The anchor's signature, base64."""
    return base64.b64encode(key.sign(signed_text(anchor).encode())).decode()


def signature_problem(keys: Sequence[Ed25519PublicKey],
                      anchor: Mapping[str, Any]) -> str | None:
    """Why the anchor's ``signature`` does not hold with any of ``keys``; None when it
    does. (``signed_by``, the public key the anchors projection says it signed with, is
    only named in the message: it is not trusted.)"""
    signature = anchor.get("signature")
    if not signature:
        return "unsigned: anchors are to be signed (a public key is configured)"
    try:
        raw = base64.b64decode(str(signature), validate=True)
    except ValueError:
        return "its signature is not base64: it was altered"
    message = signed_text(anchor).encode()
    for key in keys:
        try:
            key.verify(raw, message)
        except InvalidSignature:
            continue
        return None
    by = anchor.get("signed_by")
    if by and by not in {public_text(k) for k in keys}:
        return (f"its signature does not verify: it names another signing key ({by}), "
                "which is not one of the public keys given")
    return ("its signature does not verify with the public key: the anchor or its "
            "signature was altered")
