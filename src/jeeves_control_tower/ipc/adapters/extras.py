"""What an adapter package says when the extra it needs is not installed."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["needs_extra"]


@contextlib.contextmanager
def needs_extra(extra: str) -> Iterator[None]:
    """Around an adapter package's imports: a third-party module missing is re-raised as a
    ``ModuleNotFoundError`` (same ``name``) that says which extra to install. A module of
    this package missing is a bug, raised as it is."""
    try:
        yield
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] in ("", "jeeves_control_tower"):
            raise
        raise ModuleNotFoundError(
            f"{exc}: this part of jeeves-control-tower needs the {extra} extra"
            f" (pip install 'jeeves-control-tower[{extra}]')",
            name=exc.name,
        ) from exc
