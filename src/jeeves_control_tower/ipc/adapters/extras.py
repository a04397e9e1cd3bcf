"""What an adapter package says when the extra it needs is not installed."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["extra_for", "needs_extra"]

#: The extra that installs each third-party top-level module the package may import.
_EXTRAS = {
    "aio_pika": "rabbitmq",
    "aiormq": "rabbitmq",
    "yarl": "rabbitmq",
    "redis": "redis",
    "hiredis": "redis",
    "nats": "nats",
    "grpc": "grpc",
    "google": "grpc",
    "httpx2": "http",
    "uvicorn": "http",
    "starlette": "asgi",
    "prometheus_client": "observability",
    "opentelemetry": "observability",
    "streamlit": "dashboard",
    "msgpack": "msgpack",
}


def extra_for(module: str | None) -> str | None:
    """The extra that installs ``module`` (a dotted name), if it is one of ours."""
    return _EXTRAS.get((module or "").partition(".")[0])


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
