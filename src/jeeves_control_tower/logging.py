"""Adapters that turn any logger into a :class:`~jeeves_control_tower.types.LoggerProtocol`.

The package logs structlog-style (``logger.warning("send_failed", message_type=..., error=...)``).
A stdlib :class:`logging.Logger` would raise ``TypeError`` on those keywords, so every entry
point passes the logger it is given through :func:`ensure_logger`.
"""

from __future__ import annotations

import logging as _stdlib_logging
from typing import Any

from .types import LoggerProtocol

__all__ = ["NullLogger", "StdlibLoggerAdapter", "default_logger", "ensure_logger"]


def _render(message: str, fields: dict[str, Any]) -> str:
    if not fields:
        return message
    parts = []
    for key, value in fields.items():
        try:
            text = (
                repr(value)
                if isinstance(value, str) and (" " in value or not value)
                else str(value)
            )
        except Exception:  # a hostile __str__ must not break logging
            text = f"<unprintable {type(value).__name__}>"
        parts.append(f"{key}={text}")
    return f"{message} " + " ".join(parts)


class StdlibLoggerAdapter:
    """Wrap a :class:`logging.Logger` (or ``LoggerAdapter``) as a structlog-style logger.

    Keyword fields are rendered into the line as ``key=value`` and also handed to handlers
    under ``record.fields``. Logging never raises into the caller.
    """

    __slots__ = ("_bound", "_logger")

    def __init__(
        self,
        logger: _stdlib_logging.Logger | _stdlib_logging.LoggerAdapter[Any],
        bound: dict[str, Any] | None = None,
    ) -> None:
        self._logger = logger
        self._bound = bound or {}

    def _log(self, level: int, message: str, fields: dict[str, Any]) -> None:
        try:
            if not self._logger.isEnabledFor(level):
                return
            merged = {**self._bound, **fields} if self._bound else fields
            exc_info = merged.pop("exc_info", None)
            self._logger.log(
                level,
                _render(str(message), merged),
                exc_info=exc_info,
                extra={"fields": merged},
                stacklevel=3,
            )
        except Exception:  # logging must never break the message path
            pass

    def debug(self, message: str, /, **fields: Any) -> None:
        self._log(_stdlib_logging.DEBUG, message, fields)

    def info(self, message: str, /, **fields: Any) -> None:
        self._log(_stdlib_logging.INFO, message, fields)

    def warning(self, message: str, /, **fields: Any) -> None:
        self._log(_stdlib_logging.WARNING, message, fields)

    def error(self, message: str, /, **fields: Any) -> None:
        self._log(_stdlib_logging.ERROR, message, fields)

    def exception(self, message: str, /, **fields: Any) -> None:
        fields.setdefault("exc_info", True)
        self._log(_stdlib_logging.ERROR, message, fields)

    def bind(self, **fields: Any) -> StdlibLoggerAdapter:
        return StdlibLoggerAdapter(self._logger, {**self._bound, **fields})


class NullLogger:
    """A logger that drops everything."""

    def debug(self, message: str, /, **fields: Any) -> None:
        pass

    def info(self, message: str, /, **fields: Any) -> None:
        pass

    def warning(self, message: str, /, **fields: Any) -> None:
        pass

    def error(self, message: str, /, **fields: Any) -> None:
        pass

    def bind(self, **fields: Any) -> NullLogger:
        return self


def default_logger(name: str = "jeeves_control_tower") -> StdlibLoggerAdapter:
    """The stdlib logger ``name`` wrapped so it accepts keyword fields."""
    return StdlibLoggerAdapter(_stdlib_logging.getLogger(name))


def ensure_logger(logger: Any, name: str = "jeeves_control_tower") -> LoggerProtocol:
    """Return ``logger`` as a :class:`LoggerProtocol`.

    ``None`` gives :func:`default_logger`; a stdlib ``Logger``/``LoggerAdapter`` is wrapped;
    anything with the structlog methods is returned as is. Anything else is a ``TypeError``.
    """
    if logger is None:
        return default_logger(name)
    if isinstance(logger, (_stdlib_logging.Logger, _stdlib_logging.LoggerAdapter)):
        return StdlibLoggerAdapter(logger)
    if isinstance(logger, LoggerProtocol):
        return logger
    missing = [m for m in ("debug", "info", "warning", "error", "bind") if not hasattr(logger, m)]
    raise TypeError(
        f"logger must be a structlog-style logger or a logging.Logger; "
        f"{type(logger).__name__} lacks {', '.join(missing)}"
    )
