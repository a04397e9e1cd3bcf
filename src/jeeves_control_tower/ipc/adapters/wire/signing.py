"""Optional frame integrity: an HMAC-SHA256 over every frame, with a key the processes share.

With ``signing_key=`` a transport appends to every frame it writes (events, batch frames,
commands, queries, replies) the 32-byte HMAC-SHA256 of the frame's bytes, and accepts a
frame it reads only if it ends in a valid one, checked in constant time *before* the frame
is decoded; any other frame is rejected (``bad_signature`` in
``commbus_wire_rejected_total``) and never delivered or answered. Every process of a
system must use the same key (a process without it rejects signed frames as
``malformed``, and one with it rejects unsigned ones).

What it proves: the frame was written by a holder of the key and not altered. What it
does not: confidentiality (use TLS), freshness (a recorded frame can be replayed; the
dedupe middleware drops an id this process has already handled, and queued queries expire
with their ttl), or which process wrote it (the key is shared).
"""

from __future__ import annotations

import hmac

__all__ = ["TAG_BYTES", "Signer"]

#: Bytes the signature adds to each frame.
TAG_BYTES = 32
_MIN_KEY_BYTES = 16


class Signer:
    """Seals and opens frames with one key (``bytes``, or ``str`` taken as UTF-8; at
    least 16 bytes)."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes | str) -> None:
        if isinstance(key, str):
            key = key.encode()
        if not isinstance(key, bytes) or len(key) < _MIN_KEY_BYTES:
            raise ValueError(f"signing_key must be at least {_MIN_KEY_BYTES} bytes")
        self._key = key

    def __repr__(self) -> str:
        return "Signer(key=***)"

    def seal(self, data: bytes) -> bytes:
        """``data`` followed by its signature."""
        return data + hmac.digest(self._key, data, "sha256")

    def open(self, data: bytes) -> bytes | None:
        """The frame in ``data`` without its signature, or ``None`` when the signature
        is missing or wrong."""
        if data.__class__ is not bytes:
            data = bytes(data)
        if len(data) <= TAG_BYTES:
            return None
        body = data[:-TAG_BYTES]
        if hmac.compare_digest(hmac.digest(self._key, body, "sha256"), data[-TAG_BYTES:]):
            return body
        return None
