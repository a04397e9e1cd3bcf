"""What the hub checks of everything a client sends, before routing it.

The hub routes frames without decoding their payload (it does not know every process's
message classes), but it never forwards what cannot be a frame of the kind it claims to
be: :func:`frame_problem` parses the frame's JSON (each element of a batch frame) and
checks the wire version and that its ``type`` and ``pattern`` are the ones the client
routed it by. A frame that fails is not routed; the reason is counted in
``commbus_wire_rejected_total{transport="grpc"}`` and told to the client in a ``Notice``.
The receiving process decodes and checks every frame again (its codec is the authority).

Names are bounded too (:data:`MAX_NAME`), and so is the nesting (:data:`MAX_DEPTH`),
measured before the frame is parsed, by the same rule whatever the JSON parser (orjson
before 3.10 has no depth limit of its own): a frame with more opening brackets than the
limit has its strings (escapes included) cut out and its brackets' running depth taken —
brackets inside strings count for nothing. The string pattern is possessive (no
backtracking: linear on any input); an unterminated string runs to the end of the frame,
which the parser then refuses as malformed.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable
from typing import Any

from ..wire import Signer

__all__ = ["MAX_DEPTH", "MAX_NAME", "PATTERNS", "frame_problem", "name_problem", "nesting"]

#: The longest message type or service name the hub accepts (characters).
MAX_NAME = 256
#: The deepest JSON nesting the hub parses in a frame.
MAX_DEPTH = 64
#: The patterns a client may route by.
PATTERNS = ("publish", "send", "query")

_loads: Callable[[bytes], Any]
try:
    import orjson

    _loads = orjson.loads
except ImportError:  # pragma: no cover - orjson comes with the grpc extra's neighbours
    _loads = json.loads


_STRING = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKET = re.compile(rb"[^\[\]{}]+")
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")


def nesting(data: bytes) -> int:
    """The deepest bracket nesting of JSON text ``data``, strings left out (regular
    expressions and C-level iteration: linear in ``len(data)``)."""
    brackets = _NOT_BRACKET.sub(b"", _STRING.sub(b"", data)).translate(_STEPS)
    steps = (1 if step == 1 else -1 for step in brackets)
    return max(itertools.accumulate(steps, initial=0))


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a message type or service name (``None``: it can)."""
    if not name:
        return "empty name"
    if len(name) > MAX_NAME:
        return f"name longer than {MAX_NAME} characters"
    if not name.isprintable():
        return "name with control characters"
    return None


def frame_problem(
    data: bytes, pattern: str, message_type: str, signer: Signer | None = None
) -> str | None:
    """The ``commbus_wire_rejected_total`` reason ``data`` is refused for, or ``None``.

    ``malformed``: not a JSON object of wire version 1 (or a batch of them, for
    ``publish``); ``too_deep``; ``wrong_destination``: a ``type`` or ``pattern`` other than
    the ones it is routed by; ``bad_signature`` (with a ``signer``)."""
    if signer is not None:
        opened = signer.open(data)
        if opened is None:
            return "bad_signature"
        data = opened
    # Counting brackets is C-fast; only a frame that could be too deep is measured.
    if data.count(b"[") + data.count(b"{") > MAX_DEPTH and nesting(data) > MAX_DEPTH:
        return "too_deep"
    try:
        frame = _loads(data)
    except (ValueError, RecursionError):
        return "malformed"
    if not isinstance(frame, dict) or frame.get("v") != 1:
        return "malformed"
    batch = frame.get("batch")
    if batch is not None:
        if pattern != "publish" or not isinstance(batch, list) or not batch:
            return "malformed"
        for item in batch:
            if not isinstance(item, dict) or item.get("v") != 1:
                return "malformed"
            if item.get("type") != message_type or item.get("pattern") != pattern:
                return "wrong_destination"
        return None
    if frame.get("type") != message_type or frame.get("pattern") != pattern:
        return "wrong_destination"
    return None
