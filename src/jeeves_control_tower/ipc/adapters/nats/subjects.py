"""Message types as NATS subject tokens and JetStream names.

A token keeps ``[A-Za-z0-9-]`` and writes every other byte of the UTF-8 type name as
``_xx`` (hex), so any type name maps to exactly one token that is a valid subject token,
stream name and durable consumer name (no ``.``, ``*``, ``>``, whitespace), and two
different names never share a token: ``order.created`` becomes ``order_2ecreated``.
"""

from __future__ import annotations

import re

__all__ = ["token"]

_SAFE = re.compile(r"^[A-Za-z0-9-]+$")


def token(name: str) -> str:
    """The subject token of ``name`` (see the module docstring)."""
    if _SAFE.match(name):
        return name
    return "".join(
        chr(b) if (48 <= b <= 57 or 65 <= b <= 90 or 97 <= b <= 122 or b == 45) else f"_{b:02x}"
        for b in name.encode()
    )
