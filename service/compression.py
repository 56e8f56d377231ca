"""Stored events and snapshots compressed with zlib (eventsourcing's ``Compressor``
extension point: the application's mapper compresses each event's state after encoding
it, and before encrypting it when the store is encrypted).

Both compressors here read compressed and uncompressed states alike, and differ only in
what they write: ``Zlib`` (``SIGNOFF_COMPRESS`` on, the default) compresses, ``Plain``
(off) does not. So a store keeps reading whatever it was written with as the setting is
turned on or off, and by processes with either. The two kinds are told apart by the first
byte: an uncompressed state is a JSON object (``{``), while zlib's stream starts with its
header byte (``0x78`` at the default window size), never ``{``.
"""

from __future__ import annotations

import zlib

from eventsourcing.persistence import Compressor

_JSON = b"{"[0]


class Zlib(Compressor):
    def compress(self, data: bytes) -> bytes:
        return zlib.compress(data)

    def decompress(self, data: bytes) -> bytes:
        if data[:1] and data[0] == _JSON:  # stored uncompressed
            return data
        return zlib.decompress(data)


class Plain(Zlib):
    def compress(self, data: bytes) -> bytes:
        return data
