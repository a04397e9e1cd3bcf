"""A middleware list compiled once when it changes (never per message): the bound hooks
each message runs, per ``(pattern, direction)`` when some middleware has ``applies_to``.
Run by :class:`~.chain.ChainRoute`."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .middleware import DIRECTIONS, PATTERNS

__all__ = ["CompiledChain"]


@dataclass(frozen=True)
class CompiledChain:
    """A middleware list compiled once when it changes, never per message.

    ``scopes`` holds, when some middleware has ``applies_to``, the chain of each
    ``(pattern, direction)`` (``None`` where no middleware applies); see :meth:`scoped`.
    """

    befores: tuple[tuple[Any, bool], ...]
    afters: tuple[tuple[Any, bool, str], ...]  # reversed: (bound after, is_async, name)
    hooks: tuple[Any, ...]
    scopes: Mapping[tuple[str, str], CompiledChain | None] | None = None

    def scoped(self, pattern: str, direction: str) -> CompiledChain | None:
        """The chain a ``pattern`` message going ``direction`` runs (``None``: none)."""
        if self.scopes is None:
            return self
        return self.scopes[pattern, direction]

    @classmethod
    def build(cls, middlewares: Sequence[Any]) -> CompiledChain | None:
        """Compile ``middlewares``; ``None`` for an empty list."""
        if not middlewares:
            return None
        chain = cls._compile(middlewares)
        if not any(getattr(mw, "applies_to", None) is not None for mw in middlewares):
            return chain
        scopes: dict[tuple[str, str], CompiledChain | None] = {}
        for pattern in PATTERNS:
            for direction in DIRECTIONS:
                sub = [mw for mw in middlewares if _applies(mw, pattern, direction)]
                if len(sub) == len(middlewares):
                    scopes[pattern, direction] = chain
                else:
                    scopes[pattern, direction] = cls._compile(sub) if sub else None
        return replace(chain, scopes=scopes)

    @classmethod
    def _compile(cls, middlewares: Sequence[Any]) -> CompiledChain:
        befores = []
        afters = []
        hooks = []
        for mw in middlewares:
            before = getattr(mw, "before", None)
            after = getattr(mw, "after", None)
            befores.append((before, _is_async(before)) if before is not None else (None, False))
            afters.append(
                (after, _is_async(after), type(mw).__name__)
                if after is not None
                else (None, False, type(mw).__name__)
            )
            if callable(getattr(mw, "handler_start", None)) and callable(
                getattr(mw, "handler_end", None)
            ):
                hooks.append(mw)
        return cls(tuple(befores), tuple(reversed(afters)), tuple(hooks))


def _is_async(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn)


def _applies(middleware: Any, pattern: str, direction: str) -> bool:
    applies_to = getattr(middleware, "applies_to", None)
    return applies_to is None or bool(applies_to(pattern, direction))
