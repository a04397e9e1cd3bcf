"""Reading frames: :class:`FrameDecoder`, the decoding half of :class:`~.codec.WireCodec`.

Decoding is strict and total (see :mod:`.codec`): every problem is a :class:`WireError`
with a ``reason``, each counted once through the ``count`` callback the codec hands in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ... import get_message_type
from .classes import MessageRegistry
from .errors import WireError
from .formats import BIG_NUMBER, DEEP, NUMERALS, deeper_than, depth
from .frames import (
    JSON_BATCH,
    MAX_BATCH,
    MAX_ERROR_TEXT,
    MAX_HEADER_KEY,
    MAX_HEADER_VALUE,
    MAX_ID,
    MSGPACK_BATCH,
    PATTERNS,
    TRACEPARENT,
    WIRE_VERSION,
    Frame,
    Reply,
    check_version,
    opt_number,
    short_str,
)

__all__ = ["FrameDecoder"]


class FrameDecoder:
    """Decodes message, batch and reply frames for a :class:`~.codec.WireCodec` (which
    builds it and shares its settings: see there). ``count(reason)`` is called once for
    every rejection and every stripped traceparent."""

    def __init__(
        self,
        registry: MessageRegistry,
        fmt: Any,
        *,
        format: str,
        max_frame_bytes: int,
        max_depth: int,
        max_headers: int,
        count: Callable[[str], None],
    ) -> None:
        self.registry = registry
        # The registry's live name -> entry table, for the per-message path.
        self._entries = registry.entries_by_name
        self._fmt = fmt
        self.format = format
        self._is_json = format == "json"
        # How encode_batch starts a batch frame in this format
        self._batch_prefix = JSON_BATCH if self._is_json else MSGPACK_BATCH
        self._scan: Any = getattr(fmt, "scan_once", None)
        # Json.loads inlined in _load: orjson's loads (None: the stdlib scanner) and the
        # stdlib path it falls back to. A frame orjson accepts and that is not too deep
        # (walked) is shallow enough for the stdlib parser only if max_depth < DEEP.
        self._fast_loads: Any = getattr(fmt, "orjson_loads", None)
        if max_depth >= DEEP:
            self._fast_loads = None
        self._stdlib_loads: Any = getattr(fmt, "stdlib_loads", None)
        self.max_frame_bytes = max_frame_bytes
        self.max_depth = max_depth
        self.max_headers = max_headers
        self._count = count

    @property
    def uses_orjson(self) -> bool:
        """Whether frames are parsed with orjson first (else the standard library only)."""
        return self._fast_loads is not None

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
        if walk and deeper_than(obj, data, self.max_depth, json_text=self._is_json):
            raise WireError("too_deep", f"nesting deeper than max_depth={self.max_depth}")
        check_version(obj)
        return obj

    def decode(self, data: bytes) -> Frame:
        """The frame in ``data``; :class:`WireError` for anything wrong with it."""
        try:
            return self._decode(data)
        except WireError as exc:
            self._count(exc.reason)
            raise
        except Exception as exc:  # a gap in the checks above must still not crash a consumer
            self._count("malformed")
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
            self._count(exc.reason)
            return [exc]
        except Exception as exc:
            self._count("malformed")
            return [WireError("malformed", f"unchecked {type(exc).__name__}: {exc}")]
        out: list[Frame | WireError] = []
        append, frame = out.append, self._frame
        for item in batch:  # per event: the checks' common case is inlined
            try:
                if item.__class__ is not dict:
                    raise WireError("malformed", "a frame must be an object")
                version = item.get("v")
                if version != WIRE_VERSION or version.__class__ is not int:
                    check_version(item)  # raises
                if is_batch:
                    payload = item.get("payload")
                    if payload.__class__ is dict:
                        for value in payload.values():
                            if value.__class__ is dict or value.__class__ is list:
                                self._check_depth(item)  # maybe too deep: walk it
                                break
                append(frame(item))
            except WireError as exc:
                self._count(exc.reason)
                out.append(exc)
            except Exception as exc:
                self._count("malformed")
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
            and 0 < len(fid) <= MAX_ID
            and mtype.__class__ is str
            and 0 < len(mtype) <= MAX_ID
        ):
            raise WireError("malformed", "'id' and 'type' must be non-empty strings")
        if pattern.__class__ is not str or pattern not in PATTERNS:
            raise WireError("malformed", f"'pattern' must be publish/send/query, got {pattern!r}")
        reply_to = corr = ttl = ts = None
        if pattern == "query":
            reply_to, corr = get("reply_to"), get("corr")
            if reply_to is not None and not short_str(reply_to):
                raise WireError("malformed", "'reply_to' must be a short string")
            if corr is not None and not short_str(corr):
                raise WireError("malformed", "'corr' must be a short string")
        try:
            if pattern == "query":  # a bad ttl is answered: the return address is known
                ttl = opt_number(get("ttl"), "ttl")
                ts = opt_number(get("ts"), "ts")
            raw_headers = get("headers")
            headers = None if raw_headers is None else self._headers(raw_headers)
            cls_name: Any = get("class", mtype)
            if cls_name is not mtype and not short_str(cls_name):
                raise WireError("malformed", "'class' must be a non-empty string")
            payload = get("payload")
            entry = self._entries.get(cls_name)
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
                or len(k) > MAX_HEADER_KEY
                or len(v) > MAX_HEADER_VALUE
            ):
                raise WireError("bad_headers", f"header {str(k)[:40]!r} must be a short string")
        tp = raw.get("traceparent")
        if tp is not None and not TRACEPARENT.match(tp):
            raw.pop("traceparent")
            raw.pop("tracestate", None)
            self._count("bad_traceparent")
        return raw or None

    def decode_reply(self, data: bytes) -> Reply:
        """The reply in ``data``; :class:`WireError` for anything wrong with it."""
        try:
            obj = self._load(data)
            corr = obj.get("corr")
            if corr is not None and not short_str(corr):
                raise WireError("malformed", "'corr' must be a short string")
            if obj.get("ok") is True:
                result = obj.get("result")
                rclass = obj.get("rclass")
                if rclass is not None:
                    if not short_str(rclass):
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
            return Reply(corr, False, None, kind, etype[:200], text[:MAX_ERROR_TEXT])
        except WireError as exc:
            self._count(exc.reason)
            raise
        except Exception as exc:
            self._count("malformed")
            raise WireError("malformed", f"unchecked {type(exc).__name__}: {exc}") from None
