"""Asking one endpoint which processes it heard of: ``GET /api/peers``, bounded.

An answer is read up to :data:`MAX_BYTES` within the timeout; a longer one is not an
error: the complete entries of its ``peers`` array before the cut are used
(:func:`read_prefix`). Redirects are never followed (:func:`dashboard.net.get`).
"""

from __future__ import annotations

import json
from typing import Any

from . import net

__all__ = ["MAX_BYTES", "PeersError", "fetch_peers", "read_prefix"]

#: The most bytes of one ``/api/peers`` answer read.
MAX_BYTES = 256 * 1024


class PeersError(Exception):
    """An endpoint gave no usable ``/api/peers`` answer."""


def fetch_peers(base: str, token: str = "", timeout: float = 2.0) -> Any:
    """GET ``base + "/api/peers"`` (no redirects, ``timeout`` seconds in total) and decode
    it; :class:`PeersError` on any failure. An answer longer than :data:`MAX_BYTES` is
    cut there and the complete entries of ``peers`` before the cut are kept: the result
    then has ``"truncated": True``."""
    try:
        body = net.get(base + "/api/peers", token=token, timeout=timeout, max_bytes=MAX_BYTES)
    except net.TooLarge as exc:
        return read_prefix(exc.body)
    except net.GetError as exc:
        raise PeersError(str(exc)) from None
    try:
        return json.loads(body)
    except ValueError:
        raise PeersError("/api/peers did not return JSON") from None


def read_prefix(body: bytes) -> dict[str, Any]:
    """The top-level members of a JSON object cut short, up to the cut; of a ``peers``
    array cut short, its complete entries. :class:`PeersError` if nothing usable."""
    text = body.decode("utf-8", errors="ignore")
    decoder = json.JSONDecoder()
    out: dict[str, Any] = {"truncated": True}
    pos = skip_space(text, 0)
    if not text.startswith("{", pos):
        raise PeersError("/api/peers did not return JSON")
    pos += 1
    try:
        while True:
            pos = skip_space(text, pos)
            key, pos = decoder.raw_decode(text, pos)
            pos = skip_space(text, pos)
            if not isinstance(key, str) or not text.startswith(":", pos):
                break
            pos = skip_space(text, pos + 1)
            if key == "peers" and text.startswith("[", pos):
                out["peers"] = entries = []
                pos += 1
                while True:
                    pos = skip_space(text, pos)
                    entry, pos = decoder.raw_decode(text, pos)
                    entries.append(entry)
                    pos = skip_space(text, pos)
                    if not text.startswith(",", pos):
                        break
                    pos += 1
            else:
                out[key], pos = decoder.raw_decode(text, pos)
            pos = skip_space(text, pos)
            if not text.startswith(",", pos):
                break
            pos += 1
    except ValueError:
        pass  # the cut: keep what was complete
    if not isinstance(out.get("peers"), list):
        raise PeersError(f"/api/peers answer larger than {MAX_BYTES} bytes")
    return out


def skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos
