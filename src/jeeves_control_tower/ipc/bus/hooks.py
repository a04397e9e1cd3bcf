"""The per-handler hooks of a message on a chain (:class:`~.middleware.HandlerHook`).

``handler_start`` runs, in registration order, inside the handler's own context copy right
before the handler starts; ``handler_end`` runs in reverse order when it has finished,
failed, timed out or been cancelled, with the token its ``handler_start`` returned. A hook
that raises is logged and never breaks the message path (its token is then ``None``).
"""

from __future__ import annotations

from typing import Any

from ...types import LoggerProtocol
from .middleware import MiddlewareContext

__all__ = ["end_hooks", "start_hooks"]


def start_hooks(
    hooks: tuple[Any, ...], ctx: MiddlewareContext, name: str, logger: LoggerProtocol
) -> Any:
    """Call every hook's ``handler_start`` for the handler ``name``; what :func:`end_hooks`
    takes for the same ``hooks``: the token of a lone hook (the common case: no list),
    else the list of their tokens."""
    if len(hooks) == 1:
        hook = hooks[0]
        try:
            return hook.handler_start(ctx, name)
        except Exception as exc:
            _failed(logger, hook, "handler_start", exc)
            return None
    tokens = []
    for hook in hooks:
        try:
            tokens.append(hook.handler_start(ctx, name))
        except Exception as exc:
            tokens.append(None)
            _failed(logger, hook, "handler_start", exc)
    return tokens


def end_hooks(
    hooks: tuple[Any, ...],
    ctx: MiddlewareContext,
    tokens: Any,
    error: BaseException | None,
    logger: LoggerProtocol,
) -> None:
    """Call every hook's ``handler_end``, innermost first, with what the handler ended by;
    ``tokens`` is what :func:`start_hooks` returned for the same ``hooks``."""
    if len(hooks) == 1:
        hook = hooks[0]
        try:
            hook.handler_end(ctx, tokens, error)
        except Exception as exc:
            _failed(logger, hook, "handler_end", exc)
        return
    for hook, token in zip(reversed(hooks), reversed(tokens), strict=True):
        try:
            hook.handler_end(ctx, token, error)
        except Exception as exc:
            _failed(logger, hook, "handler_end", exc)


def _failed(logger: LoggerProtocol, hook: Any, where: str, exc: BaseException) -> None:
    logger.error(
        "middleware_hook_failed",
        middleware=type(hook).__name__,
        hook=where,
        error_type=type(exc).__name__,
        error=str(exc),
    )
