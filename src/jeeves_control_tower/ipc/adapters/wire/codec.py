"""The wire format every broker adapter speaks.

A message frame is one JSON object (or MessagePack map), UTF-8, at most
``max_frame_bytes`` (1 MiB by default)::

    {"v": 1,                      # wire version; anything else is rejected
     "id": "5f0c..._26",          # message id: the same on every redelivery (dedupe key)
     "type": "OrderPlaced",       # routing type (get_message_type of the message)
     "class": "DynamicEvent",     # registered class name, only when it differs from type
     "pattern": "publish",        # publish | send | query
     "headers": {"traceparent": "00-...-01"},   # str -> str, optional
     "payload": {...},            # the message's fields (registered class)
     "reply_to": "...", "corr": "...",          # query only, transport-specific
     "ttl": 2.5, "ts": 1764450000.1}            # query only: seconds left, send time

Events published together may travel as one *batch frame* (the adapters batch the events
of one loop iteration; see :mod:`.batching`), each element a complete event frame as
above; a consumer delivers them in order, rejecting a bad element on its own::

    {"v": 1, "batch": [{"v": 1, "id": ..., "pattern": "publish", ...}, ...]}

A reply frame answers a query::

    {"v": 1, "corr": "...", "ok": true, "result": <JSON>, "rclass": "Name"?}
    {"v": 1, "corr": "...", "ok": false,
     "error": {"kind": "no_handler|timeout|aborted|error|rejected", "type": "...",
               "message": "..."}}

Decoding is strict and total: every problem raises :class:`WireError` with a ``reason``
(the ``commbus_wire_rejected_total`` label), never any other exception. An invalid
``traceparent``/``tracestate`` is removed from the headers (and reported through
``on_reject("bad_traceparent")``) while the message itself is still delivered.

JSON is encoded and decoded with orjson when it is installed (the ``redis``/``nats``
extras), else with the standard library. The stdlib path is the reference and orjson
never changes an outcome: the same frames are accepted, with equal values, and rejected
with the same ``reason``. Whatever orjson refuses, or may read or write differently
(integers beyond 64 bits, lone surrogate escapes, numbers beyond the float range, NaN and
Infinity, UUIDs, nesting the stdlib parser may not reach), goes through the stdlib path,
whose result or error stands (see :mod:`.formats`). Decoding uses orjson only while
``max_depth`` < :data:`~.formats.DEEP` (so every frame it accepts and the depth check
passes is shallow enough for the stdlib parser too). One difference is left, on purpose:
in a batch frame only what the codec uses of each element (payload, headers) is checked
for depth, so an element with an unknown key nested between the stdlib parser's limit
(~950 levels) and orjson's (1024) is judged on its own with orjson, where the stdlib
parser would reject the whole batch as ``too_deep``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from ... import get_message_type
from .classes import MessageRegistry, default_registry
from .decoding import FrameDecoder
from .errors import WireError
from .formats import Json, Msgpack, deeper_than
from .frames import (
    JSON_BATCH,
    MAX_ERROR_TEXT,
    MSGPACK_BATCH,
    WIRE_VERSION,
    Frame,
    Reply,
    describe,
    plain_values,
)

__all__ = ["MAX_EVENT_HEADS", "Frame", "Reply", "WireCodec", "WireError"]

#: How many message types' event frame starts a codec keeps (encode_event).
MAX_EVENT_HEADS = 1024


#: What a JSON/MessagePack encoder raises for a value it cannot write.
_UNENCODABLE = (TypeError, ValueError, OverflowError, RecursionError)


def _unencodable(what: str, mtype: str, exc: BaseException) -> WireError:
    """The error of a frame the encoder could not write (both encoding paths)."""
    return WireError("unencodable", f"{describe(what, mtype)}: {exc}")


class WireCodec:
    """Encodes outgoing messages and decodes incoming frames (see the module docstring).

    ``on_reject(reason)`` is called for every rejection and every stripped traceparent
    (the adapters count it in ``commbus_wire_rejected_total``); it must not raise.
    ``fast=False`` uses the standard library's JSON both ways (the reference path).
    """

    def __init__(
        self,
        registry: MessageRegistry | None = None,
        *,
        format: str = "json",
        max_frame_bytes: int = 1 << 20,
        max_depth: int = 32,
        max_headers: int = 64,
        on_reject: Callable[[str], None] | None = None,
        fast: bool = True,
    ) -> None:
        if format not in ("json", "msgpack"):
            raise ValueError(f"format must be 'json' or 'msgpack', got {format!r}")
        if max_frame_bytes < 1024 or max_depth < 2 or max_headers < 0:
            raise ValueError("max_frame_bytes >= 1024, max_depth >= 2, max_headers >= 0")
        self.registry = registry if registry is not None else default_registry
        # The registry's live class -> entry table, for the per-message path.
        self._by_cls = self.registry.entries_by_class
        self._fmt: Any = Json(fast=fast) if format == "json" else Msgpack()
        self.format = format
        self._is_json = format == "json"
        # Json.dumps_plain when orjson is in use (frames of flat scalars), else None
        fmt = self._fmt
        self._plain: Any = fmt.dumps_plain if isinstance(fmt, Json) and fmt.fast else None
        # message type -> (its class's entry, the start of its event frames): encode_event
        self._event_heads: dict[str, tuple[Any, bytes]] = {}
        self.max_frame_bytes = max_frame_bytes
        self.max_depth = max_depth
        self.max_headers = max_headers
        self._on_reject = on_reject
        #: The decoding half (it shares these settings); ``decode*`` below delegate to it.
        self.decoder = FrameDecoder(
            self.registry,
            self._fmt,
            format=format,
            max_frame_bytes=max_frame_bytes,
            max_depth=max_depth,
            max_headers=max_headers,
            count=self.count_rejected,
        )

    # ------------------------------------------------------------------ encode

    def encode(
        self,
        message: Any,
        *,
        pattern: str,
        message_id: str,
        headers: dict[str, str] | None = None,
        reply_to: str | None = None,
        corr: str | None = None,
        ttl: float | None = None,
        ts: float | None = None,
        message_type: str | None = None,
    ) -> bytes:
        """One frame for ``message`` (``message_type``: its routing type when the caller
        knows it); ``WireError`` when it cannot travel (class not registered, a value
        JSON cannot carry, frame over the size limit or nested deeper than ``max_depth``)."""
        entry = self._by_cls.get(message.__class__)
        if entry is not None:  # MessageRegistry.to_payload, inlined (the per-message path)
            name, payload = entry.name, entry.encode(message)
        else:
            name, payload = self.registry.to_payload(message)  # raises: not registered
        mtype = message_type or get_message_type(message)
        frame: dict[str, Any] = {
            "v": WIRE_VERSION,
            "id": message_id,
            "type": mtype,
            "pattern": pattern,
            "payload": payload,
        }
        if name != mtype:
            frame["class"] = name
        if headers:
            frame["headers"] = headers
        if reply_to is not None:
            frame["reply_to"] = reply_to
        if corr is not None:
            frame["corr"] = corr
        if ttl is not None:
            frame["ttl"] = ttl
        if ts is not None:
            frame["ts"] = ts
        plain = (
            plain_values(payload)
            and (headers is None or plain_values(headers))
            and (ttl is None or ttl - ttl == 0.0)
            and (ts is None or ts - ts == 0.0)
        )
        return self._dump(frame, plain, pattern, mtype)

    def encode_event(
        self, message: Any, message_id: str, message_type: str, headers: dict[str, str] | None
    ) -> bytes:
        """``encode(message, pattern="publish", message_id=..., headers=...,
        message_type=...)``, for the per-event path: the same frame, its keys in another
        order. The part every event of a type shares (version, type, class, pattern) is
        written once per type (JSON with orjson; a cache of at most
        :data:`MAX_EVENT_HEADS` types) and put in front of the event's own (id, headers,
        payload), dumped with one call; whatever this cannot write so (another format, an
        unregistered class, a value that is not a flat scalar) goes through :meth:`encode`.
        """
        entry = self._by_cls.get(message.__class__)
        head = self._event_heads.get(message_type)
        if head is None or entry is None or head[0] is not entry:
            head = self._event_head(entry, message_type)
            if head is None:
                return self.encode(
                    message,
                    pattern="publish",
                    message_id=message_id,
                    headers=headers,
                    message_type=message_type,
                )
        payload = entry.encode(message)  # type: ignore[union-attr]  # head: entry is not None
        if not plain_values(payload) or (headers is not None and not plain_values(headers)):
            return self.encode(
                message,
                pattern="publish",
                message_id=message_id,
                headers=headers,
                message_type=message_type,
            )
        own = (
            {"id": message_id, "headers": headers, "payload": payload}
            if headers
            else {"id": message_id, "payload": payload}
        )
        try:
            data: bytes = head[1] + self._plain(own)[1:]  # '{"v":1,...,' + '"id":...}'
        except _UNENCODABLE as exc:
            raise _unencodable("publish", message_type, exc) from None
        if len(data) > self.max_frame_bytes:
            raise self._oversized("publish", message_type, data)
        return data

    def _event_head(self, entry: Any, message_type: str) -> tuple[Any, bytes] | None:
        """The shared start of the event frames of ``message_type`` whose class has
        ``entry`` (cached), or ``None`` when :meth:`encode_event` cannot write them so."""
        if entry is None or self._plain is None or message_type.__class__ is not str:
            return None
        head: dict[str, Any] = {"v": WIRE_VERSION, "type": message_type, "pattern": "publish"}
        if entry.name != message_type:
            head["class"] = entry.name
        try:
            text = self._plain(head)  # str values only
        except (TypeError, ValueError):
            return None
        cached = (entry, text[:-1] + b",")  # '{"v":1,"type":...,"pattern":"publish",'
        if len(self._event_heads) < MAX_EVENT_HEADS:
            self._event_heads[message_type] = cached
        return cached

    def encode_batch(self, frames: list[bytes]) -> bytes:
        """One batch frame carrying ``frames`` (event frames made by :meth:`encode`, in
        order), built without decoding them: ``{"v": 1, "batch": [frame, ...]}``. The
        caller keeps it within ``max_frame_bytes``."""
        if self._is_json:
            return JSON_BATCH + b",".join(frames) + b"]}"
        n = len(frames)  # MessagePack: a map of two, the second value an array of n maps
        if n < 16:
            head = bytes((0x90 | n,))
        elif n < 1 << 16:
            head = b"\xdc" + n.to_bytes(2, "big")
        else:
            head = b"\xdd" + n.to_bytes(4, "big")
        return MSGPACK_BATCH + head + b"".join(frames)

    def encode_reply(
        self,
        corr: str | None,
        *,
        result: Any = None,
        kind: str = "",
        error: BaseException | None = None,
    ) -> bytes:
        """A reply frame: the result when ``kind`` is empty, else the error. A result
        that cannot be encoded becomes an ``error`` reply saying so."""
        frame: dict[str, Any] = {"v": WIRE_VERSION}
        if corr is not None:
            frame["corr"] = corr
        if not kind:
            frame["ok"] = True
            if self.registry.is_registered_object(result):
                frame["rclass"], frame["result"] = self.registry.to_payload(result)
                plain = plain_values(frame["result"])
            else:
                frame["result"] = result
                plain = plain_values(frame)
            try:
                return self._dump(frame, plain, "reply")
            except WireError as exc:
                kind, error = "error", exc
        text = str(error) if error is not None else kind
        frame["ok"] = False
        frame.pop("result", None)
        frame.pop("rclass", None)
        frame["error"] = {
            "kind": kind,
            "type": type(error).__name__ if error is not None else kind,
            "message": text[:MAX_ERROR_TEXT],
        }
        return self._dump(frame, True, "reply")  # str values only

    def _dump(self, frame: dict[str, Any], plain: bool, what: str, mtype: str = "") -> bytes:
        """``frame``'s bytes (``what``, ``mtype``: what it is, for the errors); ``plain``:
        the caller checked that its values are flat scalars (see :func:`.frames.plain_values`), so
        orjson's output needs no scan."""
        try:
            if plain and self._plain is not None:
                data: bytes = self._plain(frame)
            else:
                data = self._fmt.dumps(frame)
        except _UNENCODABLE as exc:
            raise _unencodable(what, mtype, exc) from None
        if len(data) > self.max_frame_bytes:
            raise self._oversized(what, mtype, data)
        # What a receiver would refuse as too deep is refused here, to the sender, by the
        # receiver's own check (a flat frame, ``plain``, is two levels deep: never too deep).
        if not plain and deeper_than(frame, data, self.max_depth, json_text=self._is_json):
            raise WireError(
                "too_deep",
                f"{describe(what, mtype)}: nesting deeper than max_depth={self.max_depth}",
            )
        return data

    def _oversized(self, what: str, mtype: str, data: bytes) -> WireError:
        """The error of a frame over :attr:`max_frame_bytes` (both encoding paths)."""
        return WireError(
            "oversized",
            f"{describe(what, mtype)}: {len(data)} bytes > max_frame_bytes={self.max_frame_bytes}",
        )

    # ------------------------------------------------------------------ decode

    def decode(self, data: bytes) -> Frame:
        """The frame in ``data``; :class:`WireError` for anything wrong with it."""
        return self.decoder.decode(data)

    def decode_events(self, data: bytes) -> list[Frame | WireError]:
        """The frames of an event frame or of a batch frame (:meth:`encode_batch`), in
        order; each problem is a :class:`WireError` in its place."""
        return self.decoder.decode_events(data)

    def decode_reply(self, data: bytes) -> Reply:
        """The reply in ``data``; :class:`WireError` for anything wrong with it."""
        return self.decoder.decode_reply(data)

    def count_rejected(self, reason: str) -> None:
        """Report one rejection (``reason``) to ``on_reject``; never raises. The adapters
        call it for what they reject after decoding (a frame at the wrong destination, a
        bad signature, an unexpected reply)."""
        if self._on_reject is not None:
            with contextlib.suppress(Exception):  # metrics must never break decoding
                self._on_reject(reason)
