"""The frames of the wire (see :mod:`.codec` for their layout): the decoded
:class:`Frame` and :class:`Reply`, the limits every frame is checked against, and the small
checks the encoder and the decoder share."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from .errors import WireError

__all__ = ["MAX_BATCH", "WIRE_VERSION", "Frame", "Reply"]

WIRE_VERSION = 1
PATTERNS = frozenset(("publish", "send", "query"))
TRACEPARENT = re.compile(
    r"^(?!ff)[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}$"
)
MAX_ID = 256
MAX_HEADER_KEY = 256
MAX_HEADER_VALUE = 8192
MAX_ERROR_TEXT = 2000
#: The most frames a batch frame may carry (senders batch far fewer: 256 on NATS).
MAX_BATCH = 4096
#: fixmap(2) "v" 1 "batch": the MessagePack batch frame up to its array header
MSGPACK_BATCH = b"\x82\xa1v\x01\xa5batch"
JSON_BATCH = b'{"v":1,"batch":['


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


def check_version(frame: dict[str, Any]) -> None:
    """``WireError("bad_version")`` unless the frame says it is :data:`WIRE_VERSION`."""
    version = frame.get("v")
    if version != WIRE_VERSION or type(version) is not int:
        raise WireError("bad_version", f"unsupported wire version {version!r}")


def describe(what: str, mtype: str) -> str:
    """How an error names what it failed on (``what``, and the message type if known)."""
    return f"{what} {mtype!r}" if mtype else what


def plain_values(values: Any) -> bool:
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


def short_str(value: Any) -> bool:
    """A non-empty ``str`` of at most :data:`MAX_ID` characters."""
    return type(value) is str and 0 < len(value) <= MAX_ID


def opt_number(value: Any, name: str) -> float | None:
    """``value`` as a float >= 0, or ``None``; ``WireError`` for anything else."""
    if value is None:
        return None
    if type(value) not in (int, float) or value != value or value < 0:
        raise WireError("malformed", f"{name!r} must be a number >= 0")
    return float(value)
