"""Stored events and snapshots compressed with zlib (eventsourcing's ``Compressor``
extension point: the application's mapper compresses each event's state after encoding
it, and before encrypting it when the store is encrypted).

An event's state is a few hundred bytes of JSON, most of it the same keys and wrappers in
every event of its class, which zlib alone cannot find in so little text. So states are
compressed with a preset dictionary (zlib's ``zdict``): the JSON the events repeat.
zlib's header says a stream needs a dictionary and names it by its Adler-32 checksum, so
a state names the dictionary it was written with; ``DICTIONARIES`` holds every one ever
used (a dictionary is never changed: a new one is added beside it).

Both compressors here read every kind of state, and differ only in what they write:
``Zlib`` (``SIGNOFF_COMPRESS`` on, the default) compresses with the newest dictionary,
``Plain`` (off) does not compress. So a store keeps reading whatever it was written with
as the setting is turned on or off, and by processes of any version since. The kinds are
told apart by the first bytes: an uncompressed state is a JSON object (``{``), while
zlib's stream starts with its header (``0x78`` at the default window size, never ``{``),
whose flag byte says whether a dictionary id follows.
"""

from __future__ import annotations

import zlib

from eventsourcing.persistence import Compressor

_JSON = b"{"[0]
_FDICT = 0x20  # zlib header, second byte: a dictionary id (Adler-32, 4 bytes) follows

# What the events' JSON repeats, the most frequent last (zlib reaches the end of a
# dictionary most cheaply). NEVER change a byte of it: states written with it name it.
_EVENTS_1 = "".join((
    # API keys, webhooks, sessions, expiries: rarely written.
    '"name":"","role":"reviewer","agents":null,"tools":null,"hint":"","created_by":"',
    '"groups":[]', '"revoked_by":"', '"url":"https://', '"event_types":["', '"deleted_by":"',
    '"session_name":null,"session_state":{},"metadata":{},"defined_by":"',
    '"summary":null,"updated_by":"', '"action":"reject","expired_at":',
    '"escalated_to":null,', '"topic":"domain.run:Run","state":{',
    '"originator_topic":"domain.keys:ApiKey"', '"originator_topic":"domain.sessions:Session"',
    '"originator_topic":"domain.webhooks:Webhook"',
    '"error":"', '"cancelled_by":"', '"reason":null,',
    # Decisions.
    '"values":{', '"result":"', '"approved_args":null,"request_key":null,'
    '"request_digest":null,', '"decided_by":"', '"note":null,',
    # A run's calls.
    '"attempt":1,"deadline":{"_type_":"datetime_iso","_data_":"20',
    '"tool_name":"","tool_args":{},"requires":"confirmation","confirmation_message":null,'
    '"user_input_schema":null,"stop_after_tool_call":false,"editable_args":true,'
    '"policy":null,"expires_at":null,"on_timeout":null,"escalate_to":null,',
    '"requires":"external_result"', '"requires":"user_input"', '"requires":null',
    '"waiting_for":["call_',
    # A run's start and its model's answers.
    '"originator_topic":"domain.run:Run","hash":"","agent_id":"","agent_name":"",'
    '"user_id":null,"session_id":"","input":"","instructions":"',
    '"model":"offline","provider":"openai","content":null,"tool_calls":[{"id":"call_",'
    '"name":"","args":{}}],"input_tokens":0,"output_tokens":0,',
    '"content":"', '"tool_call_id":"call_', '"class_version":3}', '"class_version":2}',
    '{"timestamp":{"_type_":"datetime_iso","_data_":"2026-12-31T00:00:00.000000+00:00"},'
    '"hash":"',
)).encode()

DICTIONARIES = {zlib.adler32(d): d for d in (_EVENTS_1,)}
_NEWEST = _EVENTS_1


class Zlib(Compressor):
    def compress(self, data: bytes) -> bytes:
        c = zlib.compressobj(zdict=_NEWEST)
        return c.compress(data) + c.flush()

    def decompress(self, data: bytes) -> bytes:
        if data[:1] and data[0] == _JSON:  # stored uncompressed
            return data
        if len(data) > 6 and data[1] & _FDICT:
            zdict = DICTIONARIES.get(int.from_bytes(data[2:6], "big"))
            if zdict is None:  # not zlib (ciphertext, altered bytes): as zlib says it
                raise zlib.error("unknown preset dictionary: not a compressed state")
            d = zlib.decompressobj(zdict=zdict)
            return d.decompress(data) + d.flush()
        return zlib.decompress(data)  # written before the dictionary


class Plain(Zlib):
    def compress(self, data: bytes) -> bytes:
        return data
