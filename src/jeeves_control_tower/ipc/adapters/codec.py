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
import dataclasses
import re
from collections.abc import Callable
from typing import Any

from ..messages import get_message_type
from .formats import BIG_NUMBER, DEEP, NUMERALS, Json, Msgpack, depth
from .registry import MessageRegistry, WireError, default_registry

__all__ = ["Frame", "Reply", "WireCodec", "WireError"]

WIRE_VERSION = 1
_PATTERNS = frozenset(("publish", "send", "query"))
_TRACEPARENT = re.compile(
    r"^(?!ff)[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}$"
)
_MAX_ID = 256
_MAX_HEADER_KEY = 256
_MAX_HEADER_VALUE = 8192
_MAX_ERROR_TEXT = 2000
#: The most frames a batch frame may carry (senders batch far fewer: 256 on NATS).
MAX_BATCH = 4096
# fixmap(2) "v" 1 "batch": the MessagePack batch frame up to its array header
_MSGPACK_BATCH = b"\x82\xa1v\x01\xa5batch"
_JSON_BATCH = b'{"v":1,"batch":['


@dataclasses.dataclass(slots=True)
class Frame:
    """A decoded message frame."""

    id: str
    type: str
    pattern: str
    message: Any
    headers: dict[str, str] | None
    reply_to: str | None = None
    corr: str | None = None
    ttl: float | None = None
    ts: float | None = None


@dataclasses.dataclass(slots=True)
class Reply:
    """A decoded reply frame: ``ok`` with ``result``, or an error ``kind``."""

    corr: str | None
    ok: bool
    result: Any = None
    kind: str = ""
    error_type: str = ""
    message: str = ""


class WireCodec:
    """Encodes outgoing messages and decodes incoming frames (see the module docstring).

    ``on_reject(reason)`` is called for every rejection and every stripped traceparent
    (the adapters count it in ``commbus_wire_rejected_total``); it must not raise.
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
    ) -> None:
        if format not in ("json", "msgpack"):
            raise ValueError(f"format must be 'json' or 'msgpack', got {format!r}")
        if max_frame_bytes < 1024 or max_depth < 2 or max_headers < 0:
            raise ValueError("max_frame_bytes >= 1024, max_depth >= 2, max_headers >= 0")
        self.registry = registry if registry is not None else default_registry
        # The registry's own lookup tables (read-only here), for the per-message path.
        self._by_name = self.registry._by_name
        self._by_cls = self.registry._by_cls
        self._fmt: Any = Json() if format == "json" else Msgpack()
        self.format = format
        self._is_json = format == "json"
        # How encode_batch starts a batch frame in this format
        self._batch_prefix = _JSON_BATCH if self._is_json else _MSGPACK_BATCH
        self._scan: Any = getattr(self._fmt, "_scan", None)
        # Json.loads inlined in _load: orjson's loads (None: the stdlib scanner) and the
        # stdlib path it falls back to. A frame orjson accepts and that is not too deep
        # (walked) is shallow enough for the stdlib parser only if max_depth < DEEP.
        self._fast_loads: Any = getattr(self._fmt, "_orjson_loads", None)
        if max_depth >= DEEP:
            self._fast_loads = None
        self._stdlib_loads: Any = getattr(self._fmt, "stdlib_loads", None)
        # Json.dumps_plain when orjson is in use (frames of flat scalars), else None
        fmt = self._fmt
        self._plain: Any = fmt.dumps_plain if isinstance(fmt, Json) and fmt.fast else None
        self.max_frame_bytes = max_frame_bytes
        self.max_depth = max_depth
        self.max_headers = max_headers
        self._on_reject = on_reject

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
        JSON cannot carry, frame over the size limit)."""
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
            _plain(payload)
            and (headers is None or _plain(headers))
            and (ttl is None or ttl - ttl == 0.0)
            and (ts is None or ts - ts == 0.0)
        )
        return self._dump(frame, plain, pattern, mtype)

    def encode_batch(self, frames: list[bytes]) -> bytes:
        """One batch frame carrying ``frames`` (event frames made by :meth:`encode`, in
        order), built without decoding them: ``{"v": 1, "batch": [frame, ...]}``. The
        caller keeps it within ``max_frame_bytes``."""
        if self._is_json:
            return _JSON_BATCH + b",".join(frames) + b"]}"
        n = len(frames)  # MessagePack: a map of two, the second value an array of n maps
        if n < 16:
            head = bytes((0x90 | n,))
        elif n < 1 << 16:
            head = b"\xdc" + n.to_bytes(2, "big")
        else:
            head = b"\xdd" + n.to_bytes(4, "big")
        return _MSGPACK_BATCH + head + b"".join(frames)

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
                plain = _plain(frame["result"])
            else:
                frame["result"] = result
                plain = _plain(frame)
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
            "message": text[:_MAX_ERROR_TEXT],
        }
        return self._dump(frame, True, "reply")  # str values only

    def _dump(self, frame: dict[str, Any], plain: bool, what: str, mtype: str = "") -> bytes:
        """``frame``'s bytes (``what``, ``mtype``: what it is, for the errors); ``plain``:
        the caller checked that its values are flat scalars (see :func:`_plain`), so
        orjson's output needs no scan."""
        try:
            if plain and self._plain is not None:
                data: bytes = self._plain(frame)
            else:
                data = self._fmt.dumps(frame)
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise WireError("unencodable", f"{_what(what, mtype)}: {exc}") from None
        if len(data) > self.max_frame_bytes:
            raise WireError(
                "oversized",
                f"{_what(what, mtype)}: {len(data)} bytes > max_frame_bytes={self.max_frame_bytes}",
            )
        return data

    # ------------------------------------------------------------------ decode

    def _load(self, data: bytes, walk: bool = True) -> dict[str, Any]:
        """The frame object in ``data``, checked for size, syntax, version and (``walk``)
        nesting depth; a batch's frames are checked one by one instead."""
        if data.__class__ is not bytes:
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise WireError("malformed", f"frame must be bytes, got {type(data).__name__}")
            data = bytes(data)
        if len(data) > self.max_frame_bytes:
            raise WireError(
                "oversized", f"{len(data)} bytes > max_frame_bytes={self.max_frame_bytes}"
            )
        try:
            obj = None
            fast = self._fast_loads
            scan = self._scan
            if fast is not None:  # Json.loads with orjson, inlined (the per-message path)
                # A 20-digit number may be an int orjson would turn into a float.
                if BIG_NUMBER not in data.translate(NUMERALS):
                    try:
                        obj = fast(data)
                    except Exception:  # orjson refuses more: the stdlib's verdict stands
                        obj = self._stdlib_loads(data)
                else:
                    obj = self._stdlib_loads(data)
            else:
                if scan is not None:  # Json.loads, stdlib, inlined (the per-message path)
                    text = data.decode("utf-8")
                    try:
                        obj, end = scan(text, 0)
                        if end != len(text):
                            obj = None
                    except RecursionError:
                        raise
                    except Exception:
                        obj = None
                if obj is None:  # not JSON, or not the plain case: the format's own loads
                    obj = self._fmt.loads(data)
        except RecursionError:
            raise WireError("too_deep", "nesting exceeds the parser's limit") from None
        except Exception as exc:
            raise WireError("malformed", f"not a valid {self.format} frame: {exc}") from None
        if obj.__class__ is not dict:
            raise WireError("malformed", "a frame must be an object")
        # Counting brackets is C-fast; only a frame that could be too deep is walked.
        maybe_deep = walk and (
            not self._is_json or data.count(b"{") + data.count(b"[") > self.max_depth
        )
        if maybe_deep and depth(obj, self.max_depth + 1) > self.max_depth:
            raise WireError("too_deep", f"nesting deeper than max_depth={self.max_depth}")
        _check_version(obj)
        return obj

    def decode(self, data: bytes) -> Frame:
        """The frame in ``data``; :class:`WireError` for anything wrong with it."""
        try:
            return self._decode(data)
        except WireError as exc:
            self._rejected(exc.reason)
            raise
        except Exception as exc:  # a gap in the checks above must still not crash a consumer
            self._rejected("malformed")
            raise WireError("malformed", f"unchecked {type(exc).__name__}: {exc}") from None

    def decode_events(self, data: bytes) -> list[Frame | WireError]:
        """The frames of an event frame or of a batch frame (:meth:`encode_batch`), in
        order; each problem is a :class:`WireError` in its place (counted like
        :meth:`decode`'s). A batch that cannot be read at all is one error."""
        try:
            # A batch (recognised by how encode_batch starts it) is not walked as a whole:
            # max_depth applies to each of its frames, checked below.
            is_batch = data.__class__ is bytes and data.startswith(self._batch_prefix)
            obj = self._load(data, walk=not is_batch)
            batch = obj.get("batch")
            if batch is None:
                if is_batch:
                    raise WireError("malformed", "a batch frame is {'v': 1, 'batch': [frames]}")
                return [self._frame(obj)]
            if batch.__class__ is not list or not batch or len(obj) != 2:
                raise WireError("malformed", "a batch frame is {'v': 1, 'batch': [frames]}")
            if len(batch) > MAX_BATCH:  # one frame must not turn into a flood of rejections
                raise WireError("malformed", f"a batch carries at most {MAX_BATCH} frames")
        except WireError as exc:
            self._rejected(exc.reason)
            return [exc]
        except Exception as exc:
            self._rejected("malformed")
            return [WireError("malformed", f"unchecked {type(exc).__name__}: {exc}")]
        out: list[Frame | WireError] = []
        for item in batch:
            try:
                if item.__class__ is not dict:
                    raise WireError("malformed", "a frame must be an object")
                _check_version(item)
                if is_batch:
                    self._check_depth(item)
                out.append(self._frame(item))
            except WireError as exc:
                self._rejected(exc.reason)
                out.append(exc)
            except Exception as exc:
                self._rejected("malformed")
                out.append(WireError("malformed", f"unchecked {type(exc).__name__}: {exc}"))
        return out

    def _check_depth(self, frame: dict[str, Any]) -> None:
        """``max_depth`` for one frame of a batch. Only the payload and the headers of a
        frame are ever used (its other fields are checked scalars; unknown keys are
        ignored), and the headers are checked flat: walking the payload is enough."""
        payload = frame.get("payload")
        if payload.__class__ is dict:
            for value in payload.values():
                if value.__class__ is dict or value.__class__ is list:
                    if depth(payload, self.max_depth) + 1 > self.max_depth:
                        raise WireError(
                            "too_deep", f"nesting deeper than max_depth={self.max_depth}"
                        )
                    return

    def _decode(self, data: bytes) -> Frame:
        obj = self._load(data)
        if "batch" in obj:
            raise WireError("malformed", "a batch frame carries events only")
        return self._frame(obj)

    def _frame(self, obj: dict[str, Any]) -> Frame:
        get = obj.get
        fid: Any = get("id")
        mtype: Any = get("type")
        pattern = get("pattern")
        if not (
            fid.__class__ is str
            and 0 < len(fid) <= _MAX_ID
            and mtype.__class__ is str
            and 0 < len(mtype) <= _MAX_ID
        ):
            raise WireError("malformed", "'id' and 'type' must be non-empty strings")
        if pattern.__class__ is not str or pattern not in _PATTERNS:
            raise WireError("malformed", f"'pattern' must be publish/send/query, got {pattern!r}")
        reply_to = corr = ttl = ts = None
        if pattern == "query":
            reply_to, corr = get("reply_to"), get("corr")
            if reply_to is not None and not _short_str(reply_to):
                raise WireError("malformed", "'reply_to' must be a short string")
            if corr is not None and not _short_str(corr):
                raise WireError("malformed", "'corr' must be a short string")
        try:
            if pattern == "query":  # a bad ttl is answered: the return address is known
                ttl = _opt_number(get("ttl"), "ttl")
                ts = _opt_number(get("ts"), "ts")
            raw_headers = get("headers")
            headers = None if raw_headers is None else self._headers(raw_headers)
            cls_name: Any = get("class", mtype)
            if cls_name is not mtype and not _short_str(cls_name):
                raise WireError("malformed", "'class' must be a non-empty string")
            payload = get("payload")
            entry = self._by_name.get(cls_name)
            if entry is not None and payload.__class__ is dict:
                # MessageRegistry.from_payload, inlined (the per-message path)
                try:
                    message = entry.decode(payload)
                except WireError:
                    raise
                except Exception as exc:
                    raise WireError(
                        "invalid_message",
                        f"{cls_name!r} rejected its payload: {type(exc).__name__}: {exc}",
                    ) from None
            else:
                message = self.registry.from_payload(cls_name, payload)  # says what is wrong
            # The message must route as the frame says (the type its destination was
            # checked against): a class whose instances may carry another type is checked.
            if (entry is None or entry.fixed_type != mtype) and get_message_type(message) != mtype:
                raise WireError(
                    "type_mismatch",
                    f"payload builds a {get_message_type(message)!r}, frame says {mtype!r}",
                )
        except WireError as exc:
            exc.frame_id, exc.reply_to, exc.corr = fid, reply_to, corr
            raise
        return Frame(fid, mtype, pattern, message, headers, reply_to, corr, ttl, ts)

    def _headers(self, raw: Any) -> dict[str, str] | None:
        if raw is None:
            return None
        if not isinstance(raw, dict) or len(raw) > self.max_headers:
            raise WireError("bad_headers", f"headers must be an object of <= {self.max_headers}")
        for k, v in raw.items():
            if (
                not isinstance(k, str)
                or not isinstance(v, str)
                or len(k) > _MAX_HEADER_KEY
                or len(v) > _MAX_HEADER_VALUE
            ):
                raise WireError("bad_headers", f"header {str(k)[:40]!r} must be a short string")
        tp = raw.get("traceparent")
        if tp is not None and not _TRACEPARENT.match(tp):
            raw.pop("traceparent")
            raw.pop("tracestate", None)
            self._rejected("bad_traceparent")
        return raw or None

    def decode_reply(self, data: bytes) -> Reply:
        """The reply in ``data``; :class:`WireError` for anything wrong with it."""
        try:
            obj = self._load(data)
            corr = obj.get("corr")
            if corr is not None and not _short_str(corr):
                raise WireError("malformed", "'corr' must be a short string")
            if obj.get("ok") is True:
                result = obj.get("result")
                rclass = obj.get("rclass")
                if rclass is not None:
                    if not _short_str(rclass):
                        raise WireError("malformed", "'rclass' must be a string")
                    result = self.registry.from_payload(rclass, result)
                return Reply(corr, True, result)
            err = obj.get("error")
            if obj.get("ok") is not False or not isinstance(err, dict):
                raise WireError("malformed", "a reply needs ok=true or an error object")
            kind: Any = err.get("kind")
            etype: Any = err.get("type")
            text: Any = err.get("message")
            if not all(isinstance(x, str) for x in (kind, etype, text)):
                raise WireError("malformed", "error kind/type/message must be strings")
            return Reply(corr, False, None, kind, etype[:200], text[:_MAX_ERROR_TEXT])
        except WireError as exc:
            self._rejected(exc.reason)
            raise
        except Exception as exc:
            self._rejected("malformed")
            raise WireError("malformed", f"unchecked {type(exc).__name__}: {exc}") from None

    def _rejected(self, reason: str) -> None:
        if self._on_reject is not None:
            with contextlib.suppress(Exception):  # metrics must never break decoding
                self._on_reject(reason)


def _check_version(frame: dict[str, Any]) -> None:
    version = frame.get("v")
    if version != WIRE_VERSION or type(version) is not int:
        raise WireError("bad_version", f"unsupported wire version {version!r}")


def _what(what: str, mtype: str) -> str:
    return f"{what} {mtype!r}" if mtype else what


def _plain(values: Any) -> bool:
    """Whether ``values`` is a dict holding only ``str``, ``int``, ``bool``, ``None`` and
    finite ``float`` values (exact types; for a frame, its ``payload`` and ``headers`` are
    checked separately): what :meth:`Json.dumps_plain` takes without a scan."""
    if values.__class__ is not dict:
        return False
    for v in values.values():
        c = v.__class__
        if c is str or c is int or c is bool or v is None or (c is float and v - v == 0.0):
            continue
        return False
    return True


def _short_str(value: Any) -> bool:
    return type(value) is str and 0 < len(value) <= _MAX_ID


def _opt_number(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if type(value) not in (int, float) or value != value or value < 0:
        raise WireError("malformed", f"{name!r} must be a number >= 0")
    return float(value)
